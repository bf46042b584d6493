"""ProtoNet: class-mean prototypes, squared Euclidean logits, adapt = forward, query independence, checkpoints, learning."""

from __future__ import annotations

from functools import partial
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from rnnmeta.learners import ProtoNet
from rnnmeta.learners.protonet import ProtoNetPredictor, class_prototypes, squared_euclidean_logits
from rnnmeta.nets import MLP, Conv4

from helpers import assert_adapt_reads_the_support_once, assert_queries_answered_independently, image_task, short_omniglot_run



def small_protonet(n_way: int = 3, **kw) -> ProtoNet:
    torch.manual_seed(0)
    return ProtoNet(backbone=Conv4(hidden=8, image_size=16, track_running_stats=True), n_way=n_way, **kw).eval()


def test_prototypes_are_class_means_and_logits_minus_squared_distances_by_hand():
    """A linear embedding in float64: prototypes and logits written out element by element."""
    torch.manual_seed(0)
    embed = nn.Linear(4, 3, dtype=torch.float64)
    embed.out_features = 3
    learner = ProtoNet(backbone=embed, n_way=3).double().eval()
    sx = torch.randn(2, 7, 4, dtype=torch.float64)
    sy = torch.tensor([[0, 1, 2, 0, 1, 0, 2], [2, 2, 1, 0, 1, 0, 0]])
    qx = torch.randn(2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        logits = learner(sx, sy, qx)
        prototypes = learner.adapt(sx, sy).prototypes
        for b in range(2):
            for n in range(3):
                members = [embed(sx[b, s]) for s in range(7) if int(sy[b, s]) == n]
                mean = sum(members) / len(members)
                torch.testing.assert_close(prototypes[b, n], mean, rtol=0, atol=1e-12)
                for q in range(4):
                    e = embed(qx[b, q])
                    dist = sum((float(e[d]) - float(mean[d])) ** 2 for d in range(3))
                    assert abs(float(logits[b, q, n]) + dist) < 1e-12
    assert logits.shape == (2, 4, 3)


def test_helpers_on_a_known_configuration():
    emb = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [1.0, 1.0]]])  # classes 0, 0, 1, 1
    protos = class_prototypes(emb, torch.tensor([[0, 0, 1, 1]]), 2)
    torch.testing.assert_close(protos, torch.tensor([[[1.0, 0.0], [0.5, 2.5]]]))
    logits = squared_euclidean_logits(torch.tensor([[[1.0, 0.0]]]), protos)
    torch.testing.assert_close(logits, torch.tensor([[[-0.0, -(0.25 + 6.25)]]]))


def test_a_missing_class_is_refused_naming_task_and_class():
    learner = small_protonet()
    sx, sy, qx = image_task()
    sy[1] = sy[1] % 2  # task 1 has no class 2
    with pytest.raises(ValueError, match="support_y of task 1 has no example of class 2"):
        learner(sx, sy, qx)


def test_adapt_equals_forward_and_holds_the_prototypes():
    learner = small_protonet()
    predict = assert_adapt_reads_the_support_once(learner, ProtoNetPredictor, *image_task(m=6), atol=1e-5)
    assert predict.prototypes.shape == (2, 3, learner.embed_dim)
    with pytest.raises(ValueError, match=r"query_x must be \[B=2, M"):
        predict(torch.rand(1, 6, 1, 16, 16))


def test_queries_are_answered_independently():
    learner = small_protonet()
    sx, sy, qx = image_task(m=6)
    assert_queries_answered_independently(learner, sx, sy, qx, atol=1e-5)
    assert not learner.transductive
    changed = qx.clone()
    changed[:, 1:] = torch.rand_like(changed[:, 1:])
    batch_stats = ProtoNet(backbone=Conv4(hidden=8, image_size=16, track_running_stats=False), n_way=3).eval()
    assert batch_stats.transductive  # batch norm over support + queries even in eval(): said so
    with torch.no_grad():
        assert not torch.allclose(batch_stats(sx, sy, changed)[:, 0], batch_stats(sx, sy, qx)[:, 0])


def test_logits_are_invariant_to_support_order_and_label_permutation():
    learner = small_protonet()
    sx, sy, qx = image_task()
    perm = torch.randperm(sx.shape[1])
    relabel = torch.tensor([2, 0, 1])
    with torch.no_grad():
        base = learner(sx, sy, qx)
        torch.testing.assert_close(learner(sx[:, perm], sy[:, perm], qx), base, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(learner(sx, relabel[sy], qx)[..., relabel], base, rtol=1e-5, atol=1e-5)


def test_default_backbone_regression_refused_and_bad_inputs():
    learner = ProtoNet(n_way=5)
    assert isinstance(learner.backbone, Conv4) and learner.embed_dim == 64
    assert learner.backbone.init_args["hidden"] == 64 and learner.backbone.init_args["track_running_stats"]
    with pytest.raises(ValueError, match="ProtoNet is a classification learner.*kind='regression'"):
        ProtoNet(kind="regression")
    sx, sy, qx = image_task(side=16)
    with pytest.raises(ValueError, match=r"support_y labels must lie in 0\.\.1, got range 0\.\.2"):
        small_protonet(n_way=2)(sx, sy, qx)  # labels 0..2 for a 2-way learner
    with pytest.raises(TypeError, match="support_y must be int64"):
        small_protonet()(sx, sy.float(), qx)
    flat = ProtoNet(backbone=MLP(in_features=6, hidden=[8], out_features=0), n_way=3).eval()
    assert flat(torch.randn(2, 6, 6), sy, torch.randn(2, 4, 6)).shape == (2, 4, 3)


def test_training_step_gets_gradients_to_the_backbone():
    learner = small_protonet().train()
    sx, sy, qx = image_task(m=6)
    qy = torch.randint(0, 3, (2, 6))
    loss = learner.task_losses(learner(sx, sy, qx), qy).mean()
    loss.backward()
    grads = [p.grad for p in learner.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_checkpoint_round_trip(tmp_path):
    learner = small_protonet()
    with torch.no_grad():  # move the weights and the running statistics away from their initial values
        for p in learner.parameters():
            p.add_(0.1 * torch.randn_like(p))
        learner.train()(*image_task())
    learner.eval()
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    trainer.strategy.connect(learner)
    path = tmp_path / "protonet.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert saved["rnnmeta"]["learner"] == "rnnmeta.learners.protonet.ProtoNet" and saved["rnnmeta"]["n_way"] == 3
    loaded = ProtoNet.load_from_checkpoint(path).eval()
    assert isinstance(loaded.backbone, Conv4) and loaded.backbone.init_args["hidden"] == 8
    sx, sy, qx = image_task(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(sx, sy, qx), learner(sx, sy, qx), rtol=0, atol=0)
    with pytest.raises(ValueError, match="n_way"):
        ProtoNet.load_from_checkpoint(path, n_way=5)


@pytest.mark.slow
def test_learns_omniglot_5way_1shot_above_80_percent(one_thread):
    """Real data, 100 meta-iterations of 8 tasks (~15 s on one thread): far above chance (0.2)."""
    torch.manual_seed(0)
    learner = ProtoNet(backbone=Conv4(hidden=32, track_running_stats=True), n_way=5, optimizer=partial(torch.optim.Adam, lr=3e-3))
    acc = short_omniglot_run(learner, n_way=5, k_shot=1, q_queries=5, meta_batch_size=8, steps=100,
                             test_episodes=100)
    assert acc > 0.8, f"5-way 1-shot accuracy {acc:.3f} after 100 meta-iterations; chance is 0.2"
