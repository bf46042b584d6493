"""``metric_loss_weight``: ProtoNet's loss on a sequence learner's embeddings, added in training only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnmeta.episode import Episode
from rnnmeta.learners import SNAIL, LSTMLearner, MANN
from rnnmeta.learners.protonet import prototype_loss
from rnnmeta.nets import MLP, Conv4

from helpers import image_task

N_WAY = 3


def episode(seed: int = 0) -> Episode:
    """2 tasks of 3-way 2-shot 16x16 images with 5 queries each, labels given to the queries."""
    sx, sy, qx = image_task(n_way=N_WAY, k=2, m=5, seed=seed)
    qy = torch.stack([torch.arange(5) % N_WAY, (torch.arange(5) + 1) % N_WAY])
    return Episode(sx, sy, qx, qy, kind="classification", n_way=N_WAY)


def learner(cls: type, weight: float) -> torch.nn.Module:
    torch.manual_seed(0)
    backbone = Conv4(hidden=8, image_size=16, track_running_stats=True)
    extra = {
        LSTMLearner: {"hidden_size": 16, "num_layers": 1},
        MANN: {"controller_size": 16, "memory_slots": 8},
        SNAIL: {"max_shots": 2, "key_sizes": [8, 8], "value_sizes": [8, 8], "tc_filters": [8], "similarity_init": True},
    }[cls]
    return cls(backbone=backbone, n_way=N_WAY, metric_loss_weight=weight, **extra)


def test_prototype_loss_against_a_hand_computation():
    torch.manual_seed(1)
    support_e, query_e = torch.randn(2, 4, 3), torch.randn(2, 3, 3)
    support_y = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]])
    query_y = torch.tensor([[1, 0, 0], [0, 1, 1]])
    terms = []
    for b in range(2):
        means = [support_e[b][support_y[b] == n].mean(0) for n in range(2)]
        for m in range(3):
            logits = torch.stack([-((query_e[b, m] - c) ** 2).sum() for c in means])
            terms.append(-torch.log_softmax(logits, 0)[query_y[b, m]])
    expected = torch.stack(terms).mean()
    torch.testing.assert_close(prototype_loss(support_e, support_y, query_e, query_y, 2), expected)


@pytest.mark.parametrize("cls", [LSTMLearner, MANN, SNAIL])
def test_training_loss_is_the_query_loss_plus_the_weighted_prototype_loss(cls):
    weight = 0.7
    model = learner(cls, weight).train()
    batch = episode()
    loss, metric = model.episode_step(batch)
    # the predictions of that step are forward's (batch norm in training mode uses batch statistics,
    # so a second pass gives the same values)
    preds = model(batch.support_x, batch.support_y, batch.query_x)
    query_loss = F.cross_entropy(preds.flatten(0, 1), batch.query_y.flatten())
    auxiliary = prototype_loss(model.embed_inputs(batch.support_x), batch.support_y,
                               model.embed_inputs(batch.query_x), batch.query_y, N_WAY)
    assert auxiliary.item() > 0.05  # the check below could not pass with the term left out
    torch.testing.assert_close(loss, query_loss + weight * auxiliary)
    torch.testing.assert_close(metric, (preds.argmax(-1) == batch.query_y).float().mean(1))


@pytest.mark.parametrize("cls", [LSTMLearner, MANN, SNAIL])
def test_the_auxiliary_loss_reaches_the_backbone_and_nothing_else(cls):
    """Its gradient flows into the backbone (and the LSTMLearner's layer norm), not into the memory or the head."""
    batch = episode()
    grads = {}
    for weight in (0.0, 1.0):
        model = learner(cls, weight).train()
        model.episode_step(batch)[0].backward()
        grads[weight] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    changed = {name for name in grads[0.0] if not torch.allclose(grads[0.0][name], grads[1.0][name])}
    assert changed and all(name.startswith(("backbone.", "norm.")) for name in changed), sorted(changed)


@pytest.mark.parametrize("cls", [LSTMLearner, MANN, SNAIL])
def test_evaluation_and_weight_zero_are_unchanged(cls):
    batch = episode()
    plain, weighted = learner(cls, 0.0), learner(cls, 2.0)
    assert plain.predict_with_auxiliary_loss(batch)[1] is None
    weighted.load_state_dict(plain.state_dict())  # the batch norm statistics that training pass moved, too
    plain.eval(), weighted.eval()
    with torch.no_grad():
        for got, expected in zip(weighted.eval_episode_step(batch), plain.eval_episode_step(batch)):
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("cls", [LSTMLearner, MANN, SNAIL])
@pytest.mark.parametrize("weight", [-0.1, True, "1", float("nan")])
def test_bad_weights_are_refused(cls, weight):
    with pytest.raises(ValueError, match="metric_loss_weight must be a float >= 0"):
        learner(cls, weight)


@pytest.mark.parametrize("cls", [LSTMLearner, MANN, SNAIL])
def test_regression_refuses_a_metric_loss(cls):
    with pytest.raises(ValueError, match="defined for classification.*'regression'"):
        cls(backbone=MLP(1, [8]), kind="regression", target_dim=1, metric_loss_weight=0.5)
    assert cls(backbone=MLP(1, [8]), kind="regression", target_dim=1, metric_loss_weight=0.0).metric_loss_weight == 0.0


def test_embedding_probe_of_a_protonet_is_the_protonet(tmp_path):
    """scripts/embedding_probe.py: ProtoNet *is* the prototype rule on its backbone, so the two columns agree;
    for a sequence learner the probe reads ``embed_inputs`` (the layer-normalised embeddings)."""
    import sys

    import yaml

    from helpers import REPO
    from rnnmeta.compare.config import build_run

    clinc = REPO.parent / "shared" / "data" / "clinc150"
    if not (clinc / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {clinc}")
    sys.path.insert(0, str(REPO / "scripts"))
    import embedding_probe

    config = REPO / "configs" / "compare" / "clinc150_5w1s.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["init_args"]["dataset"]["init_args"]["root"] = str(clinc)
    torch.manual_seed(0)
    data, protonet = build_run(cfg["learners"]["protonet"]["model"], cfg["data"])
    data.setup("test")
    learner_acc, probe_acc = embedding_probe.probe(protonet, data, episodes=4)
    assert learner_acc == probe_acc and 0.0 < probe_acc <= 1.0
    _, lstm = build_run(cfg["learners"]["lstm"]["model"], cfg["data"])
    calls = []
    original = lstm.embed_inputs
    lstm.embed_inputs = lambda x: calls.append(x.shape) or original(x)
    embedding_probe.probe(lstm, data, episodes=2)
    assert len(calls) == 8  # forward embeds support and queries, the probe again: 2 episodes x 4
