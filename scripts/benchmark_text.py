"""What tokenising and batching cost next to a training step, for every learner of a text comparison.

Measured on the process's CPU clock (``time.process_time``) with one torch thread, so the numbers
hold on a shared machine:

* once per run: reading and checking CLINC150 (md5, JSON), building the vocabulary of the training
  intents, and tokenising every split into its id tensor;
* per training step: drawing one meta-batch of episodes (``EpisodicDataModule.train_batch``: the
  vectorised sampler and one ``index_select`` on the id tensor), against the learner's own step
  (forward, backward and the Adam update) on the same batches; medians over ``--steps`` steps.

    OMP_NUM_THREADS=1 python scripts/benchmark_text.py --config configs/compare/clinc150_5w1s.yaml
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from rnnmeta.compare.config import _training_data, build_run  # noqa: E402


def cpu_median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/compare/clinc150_5w1s.yaml"))
    parser.add_argument("--steps", type=int, default=10, help="training steps timed per learner (after 2 warm-up steps)")
    parser.add_argument("--batches", type=int, default=200, help="meta-batches drawn to time the sampler")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = yaml.safe_load(args.config.read_text())
    print(f"{args.config}; torch threads: {torch.get_num_threads()}; load average: {os.getloadavg()}")

    # once per run: read, check, build the vocabulary, tokenise every split
    dataset_cfg = cfg["data"]["init_args"]["dataset"]
    start = time.process_time()
    datamodule, _ = build_run(next(iter(cfg["learners"].values()))["model"], cfg["data"])
    build = time.process_time() - start
    dataset = datamodule.dataset
    start = time.process_time()
    sources = {split: dataset.split(split) for split in ("train", "val", "test")}
    tokenise = time.process_time() - start
    n_texts = sum(s.n_images for s in sources.values())
    print(f"once: read + md5 + parse {dataset_cfg['class_path']} {build:.2f} CPU s; vocabulary + tokenising "
          f"{n_texts:,} texts {tokenise:.2f} CPU s ({1e6 * tokenise / n_texts:.0f} us a text)")

    print("| learner | episodes per step | sampling ms / step | training step ms | sampling share |")
    print("|---|---|---|---|---|")
    for name, spec in cfg["learners"].items():
        data = _training_data(cfg["data"], spec.get("train_data") or {})
        dm, learner = build_run(spec["model"], data)
        counter = iter(range(10**9))
        sample_ms = 1e3 * cpu_median(lambda: dm.train_batch(next(counter)), args.batches)
        if learner.num_parameters() == 0:
            print(f"| {name} | - | {sample_ms:.2f} | (no training) | - |")
            continue
        else:
            optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
            learner.train()

            def step() -> None:
                batch = dm.train_batch(next(counter))
                loss, _ = learner.episode_step(batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            step(), step()
            step_ms = 1e3 * cpu_median(step, args.steps)
        batch = dm.train_batch(0)
        print(f"| {name} | {batch.batch_size} x ({batch.n_support} + {batch.n_query}) | {sample_ms:.2f} | "
              f"{step_ms:.1f} | {100 * sample_ms / step_ms:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
