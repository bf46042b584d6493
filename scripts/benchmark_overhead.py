"""Lightning's per-step cost for the small models of the main job: ``rnnmeta fit`` against a plain loop.

Both train the same learner from the same config for ``--steps`` meta-iterations on one thread:

* ``rnnmeta fit``: the run as the command builds it (``rnnmeta.cli.build_cli(run=False)``, with
  the callbacks rnnmeta adds: random-state checkpointing, the progress bar (drawn on stdout),
  logging every ``log_every_n_steps``), validation and checkpoints off;
* a plain loop: the same data module's training batches, ``learner.episode_step``, ``backward``,
  the same optimiser, nothing else, on a second copy of the learner.

The two are measured in pairs: after each ``rnnmeta fit`` step a callback runs one plain-loop step,
so a change of machine speed hits both alike (the pairing callback's own hook calls, a few
microseconds a step, count against ``rnnmeta fit``). Prints process-CPU seconds per step of each
and the framework's share of a ``rnnmeta fit`` step,
and Lightning's own floor: the per-step cost of ``pl.Trainer`` (automatic optimisation, no
callbacks, no logger, no progress bar) over a plain loop, for a module of one parameter (also with
rnnmeta's cuts, and with manual optimisation); and the
per-step cost of ``RandomStateCheckpoint``'s states beside that of numpy's ``get_state`` and
``set_state``, which it called every step before it fingerprinted numpy's generator.

Run:  python scripts/benchmark_overhead.py --config configs/sinusoid/maml_k5.yaml --steps 300 --repeats 5 --ablation
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Optional

import pytorch_lightning as pl
import torch


class Pairing(pl.Callback):
    """Runs ``plain_step`` (returns its CPU seconds) after every Trainer batch and splits the time between two
    batch starts into the Trainer's step and the plain step run inside it; the first ``skip`` steps are a warm-up."""

    def __init__(self, plain_step, skip: int = 0) -> None:
        self.plain_step, self.skip = plain_step, skip
        self.totals = {"lightning": 0.0, "plain": 0.0}
        self._last: Optional[tuple[float, float]] = None  # (CPU clock at the last batch start, its plain step)
        self._batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.process_time()
        if self._last is not None and self._batches > self.skip:
            started, plain = self._last
            self.totals["lightning"] += now - started - plain
            self.totals["plain"] += plain
        self._last = (now, 0.0)
        self._batches += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._last = (self._last[0], self.plain_step())


class PlainLoop:
    """The plain loop: the same config's learner, data and optimiser, stepped one meta-iteration at a time."""

    def __init__(self, config: str) -> None:
        from rnnmeta.cli import build_cli

        cli = build_cli(["--config", config, "--threads", "1", "--trainer.logger", "false"], run=False)
        self.learner, data = cli.model.train(), cli.datamodule
        data.setup("fit")
        self.stream = data.train_stream()
        optimizer = self.learner.configure_optimizers()
        self.optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        self.index = 0

    def step(self) -> float:
        """One meta-iteration; returns its process-CPU seconds."""
        start = time.process_time()
        loss, _ = self.learner.episode_step(self.stream.batch(self.index))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.index += 1
        return time.process_time() - start


def paired_step_cpu(config: str, steps: int, warmup: int, random_states: bool = True,
                    progress_bar: bool = True) -> tuple[float, float]:
    """Process-CPU seconds per step of ``rnnmeta fit`` and of the plain loop, measured in pairs.

    After each ``rnnmeta fit`` step a callback runs one step of the plain loop (its own copy of
    the learner) and subtracts it from the interval between Lightning's batch starts, so both
    see the same machine at the same moment: on a shared VM, separate runs a few seconds apart
    differed by up to 1.7x. ``random_states=False`` drops ``RandomStateCheckpoint``,
    ``progress_bar=False`` the progress bar (the ablation).
    """
    from rnnmeta.callbacks import RandomStateCheckpoint
    from rnnmeta.cli import build_cli

    cli = build_cli(["--config", config, "--threads", "1", "--trainer.logger", "false", "--trainer.max_steps",
                     str(warmup + steps + 1), "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar",
                     str(progress_bar).lower(), "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
                     "--trainer.enable_model_summary", "false"], run=False)
    if not random_states:
        cli.trainer.callbacks[:] = [cb for cb in cli.trainer.callbacks if not isinstance(cb, RandomStateCheckpoint)]
    plain = PlainLoop(config)
    pairing = Pairing(plain.step, skip=warmup)
    cli.trainer.callbacks.append(pairing)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return pairing.totals["lightning"] / steps, pairing.totals["plain"] / steps


def lightning_floor_cpu(steps: int, rnnmeta_cuts: bool = False, manual: bool = False) -> float:
    """Process-CPU seconds per step that ``pl.Trainer`` adds over a plain loop, for a module of one parameter
    (one thread, no callbacks, no logger, no progress bar); each Trainer step is paired with a plain one.

    ``rnnmeta_cuts=True`` builds the module on rnnmeta's ``InjectedOptimizerModule`` (its ``__setattr__``
    shortcut) and gives the Trainer ``NullProfiler``: the floor under rnnmeta's own learners.
    ``manual=True`` (with the cuts) steps the optimiser in ``training_step`` itself (Lightning's manual
    optimisation), which skips the automatic loop's closure: what moving the learners to it would save.
    """
    torch.set_num_threads(1)
    import functools

    from rnnmeta.callbacks import NullProfiler
    from rnnmeta.learners.base import InjectedOptimizerModule

    rnnmeta_cuts = rnnmeta_cuts or manual

    class One(InjectedOptimizerModule if rnnmeta_cuts else pl.LightningModule):
        def __init__(self) -> None:
            if rnnmeta_cuts:
                super().__init__(functools.partial(torch.optim.SGD, lr=0.1))
            else:
                super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.automatic_optimization = not manual

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            loss = (self.w - batch).pow(2).sum()
            if manual:
                optimizer = self.optimizers()
                optimizer.zero_grad()
                self.manual_backward(loss)
                optimizer.step()
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    twin = One()
    twin_optimizer = twin.configure_optimizers()
    batch = torch.ones(2)

    def plain_step() -> float:
        start = time.process_time()
        loss = (twin.w - batch).pow(2).sum()  # training_step's loss (manual optimisation's steps itself)
        twin_optimizer.zero_grad()
        loss.backward()
        twin_optimizer.step()
        return time.process_time() - start

    pairing = Pairing(plain_step)
    data = torch.utils.data.DataLoader(torch.ones(steps + 1, 2), batch_size=None)
    trainer = pl.Trainer(max_steps=steps + 1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, callbacks=[pairing], profiler=NullProfiler() if rnnmeta_cuts else None)
    trainer.fit(One(), data)
    return (pairing.totals["lightning"] - pairing.totals["plain"]) / steps

def random_state_cpu(calls: int = 20000) -> tuple[float, float]:
    """Process-CPU seconds per training step of ``RandomStateCheckpoint``'s work (take the states at the end
    of a batch, set them back at the start of the next; nothing draws in between), and of numpy's own
    ``get_state`` + ``set_state`` alone, which the callback called every step before it kept a fingerprint."""
    import numpy as np

    from rnnmeta.callbacks import _capture_raw, _restore_raw

    state = _capture_raw()
    start = time.process_time()
    for _ in range(calls):
        _restore_raw(state)
        state = _capture_raw(state)
    callback = (time.process_time() - start) / calls
    legacy = np.random.get_state()
    start = time.process_time()
    for _ in range(calls):
        np.random.set_state(legacy)
        legacy = np.random.get_state()
    return callback, (time.process_time() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/sinusoid/maml_k5.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ablation", action="store_true",
                        help="also time rnnmeta fit without RandomStateCheckpoint, without the progress bar, and without both")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    pairs = [paired_step_cpu(args.config, args.steps, args.warmup) for _ in range(args.repeats)]
    lightning, plain = [p[0] for p in pairs], [p[1] for p in pairs]
    shares = [(lit - loop) / lit for lit, loop in pairs]
    lit, loop = statistics.median(lightning), statistics.median(plain)
    ablation = {"without RandomStateCheckpoint": {"random_states": False}, "without the progress bar": {"progress_bar": False},
                "without both": {"random_states": False, "progress_bar": False}} if args.ablation else {}
    cost = statistics.median(lit - loop for lit, loop in pairs)  # the framework's ms a step, paired
    ablated = {name: statistics.median(a - b for a, b in (paired_step_cpu(args.config, args.steps, args.warmup, **kw)
                                                          for _ in range(args.repeats)))
               for name, kw in ablation.items()}
    floor = statistics.median(lightning_floor_cpu(args.steps * 5) for _ in range(args.repeats))
    floor_cut = statistics.median(lightning_floor_cpu(args.steps * 5, rnnmeta_cuts=True) for _ in range(args.repeats))
    floor_manual = statistics.median(lightning_floor_cpu(args.steps * 5, manual=True) for _ in range(args.repeats))
    states = [random_state_cpu() for _ in range(args.repeats)]
    callback_states, numpy_states = statistics.median(s[0] for s in states), statistics.median(s[1] for s in states)
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{args.config}, {args.steps} steps after {args.warmup}, median of {args.repeats}, 1 thread")
    print(f"rnnmeta fit: {1e3 * lit:.2f} ms CPU/step; plain loop: {1e3 * loop:.2f} ms CPU/step (paired, median of "
          f"{args.repeats}); framework share of a step: {100 * statistics.median(shares):.1f} % "
          f"(runs: {', '.join(f'{100 * x:.1f}' for x in shares)})")
    print(f"framework cost (rnnmeta fit minus the paired plain step): {1e3 * cost:.2f} ms CPU/step")
    for name, ablated_cost in ablated.items():
        print(f"rnnmeta fit {name}: framework cost {1e3 * ablated_cost:.2f} ms CPU/step ({1e3 * (cost - ablated_cost):.2f} ms saved)")
    print(f"RandomStateCheckpoint's states per step (capture + restore, nothing drawn between): {1e6 * callback_states:.1f} us; "
          f"numpy's get_state + set_state alone: {1e6 * numpy_states:.1f} us")
    for name, cost in (("Lightning's floor (a one-parameter module, paired)", floor),
                       ("the same with rnnmeta's cuts (InjectedOptimizerModule, NullProfiler)", floor_cut),
                       ("the same with the cuts and manual optimisation", floor_manual)):
        print(f"{name}: {1e3 * cost:.2f} ms CPU/step over a plain loop; added to the plain loop's step alone it would be "
              f"{100 * cost / (loop + cost):.1f} % of the step")

if __name__ == "__main__":
    main()
