"""The learner contract and the shared Lightning steps of MetaLearner."""

from __future__ import annotations

import math
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from rnnmeta import Episode
from rnnmeta.evaluation import mean_ci95, paired_difference
from rnnmeta.learners import MetaLearner, NonFiniteLossError


class CentroidLearner(MetaLearner):
    """A minimal learner for testing the base: linear embedding, logits = -squared distance to class means."""

    def __init__(self, n_way: int = 3, in_features: int = 4, optimizer=partial(torch.optim.Adam, lr=1e-2),
                 lr_scheduler=None) -> None:
        super().__init__(kind="classification", n_way=n_way, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.save_hyperparameters()
        self.embed = nn.Linear(in_features, 8)

    def forward(self, support_x, support_y, query_x):
        s, q = self.embed(support_x), self.embed(query_x)
        onehot = nn.functional.one_hot(support_y, self.n_way).to(s.dtype)  # [B, S, N]
        centroids = onehot.transpose(1, 2) @ s / onehot.sum(1).unsqueeze(-1)  # [B, N, D]
        return -torch.cdist(q, centroids).pow(2)


def episode(batch=4, n_way=3, k=2, m=6, d=4, seed=0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(batch, n_way, d, generator=g) * 3
    sy = torch.arange(n_way).repeat_interleave(k).expand(batch, -1).clone()
    qy = torch.randint(0, n_way, (batch, m), generator=g)
    sx = means.gather(1, sy.unsqueeze(-1).expand(-1, -1, d)) + 0.1 * torch.randn(batch, n_way * k, d, generator=g)
    qx = means.gather(1, qy.unsqueeze(-1).expand(-1, -1, d)) + 0.1 * torch.randn(batch, m, d, generator=g)
    return Episode(sx, sy, qx, qy, kind="classification", n_way=n_way)


def test_mean_ci95_matches_formula():
    values = torch.tensor([0.5, 0.7, 0.9, 1.0, 0.6])
    stats = mean_ci95(values)
    assert stats.n == 5
    assert stats.mean == pytest.approx(0.74)
    assert stats.ci95 == pytest.approx(1.96 * float(values.double().std()) / math.sqrt(5))
    with pytest.raises(ValueError, match="empty"):
        mean_ci95(torch.zeros(0))
    with pytest.raises(ValueError, match="non-finite"):
        mean_ci95(torch.tensor([1.0, float("nan")]))


def test_paired_difference_cancels_what_two_learners_share_on_the_same_episodes():
    hardness = torch.linspace(0.2, 1.0, 50)  # the episodes' difficulty, common to both learners
    a = hardness + 0.05 + 0.01 * torch.sin(torch.arange(50.0))
    b = hardness
    paired, side_by_side = paired_difference(a, b), mean_ci95(a).ci95 + mean_ci95(b).ci95
    assert paired.mean == pytest.approx(float((a - b).double().mean())) and paired.n == 50
    assert paired.ci95 == pytest.approx(1.96 * float((a - b).double().std()) / math.sqrt(50))
    assert paired.mean - paired.ci95 > 0 and paired.ci95 < side_by_side / 10  # significant paired, overlapping side by side
    assert mean_ci95(a).mean - mean_ci95(a).ci95 < mean_ci95(b).mean + mean_ci95(b).ci95
    with pytest.raises(ValueError, match="same episodes, got 50 and 49 values"):
        paired_difference(a, b[:49])


def test_task_losses_and_metrics_per_task():
    learner = CentroidLearner()
    ep = episode()
    preds = learner(ep.support_x, ep.support_y, ep.query_x)
    assert preds.shape == (4, 6, 3)
    losses = learner.task_losses(preds, ep.query_y)
    assert losses.shape == (4,)
    expected = torch.stack([nn.functional.cross_entropy(preds[b], ep.query_y[b]) for b in range(4)])
    torch.testing.assert_close(losses, expected)
    acc = learner.task_metrics(preds, ep.query_y)
    torch.testing.assert_close(acc, (preds.argmax(-1) == ep.query_y).float().mean(1))


def test_regression_losses_are_mse():
    learner = MetaLearner(kind="regression", target_dim=2)
    preds, target = torch.randn(3, 5, 2), torch.randn(3, 5, 2)
    torch.testing.assert_close(learner.task_losses(preds, target), (preds - target).pow(2).mean((1, 2)))
    assert learner.metric_name == "mse" and learner.output_dim == 2


def test_adapt_default_predictor_matches_forward():
    learner = CentroidLearner()
    ep = episode()
    predictor = learner.adapt(ep.support_x, ep.support_y)
    torch.testing.assert_close(predictor(ep.query_x), learner(ep.support_x, ep.support_y, ep.query_x))


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda sx, sy: (sx, sy.float()), TypeError, "int64"),
        (lambda sx, sy: (sx, sy + 5), ValueError, "0..2"),
        (lambda sx, sy: (sx[0], sy), ValueError, "support_x"),
        (lambda sx, sy: (sx, sy[:, :-1]), ValueError, "support_y"),
    ],
)
def test_adapt_rejects_bad_tensors(mutate, error, match):
    learner = CentroidLearner()
    ep = episode()
    sx, sy = mutate(ep.support_x, ep.support_y)
    with pytest.raises(error, match=match):
        learner.adapt(sx, sy)


def test_episode_of_other_n_way_is_refused():
    learner = CentroidLearner(n_way=5)
    with pytest.raises(ValueError, match="n_way=5.*3-way"):
        learner.episode_step(episode(n_way=3))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"kind": "ranking"}, "kind"), ({"n_way": 1}, "n_way"), ({"optimizer": partial(torch.optim.Adam, lr=0.0)}, "lr")],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaLearner(**kwargs)


def _lrs_over_training(learner, steps):
    """The meta learning rate at each of ``steps`` training steps of a real Trainer run."""
    seen = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", callbacks=[Record()])
    trainer.fit(learner, train_dataloaders=_loader(steps, 0))
    return seen


def test_injected_optimizer_and_schedule_are_used_per_step():
    """The optimiser and schedule come from the factories given; the schedule steps every meta-iteration."""
    learner = CentroidLearner(optimizer=partial(torch.optim.SGD, lr=1.0),
                              lr_scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=10))
    lrs = _lrs_over_training(learner, 10)
    assert isinstance(learner.trainer.optimizers[0], torch.optim.SGD)
    assert lrs == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(10)])
    step = CentroidLearner(lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=3, gamma=0.5))
    assert _lrs_over_training(step, 7) == pytest.approx([1e-2] * 3 + [5e-3] * 3 + [2.5e-3])


def test_optimizer_factories_survive_a_weights_only_checkpoint(tmp_path):
    """jsonargparse's partials and plain partials are stored as class_path specs and rebuilt on load."""
    learner = CentroidLearner(optimizer=partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.1),
                              lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=5))
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(learner, train_dataloaders=_loader(2, 0))
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    saved = torch.load(tmp_path / "c.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["optimizer"] == {
        "class_path": "torch.optim.adamw.AdamW", "init_args": {"lr": 3e-3, "weight_decay": 0.1}}
    loaded = CentroidLearner.load_from_checkpoint(tmp_path / "c.ckpt", weights_only=True)
    optimizer = loaded.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 0.1
    assert loaded.meta_lr() == pytest.approx(3e-3)
    assert MetaLearner(kind="regression").meta_lr() == pytest.approx(1e-3)  # Adam's own default, named in messages


class _FixedEpisodes(torch.utils.data.IterableDataset):
    def __init__(self, n, seed):
        self.n, self.seed = n, seed

    def __iter__(self):
        for i in range(self.n):
            yield episode(seed=self.seed + i)


def _loader(n, seed):
    return torch.utils.data.DataLoader(_FixedEpisodes(n, seed), batch_size=None)


def test_fit_and_test_log_mean_and_ci_over_all_episodes():
    pl.seed_everything(0)
    learner = CentroidLearner()
    trainer = pl.Trainer(max_steps=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", val_check_interval=10, num_sanity_val_steps=0)
    trainer.fit(learner, train_dataloaders=_loader(30, 0), val_dataloaders=_loader(3, 100))
    assert "val/acc" in trainer.callback_metrics
    (result,) = trainer.test(learner, dataloaders=_loader(5, 200), verbose=False)
    # recompute from first principles: 5 batches x 4 tasks = 20 episode accuracies
    with torch.no_grad():
        accs = torch.cat([learner.task_metrics(learner(e.support_x, e.support_y, e.query_x), e.query_y)
                          for e in (episode(seed=200 + i) for i in range(5))])
    stats = mean_ci95(accs)
    assert result["test/episodes"] == 20
    assert result["test/acc"] == pytest.approx(stats.mean, abs=1e-6)
    assert result["test/acc_ci95"] == pytest.approx(stats.ci95, abs=1e-6)
    assert stats.mean > 0.9  # separable clusters: the learner must solve them


def test_non_finite_loss_stops_training_with_a_named_error():
    class Exploding(CentroidLearner):
        def forward(self, support_x, support_y, query_x):
            return super().forward(support_x, support_y, query_x) * float("nan")

    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    with pytest.raises(NonFiniteLossError, match="Exploding.*global step 0"):
        trainer.fit(Exploding(), train_dataloaders=_loader(3, 0))


def test_a_finite_loss_with_a_non_finite_meta_gradient_stops_training_naming_the_parameter():
    class NaNGradient(CentroidLearner):
        def forward(self, support_x, support_y, query_x):
            w = self.embed.weight
            # sqrt(w - w) is 0 (a finite loss) and its gradient is inf * 0 = NaN, in embed.weight only
            return super().forward(support_x, support_y, query_x) + torch.sqrt(w - w).sum()

    learner = NaNGradient()
    before = learner.embed.weight.detach().clone()
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    with pytest.raises(NonFiniteLossError, match=r"NaNGradient: non-finite meta-gradient at global step 0 in \['embed.weight'\]"):
        trainer.fit(learner, train_dataloaders=_loader(3, 0))
    assert torch.equal(learner.embed.weight, before)  # the optimiser never stepped


def test_lightnings_hook_name_bypasses_module_bookkeeping_and_nothing_else_does():
    learner = CentroidLearner()
    learner._current_fx_name = "training_step"
    assert learner._current_fx_name == "training_step" and "_current_fx_name" not in learner._parameters
    learner.extra = nn.Parameter(torch.zeros(2))  # every other name still goes through nn.Module
    learner.head = nn.Linear(2, 2)
    assert "extra" in dict(learner.named_parameters()) and "head" in dict(learner.named_modules())


def test_an_episode_is_moved_by_itself_and_other_batches_by_lightning():
    learner = CentroidLearner()
    ep = episode()
    moved = learner.transfer_batch_to_device(ep, torch.device("cpu"), 0)
    assert isinstance(moved, Episode) and moved.support_x is ep.support_x  # already there: no copy
    pair = learner.transfer_batch_to_device((torch.ones(2), [torch.zeros(1)]), torch.device("cpu"), 0)
    assert torch.equal(pair[0], torch.ones(2)) and torch.equal(pair[1][0], torch.zeros(1))


def test_trainer_gradient_clipping_bounds_the_update():
    """Clipping is the Trainer's (gradient_clip_val): one SGD step of lr 1 moves the weights by the clip norm."""
    torch.manual_seed(0)  # the initialisation: at some, this episode's gradient is itself below the clip norm
    learner = CentroidLearner(optimizer=partial(torch.optim.SGD, lr=1.0))
    e = episode(seed=0)  # the one training episode of _loader(1, 0)
    learner.task_losses(learner(e.support_x, e.support_y, e.query_x), e.query_y).mean().backward()
    unclipped = torch.nn.utils.get_total_norm([p.grad for p in learner.parameters()])
    learner.zero_grad(set_to_none=True)
    assert unclipped > 100 * 1e-5, "the test needs a gradient well above the clip norm"
    before = [p.detach().clone() for p in learner.parameters()]
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", gradient_clip_val=1e-5)
    trainer.fit(learner, train_dataloaders=_loader(1, 0))
    moved = torch.linalg.vector_norm(torch.stack([(p.detach() - b).norm() for p, b in zip(learner.parameters(), before)]))
    assert moved == pytest.approx(1e-5, rel=1e-2)  # torch divides by (norm + 1e-6)


def test_check_inputs_accepts_queries_and_names_a_mismatched_one():
    learner = CentroidLearner()
    ep = episode()
    learner.check_inputs(ep.support_x, ep.support_y, ep.query_x)
    with pytest.raises(ValueError, match="query_x"):
        learner.check_inputs(ep.support_x, ep.support_y, ep.query_x[:2])
    with pytest.raises(ValueError, match="query_x"):
        learner.check_inputs(ep.support_x, ep.support_y, ep.query_x[..., :3])


def test_a_nan_loss_never_reaches_a_checkpoint(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    class LateExplosion(CentroidLearner):
        def forward(self, support_x, support_y, query_x):
            out = super().forward(support_x, support_y, query_x)
            return out * float("nan") if self.global_step >= 3 else out

    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    trainer = pl.Trainer(max_steps=6, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", callbacks=[checkpoint])
    with pytest.raises(NonFiniteLossError, match="global step 3"):
        trainer.fit(LateExplosion(), train_dataloaders=_loader(6, 0))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


# ---------------------------------------------------------------- non-finite values (issue 18, item 6)
@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=float("inf")), r"optimizer lr must be a finite number > 0, got inf"),
    (dict(lr=float("nan")), r"optimizer lr must be a finite number > 0, got nan"),
    (dict(lr=True), r"optimizer lr must be a finite number > 0, got True \(bool\)"),
    (dict(lr=1e-3, weight_decay=float("nan")), r"optimizer weight_decay must be a finite number >= 0, got nan"),
])
def test_non_finite_or_negative_hyperparameters_are_refused_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaLearner(kind="regression", optimizer=partial(torch.optim.AdamW, **kwargs))


def test_no_checkpoint_is_written_from_non_finite_weights(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    class DivergesAtStep2(CentroidLearner):
        """An optimiser step that leaves NaN weights (what lr=inf did) once global step 2 is reached."""

        steps = 0

        def optimizer_step(self, *args, **kwargs) -> None:
            super().optimizer_step(*args, **kwargs)
            self.steps += 1
            if self.steps >= 2:
                with torch.no_grad():
                    self.embed.weight.fill_(float("nan"))

    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="{step}", save_last=True, every_n_train_steps=1, save_top_k=-1)
    trainer = pl.Trainer(max_steps=5, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", callbacks=[checkpoint])
    with pytest.raises(NonFiniteLossError, match=r"DivergesAtStep2: refusing to write a checkpoint at global step 2: "
                                                 r"1 of 2 tensors hold NaN or infinity \(\['embed\.weight'\]\).*lower the optimizer's lr"):
        trainer.fit(DivergesAtStep2(), train_dataloaders=_loader(5, 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step=1.ckpt"]
    for path in tmp_path.iterdir():
        saved = torch.load(path, weights_only=True)
        assert saved["global_step"] == 1
        assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


def test_a_diverging_evaluation_names_the_learner_the_stage_and_what_to_change():
    class NaNAtEval(CentroidLearner):
        def forward(self, support_x, support_y, query_x):
            out = super().forward(support_x, support_y, query_x)
            return out if self.training else out * float("nan")

    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    with pytest.raises(NonFiniteLossError, match=r"NaNAtEval: val evaluation gave a non-finite loss or acc in 12 of 12 "
                                                 r"episodes \(first: episode 0\) at global step 1; the weights diverged: "
                                                 r"lower the optimizer's lr \(now 0\.01\), set trainer\.gradient_clip_val"):
        trainer.fit(NaNAtEval(), train_dataloaders=_loader(1, 0), val_dataloaders=_loader(3, 100))
    with pytest.raises(NonFiniteLossError, match=r"NaNAtEval: test evaluation .* 20 of 20 episodes"):
        trainer.test(NaNAtEval(), dataloaders=_loader(5, 200), verbose=False)


def test_an_evaluation_of_non_finite_weights_says_training_diverged():
    learner = CentroidLearner()
    with torch.no_grad():
        learner.embed.bias.fill_(float("nan"))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    with pytest.raises(NonFiniteLossError, match=r"CentroidLearner: test evaluation .*the weights themselves hold NaN or "
                                                 r"infinity \(\['embed\.bias'\]\): training diverged; lower the optimizer's lr \(now 0\.01\)"):
        trainer.test(learner, dataloaders=_loader(2, 200), verbose=False)
