"""Datasets and file formats: retinal-wave triplets, optical-flow files, FlyingChairs, Sintel, synthetic flow."""
