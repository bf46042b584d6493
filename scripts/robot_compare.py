"""Compare meta-RL agents on one robot-control task family: train each, test on fixed tasks, table and plots.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/robot_compare.py --config configs/compare/point2d.yaml

The config (``configs/compare/point2d.yaml``, ``configs/compare/cheetah_vel.yaml``) names one task
``family`` shared by every agent, the fixed test set (``test_trials`` tasks drawn with ``eval_seed``:
the same tasks and the same environment randomness for every agent), and per agent its ``model``
(as ``rnnmeta fit`` takes it: ``class_path`` and ``init_args``, without ``family``, which is injected)
and its budget ``max_steps`` (optimiser updates; the table also prints the environment steps they
cost). The config's ``seed`` (default 0) seeds each agent's initialisation and training task stream.
Agents train one after another, each with ``threads`` torch threads, and print their
training return as they go.

Written to ``--out`` (default ``results/<name>/``):

* ``results.csv`` and the printed table: per agent, the mean test return of each episode of a trial
  (memory agents: episode 1..n) or of each adaptation stage (MAMLRL: after 0..k inner steps, the mean
  episode return of each chunk), with 95% CIs, the median test task's return in the last stage, the
  updates, environment steps, CPU seconds of training (2D navigation also prints the 5 worst test goals),
  and the ``adaptation_gain``: the last stage minus the first, per test task, mean +- 95% CI. Paired
  over the same tasks, it shows adaptation that the stages' own CIs (spread by how hard the tasks
  are) hide;
* ``adaptation.png``: those curves side by side (with the paper's reference curve when the config
  gives one), :func:`rnnmeta.rl.robot_viz.plot_adaptation`;
* ``training.png`` and ``training_<agent>.csv``: each agent's training curve, the mean return per
  episode of every batch of training trials against the environment steps spent
  (:func:`~rnnmeta.rl.robot_viz.plot_training`);
* ``trajectories_<agent>.png`` for 2D navigation (:func:`~rnnmeta.rl.robot_viz.plot_point_trajectories`);
* ``<agent>.ckpt``: the trained agent (Lightning checkpoint; the observation statistics included);
* ``<agent>_resume/last.ckpt`` while an agent trains: a checkpoint about every 40th of its updates (at least one
  iteration apart), with the training curve and the CPU seconds so far. Run the same command again after an
  interruption and the agent resumes there. It ends with the agent, test table and curve that an uninterrupted run
  gives, and the folder is removed. A folder left by another config, budget or seed is refused, with its path named;
* ``<agent>_trial.gif`` with ``video: true`` (MuJoCo families): test trial 1 of the trained agent,
  rendered, every ``video_every``-th step (:func:`~rnnmeta.rl.robot_viz.record_trial`): every episode
  of a memory agent's trial, or for MAMLRL the first episode after each number of inner steps, each
  frame captioned with its stage, step and return so far (``after 1 step | t=40 | return 12.3``).
  ``--video-only`` renders it from the ``<agent>.ckpt`` files already in the output folder, training nothing.

For the memory agents (RL2, SNAILAgent) the table also holds the control of their adaptation: the same test
trials with the agent's reward input at 0 (``blind_return``), and ``reward_input_gain``, the return per
episode it earns by reading rewards, paired per task. The task reaches a memory agent only through its
rewards, so this gain shows adaptation even where it happens within the first episode and the
``adaptation_gain`` (later episodes over the first) is 0. On HalfCheetah the rows add ``tracking_first`` /
``tracking_last``: in the first and last stage, the slope and correlation of the velocity each test episode
ran at against its task's target (velocity, or direction +-1); an agent that does not adapt scores 0.
``--eval-only`` tests the saved ``<agent>.ckpt`` files again (keeping their training record) and reports.
``--test-trials N`` tests on ``N`` tasks instead of the config's ``test_trials`` (the same ``eval_seed``: the
config's tasks come first, the action noise is drawn anew for the larger batch): an episode-2 gain of about one
point on HalfCheetah needs about 1,000 test tasks to show (docs/ROBOT.md).
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import hashlib
import json
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint


def build_agent(model_cfg: dict[str, Any], family_cfg: dict[str, Any], seed: Optional[int] = None):
    """The agent of ``model_cfg`` (class_path/init_args) on the family of ``family_cfg``, through jsonargparse;
    ``seed`` (the config's) seeds its training task stream unless ``init_args`` name a seed of their own."""
    from jsonargparse import ArgumentParser

    from rnnmeta.rl.agent import MetaRLAgent

    cfg = copy.deepcopy(model_cfg)
    cfg.setdefault("init_args", {})["family"] = copy.deepcopy(family_cfg)
    if seed is not None:
        cfg["init_args"].setdefault("seed", seed)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(MetaRLAgent, "model")
    return parser.instantiate_classes(parser.parse_object({"model": cfg})).model


def stage_returns(agent, episode_returns_: torch.Tensor) -> tuple[torch.Tensor, str]:
    """``[n, k]`` returns per stage and the x label: per episode (memory agents) or per chunk (MAMLRL)."""
    from rnnmeta.rl.maml_rl import MAMLRL

    if isinstance(agent, MAMLRL):
        cols, start = [], 0
        for e in agent.chunk_episodes:
            cols.append(episode_returns_[:, start:start + e].mean(1))
            start += e
        return torch.stack(cols, 1), "steps"
    return episode_returns_, "episodes"


def linear_fit(target: torch.Tensor, achieved: torch.Tensor) -> tuple[float, float]:
    """Slope of the least-squares line of ``achieved`` on ``target`` ``[n]``, and their correlation."""
    x, y = target.double(), achieved.double()
    xc, yc = x - x.mean(), y - y.mean()
    slope = float((xc * yc).sum() / (xc * xc).sum().clamp_min(1e-12))
    corr = float((xc * yc).sum() / ((xc * xc).sum() * (yc * yc).sum()).sqrt().clamp_min(1e-12))
    return slope, corr


def evaluate(agent, family, tasks, eval_seed: int) -> dict[str, Any]:
    """The test rollouts of a trained agent on ``tasks``: ``traj``, ``stages [n, k]`` and ``kind``; for a memory agent
    also ``blind_stages [n, k]``, the same trials with its reward input off (:meth:`~rnnmeta.rl.agent.SequenceAgent.reward_input_off`,
    the control of adaptation); for a family with ``task_tracking`` (HalfCheetah) ``tracking``: per stage of
    :func:`stage_episodes`, the slope and correlation of what the episode did (its velocity) against the task's target
    (and ``blind_tracking``, the same for the control's trials)."""
    from rnnmeta.rl.agent import SequenceAgent
    from rnnmeta.rl.robot_viz import episode_returns

    traj = agent.rollout(family, tasks, seed=eval_seed)
    stages, kind = stage_returns(agent, episode_returns(traj, family.horizon))
    result: dict[str, Any] = {"traj": traj, "stages": stages, "kind": kind}
    played = {"tracking": traj}
    if isinstance(agent, SequenceAgent):
        with agent.reward_input_off():
            played["blind_tracking"] = blind = agent.rollout(family, tasks, seed=eval_seed)
        result["blind_stages"] = stage_returns(agent, episode_returns(blind, family.horizon))[0]
    if hasattr(family, "task_tracking"):
        target = tasks[family.tracked_task]
        for key, trials in played.items():
            achieved = family.task_tracking(trials.obs)
            result[key] = {label: linear_fit(target, achieved[:, e]) for e, label in stage_episodes(agent).items()}
    return result


def stage_columns(stages: torch.Tensor, kind: str) -> dict[str, str]:
    """``{"episode_1": "mean +- ci", ...}`` (memory agents) or ``{"step_0": ..., ...}`` (MAMLRL) of ``stages [n, k]``."""
    from rnnmeta.rl.robot_viz import mean_ci

    mean, ci = mean_ci(stages)
    first = 0 if kind == "steps" else 1
    return {f"{kind[:-1]}_{i + first}": f"{m:.2f} +- {c:.2f}" for i, (m, c) in enumerate(zip(mean.tolist(), ci.tolist()))}


def stage_episodes(agent) -> dict[int, str]:
    """The episodes of a test trial that show each stage, with labels (for the 2D paths and the video): every
    episode of a memory agent's trial; for MAMLRL the first episode after each number of inner steps (0..k)."""
    from rnnmeta.rl.maml_rl import MAMLRL

    if isinstance(agent, MAMLRL):
        starts = [sum(agent.chunk_episodes[:j]) for j in range(len(agent.chunk_episodes))]
        return {e: f"after {j} step{'s' if j != 1 else ''}" for j, e in enumerate(starts)}
    return {e: f"episode {e + 1}" for e in range(agent.n_episodes)}


def write_video(agent, family, tasks, out: Path, name: str, eval_seed: int, every: int) -> None:
    """``<name>_trial.gif``: test trial 1 of ``agent``, rendered (:func:`stage_episodes`); says why when it cannot."""
    from rnnmeta.rl.base import index_tasks
    from rnnmeta.rl.robot_viz import record_trial

    try:
        gif = record_trial(agent.actor(), family, index_tasks(tasks, slice(0, 1)), agent.n_episodes,
                           out / f"{name}_trial.gif", seed=eval_seed, every=every, episodes=stage_episodes(agent))
        print(f"{name}: video of test trial 1 in {gif}", flush=True)
    except Exception as err:  # rendering is optional: say why there is none
        print(f"{name}: no video ({type(err).__name__}: {err}); see docs/ROBOT.md, 'What to look at'", flush=True)


def save_result(out: Path, name: str, row: dict[str, Any], ev: dict[str, Any], training: list) -> None:
    """``<name>_result.pt``: the table row, the stages (and the control and tracking of :func:`evaluate`), the training curve."""
    torch.save({"row": row, "label": f"{name} ({ev['kind']})", "stages": ev["stages"], "training": training,
                **{k: ev[k] for k in ("blind_stages", "tracking", "blind_tracking") if k in ev}}, out / f"{name}_result.pt")
    for key, how in (("tracking", ""), ("blind_tracking", ", reward input off")):
        for label, (slope, corr) in ev.get(key, {}).items():
            print(f"{name}: {label}{how}: achieved against target: slope {slope:.2f}, correlation {corr:.2f}", flush=True)


def report_columns(saved: dict[str, Any]) -> dict[str, str]:
    """The columns a saved result adds to its row: the paired adaptation gain, the median task, and where measured
    the reward-input control (``blind_return``, ``reward_input_gain``) and the task tracking of the first and last stage."""
    from rnnmeta.rl.robot_viz import mean_ci

    stages = saved["stages"]
    # paired over the test tasks: each task's last stage minus its first (the tasks' spread cancels)
    gain_mean, gain_ci = mean_ci((stages[:, -1] - stages[:, 0]).unsqueeze(1))
    # the median test task of the last stage: a mean that a few runaway tasks pull down shows here
    cols = {"last_stage_median": f"{float(stages[:, -1].median()):.2f}",
            "adaptation_gain": f"{float(gain_mean[0]):+.2f} +- {float(gain_ci[0]):.2f}"}
    if "blind_stages" in saved:  # per episode over the whole trial, paired per task
        blind = saved["blind_stages"]
        b_mean, b_ci = mean_ci(blind.mean(1, keepdim=True))
        g_mean, g_ci = mean_ci((stages.mean(1) - blind.mean(1)).unsqueeze(1))
        cols["blind_return"] = f"{float(b_mean[0]):.2f} +- {float(b_ci[0]):.2f}"
        cols["reward_input_gain"] = f"{float(g_mean[0]):+.2f} +- {float(g_ci[0]):.2f}"
    tracking = list(saved.get("tracking", {}).values())
    if tracking:
        cols["tracking_first"] = "slope {:.2f}, corr {:.2f}".format(*tracking[0])
        cols["tracking_last"] = "slope {:.2f}, corr {:.2f}".format(*tracking[-1])
    return cols


class TrainingProgress(pl.Callback):
    """Records the training curve (one row per batch of training trials), prints progress, and keeps both, with
    the CPU and wall seconds spent so far, in the agent's checkpoints, so that a resumed run reports its whole run."""

    def __init__(self, name: str, steps: int, log_every: int, trial_steps: int, horizon: int, identity: str) -> None:
        self.name, self.steps, self.log_every, self.trial_steps, self.horizon = name, steps, log_every, trial_steps, horizon
        self.identity = identity
        self.curve: list[dict[str, float]] = []
        self.cpu_before, self.wall_before = 0.0, 0.0  # spent before this process resumed the run
        self.c0, self.w0 = time.process_time(), time.perf_counter()

    def cpu_seconds(self) -> float:
        return self.cpu_before + time.process_time() - self.c0

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "cpu_s": self.cpu_seconds(), "wall_s": self.wall_before + time.perf_counter() - self.w0,
                "identity": self.identity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve, self.cpu_before, self.wall_before = list(state["curve"]), float(state["cpu_s"]), float(state["wall_s"])
        self.c0, self.w0 = time.process_time(), time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module._batch is None:
            return
        iteration = int(module._batch["iteration"])
        if not self.curve or self.curve[-1]["iteration"] != iteration:  # the first update on a new batch
            self.curve.append({"iteration": iteration, "update": trainer.global_step,
                               "env_steps": (iteration + 1) * module.batch_trials * self.trial_steps,
                               "return_per_episode": float(module._batch["total"].mean()) * self.horizon / self.trial_steps,
                               "cpu_s": self.cpu_seconds()})
        if trainer.global_step % self.log_every == 0:
            print(f"  {self.name}: update {trainer.global_step}/{self.steps}, train return per trial "
                  f"{float(module._batch['total'].mean()):.2f}, {self.cpu_seconds():.0f} CPU s", flush=True)


def run_identity(cfg: dict[str, Any], name: str, steps: int) -> str:
    """A fingerprint of what an agent's training depends on: its spec, the family, the seed and the number of updates."""
    spec = {k: v for k, v in cfg["learners"][name].items() if k != "max_steps"}
    keyed = {"agent": spec, "family": cfg["family"], "seed": cfg.get("seed", 0), "steps": steps, "threads": cfg.get("threads", 1)}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resume_checkpoint(resume_dir: Path, identity: str) -> Optional[Path]:
    """``<resume_dir>/last.ckpt`` when an interrupted run of the same agent, config and budget left one; exits naming
    the folder when it was left by another config (delete it to start over)."""
    last = resume_dir / "last.ckpt"
    if not last.exists():
        return None
    callbacks = torch.load(last, map_location="cpu", weights_only=False).get("callbacks", {})
    saved = next((state.get("identity") for key, state in callbacks.items() if key.startswith("TrainingProgress")), None)
    if saved != identity:
        sys.exit(f"robot_compare: {last} was written by another config, budget or seed (run {saved}, this one {identity}); "
                 f"delete {resume_dir} to train this agent from the start")
    return last


def checkpoint_every(steps: int, per_iter: int) -> int:
    """Updates between resume checkpoints: about 40 a run, at least one iteration apart."""
    return max(per_iter, steps // 40)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", default=None, help="output folder (default results/<name>)")
    ap.add_argument("--only", nargs="*", default=None, help="agents to run (default: all)")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply every max_steps (a quick look: 0.1)")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: the table and plot from the <agent>_result.pt files in the output folder "
                         "(agents run in separate processes with --only and the same --out)")
    ap.add_argument("--video-only", action="store_true",
                    help="train nothing: render test trial 1 of each agent from its <agent>.ckpt in the output folder")
    ap.add_argument("--eval-only", action="store_true",
                    help="train nothing: test each agent again from its <agent>.ckpt in the output folder (the stages, the "
                         "reward-input control, the task tracking), keep its training record, and report")
    ap.add_argument("--test-trials", type=int, default=None,
                    help="test on this many tasks instead of the config's test_trials (the same eval_seed)")
    args = ap.parse_args()
    if args.test_trials is not None and args.test_trials < 2:
        ap.error(f"--test-trials must be >= 2 (a paired CI needs two tasks), got {args.test_trials}")

    cfg = yaml.safe_load(Path(args.config).read_text())
    for key in ("name", "family", "learners"):
        if key not in cfg:
            sys.exit(f"robot_compare: {args.config} needs a '{key}' key")
    threads = int(cfg.get("threads", 1))
    torch.set_num_threads(threads)
    from rnnmeta.rl.robot_viz import plot_adaptation, plot_point_trajectories, plot_training
    from rnnmeta.rl.trial import eval_tasks

    out = Path(args.out or f"results/{cfg['name']}")
    out.mkdir(parents=True, exist_ok=True)
    test_trials = args.test_trials if args.test_trials is not None else int(cfg.get("test_trials", 200))
    eval_seed, seed = int(cfg.get("eval_seed", 0)), int(cfg.get("seed", 0))
    cpu = platform.processor() or platform.machine()
    print(f"robot_compare {cfg['name']}: {len(cfg['learners'])} agents, {threads} thread(s), {os.cpu_count()} CPUs ({cpu}), "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    for name, spec in cfg["learners"].items():  # --video-only, --eval-only: from the saved agents
        if not (args.video_only or args.eval_only) or (args.only and name not in args.only):
            continue
        if not (out / f"{name}.ckpt").exists():
            print(f"{name}: no {out / f'{name}.ckpt'}, nothing to {'render' if args.video_only else 'test'}", flush=True)
            continue
        agent = build_agent(spec["model"], cfg["family"], seed)
        agent.load_state_dict(torch.load(out / f"{name}.ckpt", map_location="cpu", weights_only=False)["state_dict"])
        agent.eval()
        tasks = eval_tasks(agent.family, test_trials, eval_seed, "test")
        if args.video_only:
            write_video(agent, agent.family, tasks, out, name, eval_seed, int(cfg.get("video_every", 4)))
        else:
            ev = evaluate(agent, agent.family, tasks, eval_seed)
            old = torch.load(out / f"{name}_result.pt", weights_only=False) if (out / f"{name}_result.pt").exists() else {}
            row = {"agent": name, "class": type(agent).__name__, "stages": ev["kind"], **stage_columns(ev["stages"], ev["kind"]),
                   "trial_return": f"{float(ev['traj'].total_reward.mean()):.2f}"}
            row.update({k: v for k, v in old.get("row", {}).items() if k not in row and not k.startswith(("episode_", "step_"))})
            save_result(out, name, row, ev, old.get("training", []))
            print(f"{name}: tested again from {name}.ckpt: " + ", ".join(stage_columns(ev["stages"], ev["kind"]).values()), flush=True)
        if hasattr(agent.family, "close"):
            agent.family.close()
    if args.video_only:
        return

    # Under manual optimisation (TRPO) Lightning warns that a checkpoint holds the weights after the batch's update;
    # that is the state a resume continues from (tests/test_robot_configs.py checks the resumed run is exact).
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    for name, spec in cfg["learners"].items():
        if args.report_only or args.eval_only or (args.only and name not in args.only):
            continue
        pl.seed_everything(seed, workers=False, verbose=False)
        agent = build_agent(spec["model"], cfg["family"], seed)
        family = agent.family
        steps = max(1, int(round(int(spec["max_steps"]) * args.steps_scale)))
        per_iter = getattr(agent, "updates_per_iteration", None) or agent.ppo_epochs
        log_every = max(per_iter, (steps // 20) // per_iter * per_iter)

        resume_dir, identity = out / f"{name}_resume", run_identity(cfg, name, steps)
        resume_from = resume_checkpoint(resume_dir, identity)
        progress = TrainingProgress(name, steps, log_every, agent.train_trial_len, family.horizon, identity)
        saver = ModelCheckpoint(dirpath=resume_dir, save_last=True, save_top_k=0, every_n_train_steps=checkpoint_every(steps, per_iter),
                                save_on_train_epoch_end=False)
        trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=True, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                             accelerator=cfg.get("accelerator", "cpu"), devices=1, callbacks=[progress, saver],
                             default_root_dir=str(resume_dir), **spec.get("trainer", {}))
        print(f"{name}: {type(agent).__name__} on {family.describe()}, {steps} updates"
              + (f", resumed from {resume_from}" if resume_from else ""), flush=True)
        w0 = time.perf_counter()
        trainer.fit(agent, ckpt_path=str(resume_from) if resume_from else None)
        train_cpu, train_wall = progress.cpu_seconds(), progress.wall_before + time.perf_counter() - w0
        curve = progress.curve
        trainer.save_checkpoint(out / f"{name}.ckpt")
        shutil.rmtree(resume_dir, ignore_errors=True)  # the run is whole: nothing left to resume
        with open(out / f"training_{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["iteration", "update", "env_steps", "return_per_episode", "cpu_s"])
            w.writeheader()
            w.writerows(curve)
        iterations = -(-steps // per_iter)
        env_steps = iterations * agent.batch_trials * agent.train_trial_len

        tasks = eval_tasks(family, test_trials, eval_seed, "test")
        agent.eval()
        ev = evaluate(agent, family, tasks, eval_seed)
        traj, stages, kind = ev["traj"], ev["stages"], ev["kind"]
        row = {"agent": name, "class": type(agent).__name__, "stages": kind, **stage_columns(stages, kind),
               "trial_return": f"{float(traj.total_reward.mean()):.2f}", "updates": steps, "env_steps": env_steps,
               "train_cpu_s": f"{train_cpu:.0f}", "train_wall_s": f"{train_wall:.0f}", "threads": threads}
        save_result(out, name, row, ev, [(c["env_steps"], c["return_per_episode"]) for c in curve])
        print(f"{name}: test return per {kind[:-1]}: " + ", ".join(stage_columns(stages, kind).values())
              + f"; {env_steps:,} env steps, {train_cpu:.0f} CPU s", flush=True)
        if "goal" in tasks:
            worst = stages[:, -1].argsort()[:5].tolist()
            print(f"{name}: the 5 worst test goals in the last {kind[:-1]}: "
                  + ", ".join(f"#{i} at {[round(x, 3) for x in tasks['goal'][i].tolist()]}: {float(stages[i, -1]):.1f}" for i in worst),
                  flush=True)
            plot_point_trajectories(traj, tasks["goal"], family.horizon, out / f"trajectories_{name}.png",
                                    title=f"{name}: paths to 4 test goals (stars)", episodes=stage_episodes(agent))
        if cfg.get("video"):  # one test trial of the trained agent, rendered (MuJoCo families; needs OpenGL)
            write_video(agent, family, tasks, out, name, eval_seed, int(cfg.get("video_every", 4)))
        if hasattr(family, "close"):
            family.close()

    rows, curves, training = [], {}, {}
    for name in cfg["learners"]:  # every agent with a result in the folder, in the config's order
        if (out / f"{name}_result.pt").exists():
            saved = torch.load(out / f"{name}_result.pt", weights_only=False)
            rows.append({**saved["row"], **report_columns(saved)})
            curves[saved["label"]] = saved["stages"]
            training[name] = saved.get("training", [])
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    ref = cfg.get("reference")
    plot_adaptation(curves, out / "adaptation.png", title=f"{cfg['name']}: test return within a trial",
                    reference={ref["label"]: ref["values"]} if ref else None)
    plot_training(training, out / "training.png", title=f"{cfg['name']}: training return per episode")
    print(f"\nwritten: {out}/results.csv, {out}/adaptation.png, {out}/training.png, the checkpoints and plots beside them")


if __name__ == "__main__":
    main()
