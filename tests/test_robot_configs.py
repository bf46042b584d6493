"""The robot-control configs build the agent and family they name (issue 16), and the comparison runner reads them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import REPO, skip_unless_mujoco_renders

CONFIGS = sorted(p for pattern in ("point2d_*.yaml", "cheetah_*.yaml", "ant_*.yaml") for p in (REPO / "configs" / "rl").glob(pattern))
COMPARES = [REPO / "configs" / "compare" / "point2d.yaml", REPO / "configs" / "compare" / "cheetah_vel.yaml"]


def robot_compare():
    spec = importlib.util.spec_from_file_location("robot_compare", REPO / "scripts" / "robot_compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("robot_compare", module)
    spec.loader.exec_module(module)
    return module


def needs_mujoco(family_path: str) -> None:
    if "mujoco" in family_path:
        try:
            from rnnmeta.rl.mujoco import require_mujoco

            require_mujoco()
        except ImportError as err:
            pytest.skip(f"MuJoCo families skipped, mujoco cannot load: {err}")


def test_every_robot_family_has_a_config_per_agent():
    names = {p.stem for p in CONFIGS}
    for family in ("point2d", "cheetah_vel", "cheetah_dir", "ant_dir"):
        assert {f"{family}_rl2", f"{family}_snail", f"{family}_maml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_robot_config_builds_its_agent(path: Path):
    cfg = yaml.safe_load(path.read_text())
    model = cfg["model"]
    family = model["init_args"].pop("family")
    needs_mujoco(family["class_path"])
    agent = robot_compare().build_agent(model, family)
    assert type(agent).__name__ == model["class_path"].rsplit(".", 1)[1]
    assert type(agent.family).__name__ == family["class_path"].rsplit(".", 1)[1]
    assert agent.family.horizon == family["init_args"]["horizon"]
    assert cfg["trainer"]["max_steps"] >= 1
    if hasattr(agent.family, "close"):
        agent.family.close()


@pytest.mark.parametrize("path", COMPARES, ids=lambda p: p.stem)
def test_robot_comparison_config_builds_every_agent(path: Path):
    cfg = yaml.safe_load(path.read_text())
    needs_mujoco(cfg["family"]["class_path"])
    assert set(cfg["learners"]) == {"rl2", "snail", "maml"}
    rc = robot_compare()
    for name, spec in cfg["learners"].items():
        agent = rc.build_agent(spec["model"], cfg["family"])
        assert spec["max_steps"] >= 1, name
        if hasattr(agent.family, "close"):
            agent.family.close()


@pytest.mark.parametrize("name, env_steps", [("point2d", 18_080_000), ("cheetah_vel", 9_920_000), ("cheetah_dir", 9_920_000)])
def test_the_trpo_comparison_trains_the_trpo_fit_configs_agent(name, env_steps):
    """configs/compare/<name>_maml_trpo.yaml (the numbers of docs/ROBOT.md) and configs/rl/<name>_maml_trpo.yaml
    (``rnnmeta fit``) hold the same agent and budget, and it builds with TRPO as its outer step, on the environment
    steps of the family's PPO comparison (configs/compare/point2d.yaml, cheetah_vel.yaml)."""
    compare_cfg = yaml.safe_load((REPO / "configs" / "compare" / f"{name}_maml_trpo.yaml").read_text())
    fit_cfg = yaml.safe_load((REPO / "configs" / "rl" / f"{name}_maml_trpo.yaml").read_text())
    needs_mujoco(compare_cfg["family"]["class_path"])
    fit_args = dict(fit_cfg["model"]["init_args"])
    assert fit_args.pop("family") == compare_cfg["family"]
    for evaluation_only in ("val_trials", "test_trials"):
        fit_args.pop(evaluation_only)
    if fit_args.get("normalize_observations") is False:  # the default, left out of the comparison
        fit_args.pop("normalize_observations")
    spec = compare_cfg["learners"]["maml"]
    assert spec["model"]["init_args"] == fit_args and spec["max_steps"] == fit_cfg["trainer"]["max_steps"]
    configs = [compare_cfg]
    if name == "point2d":
        paper = yaml.safe_load((REPO / "configs" / "compare" / "point2d_maml_trpo_paper.yaml").read_text())
        assert paper["family"] == compare_cfg["family"] and paper["learners"]["maml"]["model"]["init_args"]["inner_steps"] == 1
        configs.append(paper)
    for cfg in configs:
        agent = robot_compare().build_agent(cfg["learners"]["maml"]["model"], cfg["family"])
        assert agent.uses_trpo and not agent.automatic_optimization and agent.updates_per_iteration == 1
        assert cfg["learners"]["maml"]["max_steps"] * agent.batch_trials * agent.train_trial_len == env_steps
        if hasattr(agent.family, "close"):
            agent.family.close()


def test_the_comparisons_seed_reaches_each_agents_training_stream_unless_the_agent_names_one():
    family = {"class_path": "rnnmeta.rl.navigation.PointNavigation2D", "init_args": {"horizon": 10}}
    model = {"class_path": "rnnmeta.rl.RL2", "init_args": {"n_episodes": 2, "hidden_size": 8}}
    rc = robot_compare()
    assert rc.build_agent(model, family, seed=3).seed == 3
    assert rc.build_agent(model, family).seed == 0  # the agent's own default
    own = {"class_path": "rnnmeta.rl.RL2", "init_args": {"n_episodes": 2, "hidden_size": 8, "seed": 5}}
    assert rc.build_agent(own, family, seed=3).seed == 5
    assert model["init_args"] == {"n_episodes": 2, "hidden_size": 8}  # the config is not modified


def test_robot_compare_reports_each_agents_training_steps_and_the_median_test_goal(tmp_path, monkeypatch, capsys):
    """A tiny end-to-end run: MAMLRL trained through 1 inner step and evaluated over 2 counts the environment steps
    of its (shorter) training trials; every row carries the median test goal's return in the last stage and the paired
    gain of the last stage over the first."""
    import csv

    import torch

    cfg = {
        "name": "tiny", "threads": 1, "seed": 0, "test_trials": 6,
        "family": {"class_path": "rnnmeta.rl.navigation.PointNavigation2D", "init_args": {"horizon": 4}},
        "learners": {
            "rl2": {"max_steps": 2, "model": {"class_path": "rnnmeta.rl.RL2",
                                               "init_args": {"n_episodes": 2, "hidden_size": 8, "batch_trials": 3}}},
            "maml": {"max_steps": 2, "model": {"class_path": "rnnmeta.rl.MAMLRL", "init_args": {
                "n_episodes": 6, "inner_steps": 1, "eval_inner_steps": 2, "later_inner_lr": 0.05, "hidden_sizes": [8],
                "batch_trials": 3, "ppo_epochs": 1}}},
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr(sys, "argv", ["robot_compare.py", "--config", str(path), "--out", str(tmp_path / "out")])
    robot_compare().main()
    rows = {r["agent"]: r for r in csv.DictReader(open(tmp_path / "out" / "results.csv"))}
    assert int(rows["maml"]["env_steps"]) == 2 * 3 * 4 * 4  # 2 iterations x 3 trials x 4 training episodes x 4 steps
    assert int(rows["rl2"]["env_steps"]) == 1 * 3 * 2 * 4  # 4 updates per iteration: one iteration
    assert [k for k in rows["maml"] if k.startswith("step_")] == ["step_0", "step_1", "step_2"]  # evaluated over 2 steps
    for name in ("rl2", "maml"):
        stages = torch.load(tmp_path / "out" / f"{name}_result.pt", weights_only=False)["stages"]
        assert float(rows[name]["last_stage_median"]) == pytest.approx(float(stages[:, -1].median()), abs=5e-3)
        gain, ci = (float(x) for x in rows[name]["adaptation_gain"].split(" +- "))
        differences = stages[:, -1] - stages[:, 0]  # paired per test task
        assert gain == pytest.approx(float(differences.mean()), abs=5e-3)
        assert ci == pytest.approx(1.96 * float(differences.std()) / len(differences) ** 0.5, rel=0.02, abs=5e-3)
    assert "the 5 worst test goals in the last step" in capsys.readouterr().out
    # the training curves: one row per batch of training trials, the environment steps spent so far, the batch's
    # return per episode (MAMLRL: 2 iterations of 3 trials x 4 training episodes of 4 steps; RL2: 1 of 3 x 2 x 4)
    for name, per_batch, iterations in (("maml", 3 * 4 * 4, 2), ("rl2", 3 * 2 * 4, 1)):
        curve = list(csv.DictReader(open(tmp_path / "out" / f"training_{name}.csv")))
        assert [int(r["env_steps"]) for r in curve] == [per_batch * (i + 1) for i in range(iterations)]
        # an episode is 4 steps at most 0.71 + 0.4 from the goal: per episode above -4.45 (a trial's sum is not)
        assert all(-4.45 < float(r["return_per_episode"]) < 0.0 for r in curve)
    assert (tmp_path / "out" / "training.png").stat().st_size > 0
    # the memory agent's control: the same test trials with its reward input off, paired per task
    saved = torch.load(tmp_path / "out" / "rl2_result.pt", weights_only=False)
    assert saved["blind_stages"].shape == saved["stages"].shape == (6, 2)
    assert rows["maml"]["blind_return"] == rows["maml"]["reward_input_gain"] == ""  # MAMLRL has no reward input
    gain, ci = (float(x) for x in rows["rl2"]["reward_input_gain"].split(" +- "))
    differences = saved["stages"].mean(1) - saved["blind_stages"].mean(1)
    assert gain == pytest.approx(float(differences.mean()), abs=5e-3)
    assert ci == pytest.approx(1.96 * float(differences.std()) / len(differences) ** 0.5, rel=0.02, abs=5e-3)
    assert float(rows["rl2"]["blind_return"].split(" +- ")[0]) == pytest.approx(float(saved["blind_stages"].mean()), abs=5e-3)
    # --eval-only tests the saved agents again: the same table (the evaluation is a function of the checkpoint and the
    # config's tasks and seed), the training record kept
    before = (tmp_path / "out" / "results.csv").read_text()
    monkeypatch.setattr(sys, "argv", ["robot_compare.py", "--config", str(path), "--out", str(tmp_path / "out"), "--eval-only"])
    capsys.readouterr()
    robot_compare().main()
    printed = capsys.readouterr().out
    assert printed.count("tested again from") == 2 and "update 1/" not in printed
    assert (tmp_path / "out" / "results.csv").read_text() == before
    # --test-trials N: the same agents on N test tasks, of which the config's 6 are the first (one seeded draw)
    monkeypatch.setattr(sys, "argv", ["robot_compare.py", "--config", str(path), "--out", str(tmp_path / "out"), "--eval-only",
                                      "--test-trials", "9"])
    robot_compare().main()
    assert torch.load(tmp_path / "out" / "rl2_result.pt", weights_only=False)["stages"].shape == (9, 2)
    assert len(list(csv.DictReader(open(tmp_path / "out" / "results.csv")))) == 2
    from rnnmeta.rl.navigation import PointNavigation2D
    from rnnmeta.rl.trial import eval_tasks

    family = PointNavigation2D(horizon=4)
    torch.testing.assert_close(eval_tasks(family, 9, 0)["goal"][:6], eval_tasks(family, 6, 0)["goal"])
    monkeypatch.setattr(sys, "argv", ["robot_compare.py", "--config", str(path), "--eval-only", "--test-trials", "1"])
    with pytest.raises(SystemExit):
        robot_compare().main()
    assert "--test-trials must be >= 2" in capsys.readouterr().err


def test_linear_fit_is_the_least_squares_slope_and_the_correlation():
    rc = robot_compare()
    g = torch.Generator().manual_seed(0)
    target = torch.rand(50, generator=g) * 2
    achieved = 0.4 * target + 0.1 * torch.randn(50, generator=g)
    slope, corr = rc.linear_fit(target, achieved)
    design = torch.stack([target, torch.ones(50)], 1).double()
    expected = torch.linalg.lstsq(design, achieved.double().unsqueeze(1)).solution[0, 0]
    assert slope == pytest.approx(float(expected), rel=1e-9)
    assert corr == pytest.approx(float(torch.corrcoef(torch.stack([target, achieved]))[0, 1]), abs=1e-6)
    assert rc.linear_fit(target, torch.full((50,), 0.3)) == (pytest.approx(0.0), pytest.approx(0.0))  # no tracking: 0, 0


def tiny_cheetah_agents(tmp_path: Path):
    """A HalfCheetahDir comparison config of RL2 (3 episodes) and MAMLRL (2 + 2 episodes), horizon 4, two test trials,
    and each agent after one update saved as ``robot_compare`` saves it; plus an agent with no checkpoint."""
    import pytorch_lightning as pl

    family = {"class_path": "rnnmeta.rl.mujoco.HalfCheetahDir", "init_args": {"horizon": 4}}
    cfg = {
        "name": "tiny_cheetah", "threads": 1, "test_trials": 2, "video": True, "video_every": 2, "family": family,
        "learners": {
            "rl2": {"max_steps": 1, "model": {"class_path": "rnnmeta.rl.RL2",
                                               "init_args": {"n_episodes": 3, "hidden_size": 8, "batch_trials": 2}}},
            "maml": {"max_steps": 1, "model": {"class_path": "rnnmeta.rl.MAMLRL", "init_args": {
                "n_episodes": 4, "inner_steps": 1, "hidden_sizes": [8], "batch_trials": 2, "ppo_epochs": 1}}},
        },
    }
    rc = robot_compare()
    agents = {name: rc.build_agent(spec["model"], family) for name, spec in cfg["learners"].items()}
    out = tmp_path / "out"
    out.mkdir()
    for name, agent in agents.items():  # one update each
        trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0)
        trainer.fit(agent)
        trainer.save_checkpoint(out / f"{name}.ckpt")
        agent.family.close()
    cfg["learners"]["snail"] = {"max_steps": 1, "model": {"class_path": "rnnmeta.rl.SNAILAgent"}}  # no checkpoint
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return rc, agents, path, out


def test_robot_compare_video_only_renders_each_stage_from_the_saved_agents(tmp_path, monkeypatch, capsys):
    """``--video-only`` trains nothing and renders test trial 1 of each agent from its ``<agent>.ckpt``: for MAMLRL
    the first episode after 0 and after 1 inner step, for RL2 every episode; every ``video_every``-th step."""
    skip_unless_mujoco_renders()
    from PIL import Image

    rc, agents, path, out = tiny_cheetah_agents(tmp_path)
    assert rc.stage_episodes(agents["rl2"]) == {0: "episode 1", 1: "episode 2", 2: "episode 3"}
    assert rc.stage_episodes(agents["maml"]) == {0: "after 0 steps", 2: "after 1 step"}  # chunks of 2 episodes
    monkeypatch.setattr(sys, "argv", ["robot_compare.py", "--config", str(path), "--out", str(out), "--video-only"])
    capsys.readouterr()
    rc.main()
    printed = capsys.readouterr().out
    assert printed.count("video of test trial 1") == 2 and "update" not in printed  # rendered, nothing trained
    assert f"snail: no {out / 'snail.ckpt'}, nothing to render" in printed
    for name, episodes in (("maml", 2), ("rl2", 3)):
        with Image.open(out / f"{name}_trial.gif") as gif:
            assert gif.size == (320, 240) and gif.n_frames == episodes * 3  # t = 0, 2, 4 of each shown episode
    assert not (out / "results.csv").exists()


def test_robot_compare_eval_only_tracks_the_task_on_half_cheetah(tmp_path, monkeypatch, capsys):
    """``--eval-only`` on HalfCheetahDir: per stage, the slope and correlation of each test episode's forward velocity
    against the task's direction (and, for RL2, the same with its reward input off), in the table and the result file."""
    needs_mujoco("rnnmeta.rl.mujoco")
    import csv

    from rnnmeta.rl.mujoco import HalfCheetahDir
    from rnnmeta.rl.trial import eval_tasks

    rc, agents, path, out = tiny_cheetah_agents(tmp_path)
    monkeypatch.setattr(sys, "argv", ["robot_compare.py", "--config", str(path), "--out", str(out), "--eval-only"])
    rc.main()
    assert f"snail: no {out / 'snail.ckpt'}, nothing to test" in capsys.readouterr().out
    rows = {r["agent"]: r for r in csv.DictReader(open(out / "results.csv"))}
    family = HalfCheetahDir(horizon=4)
    direction = eval_tasks(family, 2, 0, "test")["direction"]
    family.close()
    for name, keys in (("rl2", ["episode 1", "episode 2", "episode 3"]), ("maml", ["after 0 steps", "after 1 step"])):
        saved = torch.load(out / f"{name}_result.pt", weights_only=False)
        assert list(saved["tracking"]) == keys and ("blind_tracking" in saved) == (name == "rl2")
        for slope, corr in saved["tracking"].values():
            assert -1.0 - 1e-9 <= corr <= 1.0 + 1e-9 and slope == slope  # finite
        assert rows[name]["tracking_first"] == "slope {:.2f}, corr {:.2f}".format(*saved["tracking"][keys[0]])
        assert rows[name]["tracking_last"] == "slope {:.2f}, corr {:.2f}".format(*saved["tracking"][keys[-1]])
    assert direction.abs().eq(1).all()


@pytest.mark.parametrize("family", ["cheetah_vel", "cheetah_dir"])
@pytest.mark.parametrize("agent", ["rl2", "snail"])
def test_the_cheetah_fit_configs_hold_the_comparisons_recipe(agent, family):
    """configs/rl/<family>_<agent>.yaml (``rnnmeta fit``) trains the agent of configs/compare/<family>.yaml
    (the rows of docs/ROBOT.md), its learning rate decayed to 0 over its own trainer.max_steps."""
    compare_cfg = yaml.safe_load((REPO / "configs" / "compare" / f"{family}.yaml").read_text())
    fit_cfg = yaml.safe_load((REPO / "configs" / "rl" / f"{family}_{agent}.yaml").read_text())
    spec = compare_cfg["learners"][agent]
    fit_args, compare_args = dict(fit_cfg["model"]["init_args"]), dict(spec["model"]["init_args"])
    assert fit_cfg["model"]["class_path"] == spec["model"]["class_path"]
    assert fit_args.pop("family")["class_path"] == compare_cfg["family"]["class_path"]
    for evaluation_only in ("val_trials", "test_trials"):
        fit_args.pop(evaluation_only)
    fit_schedule, compare_schedule = fit_args.pop("lr_scheduler"), compare_args.pop("lr_scheduler")
    assert fit_args == compare_args and fit_args["scale_rewards"] is True
    assert fit_schedule["class_path"] == compare_schedule["class_path"] == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert fit_schedule["init_args"]["T_max"] == fit_cfg["trainer"]["max_steps"]
    assert compare_schedule["init_args"]["T_max"] == spec["max_steps"]


RESUMED_AGENTS = {
    # PPO, automatic optimisation: 4 updates an iteration, a resume checkpoint every iteration
    # (with a learning-rate schedule: a factory among the hyperparameters that must load with weights_only=True)
    "rl2": {"class_path": "rnnmeta.rl.RL2", "init_args": {"n_episodes": 2, "hidden_size": 8, "batch_trials": 3,
                                                         "normalize_observations": True,
                                                         "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
                                                                          "init_args": {"T_max": 12}}}},
    # TRPO, manual optimisation: one update an iteration, a resume checkpoint after every update
    "maml": {"class_path": "rnnmeta.rl.MAMLRL", "init_args": {"n_episodes": 2, "hidden_sizes": [8], "batch_trials": 3,
                                                              "normalize_observations": True, "adapt_log_std": True,
                                                              "optimizer": {"class_path": "rnnmeta.rl.TRPO",
                                                                            "init_args": {"max_kl": 0.01}}}},
}


@pytest.mark.parametrize("name, resumed_at", [("rl2", 4), ("maml", 5)])
def test_an_interrupted_robot_compare_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(name, resumed_at, tmp_path,
                                                                                                     monkeypatch, capsys):
    """robot_compare keeps a resume checkpoint every few iterations (``<agent>_resume/last.ckpt``, with the training
    curve and the CPU seconds so far); a rerun of the same command resumes from it, ends with the same agent, test
    table and training curve as a run that never stopped, and removes the folder. A folder left by another config
    is refused with the path to delete. Both optimisation paths: PPO (automatic) and TRPO (manual)."""
    import csv

    import torch

    rc = robot_compare()
    cfg = {
        "name": "tiny", "threads": 1, "seed": 0, "test_trials": 4,
        "family": {"class_path": "rnnmeta.rl.navigation.PointNavigation2D", "init_args": {"horizon": 4}},
        "learners": {name: {"max_steps": 12, "model": RESUMED_AGENTS[name]}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))

    def run(out: str) -> None:
        monkeypatch.setattr(sys, "argv", ["robot_compare.py", "--config", str(path), "--out", str(tmp_path / out)])
        rc.main()

    run("whole")
    original = rc.TrainingProgress.on_train_batch_end

    def stop_after_update_6(self, trainer, *args):
        original(self, trainer, *args)
        if trainer.global_step == 6:  # before the checkpoint of update 6: rl2's last is update 4, maml's update 5
            raise RuntimeError("interrupted")

    monkeypatch.setattr(rc.TrainingProgress, "on_train_batch_end", stop_after_update_6)
    with pytest.raises(RuntimeError, match="interrupted"):
        run("stopped")
    resume = tmp_path / "stopped" / f"{name}_resume" / "last.ckpt"
    assert torch.load(resume, weights_only=False)["global_step"] == resumed_at
    monkeypatch.setattr(rc.TrainingProgress, "on_train_batch_end", original)
    capsys.readouterr()
    run("stopped")
    printed = capsys.readouterr().out
    assert "resumed from" in printed and f"update {resumed_at}/12" not in printed and "update 8/12" in printed, printed
    assert not resume.parent.exists()
    whole, stopped = (torch.load(tmp_path / out / f"{name}.ckpt", weights_only=False) for out in ("whole", "stopped"))
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, stopped["state_dict"][key]), key
    for table in ("results.csv", f"training_{name}.csv"):
        keep = [k for k in next(csv.DictReader(open(tmp_path / "whole" / table))) if k not in ("train_cpu_s", "train_wall_s", "cpu_s")]
        rows = [[{k: r[k] for k in keep} for r in csv.DictReader(open(tmp_path / out / table))] for out in ("whole", "stopped")]
        assert rows[0] == rows[1], table
    # a resume folder left by another budget is refused, not silently continued
    (tmp_path / "stopped" / f"{name}_resume").mkdir()
    torch.save({"callbacks": {"TrainingProgress": {"identity": "another"}}}, resume)
    with pytest.raises(SystemExit, match=rf"another config.*delete .*{name}_resume"):
        run("stopped")
