"""Meta-train MAML on sinusoid regression (K=5) and report the query MSE after 1, 5 and 10 inner steps.

Setup of Finn et al. (2017), section 5.1: an MLP with two hidden layers of 40 ReLU units, inner
learning rate 0.01, one inner step in training, meta-batch 25, Adam at 1e-3 (the paper trains
70,000 meta-iterations). Training tasks draw K=5 support and 5 query points (as the authors'
code); the test uses 600 fixed tasks with K=5 support and 100 query points each and reports
mean MSE with a 95% confidence interval. The MAML paper shows its sinusoid results as figures only;
Li et al. (2017, Meta-SGD, Table 1) print MAML's 5-shot MSE after one inner step as 1.13 +- 0.18.

Run:  python scripts/sinusoid_maml.py [--iters 70000] [--max-seconds 150] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rnnmeta.data import Sinusoid, make_generator  # noqa: E402
from rnnmeta.evaluation import mean_ci95  # noqa: E402
from rnnmeta.learners.maml import MAML  # noqa: E402

K, TRAIN_QUERIES, TEST_QUERIES, TEST_TASKS, META_BATCH = 5, 5, 100, 600, 25
PUBLISHED = {1: 1.13}  # Li et al. 2017 (Meta-SGD), Table 1: MAML, 5-shot, one inner step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=70_000, help="meta-iterations (the paper: 70,000)")
    ap.add_argument("--max-seconds", type=float, default=150.0, help="stop training after this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    tasks = Sinusoid().split("train")
    learner = MAML(kind="regression", target_dim=1, inner_steps=1, inner_lr=0.01, lr=1e-3)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    learner.train()
    start, done, running = time.perf_counter(), 0, None
    for it in range(args.iters):
        ep = tasks.sample(make_generator(args.seed, "train", 0, it), META_BATCH, 0, K, TRAIN_QUERIES)
        loss = learner.task_losses(learner(ep.support_x, ep.support_y, ep.query_x), ep.query_y).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.99 * running + 0.01 * loss.item()
        done = it + 1
        if done % 2000 == 0:
            print(f"iter {done}: train query MSE (EMA) {running:.3f}", flush=True)
        if time.perf_counter() - start > args.max_seconds:
            break
    elapsed = time.perf_counter() - start
    print(f"trained {done} meta-iterations in {elapsed:.0f} s (the paper: 70,000)")

    test = Sinusoid().split("test").sample(make_generator(args.seed, "test", 0), TEST_TASKS, 0, K, TEST_QUERIES)
    learner.eval()
    print(f"query MSE over {TEST_TASKS} fixed test tasks (K={K}, {TEST_QUERIES} query points), inner lr 0.01:")
    for steps in (1, 5, 10):
        learner.eval_inner_steps = steps
        preds = learner(test.support_x, test.support_y, test.query_x)
        stats = mean_ci95(learner.task_metrics(preds, test.query_y))
        published = f"   (Li et al. 2017, Table 1: {PUBLISHED[steps]:.2f})" if steps in PUBLISHED else ""
        print(f"  {steps:2d} inner steps: MSE {stats.mean:.3f} +- {stats.ci95:.3f}{published}")


if __name__ == "__main__":
    main()
