"""Plots and movies (matplotlib, headless Agg backend)."""
