"""Meta-learners behind one contract: ``preds = learner(support_x, support_y, query_x)``."""

from rnnmeta.learners.base import MetaLearner, NonFiniteLossError, Predictor

__all__ = ["MetaLearner", "NonFiniteLossError", "Predictor"]
