"""Optical-flow estimation: metrics, evaluation of RAFT checkpoints, (later) training and transfer runs."""
