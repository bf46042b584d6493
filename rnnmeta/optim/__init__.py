"""Learned optimizers: the coordinatewise LSTM of Andrychowicz et al. (2016) and the meta-learner
LSTM update of Ravi & Larochelle (2017).

A functional core (:class:`MetaOptimizer`, see :mod:`rnnmeta.optim.base`), an object API
(:class:`LSTMOptimizer`, a ``torch.optim.Optimizer``), meta-training in :mod:`rnnmeta.optim.meta_train`
and optimizee task families in :mod:`rnnmeta.optim.tasks`.
"""

from rnnmeta.optim.base import MetaOptimizer, apply_updates, load_meta_optimizer, register_meta_optimizer
from rnnmeta.optim.lstm_optimizer import CoordinatewiseLSTMOptimizer, LSTMOptimizerState, preprocess_gradients
from rnnmeta.optim.meta_train import MetaTrainResult, meta_train, rollout, unroll
from rnnmeta.optim.ravi_larochelle import RaviLarochelleState, RaviLarochelleUpdate
from rnnmeta.optim.tasks import MLPClassificationTask, OmniglotMLPFamily, QuadraticFamily, QuadraticTask
from rnnmeta.optim.torch_optimizer import LSTMOptimizer

__all__ = [
    "CoordinatewiseLSTMOptimizer",
    "LSTMOptimizer",
    "LSTMOptimizerState",
    "MLPClassificationTask",
    "MetaOptimizer",
    "MetaTrainResult",
    "OmniglotMLPFamily",
    "QuadraticFamily",
    "QuadraticTask",
    "RaviLarochelleState",
    "RaviLarochelleUpdate",
    "apply_updates",
    "load_meta_optimizer",
    "meta_train",
    "preprocess_gradients",
    "register_meta_optimizer",
    "rollout",
    "unroll",
]
