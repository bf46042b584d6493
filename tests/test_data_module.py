"""EpisodicDataModule: determinism, per-rank streams, eval sharding, K ranges, workers, resume, bad arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from rnnmeta.data import EpisodicDataModule, Omniglot, Sinusoid
from rnnmeta.episode import Episode


def small(dataset, **kw) -> EpisodicDataModule:
    args = dict(n_way=5, k_shot=1, q_queries=2, meta_batch_size=4, eval_batch_size=4,
                train_batches_per_epoch=6, val_episodes=11, test_episodes=13, seed=3)
    args.update(kw)
    return EpisodicDataModule(dataset, **args)


def same(a: Episode, b: Episode) -> bool:
    return all(torch.equal(getattr(a, n), getattr(b, n)) for n in ("support_x", "support_y", "query_x", "query_y"))


def test_two_instances_are_identical(omniglot: Omniglot, omniglot_root: Path, session_cache_dir: Path) -> None:
    a = small(omniglot)
    b = small(Omniglot(str(omniglot_root), cache_dir=str(session_cache_dir)))
    for x, y in zip(a.train_dataloader(), b.train_dataloader()):
        assert same(x, y)
    for split in ("val", "test"):
        loader_a = a.val_dataloader() if split == "val" else a.test_dataloader()
        loader_b = b.val_dataloader() if split == "val" else b.test_dataloader()
        assert all(same(x, y) for x, y in zip(loader_a, loader_b))
    c = small(omniglot, seed=4)
    assert not same(a.train_batch(0), c.train_batch(0)) and not same(a.eval_episode("val", 0), c.eval_episode("val", 0))


def test_train_split_differs_from_eval(omniglot: Omniglot) -> None:
    dm = small(omniglot)
    assert not torch.equal(dm.train_batch(0).support_x[:1], dm.eval_episode("val", 0).support_x)


def test_distinct_tasks_per_rank(omniglot: Omniglot) -> None:
    dm = small(omniglot)
    streams = [list(dm.train_stream(rank, 4)) for rank in range(4)]
    signatures = set()
    for rank_batches in streams:
        assert len(rank_batches) == 6
        for batch in rank_batches:
            signatures.add(batch.support_x.flatten(1).sum(1).mul(1e4).round().long().tolist().__repr__())
    assert len(signatures) == 4 * 6, "every rank and batch draws different tasks"
    assert same(streams[2][3], dm.train_batch(3, rank=2)), "batch is a pure function of (seed, rank, index)"


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_sharding_over_ranks(omniglot: Omniglot, split: str) -> None:
    dm = small(omniglot)
    n = dm.val_episodes if split == "val" else dm.test_episodes
    reference = {i: dm.eval_episode(split, i) for i in range(n)}
    for world in (1, 2, 3):
        seen: list[int] = []
        for rank in range(world):
            shard = dm.eval_set(split, rank, world)
            indices = dm.eval_episode_indices(split, rank, world)
            assert indices == shard.indices == list(range(rank, n, world))
            batches = list(shard)
            assert sum(b.batch_size for b in batches) == len(indices)
            flat = [b.task(t) for b in batches for t in range(b.batch_size)]
            for i, ep in zip(indices, flat):
                assert same(ep, reference[i]), f"episode {i} differs on rank {rank} of {world}"
            seen.extend(indices)
        assert sorted(seen) == list(range(n)), f"{world} ranks lose or repeat episodes"


def test_eval_indices_errors(omniglot: Omniglot) -> None:
    dm = small(omniglot)
    with pytest.raises(ValueError, match="'train'"):
        dm.eval_episode_indices("train")
    with pytest.raises(ValueError, match="rank=3, world_size=3"):
        dm.eval_episode_indices("val", 3, 3)
    with pytest.raises(ValueError, match="11"):
        dm.eval_episode("val", 11)


def test_k_shot_range_and_eval_k(omniglot: Omniglot) -> None:
    dm = small(omniglot, k_shot=1, k_shot_max=5, eval_k_shot=3, train_batches_per_epoch=40, meta_batch_size=2)
    ks = [b.support_x.shape[1] // 5 for b in dm.train_dataloader()]
    assert set(ks) == {1, 2, 3, 4, 5}
    assert all(b.support_x.shape[1] == 15 for b in dm.val_dataloader())
    fixed = small(omniglot, k_shot=2)
    assert {b.support_x.shape[1] for b in fixed.train_dataloader()} == {10}
    assert all(b.support_x.shape[1] == 10 for b in fixed.test_dataloader())


def test_workers_keep_the_order() -> None:
    kw = dict(k_shot=2, k_shot_max=6, q_queries=3, meta_batch_size=3, train_batches_per_epoch=5, val_episodes=10,
              eval_batch_size=3)
    zero, two = small(Sinusoid(), **kw), small(Sinusoid(), num_workers=2, **kw)
    zero.train_start_batch = two.train_start_batch = 7
    for a, b in zip(zero.train_dataloader(), two.train_dataloader(), strict=True):
        assert same(a, b)
    for a, b in zip(zero.val_dataloader(), two.val_dataloader(), strict=True):
        assert same(a, b)


def test_state_dict_moves_the_stream() -> None:
    dm = small(Sinusoid())
    first = list(dm.train_dataloader())
    dm.train_start_batch = 6
    state = dm.state_dict()
    assert state == {"seed": 3, "train_start_batch": 6}
    resumed = small(Sinusoid(), seed=0)
    resumed.load_state_dict(state)
    second = list(resumed.train_dataloader())
    assert same(second[0], dm.train_batch(6)) and not same(second[0], first[0])


def test_setup_checks_split_sizes(omniglot: Omniglot) -> None:
    with pytest.raises(ValueError, match=r"n_way=700 exceeds the 688 classes of split 'val'"):
        small(omniglot, n_way=700).setup("validate")
    with pytest.raises(ValueError, match=r"5 \+ 16 = 21 exceeds the 20 images"):
        small(omniglot, k_shot=5, q_queries=16).setup("fit")
    with pytest.raises(ValueError, match=r"k_shot \+ q_queries = 19 \+ 2 = 21"):
        small(omniglot, k_shot=1, k_shot_max=19).setup("fit")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_way": 0}, "n_way must be >= 1, got 0"),
        ({"k_shot": -1}, "k_shot must be >= 1, got -1"),
        ({"k_shot": 3, "k_shot_max": 2}, "k_shot_max=2 must be >= k_shot=3"),
        ({"eval_k_shot": 0}, "eval_k_shot must be >= 1, got 0"),
        ({"q_queries": 0}, "q_queries must be >= 1, got 0"),
        ({"meta_batch_size": 0}, "meta_batch_size must be >= 1, got 0"),
        ({"eval_batch_size": -2}, "eval_batch_size must be >= 1, got -2"),
        ({"train_batches_per_epoch": 0}, "train_batches_per_epoch must be >= 1, got 0"),
        ({"val_episodes": 0}, "val_episodes must be >= 1, got 0"),
        ({"test_episodes": 0}, "test_episodes must be >= 1, got 0"),
        ({"seed": -5}, "seed must be >= 0, got -5"),
        ({"num_workers": -1}, "num_workers must be >= 0, got -1"),
        ({"n_way": 2.5}, r"n_way must be an integer >= 1, got 2\.5"),
        ({"k_shot": True}, "k_shot must be an integer >= 1, got True"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EpisodicDataModule(Sinusoid(), **kwargs)


def test_dataset_type_checked() -> None:
    with pytest.raises(TypeError, match="str"):
        EpisodicDataModule("omniglot")  # type: ignore[arg-type]


# ------------------------------------------------------------ with Lightning
class Recorder(pl.LightningModule):
    """A tiny regression learner that records the first support input of each training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(1, 1)
        self.seen: list[torch.Tensor] = []
        self.val_batches = 0

    def training_step(self, batch: Episode, batch_idx: int) -> torch.Tensor:
        assert isinstance(batch, Episode)
        self.seen.append(batch.support_x[0, 0, 0].detach().clone())
        return nn.functional.mse_loss(self.net(batch.query_x), batch.query_y)

    def validation_step(self, batch: Episode, batch_idx: int) -> None:
        self.val_batches += 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def trainer(tmp_path: Path, max_epochs: int) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0)


def test_lightning_stream_follows_global_step_and_resumes(tmp_path: Path) -> None:
    dm = small(Sinusoid(), k_shot=5, q_queries=5, train_batches_per_epoch=3, val_episodes=5, eval_batch_size=2)
    model = Recorder()
    t = trainer(tmp_path, 2)
    t.fit(model, datamodule=dm)
    expected = [dm.train_stream().batch(b).support_x[0, 0, 0] for b in range(6)]
    assert torch.equal(torch.stack(model.seen), torch.stack(expected)), "epoch 2 continues at batch 3"
    assert model.val_batches == 2 * 3  # ceil(5 / 2) batches per validation, two epochs
    ckpt = tmp_path / "after2.ckpt"
    t.save_checkpoint(ckpt)

    dm2 = small(Sinusoid(), k_shot=5, q_queries=5, train_batches_per_epoch=3, val_episodes=5, eval_batch_size=2)
    model2 = Recorder()
    trainer(tmp_path / "resumed", 3).fit(model2, datamodule=dm2, ckpt_path=str(ckpt))
    more = [dm2.train_stream().batch(b).support_x[0, 0, 0] for b in range(6, 9)]
    assert torch.equal(torch.stack(model2.seen), torch.stack(more)), "a resumed run continues the stream"


def test_configurable_from_yaml(tmp_path: Path) -> None:
    """LightningCLI-style instantiation: typed arguments, dataset given by class_path."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(EpisodicDataModule, "data")
    config = tmp_path / "data.yaml"
    config.write_text(
        "dataset:\n"
        "  class_path: rnnmeta.data.Sinusoid\n"
        "  init_args: {amplitude: [0.5, 2.0], x_range: [-1.0, 1.0]}\n"
        "k_shot: 5\n"
        "k_shot_max: 10\n"
        "q_queries: 10\n"
        "meta_batch_size: 25\n"
    )
    cfg = parser.parse_args([f"--data={config}"])
    dm = parser.instantiate_classes(cfg).data
    assert isinstance(dm, EpisodicDataModule) and isinstance(dm.dataset, Sinusoid)
    assert dm.dataset.amplitude == (0.5, 2.0) and dm.k_shot_max == 10 and dm.meta_batch_size == 25
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: {class_path: rnnmeta.data.Sinusoid}\nn_way: zero\n")
    with pytest.raises(Exception, match="n_way"):
        parser.parse_args([f"--data={bad}"])
