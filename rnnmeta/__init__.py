"""rnnmeta: memory-based (recurrent) meta-learners beside gradient-based meta-learning, on PyTorch Lightning."""

from rnnmeta.episode import CLASSIFICATION, REGRESSION, Episode

__version__ = "0.1.0"
__all__ = ["Episode", "CLASSIFICATION", "REGRESSION", "__version__"]
