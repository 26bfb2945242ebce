"""Losses: small callables taking networks and a batch."""
