"""Optical-flow estimation: metrics, evaluation of RAFT checkpoints, staged RAFT training under transfer strategies."""
