"""Targets, metrics, flags, run folders, plotting and the shared training loop."""
