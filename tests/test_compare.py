"""`rnnmeta compare`: tables that are a function of the config, right curves, checks before training, safe folders."""

from __future__ import annotations

import csv
import glob
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rnnmeta.compare import ComparisonConfigError, ComparisonLockedError, StaleRunError, compare
from rnnmeta.compare.config import build_learner, plan_runs, validate_specs
from rnnmeta.compare.runner import lock_folder

REPO = Path(__file__).resolve().parents[1]
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
    "maml": {"model": {"class_path": "rnnmeta.learners.MAML",
                       "init_args": {"kind": "regression", "backbone": MLP, "inner_lr": 0.01, "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 1e-3}}}}},
    "lstm": {"model": {"class_path": "rnnmeta.learners.LSTMLearner",
                       "init_args": {"kind": "regression", "backbone": MLP, "hidden_size": 16, "num_layers": 1}}},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUIET = {"enable_progress_bar": False, "log_every_n_steps": 1}


def _run(tmp_path: Path, **overrides):
    # native numerics: these tests watch the runs in this process (portable ones run in children)
    kwargs = dict(name="tiny", data=DATA, learners=LEARNERS, seeds=[0], max_steps=8, trainer=QUIET, target=100.0,
                  output_dir=str(tmp_path / "results"), numerics="native")
    kwargs.update(overrides)
    return compare(**kwargs)


def _result(out: Path, run: str) -> dict:
    return json.loads((out / "runs" / run / "result.json").read_text())


@pytest.mark.slow
def test_tiny_comparison_writes_tables_plots_and_wandb_runs_and_skips_finished_runs(tmp_path, capsys):
    rows = _run(tmp_path, seeds=[0, 1])
    out = tmp_path / "results" / "tiny"
    assert [r["learner"] for r in rows] == ["maml", "lstm"]
    for row in rows:
        assert row["metric"] == "mse" and row["mean"] > 0 and row["ci95"] > 0 and row["seeds"] == 2
        assert row["seed_std"] > 0 and row["steps"] == 8 and row["budget"] == "8 steps" and row["threads"] == 1
        assert row["protocol"] == "per query" and row["test_episodes"] == 30
    with open(out / "results.csv") as f:
        assert [r["learner"] for r in csv.DictReader(f)] == ["maml", "lstm"]
    with open(out / "costs.csv") as f:
        costs = list(csv.DictReader(f))
    assert all(float(c["train_cpu_seconds"]) > 0 and 10 < float(c["peak_memory_mb"]) < 24_000 for c in costs)
    for png in ("curves.png", "final.png", "predictions.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    # one W&B offline run per learner and seed, holding the logged metrics, in one group
    for run in ("maml-seed0", "lstm-seed1"):
        files = glob.glob(str(out / "runs" / run / "wandb_logs" / "wandb" / "offline-run-*" / "run-*.wandb"))
        assert len(files) == 1, files
        data = Path(files[0]).read_bytes()
        assert b"train/loss" in data and b"test/mse" in data and b"tiny" in data
    # every learner saw the very same test episodes
    assert len({_result(out, run)["test_fingerprint"] for run in ("maml-seed0", "lstm-seed0", "lstm-seed1")}) == 1
    # the regression predictions are on the data's own test tasks: support points on the true curve
    task = _result(out, "maml-seed0")["predictions"]["tasks"][0]
    import math

    for x, y in zip(task["support_x"], task["support_y"]):
        assert y == pytest.approx(task["amplitude"] * math.sin(x - task["phase"]), abs=1e-5)
    printed = capsys.readouterr().out
    assert "| maml |" in printed and "Costs on this machine" in printed and "curves.png" in printed

    mtimes = {p: p.stat().st_mtime for p in out.glob("runs/*/result.json")}
    rows_again = _run(tmp_path, seeds=[0, 1])
    assert {p: p.stat().st_mtime for p in out.glob("runs/*/result.json")} == mtimes
    assert rows_again == rows


@pytest.mark.slow
def test_the_table_compares_every_learner_with_the_reference_episode_by_episode(tmp_path, capsys):
    rows = _run(tmp_path, seeds=[0, 1])
    out = tmp_path / "results" / "tiny"
    values = {run: torch.tensor(_result(out, run)["episode_values"], dtype=torch.float64)
              for run in ("maml-seed0", "maml-seed1", "lstm-seed0", "lstm-seed1")}
    assert all(v.shape == (30,) for v in values.values())
    by_name = {r["learner"]: r for r in rows}
    # the saved episodes are the ones the table's mean is taken over
    assert by_name["lstm"]["mean"] == pytest.approx(float((values["lstm-seed0"] + values["lstm-seed1"]).mean() / 2))
    # default reference: the best mean (lowest MSE); the other row holds the paired difference and its CI
    best, other = sorted(by_name, key=lambda n: by_name[n]["mean"])
    assert all(r["vs"] == best for r in rows)
    assert by_name[best]["paired_diff"] is None and by_name[best]["paired_ci95"] is None
    diff = (values[f"{other}-seed0"] + values[f"{other}-seed1"]) / 2 - (values[f"{best}-seed0"] + values[f"{best}-seed1"]) / 2
    assert by_name[other]["paired_diff"] == pytest.approx(float(diff.mean())) and by_name[other]["paired_diff"] > 0
    assert by_name[other]["paired_ci95"] == pytest.approx(1.96 * float(diff.std()) / 30**0.5)
    table = (out / "results.md").read_text()
    assert f"vs {best} (paired)" in table and "| reference |" in table and f"{by_name[other]['paired_diff']:+.4f} +- " in table
    # a named reference: the finished runs are reused, the columns follow it
    named = {r["learner"]: r for r in _run(tmp_path, seeds=[0, 1], reference=other)}
    assert named[best]["vs"] == other and named[best]["paired_diff"] == pytest.approx(-by_name[other]["paired_diff"])
    assert named[other]["paired_diff"] is None
    with pytest.raises(ComparisonConfigError, match=r"reference must name one of the learners \('maml', 'lstm'\), got 'snail'"):
        _run(tmp_path, reference="snail")


def _burn_cpu(seconds: float) -> subprocess.Popen:
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.mark.slow
def test_step_budget_gives_bitwise_the_same_table_on_a_busy_machine(tmp_path):
    learners = dict(LEARNERS)
    learners["lstm"] = {**LEARNERS["lstm"], "threads": 2}  # two threads on busy cores: still the same numbers
    _run(tmp_path, learners=learners, output_dir=str(tmp_path / "idle"))
    burners = [_burn_cpu(120) for _ in range(2)]  # both cores busy
    try:
        _run(tmp_path, learners=learners, output_dir=str(tmp_path / "busy"))
    finally:
        for b in burners:
            b.kill()
            b.wait()
    idle = (tmp_path / "idle" / "tiny" / "results.csv").read_bytes()
    assert idle == (tmp_path / "busy" / "tiny" / "results.csv").read_bytes()
    assert (tmp_path / "idle" / "tiny" / "results.md").read_bytes() == (tmp_path / "busy" / "tiny" / "results.md").read_bytes()


@pytest.mark.slow
def test_workers_run_in_parallel_processes_with_the_same_results(tmp_path):
    _run(tmp_path, output_dir=str(tmp_path / "serial"))
    _run(tmp_path, output_dir=str(tmp_path / "parallel"), workers=2)
    serial = (tmp_path / "serial" / "tiny" / "results.csv").read_bytes()
    assert serial == (tmp_path / "parallel" / "tiny" / "results.csv").read_bytes()
    assert (tmp_path / "parallel" / "tiny" / "runs" / "maml-seed0" / "worker.log").exists()


def test_curve_holds_every_validation_point_of_metrics_csv(tmp_path):
    _run(tmp_path, max_steps=12)  # validation every 4 steps: after steps 4, 8, 12
    out = tmp_path / "results" / "tiny"
    for learner in LEARNERS:
        curve = _result(out, f"{learner}-seed0")["curve"]
        with open(out / "runs" / f"{learner}-seed0" / "csv" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        val = [r for r in rows if r["val/mse"]]
        train = [r for r in rows if r["train/loss"]]
        assert len(curve) == len(val) == 3
        # metrics.csv counts logging steps from 0: validation after n steps is logged at step n - 1
        assert [p["step"] for p in curve] == [int(r["step"]) + 1 for r in val] == [4, 8, 12]
        for point, row in zip(curve, val):
            assert point["value"] == pytest.approx(float(row["val/mse"]), rel=1e-6)
        # the train loss of a point is the mean over the steps since the previous point
        for i, point in enumerate(curve):
            losses = [float(r["train/loss"]) for r in train if 4 * i <= int(r["step"]) < 4 * (i + 1)]
            assert point["train_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_cpu_budget_stops_training_and_is_labelled(tmp_path):
    rows = _run(tmp_path, max_steps=None, max_cpu_minutes=0.0005)  # 0.03 CPU-seconds
    for row in rows:
        assert 1 <= row["steps"] < 200 and row["budget"] == "0.0005 CPU-min"
    with pytest.raises(ComparisonConfigError, match="needs a budget"):
        _run(tmp_path, max_steps=None)


def test_a_learner_trains_with_its_own_protocol_on_the_same_test_episodes(tmp_path):
    learners = {
        "maml": LEARNERS["maml"],
        "lstm": {**LEARNERS["lstm"], "max_steps": 5, "train_data": {"meta_batch_size": 2, "q_queries": 1, "k_shot": 3}},
    }
    rows = _run(tmp_path, learners=learners)
    out = tmp_path / "results" / "tiny"
    assert [r["steps"] for r in rows] == [8, 5]
    assert _result(out, "lstm-seed0")["train_episodes"] == 10
    assert _result(out, "maml-seed0")["test_fingerprint"] == _result(out, "lstm-seed0")["test_fingerprint"]


def test_build_learner_applies_a_learners_training_data_to_its_training_side_only():
    learners = {"lstm": {**LEARNERS["lstm"], "train_data": {"meta_batch_size": 2, "k_shot": 3}}, "maml": LEARNERS["maml"]}
    data, runs = validate_specs(DATA, learners)
    lstm_data, lstm = build_learner(data, runs["lstm"])
    maml_data, maml = build_learner(data, runs["maml"])
    assert type(lstm).__name__ == "LSTMLearner" and type(maml).__name__ == "MAML"
    assert (lstm_data.meta_batch_size, lstm_data.k_shot) == (2, 3)
    assert (maml_data.meta_batch_size, maml_data.k_shot) == (4, 5)
    assert (lstm_data.eval_k_shot, lstm_data.eval_q_queries) == (maml_data.eval_k_shot, maml_data.eval_q_queries) == (5, 5)


def test_a_bad_key_in_the_last_learner_fails_before_any_training(tmp_path):
    learners = dict(LEARNERS)
    learners["mann"] = {"model": {"class_path": "rnnmeta.learners.MANN", "init_args": {"kind": "regression", "memory_slotz": 8}}}
    with pytest.raises(ComparisonConfigError, match=r"(?s)learner 'mann'.*memory_slotz"):
        _run(tmp_path, learners=learners)
    assert not (tmp_path / "results").exists()
    with pytest.raises(ComparisonConfigError, match=r"trainer.max_stepz is not a pytorch_lightning.Trainer argument"):
        _run(tmp_path, trainer={"max_stepz": 3})
    with pytest.raises(ComparisonConfigError, match=r"trainer.logger is set by the comparison"):
        _run(tmp_path, trainer={"logger": False})
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_the_command_line_names_the_learner_of_a_bad_key_and_leaves_nothing(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "compare" / "sinusoid.yaml").read_text())
    config["learners"]["learned_optimizer"]["model"]["init_args"]["inner_stepz"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "rnnmeta.cli", "compare", "--config", str(path), "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "learner 'learned_optimizer'" in proc.stderr and "inner_stepz" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"seeds": [0, 0]}, r"seeds \[0, 0\] repeat \[0\]"),
        ({"seeds": []}, r"seeds must be a non-empty list"),
        ({"seeds": [-1]}, r"seeds must be integers >= 0, got -1"),
        ({"name": "../../victim"}, r"comparison name '../../victim' is not a plain name"),
        ({"name": "/abs/path"}, r"comparison name '/abs/path' is not a plain name"),
        ({"learners": {"../x": LEARNERS["maml"]}}, r"learner name '../x' is not a plain name"),
        ({"learners": {}}, r"learners must be a non-empty mapping"),
        ({"learners": {"x": {"init_args": {}}}}, r"learner 'x' must be a mapping with model"),
        ({"threads": 0}, r"threads must be an integer >= 1, got 0"),
        ({"workers": 0}, r"workers must be an integer >= 1, got 0"),
        ({"max_steps": 0}, r"max_steps must be an integer >= 1, got 0"),
        ({"max_wall_minutes": -1.0}, r"max_wall_minutes must be a number > 0, got -1.0"),
    ],
)
def test_bad_comparison_settings_are_refused_before_anything_is_written(tmp_path, overrides, message):
    with pytest.raises(ComparisonConfigError, match=message):
        _run(tmp_path, **overrides)
    assert not (tmp_path / "results").exists()
    assert not (tmp_path.parent / "victim").exists()


@pytest.mark.slow
def test_a_changed_config_is_refused_with_the_change_named_and_rerun_with_force(tmp_path):
    one = {"lstm": LEARNERS["lstm"]}
    first = _run(tmp_path, learners=one)
    changed = {"lstm": {"model": {**one["lstm"]["model"], "init_args": {**one["lstm"]["model"]["init_args"], "hidden_size": 8}}}}
    with pytest.raises(StaleRunError, match=r"model.init_args.hidden_size: 16 -> 8.*force"):
        _run(tmp_path, learners=changed)
    with pytest.raises(StaleRunError, match=r"budget.max_steps: 8 -> 6"):
        _run(tmp_path, learners=one, max_steps=6)
    rerun = _run(tmp_path, learners=changed, force=True)
    assert rerun[0]["parameters"] < first[0]["parameters"]
    # the stored config is the new one: running it again reuses the result
    mtime = (tmp_path / "results" / "tiny" / "runs" / "lstm-seed0" / "result.json").stat().st_mtime
    assert _run(tmp_path, learners=changed)[0]["mean"] == rerun[0]["mean"]
    assert (tmp_path / "results" / "tiny" / "runs" / "lstm-seed0" / "result.json").stat().st_mtime == mtime
    # force reruns only what changed: a run made with this config is kept
    assert _run(tmp_path, learners=changed, force=True)[0]["mean"] == rerun[0]["mean"]
    assert (tmp_path / "results" / "tiny" / "runs" / "lstm-seed0" / "result.json").stat().st_mtime == mtime


def _as_if_recorded_without(run_dir: Path, key: str) -> None:
    """Make ``run_dir`` look recorded by an rnnmeta whose learner had no argument ``key`` (another fingerprint)."""
    recorded = json.loads((run_dir / "run_config.json").read_text())
    del recorded["config"]["model"]["init_args"][key]
    recorded["fingerprint"] = "0" * 16
    (run_dir / "run_config.json").write_text(json.dumps(recorded))
    result = json.loads((run_dir / "result.json").read_text())
    (run_dir / "result.json").write_text(json.dumps({**result, "config_fingerprint": "0" * 16}))


def test_a_run_recorded_before_an_argument_existed_is_kept_when_the_argument_is_at_its_default(tmp_path, capsys):
    one = {"lstm": LEARNERS["lstm"]}
    first = _run(tmp_path, learners=one)
    run_dir = tmp_path / "results" / "tiny" / "runs" / "lstm-seed0"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    trained_at = checkpoint.stat().st_mtime
    _as_if_recorded_without(run_dir, "key_std")  # LSTMLearner(key_std=2.0) is the default
    capsys.readouterr()
    assert _run(tmp_path, learners=one)[0]["mean"] == first[0]["mean"]
    assert "lstm-seed0: kept, recorded before model.init_args.key_std existed" in capsys.readouterr().out
    assert checkpoint.stat().st_mtime == trained_at  # not trained again
    (plan,) = plan_runs(DATA, one, [0], 8, None, None, 1, QUIET, 100.0)
    assert _result(tmp_path / "results" / "tiny", "lstm-seed0")["config_fingerprint"] == plan.fingerprint
    assert json.loads((run_dir / "run_config.json").read_text())["fingerprint"] == plan.fingerprint
    # an argument that is not at its default was not there when the run was made: refused
    _as_if_recorded_without(run_dir, "hidden_size")  # the config's 16, the default 256
    with pytest.raises(StaleRunError, match=r"model.init_args.hidden_size: \(absent\) -> 16"):
        _run(tmp_path, learners=one)


def test_a_second_comparison_on_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "results" / "tiny"
    with lock_folder(out):
        with pytest.raises(ComparisonLockedError, match=r"is being written by process \d+"):
            _run(tmp_path)
    assert not (out / "runs").exists()
    _run(tmp_path)  # released: it runs
    assert (out / "results.csv").exists()


SHIPPED_COMPARISONS = sorted((REPO / "configs" / "compare").glob("*.yaml"))


def test_comparison_configs_are_shipped():
    assert len(SHIPPED_COMPARISONS) >= 10, SHIPPED_COMPARISONS


# one test per file, so that parallel workers share them (building every learner of a config takes seconds)
@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED_COMPARISONS, ids=lambda path: path.stem)
def test_shipped_comparison_config_checks_out(path):
    cfg = yaml.safe_load(path.read_text())
    rows = list(cfg.get("learners") or {}) + list(cfg.get("baselines") or [])
    if not isinstance(cfg.get("reference"), dict):  # a dict: the paper's curve of scripts/robot_compare.py
        assert cfg.get("reference") in [None, *rows], f"{path.name}: reference {cfg.get('reference')!r} is not a row"
    if "family" in cfg:  # a meta-RL comparison (rnnmeta.rl.compare; tests/test_rl_cli.py)
        return
    plans = plan_runs(
        cfg["data"], cfg["learners"], cfg.get("seeds", [0, 1, 2]), cfg.get("max_steps"), cfg.get("max_cpu_minutes"),
        cfg.get("max_wall_minutes"), cfg.get("threads", 1), cfg.get("trainer"), cfg.get("target"),
    )
    assert len(plans) == len(cfg["learners"]) * len(cfg.get("seeds", [0, 1, 2])), path
    assert len({p.fingerprint for p in plans}) == len(plans)


def test_a_corrupt_last_checkpoint_is_moved_aside_and_the_run_starts_again(tmp_path):
    import torch

    one = {"maml": LEARNERS["maml"]}
    _run(tmp_path, learners=one, max_steps=4)
    run_dir = tmp_path / "results" / "tiny" / "runs" / "maml-seed0"
    (run_dir / "result.json").unlink()
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(b"PK\x03\x04 cut off while writing")
    with pytest.warns(UserWarning, match=r"maml seed 0: checkpoint .*last\.ckpt .*moved it to last\.ckpt\.corrupt"):
        _run(tmp_path, learners=one, max_steps=4)
    assert _result(tmp_path / "results" / "tiny", "maml-seed0")["steps"] == 4
    assert torch.load(last, weights_only=True)["global_step"] == 4
    assert (run_dir / "checkpoints" / "last.ckpt.corrupt").read_bytes().startswith(b"PK")


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_checkpoint_with_the_same_result(tmp_path):
    import torch

    from rnnmeta.compare.runner import run_one

    one = {"maml": LEARNERS["maml"]}
    uninterrupted = _run(tmp_path, learners=one, output_dir=str(tmp_path / "whole"))
    (plan,) = plan_runs(DATA, one, [0], 8, None, None, 1, QUIET, 100.0)
    run_dir = tmp_path / "results" / "tiny" / "runs" / "maml-seed0"
    # a run that stopped after 4 of its 8 steps: it left checkpoints but no result.json
    half = plan_runs(DATA, one, [0], 4, None, None, 1, QUIET, 100.0)[0]
    run_one("tiny", half, run_dir, "rnnmeta")
    (run_dir / "run_config.json").write_text(json.dumps({"fingerprint": plan.fingerprint, "config": plan.resolved()}))
    resumed = _run(tmp_path, learners=one)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 8
    assert [r["mean"] for r in resumed] == [r["mean"] for r in uninterrupted]
    # the monitor's counters travelled in the checkpoint: all 8 steps are counted once, not 4 + 8
    result = _result(tmp_path / "results" / "tiny", "maml-seed0")
    assert result["train_episodes"] == 8 * 4 and [p["step"] for p in result["curve"]] == [4, 8]


def _workers_of(folder: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "rnnmeta.compare.workers" in cmdline and str(folder) in cmdline:
                found.append(int(proc.name))
    return found


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads the process table from /proc")
@pytest.mark.slow
def test_worker_processes_end_when_the_comparison_is_killed(tmp_path):
    import signal
    import time

    out = tmp_path / "results"
    script = (
        "from rnnmeta.compare import compare\n"
        f"compare(name='tiny', data={DATA!r}, learners={LEARNERS!r}, seeds=[0], max_steps=100000,\n"
        f"        trainer={QUIET!r}, output_dir={str(out)!r}, workers=2)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 120
        while len(_workers_of(out)) < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert len(_workers_of(out)) == 2, "the two worker processes did not start"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.time() + 120  # a worker still importing torch checks once its imports are done
    while _workers_of(out) and time.time() < deadline:
        time.sleep(0.5)
    assert _workers_of(out) == []  # orphaned workers stop by themselves; a rerun resumes their checkpoints


def test_the_learners_task_is_linked_from_the_data():
    """kind and n_way are stated once, in data: a learner's own value is replaced by the data module's."""
    lstm = LEARNERS["lstm"]["model"]
    learners = {"lstm": {"model": {**lstm, "init_args": {**lstm["init_args"], "kind": "classification", "n_way": 7}}}}
    (plan,) = plan_runs(DATA, learners, [0], 4, None, None, 1, {}, None)
    assert plan.model["init_args"]["kind"] == "regression" and plan.model["init_args"]["n_way"] == DATA["init_args"].get("n_way", 5)


def test_a_cosine_schedule_must_end_at_the_learners_budget():
    learners = {"maml": {**LEARNERS["maml"], "max_steps": 6}}
    learners["maml"]["model"] = {**learners["maml"]["model"], "init_args": {
        **learners["maml"]["model"]["init_args"],
        "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR", "init_args": {"T_max": 8}}}}
    with pytest.raises(ComparisonConfigError, match=r"learner 'maml': lr_scheduler CosineAnnealingLR has T_max=8 but the "
                                                    r"learner trains max_steps=6 steps"):
        plan_runs(DATA, learners, [0], 4, None, None, 1, {}, None)


def test_per_learner_trainer_settings_are_checked_and_merged():
    learners = {"maml": {**LEARNERS["maml"], "trainer": {"gradient_clip_val": 1.0}}}
    (plan,) = plan_runs(DATA, learners, [0], 4, None, None, 1, {"log_every_n_steps": 2}, None)
    assert plan.trainer == {"log_every_n_steps": 2, "gradient_clip_val": 1.0}
    with pytest.raises(ComparisonConfigError, match=r"learners\.maml\.trainer\.max_steps is set by the comparison"):
        plan_runs(DATA, {"maml": {**LEARNERS["maml"], "trainer": {"max_steps": 3}}}, [0], 4, None, None, 1, {}, None)


def test_added_defaults_are_found_through_a_constructors_kwargs_and_only_at_their_default():
    from rnnmeta.compare.config import with_added_defaults

    def data(**dataset_args):
        return {"data": {"class_path": "rnnmeta.data.EpisodicDataModule", "init_args": {
            "n_way": 5, "dataset": {"class_path": "rnnmeta.data.CLINC150", "init_args": {"root": "x", **dataset_args}}}}}

    # CLINC150(**kwargs) passes subword_buckets and max_ngrams on to TextDataset, whose defaults are 0 and 16
    new = data(subword_buckets=0, max_ngrams=16, max_vocab=99)
    filled, added = with_added_defaults(data(), new)
    assert added == ["data.init_args.dataset.init_args.max_ngrams", "data.init_args.dataset.init_args.subword_buckets"]
    assert filled == data(subword_buckets=0, max_ngrams=16)  # max_vocab=99 is not TextDataset's default: not filled
    # another class at the same place: nothing is assumed
    other = {"data": {**new["data"], "init_args": {**new["data"]["init_args"], "dataset": {
        "class_path": "rnnmeta.data.Sinusoid", "init_args": {"root": "x", "subword_buckets": 0}}}}}
    assert with_added_defaults(data(), other) == (data(), [])
