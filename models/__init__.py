"""Networks: generator, posteriors (and, later, teachers and flows)."""
from models.networks import MLP, GaussianPosterior, Generator

__all__ = ["MLP", "Generator", "GaussianPosterior"]
