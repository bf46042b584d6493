"""Meta-learners behind one contract: ``preds = learner(support_x, support_y, query_x)``.

* :class:`SNAIL` (Mishra et al. 2018): temporal convolutions and causal attention over the support set.
* :class:`LSTMLearner` (Hochreiter et al. 2001) and :class:`MANN` (Santoro et al. 2016): recurrent memory.
* :class:`LearnedOptimizer` (Andrychowicz et al. 2016; Ravi & Larochelle 2017): an LSTM that trains a base network.
* :class:`MAML` (Finn et al. 2017): the gradient-based baseline, second or first order, optional Meta-SGD.
* :class:`ProtoNet` (Snell et al. 2017): the metric baseline, nearest class-mean prototype.
* :class:`TfidfCentroid`: the training-free text baseline, nearest TF-IDF centroid of the support set.
"""

from rnnmeta.learners.base import MetaLearner, NonFiniteLossError, Predictor
from rnnmeta.learners.learned_optimizer import LearnedOptimizer
from rnnmeta.learners.lstm import LSTMLearner
from rnnmeta.learners.maml import MAML
from rnnmeta.learners.mann import MANN
from rnnmeta.learners.online import OnlineMetaLearner, StreamLearner, per_instance_accuracy
from rnnmeta.learners.protonet import ProtoNet
from rnnmeta.learners.snail import SNAIL
from rnnmeta.learners.tfidf import TfidfCentroid

__all__ = ["LSTMLearner", "LearnedOptimizer", "MAML", "MANN", "MetaLearner", "NonFiniteLossError", "OnlineMetaLearner", "Predictor", "ProtoNet", "SNAIL",
           "StreamLearner", "TfidfCentroid", "per_instance_accuracy"]
