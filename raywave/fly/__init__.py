"""The connectome-constrained fly visual-system network: connectome, hex lattice, dynamics, eye, decoder, task."""
