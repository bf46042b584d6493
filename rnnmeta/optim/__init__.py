"""Learned optimizers: the coordinatewise LSTM of Andrychowicz et al. (2016) and the meta-learner
LSTM update of Ravi & Larochelle (2017).

Two layers, as in Optax/torchopt: a functional core (a small ``nn.Module`` holding the
meta-parameters, with pure ``init(params) -> state`` and
``update(grads, state, params, loss) -> (updates, state)``) and an object API for users
(:class:`LSTMOptimizer`, a ``torch.optim.Optimizer``). Meta-training (outer-gradient estimation)
lives apart in :mod:`rnnmeta.optim.meta_train`; optimizee task families in :mod:`rnnmeta.optim.tasks`.
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
