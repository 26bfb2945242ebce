"""Experiments and the closed-form problems they (and the tests) use."""
