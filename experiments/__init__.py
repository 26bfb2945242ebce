"""Experiments beyond the paper's table, and the closed-form problems they (and the tests) use."""
