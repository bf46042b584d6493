"""``rnnmeta fit``/``test`` with a meta-RL config, and ``rnnmeta compare`` with a meta-RL comparison config."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from rnnmeta.cli import main as cli_main
from rnnmeta.compare import main as compare_main
from rnnmeta.rl.compare import RLComparisonError, is_rl_comparison

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["bandits_n10_k5_rl2", "bandits_n10_k5_rl2_trpo"])
def test_fit_then_test_an_rl_config(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(REPO / f"configs/rl/{name}.yaml")
    small = ["--trainer.max_steps", "8", "--trainer.val_check_interval", "4", "--trainer.logger", "false",
             "--trainer.enable_progress_bar", "false", "--model.init_args.hidden_size", "8", "--model.init_args.batch_trials", "4",
             "--model.init_args.val_trials", "20", "--model.init_args.test_trials", "30"]
    cli_main(["fit", "--config", config, *small])
    out = capsys.readouterr().out
    last = next(line.split()[-1] for line in out.splitlines() if "last checkpoint" in line)
    assert Path(last).is_file()
    cli_main(["test", "--config", config, *small, "--ckpt_path", last])
    assert "test/return" in capsys.readouterr().out


def test_fit_resume_and_test_maml_with_the_trpo_outer_step(tmp_path, capsys, monkeypatch):
    """The TRPO config through the CLI (manual optimisation): two trust-region steps, a third resumed from the
    checkpoint, then a test from it."""
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs/rl/point2d_maml_trpo.yaml")
    small = ["--trainer.val_check_interval", "2", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
             "--model.init_args.hidden_sizes", "[8]", "--model.init_args.batch_trials", "2", "--model.init_args.n_episodes", "8",
             "--model.init_args.train_chunk_episodes", "2", "--model.init_args.family.init_args.horizon", "5",
             "--model.init_args.val_trials", "4", "--model.init_args.test_trials", "6"]
    cli_main(["fit", "--config", config, "--trainer.max_steps", "2", *small])
    last = next(line.split()[-1] for line in capsys.readouterr().out.splitlines() if "last checkpoint" in line)
    import torch

    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == 2 and checkpoint["optimizer_states"][0]["param_groups"][0]["max_kl"] == 0.01
    cli_main(["fit", "--config", config, "--trainer.max_steps", "3", *small, "--ckpt_path", last])
    resumed = next(line.split()[-1] for line in capsys.readouterr().out.splitlines() if "last checkpoint" in line)
    assert torch.load(resumed, weights_only=False)["global_step"] == 3
    cli_main(["test", "--config", config, *small, "--ckpt_path", resumed])
    assert "test/return" in capsys.readouterr().out


def test_rl_config_errors_name_the_value(tmp_path, capsys):
    config = str(REPO / "configs/rl/bandits_n10_k5_rl2.yaml")
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", config, "--model.init_args.n_episodes", "0", "--trainer.logger", "false"])
    assert "n_episodes" in capsys.readouterr().err


def _comparison(tmp_path: Path, **extra) -> Path:
    cfg = {
        "name": "tiny",
        "family": {"class_path": "rnnmeta.rl.BernoulliBandits", "init_args": {"n_arms": 2}},
        "n_episodes": 5,
        "test_trials": 40,
        "val_trials": 20,
        "seeds": [0],
        "max_steps": 4,
        "val_check_interval": 2,
        "baselines": ["random", "gittins"],
        "paper": {"gittins": 3.0},
        "output_dir": str(tmp_path / "results"),
        "learners": {"rl2": {"model": {"class_path": "rnnmeta.rl.RL2", "init_args": {"hidden_size": 8, "batch_trials": 4}}}},
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_compare_writes_one_table_with_the_classical_rows(tmp_path):
    path = _comparison(tmp_path)
    assert is_rl_comparison(["--config", str(path)])
    compare_main(["--config", str(path)])
    out = tmp_path / "results" / "tiny"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["learner"] for r in rows] == ["random", "gittins", "rl2"]
    assert len({r["test_fingerprint"] for r in rows}) == 1 and all(r["test_trials"] == "40" for r in rows)
    assert rows[1]["paper"] == "3.0" and rows[2]["kind"] == "RL2"
    assert (out / "curves.png").is_file() and (out / "costs.md").is_file()
    result = out / "runs" / "rl2-seed0" / "result.json"
    before = json.loads(result.read_text())
    assert before["steps"] == 4 and before["curve"]
    compare_main(["--config", str(path)])  # finished runs are loaded, not retrained: the same record
    assert json.loads(result.read_text()) == before
    # the memory agent's control: its test trials again with the reward input at 0, recomputed here from its checkpoint
    import torch

    from rnnmeta.rl.compare import _reward_input_off_evaluation, load_run_agent

    assert rows[0]["reward_input_off"] == "nan" and float(rows[2]["reward_input_off"]) == pytest.approx(before["reward_input_off"])
    agent = load_run_agent(out / "runs" / "rl2-seed0")  # the trained agent, built from the run's recorded spec
    assert (agent.family.n_arms, agent.n_episodes, agent.test_trials, agent.training) == (2, 5, 40, False)
    weights = torch.load(out / "runs" / "rl2-seed0" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(v, agent.state_dict()[k]) for k, v in weights.items())
    with pytest.raises(RLComparisonError, match=r"runs has no result.json \(the record of a finished run\)"):
        load_run_agent(out / "runs")
    control = _reward_input_off_evaluation(agent)
    assert control.mean == pytest.approx(before["reward_input_off"]) and control.ci95 == pytest.approx(before["reward_input_off_ci95"])
    assert "reward_input_off: a memory agent's mean total reward" in (out / "results.md").read_text()
    # a run finished before the control existed gets it from its last checkpoint, nothing retrained
    older = {k: v for k, v in before.items() if not k.startswith("reward_input_off")}
    result.write_text(json.dumps(older))
    compare_main(["--config", str(path)])
    assert json.loads(result.read_text()) == before
    with pytest.raises(RLComparisonError, match="another config"):
        compare_main(["--config", str(path), "--max_steps", "6"])


def test_compare_sets_every_row_beside_the_reference_trial_by_trial(tmp_path):
    import torch

    from rnnmeta.rl import BernoulliBandits
    from rnnmeta.rl.classical import make_baseline
    from rnnmeta.rl.trial import eval_tasks, evaluate

    path = _comparison(tmp_path, reference="random")
    compare_main(["--config", str(path)])
    out = tmp_path / "results" / "tiny"
    rows = {r["learner"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert all(r["vs"] == "random" for r in rows.values()) and rows["random"]["paired_diff"] == ""
    # the agent's test trials are kept, and they are the ones its mean is taken over
    agent_trials = torch.tensor(json.loads((out / "runs" / "rl2-seed0" / "result.json").read_text())["per_trial"], dtype=torch.float64)
    assert agent_trials.shape == (40,) and float(rows["rl2"]["mean"]) == pytest.approx(float(agent_trials.mean()))
    fam, tasks = BernoulliBandits(2), eval_tasks(BernoulliBandits(2), 40, 0)
    random_trials = evaluate(make_baseline("random"), fam, tasks, 5, seed=0).per_trial
    gittins_trials = evaluate(make_baseline("gittins"), fam, tasks, 5, seed=0).per_trial
    for name, trials in (("rl2", agent_trials), ("gittins", gittins_trials)):
        diff = trials - random_trials
        assert float(rows[name]["paired_diff"]) == pytest.approx(float(diff.mean()))
        assert float(rows[name]["paired_ci95"]) == pytest.approx(1.96 * float(diff.std()) / 40**0.5)
    assert "vs random (paired)" in (out / "results.md").read_text()
    with pytest.raises(RLComparisonError, match=r"reference='ucb1' names no row; expected one of \['random', 'gittins', 'rl2'\]"):
        compare_main(["--config", str(_comparison(tmp_path, reference="ucb1"))])


def test_compare_refuses_bad_settings_before_any_run(tmp_path):
    with pytest.raises(RLComparisonError, match="n_episodes=0"):
        compare_main(["--config", str(_comparison(tmp_path, n_episodes=0))])
    with pytest.raises(RLComparisonError, match="unknown baselines"):
        compare_main(["--config", str(_comparison(tmp_path, baselines=["oracle"]))])
    with pytest.raises(RLComparisonError, match="n_arms"):
        compare_main(["--config", str(_comparison(tmp_path, family={"class_path": "rnnmeta.rl.BernoulliBandits", "init_args": {"n_arms": 0}}))])
    assert not (tmp_path / "results" / "tiny" / "runs").exists()


@pytest.mark.slow
def test_compare_with_portable_numerics_restarts_itself_and_says_so_in_the_table(tmp_path):
    """`numerics: portable` from a native process: the command restarts with the environment (a child here)."""
    import subprocess
    import sys

    from rnnmeta.numerics import environment_is_portable, portable_unsupported_reason

    if portable_unsupported_reason():
        pytest.skip(portable_unsupported_reason())
    assert not environment_is_portable()
    path = _comparison(tmp_path, numerics="portable", baselines=["random"], paper=None)
    with pytest.raises(RLComparisonError, match=r"numerics: portable cannot run in this process: it was not started with MKL_CBWR"):
        from rnnmeta.rl.compare import compare_rl

        compare_rl(**{k: v for k, v in yaml.safe_load(path.read_text()).items()})
    with pytest.raises(RLComparisonError, match=r"numerics must be one of 'native', 'portable', got 'fast'"):
        compare_main(["--config", str(path), "--numerics", "fast"])
    subprocess.run([sys.executable, "-m", "rnnmeta.command", "compare", "--config", str(path)], check=True, capture_output=True)
    out = tmp_path / "results" / "tiny"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["numerics"] for r in rows} == {"portable"}
    (cost,) = [c for c in csv.DictReader((out / "costs.csv").open()) if c["learner"] == "rl2"]
    assert cost["numerics_in_force"].endswith("ATen AVX2, oneDNN off, NNPACK off")
    assert json.loads((out / "runs" / "rl2-seed0" / "result.json").read_text())["config"]["numerics"] == "portable"
