"""Several runs of a comparison at once, each in its own ``python -m rnnmeta.compare.workers`` process.

A fresh interpreter per run (not ``multiprocessing``): nothing of the parent's threads or torch
state is inherited, and a user's script needs no ``if __name__ == "__main__"`` guard. Each child
trains one :class:`~rnnmeta.compare.config.RunPlan`, writes ``result.json`` in its run folder and
its console output to ``worker.log`` beside it. Results do not depend on how many run at once:
each run fixes its own thread count and seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from rnnmeta.compare.config import Budget, RunPlan
from rnnmeta.compare.runner import RunResult, load_result
from rnnmeta.numerics import portable_environment

__all__ = ["run_in_processes"]

JOB_FILE = "worker_job.json"
LOG_FILE = "worker.log"


def run_in_processes(
    name: str, plans: list[RunPlan], runs_dir: Path, wandb_project: str, plot_tasks: int, workers: int
) -> Iterator[tuple[int, RunResult]]:
    """Train ``plans`` with at most ``workers`` child processes at a time; yield ``(index, result)`` as runs finish.

    Raises:
        RuntimeError: a child failed; the message holds the end of its log. The other children
            are stopped (their checkpoints let a rerun resume them).
    """
    queue = list(range(len(plans)))
    running: dict[int, subprocess.Popen] = {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                i = queue.pop(0)
                run_dir = runs_dir / plans[i].run_name
                run_dir.mkdir(parents=True, exist_ok=True)
                job = {"name": name, "plan": plans[i].__dict__ | {"budget": plans[i].budget.__dict__},
                       "wandb_project": wandb_project, "plot_tasks": plot_tasks}
                (run_dir / JOB_FILE).write_text(json.dumps(job))
                with open(run_dir / LOG_FILE, "w") as log:
                    running[i] = subprocess.Popen(
                        [sys.executable, "-m", "rnnmeta.compare.workers", str(run_dir), str(os.getpid())],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=_child_env(plans[i].numerics),
                    )
            time.sleep(0.2)
            for i, process in list(running.items()):
                if process.poll() is None:
                    continue
                del running[i]
                run_dir = runs_dir / plans[i].run_name
                result = load_result(run_dir)
                if process.returncode != 0 or result is None:
                    tail = (run_dir / LOG_FILE).read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"run {plans[i].run_name} failed (exit code {process.returncode}); end of {run_dir / LOG_FILE}:\n{tail}")
                (run_dir / JOB_FILE).unlink(missing_ok=True)
                yield i, result
    finally:
        for process in running.values():
            process.kill()
            process.wait()


def _child_env(numerics: str = "native") -> dict[str, str]:
    """This process's environment without ``WANDB_SERVICE``, plus what ``numerics`` needs from the start.

    A W&B run in this process records its service there; a child that inherits it would write
    through a service that ends with this process, so each run starts its own. A portable run
    gets :data:`rnnmeta.numerics.PORTABLE_ENVIRONMENT` (MKL and ATen read it once, at start).
    """
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return portable_environment(env) if numerics == "portable" else env


def _exit_with_parent(parent: int, period: float = 1.0) -> None:
    """End this process when the comparison that started it is gone (killed, or ended by a signal)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period)
        os._exit(1)  # orphaned: a rerun of the comparison resumes this run from its last checkpoint

    threading.Thread(target=watch, daemon=True).start()


def _main(run_dir: Path, parent: int) -> None:
    from rnnmeta.compare.runner import train_and_save
    from rnnmeta.logging import quiet_console

    quiet_console()
    _exit_with_parent(parent)  # also when the comparison died before this process got here

    job = json.loads((run_dir / JOB_FILE).read_text())
    plan = RunPlan(**(job["plan"] | {"budget": Budget(**job["plan"]["budget"])}))
    train_and_save(job["name"], plan, run_dir, job["wandb_project"], job["plot_tasks"], progress_bar=False)


if __name__ == "__main__":
    _main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else os.getppid())
