"""RAFT (basic and small) written part by part, so the NFP model can reuse its encoders, correlation and GRUs."""
