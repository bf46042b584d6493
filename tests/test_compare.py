"""`rnnmeta compare`: a tiny comparison writes its table, CSV, plots and W&B runs, and skips finished runs."""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path

import pytest
import yaml

from rnnmeta.compare import compare

DATA = {
    "class_path": "rnnmeta.data.EpisodicDataModule",
    "init_args": {
        "dataset": {"class_path": "rnnmeta.data.Sinusoid"},
        "k_shot": 5,
        "q_queries": 5,
        "meta_batch_size": 4,
        "eval_batch_size": 10,
        "train_batches_per_epoch": 4,
        "val_episodes": 10,
        "test_episodes": 30,
        "seed": 0,
    },
}
MLP = {"class_path": "rnnmeta.nets.MLP", "init_args": {"in_features": 1, "hidden": [16, 16]}}
LEARNERS = {
    "maml": {"class_path": "rnnmeta.learners.MAML",
             "init_args": {"kind": "regression", "backbone": MLP, "inner_lr": 0.01, "lr": 1e-3}},
    "lstm": {"class_path": "rnnmeta.learners.LSTMLearner",
             "init_args": {"kind": "regression", "backbone": MLP, "hidden_size": 16, "num_layers": 1}},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(tmp_path: Path, **overrides):
    kwargs = dict(name="tiny", data=DATA, learners=LEARNERS, seeds=[0], max_steps=8,
                  trainer={"enable_progress_bar": False, "log_every_n_steps": 1}, target=100.0, output_dir=str(tmp_path / "results"))
    kwargs.update(overrides)
    return compare(**kwargs)


def test_tiny_comparison_writes_results_and_skips_finished_runs(tmp_path, capsys):
    rows = _run(tmp_path)
    out = tmp_path / "results" / "tiny"
    assert [r["learner"] for r in rows] == ["maml", "lstm"]
    for row in rows:
        assert row["metric"] == "mse" and row["mean"] > 0 and row["ci95"] > 0
        assert row["parameters"] > 0 and row["train_seconds"] > 0 and row["episodes_per_second"] > 0
        assert 10 < row["peak_memory_mb"] < 24_000
        assert row["test_episodes"] == 30
    with open(out / "results.csv") as f:
        assert [r["learner"] for r in csv.DictReader(f)] == ["maml", "lstm"]
    table = (out / "results.md").read_text()
    assert "| maml |" in table and "| lstm |" in table
    for png in ("curves.png", "final.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    # one W&B offline run per learner, its history holding the logged metrics, in one group
    for learner in LEARNERS:
        runs = glob.glob(str(out / "runs" / f"{learner}-seed0" / "wandb_logs" / "wandb" / "offline-run-*" / "run-*.wandb"))
        assert len(runs) == 1, runs
        data = Path(runs[0]).read_bytes()
        assert b"train/loss" in data and b"test/mse" in data and b"tiny" in data
    # both learners saw the very same test episodes
    results = [json.loads((out / "runs" / f"{ln}-seed0" / "result.json").read_text()) for ln in LEARNERS]
    assert results[0]["test_fingerprint"] == results[1]["test_fingerprint"]
    assert results[0]["episodes"] == results[1]["episodes"] == 30
    printed = capsys.readouterr().out
    assert "| maml |" in printed and "curves.png" in printed

    # running it again skips the finished runs: nothing is retrained, the numbers are the same
    mtimes = {p: p.stat().st_mtime for p in out.glob("runs/*/result.json")}
    rows_again = _run(tmp_path)
    assert {p: p.stat().st_mtime for p in out.glob("runs/*/result.json")} == mtimes
    assert [r["mean"] for r in rows_again] == [r["mean"] for r in rows]


def test_comparison_without_budget_or_learners_is_refused(tmp_path):
    with pytest.raises(ValueError, match="budget"):
        _run(tmp_path, max_steps=None)
    with pytest.raises(ValueError, match="no learners"):
        _run(tmp_path, learners={})
    with pytest.raises(ValueError, match="class_path"):
        _run(tmp_path, learners={"x": {"init_args": {}}})


def test_shipped_comparison_configs_name_real_learners():
    from rnnmeta.compare import _build

    for path in Path(__file__).resolve().parents[1].glob("configs/compare/*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        assert cfg["learners"], path
        for learner_cfg in cfg["learners"].values():
            datamodule, learner = _build(cfg["data"], learner_cfg)
            assert learner.kind == datamodule.kind


def test_a_corrupt_last_checkpoint_is_moved_aside_and_the_run_starts_again(tmp_path):
    import torch

    one = {"maml": LEARNERS["maml"]}
    run_dir = tmp_path / "results" / "tiny" / "runs" / "maml-seed0"
    (run_dir / "checkpoints").mkdir(parents=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(b"PK\x03\x04 cut off while writing")
    with pytest.warns(UserWarning, match=r"maml seed 0: checkpoint .*last\.ckpt .*moved it to last\.ckpt\.corrupt"):
        _run(tmp_path, learners=one)
    assert json.loads((run_dir / "result.json").read_text())["learner"] == "maml"
    assert torch.load(last, weights_only=True)["global_step"] == 8
    assert (run_dir / "checkpoints" / "last.ckpt.corrupt").read_bytes().startswith(b"PK")


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path):
    import torch

    from rnnmeta.compare import _run_one

    one = {"maml": LEARNERS["maml"]}
    run_dir = tmp_path / "results" / "tiny" / "runs" / "maml-seed0"
    run_dir.mkdir(parents=True)
    # a run that stopped after 4 of its 8 steps: it left checkpoints but no result.json
    _run_one("tiny", "maml", one["maml"], DATA, 0, run_dir, {"enable_progress_bar": False}, 4, None, None, "rnnmeta", 1)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4
    _run(tmp_path, learners=one)
    result = json.loads((run_dir / "result.json").read_text())
    assert torch.load(last, weights_only=False)["global_step"] == 8
    # the monitor's counters travelled in the checkpoint: all 8 steps are counted once, not 4 + 8
    assert result["episodes_per_second"] > 0
    callbacks = torch.load(last, weights_only=False)["callbacks"]
    (monitor,) = [state for key, state in callbacks.items() if key.startswith("RunMonitor")]
    assert monitor["train_batches"] == 8
