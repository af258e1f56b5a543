"""raywave: retinal-wave simulation, NFP pre-training and optical-flow transfer on Ray."""

__version__ = "0.1.0"
