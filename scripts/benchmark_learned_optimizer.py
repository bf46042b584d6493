"""Benchmark the coordinatewise LSTM optimizer (Andrychowicz et al. 2016) against hand-designed ones.

1. Meta-train the LSTM optimizer on random 10-d quadratics (100 steps, truncations of 20,
   second derivatives dropped, Adam).
2. Tune the learning rate of SGD, momentum (0.9), RMSprop and Adam on training quadratics
   (mean loss at step 100, small log grid).
3. On 1,000 held-out quadratics: mean loss at step 100 and at step 200 for every optimizer.
4. MLP task (20 sigmoid hidden units, 10 Omniglot characters per task, minibatches of 128):
   the quadratic-trained LSTM (and, with ``--mlp-iterations N``, one meta-trained on
   background-alphabet tasks) against the baselines tuned on background-alphabet tasks; mean
   loss curves on evaluation-alphabet tasks in one PNG.

Usage::

    python scripts/benchmark_learned_optimizer.py --out results/learned_optimizer/

Writes ``quadratic_lstm.pt`` / ``mlp_lstm.pt`` (meta-trained optimizers, loadable with
``rnnmeta.optim.LSTMOptimizer.from_checkpoint``), ``quadratic_curves.png``,
``mlp_loss_curves.png`` and ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from rnnmeta.optim import CoordinatewiseLSTMOptimizer, OmniglotMLPFamily, QuadraticFamily, meta_train, rollout  # noqa: E402
from rnnmeta.optim.tasks import default_omniglot_root  # noqa: E402

GRID = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
BASELINES = {
    "SGD": lambda lr: (lambda p: torch.optim.SGD(p, lr=lr)),
    "Momentum": lambda lr: (lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9)),
    "RMSprop": lambda lr: (lambda p: torch.optim.RMSprop(p, lr=lr)),
    "Adam": lambda lr: (lambda p: torch.optim.Adam(p, lr=lr)),
}


def tune(tasks, steps: int) -> dict[str, float]:
    """Best learning rate per baseline: lowest mean loss at ``steps`` over the training tasks."""
    best = {}
    for name, make in BASELINES.items():
        scores = {}
        for lr in GRID:
            finals = [float(rollout(t, steps, torch_optimizer=make(lr))[steps]) for t in tasks]
            scores[lr] = sum(finals) / len(finals)
        best[name] = min(scores, key=lambda lr: scores[lr])
        print(f"  {name:8s} lr={best[name]:g}  (train loss at step {steps}: {scores[best[name]]:.4f})")
    return best


def curves(tasks, steps: int, lrs: dict[str, float], learned: dict[str, CoordinatewiseLSTMOptimizer]) -> dict[str, torch.Tensor]:
    out = {}
    for name, rule in learned.items():
        out[name] = torch.stack([rollout(t, steps, meta_optimizer=rule) for t in tasks]).mean(0)
    for name, make in BASELINES.items():
        out[name] = torch.stack([rollout(t, steps, torch_optimizer=make(lrs[name])) for t in tasks]).mean(0)
    return out


def plot(curves_: dict[str, torch.Tensor], title: str, path: Path, train_horizon: int) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves_.items():
        ax.plot(c.numpy(), label=name, linewidth=2 if name.startswith("LSTM") else 1)
    ax.axvline(train_horizon, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("mean loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/learned_optimizer"))
    ap.add_argument("--iterations", type=int, default=300, help="meta-training tasks on quadratics")
    ap.add_argument("--meta-batch", type=int, default=32, help="quadratics per meta-training task")
    ap.add_argument("--meta-lr", type=float, default=3e-3)
    ap.add_argument("--test-functions", type=int, default=1000)
    ap.add_argument("--mlp-iterations", type=int, default=0, help="also meta-train an LSTM on MLP tasks (0: only the quadratic-trained one)")
    ap.add_argument("--mlp-test-tasks", type=int, default=3)
    ap.add_argument("--mlp-tune-tasks", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}}

    # ---------------------------------------------------------------- quadratics
    print(f"meta-training the LSTM optimizer on quadratics: {args.iterations} tasks x {args.meta_batch} functions")
    quad_lstm = CoordinatewiseLSTMOptimizer()
    res = meta_train(
        quad_lstm,
        QuadraticFamily(batch_size=args.meta_batch),
        iterations=args.iterations,
        meta_lr=args.meta_lr,
        seed=args.seed,
        checkpoint=args.out / "quadratic_lstm.pt",
        log_every=max(1, args.iterations // 10),
    )
    print(f"  done in {res.seconds:.0f} s")
    results["quadratic_meta_train_seconds"] = res.seconds
    train_tasks = [QuadraticFamily(batch_size=128).sample(torch.Generator().manual_seed(10_000 + args.seed))]
    print("tuning baseline learning rates on 128 training quadratics (loss at step 100):")
    quad_lrs = tune(train_tasks, 100)
    test_task = QuadraticFamily(batch_size=args.test_functions).sample(torch.Generator().manual_seed(20_000 + args.seed))
    quad = curves([test_task], 200, quad_lrs, {"LSTM (ours)": quad_lstm})
    print(f"\n{args.test_functions} held-out quadratics, mean loss:")
    print(f"| optimizer | lr | step 100 | step 200 |\n|---|---|---|---|")
    table = {}
    for name, c in quad.items():
        lr = quad_lrs.get(name)
        table[name] = {"lr": lr, "step100": float(c[100]), "step200": float(c[200])}
        print(f"| {name} | {'learned' if lr is None else f'{lr:g}'} | {float(c[100]):.4f} | {float(c[200]):.4f} |")
    results["quadratic"] = table
    plot(quad, f"{args.test_functions} held-out 10-d quadratics", args.out / "quadratic_curves.png", 100)

    # ---------------------------------------------------------------- MLP on Omniglot
    root = default_omniglot_root()
    if root is None:
        print("\nMLP task skipped (no Omniglot zips next to the repository)")
    else:
        train_family = OmniglotMLPFamily(root, background=True)
        test_family = OmniglotMLPFamily(root, background=False)
        learned = {"LSTM (quadratic-trained)": quad_lstm}
        if args.mlp_iterations > 0:
            print(f"\nmeta-training the LSTM optimizer on the MLP task: {args.mlp_iterations} tasks")
            mlp_lstm = CoordinatewiseLSTMOptimizer()
            res = meta_train(
                mlp_lstm,
                train_family,
                iterations=args.mlp_iterations,
                meta_lr=args.meta_lr,
                seed=args.seed,
                checkpoint=args.out / "mlp_lstm.pt",
                log_every=max(1, args.mlp_iterations // 5),
            )
            print(f"  done in {res.seconds:.0f} s")
            learned["LSTM (MLP-trained)"] = mlp_lstm
        gen = torch.Generator().manual_seed(30_000 + args.seed)
        print(f"tuning baseline learning rates on {args.mlp_tune_tasks} background-alphabet MLP task(s):")
        mlp_lrs = tune([train_family.sample(gen) for _ in range(args.mlp_tune_tasks)], 100)
        gen = torch.Generator().manual_seed(40_000 + args.seed)
        test_tasks = [test_family.sample(gen) for _ in range(args.mlp_test_tasks)]
        mlp = curves(test_tasks, 200, mlp_lrs, learned)
        print(f"\nMLP task, {args.mlp_test_tasks} evaluation-alphabet tasks, mean loss:")
        print(f"| optimizer | lr | step 100 | step 200 |\n|---|---|---|---|")
        mtable = {}
        for name, c in mlp.items():
            lr = mlp_lrs.get(name)
            mtable[name] = {"lr": lr, "step100": float(c[100]), "step200": float(c[200])}
            print(f"| {name} | {'learned' if lr is None else f'{lr:g}'} | {float(c[100]):.4f} | {float(c[200]):.4f} |")
        results["mlp"] = mtable
        plot(mlp, "MLP (20 sigmoid units), Omniglot 10-way", args.out / "mlp_loss_curves.png", 100)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}/")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
