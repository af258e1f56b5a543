"""Stage-II retinal waves: the SAC model, its Brian2 and torch backends, storage, analysis."""
