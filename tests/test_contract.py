"""The learner contract, written once and run for every learner.

``preds = learner(support_x, support_y, query_x)`` and ``learner.adapt(support_x, support_y)(query_x)``
must agree; shapes follow the task kind; a learner that says it is not transductive answers each
query from the support set alone; hyperparameters rebuild the learner and a ``weights_only``
checkpoint restores it; and a few meta-training steps on a tiny task family lift it far above
chance. Each learner's own mathematics (attention masks, memory addressing, inner loops) is
tested in its own file.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import pytest
import pytorch_lightning as pl
import torch

from rnnmeta import Episode
from rnnmeta.learners import MAML, MANN, SNAIL, LearnedOptimizer, LSTMLearner, MetaLearner, ProtoNet
from rnnmeta.nets import MLP

D_IN, N_WAY, K_SHOT, Q = 6, 3, 2, 4
ADAM = partial(torch.optim.Adam, lr=3e-3)


def _mlp() -> MLP:
    return MLP(in_features=D_IN, hidden=[32], out_features=0)


#: name -> factory(kind) of a small learner on ``D_IN``-dimensional inputs (an MLP backbone).
LEARNERS: dict[str, Callable[[str], MetaLearner]] = {
    "snail": lambda kind: SNAIL(backbone=_mlp(), kind=kind, n_way=N_WAY, max_shots=K_SHOT, key_sizes=[16, 16],
                                value_sizes=[16, 16], tc_filters=[16], optimizer=ADAM),
    "lstm": lambda kind: LSTMLearner(backbone=_mlp(), kind=kind, n_way=N_WAY, hidden_size=32, num_layers=1, optimizer=ADAM),
    "mann": lambda kind: MANN(backbone=_mlp(), kind=kind, n_way=N_WAY, controller_size=32, memory_slots=8, memory_width=8,
                              read_heads=1, optimizer=ADAM),
    "maml": lambda kind: MAML(backbone=_mlp(), kind=kind, n_way=N_WAY, inner_steps=1, inner_lr=0.3, optimizer=ADAM),
    "learned_optimizer": lambda kind: LearnedOptimizer(backbone=_mlp(), kind=kind, n_way=N_WAY, inner_steps=2,
                                                       init_inner_lr=0.3, optimizer=ADAM),
    "protonet": lambda kind: ProtoNet(backbone=_mlp(), kind=kind, n_way=N_WAY, optimizer=ADAM),
}
REGRESSION = [name for name in LEARNERS if name != "protonet"]  # ProtoNet refuses regression (tested in its file)


def cluster_tasks(batch: int, seed: int, k_shot: int = K_SHOT, q: int = Q) -> Episode:
    """A tiny task family: each task's ``N_WAY`` classes are fresh random centres in ``R^D_IN`` (unit noise around them).

    Nothing is shared between tasks but the structure, so only a learner that compares queries with
    its support set beats chance (1 / N_WAY).
    """
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(batch, N_WAY, D_IN, generator=g)
    sy = torch.arange(N_WAY).repeat_interleave(k_shot).expand(batch, -1).contiguous()
    qy = torch.arange(N_WAY).repeat_interleave(q).expand(batch, -1).contiguous()
    sx = centres.gather(1, sy.unsqueeze(-1).expand(-1, -1, D_IN)) + torch.randn(batch, N_WAY * k_shot, D_IN, generator=g)
    qx = centres.gather(1, qy.unsqueeze(-1).expand(-1, -1, D_IN)) + torch.randn(batch, N_WAY * q, D_IN, generator=g)
    return Episode(sx, sy, qx, qy, kind="classification", n_way=N_WAY)


def line_tasks(batch: int, seed: int, k_shot: int = K_SHOT, q: int = Q) -> Episode:
    """Regression: ``y = a . x`` with a fresh ``a`` per task."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, D_IN, 1, generator=g)
    sx, qx = torch.randn(batch, k_shot, D_IN, generator=g), torch.randn(batch, q, D_IN, generator=g)
    return Episode(sx, sx @ a, qx, qx @ a, kind="regression", target_dim=1)


def _episode(kind: str, seed: int = 0) -> Episode:
    return cluster_tasks(2, seed) if kind == "classification" else line_tasks(2, seed)


def _cases():
    return [pytest.param(n, "classification", id=f"{n}-classification") for n in LEARNERS] + [
        pytest.param(n, "regression", id=f"{n}-regression") for n in REGRESSION
    ]


def _build(name: str, kind: str) -> MetaLearner:
    torch.manual_seed(0)
    return LEARNERS[name](kind).eval()


@pytest.mark.parametrize("name, kind", _cases())
def test_shapes_and_adapt_equals_forward(name, kind):
    learner, ep = _build(name, kind), _episode(kind)
    preds = learner(ep.support_x, ep.support_y, ep.query_x)
    assert preds.shape == (2, ep.query_x.shape[1], N_WAY if kind == "classification" else 1)
    assert torch.isfinite(preds).all()
    adapted = learner.adapt(ep.support_x, ep.support_y)
    torch.testing.assert_close(adapted(ep.query_x), preds, rtol=1e-5, atol=1e-6)
    # a predictor answers new query batches of any size without re-reading the support set
    assert adapted(ep.query_x[:, :1]).shape[:2] == (2, 1)
    with pytest.raises(ValueError, match="query_x"):
        adapted(ep.query_x[..., :-1])


@pytest.mark.parametrize("name, kind", _cases())
def test_a_query_is_answered_from_the_support_set_alone(name, kind):
    """Changing the other queries of a task does not change a query's prediction (no learner here is transductive)."""
    learner, ep = _build(name, kind), _episode(kind)
    assert not learner.transductive
    preds = learner(ep.support_x, ep.support_y, ep.query_x)
    others = ep.query_x.clone()
    others[:, 1:] = torch.randn_like(others[:, 1:]) * 5
    torch.testing.assert_close(learner(ep.support_x, ep.support_y, others)[:, 0], preds[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(learner(ep.support_x, ep.support_y, ep.query_x[:, :1])[:, 0], preds[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, kind", _cases())
def test_hyperparameters_and_a_weights_only_checkpoint_rebuild_the_learner(name, kind, tmp_path):
    learner, ep = _build(name, kind), _episode(kind, seed=1)
    with torch.no_grad():  # move the weights off their initial values
        for p in learner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    expected = learner(ep.support_x, ep.support_y, ep.query_x)
    clone = type(learner)(**learner.hparams).eval()
    clone.load_state_dict(learner.state_dict())
    torch.testing.assert_close(clone(ep.support_x, ep.support_y, ep.query_x), expected, rtol=0, atol=0)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    trainer.strategy.connect(learner)
    trainer.save_checkpoint(tmp_path / "learner.ckpt")
    loaded = type(learner).load_from_checkpoint(tmp_path / "learner.ckpt", weights_only=True).eval()
    torch.testing.assert_close(loaded(ep.support_x, ep.support_y, ep.query_x), expected, rtol=0, atol=0)
    assert isinstance(loaded.configure_optimizers(), torch.optim.Adam) and loaded.meta_lr() == pytest.approx(3e-3)


#: Meta-training steps of 16 tasks each that take every learner far above chance on the cluster tasks.
LEARNING_STEPS = {"snail": 150, "lstm": 150, "mann": 150, "maml": 60, "learned_optimizer": 60, "protonet": 30}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_meta_training_lifts_every_learner_far_above_chance(name):
    """A few meta-training steps on the cluster tasks: test accuracy well above chance (1/3)."""
    torch.manual_seed(0)
    learner = LEARNERS[name]("classification")
    optimizer = learner.configure_optimizers()
    learner.train()
    for step in range(LEARNING_STEPS[name]):
        loss, _ = learner.episode_step(cluster_tasks(16, seed=1000 + step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    learner.eval()
    test = cluster_tasks(200, seed=7)
    with torch.enable_grad() if learner.needs_grad_at_eval else torch.no_grad():
        acc = float(learner.task_metrics(learner(test.support_x, test.support_y, test.query_x), test.query_y).mean())
    assert acc > 0.6, f"{name}: accuracy {acc:.3f} after {LEARNING_STEPS[name]} steps; chance is 0.33"
