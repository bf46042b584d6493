"""Lightning's per-step cost for the small models of the main job: ``rnnmeta fit`` against a plain loop.

Both train the same learner from the same config for ``--steps`` meta-iterations on one thread:

* ``rnnmeta fit``: the run as the command builds it (``rnnmeta.cli.build_cli(run=False)``, with
  the callbacks rnnmeta adds: random-state checkpointing, the progress bar (drawn on stdout),
  logging every ``log_every_n_steps``), validation and checkpoints off;
* a plain loop: the same data module's training batches, ``learner.episode_step``, ``backward``,
  the same optimiser, nothing else.

Prints process-CPU seconds per step of each and the framework's share of a ``rnnmeta fit`` step,
and Lightning's own floor: the per-step cost of ``pl.Trainer`` (automatic optimisation, no
callbacks, no logger, no progress bar) over a plain loop, for a module of one parameter; and the
per-step cost of ``RandomStateCheckpoint``'s states beside that of numpy's ``get_state`` and
``set_state``, which it called every step before it fingerprinted numpy's generator.

Run:  python scripts/benchmark_overhead.py --config configs/sinusoid/maml_k5.yaml --steps 300 --repeats 5 --ablation
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def lightning_step_cpu(config: str, steps: int, warmup: int, random_states: bool = True, progress_bar: bool = True) -> float:
    """Process-CPU seconds per ``rnnmeta fit`` step; ``random_states=False`` drops ``RandomStateCheckpoint``,
    ``progress_bar=False`` the progress bar (the ablation)."""
    import pytorch_lightning as pl

    from rnnmeta.callbacks import RandomStateCheckpoint
    from rnnmeta.cli import build_cli

    cli = build_cli(["--config", config, "--threads", "1", "--trainer.logger", "false", "--trainer.max_steps",
                     str(warmup + steps), "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar",
                     str(progress_bar).lower(), "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
                     "--trainer.enable_model_summary", "false"], run=False)
    if not random_states:
        cli.trainer.callbacks[:] = [cb for cb in cli.trainer.callbacks if not isinstance(cb, RandomStateCheckpoint)]
    marks: dict[str, float] = {}

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == warmup and not marks:
                marks["cpu"] = time.process_time()

    cli.trainer.callbacks.append(Clock())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return (time.process_time() - marks["cpu"]) / steps


def plain_step_cpu(config: str, steps: int, warmup: int) -> float:
    from rnnmeta.cli import build_cli

    cli = build_cli(["--config", config, "--threads", "1", "--trainer.logger", "false"], run=False)
    learner, data = cli.model.train(), cli.datamodule
    data.setup("fit")
    stream = data.train_stream()
    optimizer = learner.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.process_time()
        loss, _ = learner.episode_step(stream.batch(i))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.process_time() - start) / steps


def lightning_floor_cpu(steps: int) -> tuple[float, float]:
    """Process-CPU seconds per step of ``pl.Trainer`` and of a plain loop on a one-parameter module (one thread)."""
    torch.set_num_threads(1)
    import pytorch_lightning as pl

    class One(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            return (self.w - batch).pow(2).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.ones(steps, 2), batch_size=None)
    module = One()
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False)
    start = time.process_time()
    trainer.fit(module, data)
    lit = (time.process_time() - start) / steps
    optimizer = module.configure_optimizers()
    start = time.process_time()
    for batch in data:
        loss = module.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return lit, (time.process_time() - start) / steps


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
    lightning, plain = [], []
    for _ in range(args.repeats):  # alternate, so a change of machine load hits both
        plain.append(plain_step_cpu(args.config, args.steps, args.warmup))
        lightning.append(lightning_step_cpu(args.config, args.steps, args.warmup))
    lit, loop = statistics.median(lightning), statistics.median(plain)
    ablation = {"without RandomStateCheckpoint": {"random_states": False}, "without the progress bar": {"progress_bar": False},
                "without both": {"random_states": False, "progress_bar": False}} if args.ablation else {}
    ablated = {name: statistics.median(lightning_step_cpu(args.config, args.steps, args.warmup, **kw) for _ in range(args.repeats))
               for name, kw in ablation.items()}
    floor = [lightning_floor_cpu(args.steps * 5) for _ in range(args.repeats)]
    states = [random_state_cpu() for _ in range(args.repeats)]
    callback_states, numpy_states = statistics.median(s[0] for s in states), statistics.median(s[1] for s in states)
    floor_lit, floor_loop = statistics.median(f[0] for f in floor), statistics.median(f[1] for f in floor)
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{args.config}, {args.steps} steps after {args.warmup}, median of {args.repeats}, 1 thread")
    print(f"rnnmeta fit: {1e3 * lit:.2f} ms CPU/step; plain loop: {1e3 * loop:.2f} ms CPU/step; "
          f"framework share of a step: {100 * (lit - loop) / lit:.1f} %")
    for name, cpu in ablated.items():
        print(f"rnnmeta fit {name}: {1e3 * cpu:.2f} ms CPU/step ({1e3 * (lit - cpu):.2f} ms saved)")
    print(f"RandomStateCheckpoint's states per step (capture + restore, nothing drawn between): {1e6 * callback_states:.1f} us; "
          f"numpy's get_state + set_state alone: {1e6 * numpy_states:.1f} us")
    print(f"Lightning's floor (a one-parameter module): {1e3 * (floor_lit - floor_loop):.2f} ms CPU/step over a plain loop "
          f"({1e3 * floor_lit:.2f} against {1e3 * floor_loop:.2f}); added to the plain loop's step alone it would be "
          f"{100 * (floor_lit - floor_loop) / (loop + floor_lit - floor_loop):.1f} % of the step")


if __name__ == "__main__":
    main()
