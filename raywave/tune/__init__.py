"""Sweeps and their analysis.

Plain modules (no Ray): `layout` (the sweep folder on disk), `stats` (stratified bootstrap intervals),
`analysis` (tables and curves), `report` (HTML / Markdown / CSV), `spec` (the sweep file and its checks).
Ray lives only in `sweep` (the Tune orchestration).
"""
