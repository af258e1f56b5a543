"""Benchmarks: this project against its baseline, measured in the same run."""
