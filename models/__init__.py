"""Networks: generator and posteriors (Gaussian, flow)."""
from models.flows import FlowPosterior
from models.networks import MLP, GaussianPosterior, Generator

__all__ = ["MLP", "Generator", "GaussianPosterior", "FlowPosterior"]
