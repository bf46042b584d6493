"""Benchmark the coordinatewise LSTM optimizer (Andrychowicz et al. 2016) against hand-designed ones.

1. Meta-train the LSTM optimizer on random 10-d quadratics (batches of 128 functions, 100 steps in
   truncations of 20, second derivatives dropped, Adam), keeping the weights that score best on
   1,000 validation quadratics (mean loss at step 100), as the authors' training script does.
2. Tune the learning rate of SGD, momentum (0.9), Nesterov momentum (0.9), RMSprop and Adam on
   1,000 training quadratics (mean loss at step 100, log grid from 1e-4 to 10).
3. On 1,000 held-out quadratics: mean loss at step 100 and at step 200 for every optimizer, and
   for reference each baseline at the grid learning rate that is best on the held-out functions
   themselves (a hindsight choice no real user has).
4. MLP task (20 sigmoid hidden units, 10 Omniglot characters per task, minibatches of 128):
   the quadratic-trained LSTM (and, with ``--mlp-iterations N``, one meta-trained on
   background-alphabet tasks) against the baselines tuned on background-alphabet tasks; mean
   loss curves on evaluation-alphabet tasks in one PNG (``--mlp-test-tasks 0`` skips it).

Usage::

    python scripts/benchmark_learned_optimizer.py --out results/learned_optimizer/

Writes ``quadratic_lstm.pt`` / ``mlp_lstm.pt`` (meta-trained optimizers, loadable with
``rnnmeta.optim.LSTMOptimizer.from_checkpoint``), ``quadratic_curves.png``,
``mlp_loss_curves.png`` and ``results.json`` under ``--out``. Runs on one thread by default: the
tensors are tiny and more threads are slower.
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

#: learning rates tried for every baseline: 1, 1.5, 2, 2.5, 3, 4, 5, 7 times each power of ten, 1e-4 .. 10
GRID = sorted({round(m * 10.0**e, 6) for e in range(-4, 1) for m in (1, 1.5, 2, 2.5, 3, 4, 5, 7)} | {10.0})
BASELINES = {
    "SGD": lambda lr: (lambda p: torch.optim.SGD(p, lr=lr)),
    "Momentum": lambda lr: (lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9)),
    "NAG": lambda lr: (lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True)),
    "RMSprop": lambda lr: (lambda p: torch.optim.RMSprop(p, lr=lr)),
    "Adam": lambda lr: (lambda p: torch.optim.Adam(p, lr=lr)),
}


def grid_scores(tasks, steps: int, make) -> dict[float, float]:
    """Mean loss at ``steps`` over ``tasks`` for every learning rate of the grid (inf if any run diverged)."""
    scores = {}
    for lr in GRID:
        finals = [float(rollout(t, steps, torch_optimizer=make(lr))[steps]) for t in tasks]
        scores[lr] = sum(finals) / len(finals)
    return scores


def tune(tasks, steps: int, label: str) -> dict[str, float]:
    """Best learning rate per baseline: lowest mean loss at ``steps`` over ``tasks``."""
    best = {}
    for name, make in BASELINES.items():
        scores = grid_scores(tasks, steps, make)
        best[name] = min(scores, key=lambda lr: scores[lr])
        print(f"  {name:8s} lr={best[name]:g}  ({label} loss at step {steps}: {scores[best[name]]:.4f})", flush=True)
    return best


def curves(tasks, steps: int, lrs: dict[str, float], learned: dict[str, CoordinatewiseLSTMOptimizer]) -> dict[str, torch.Tensor]:
    out = {}
    for name, rule in learned.items():
        out[name] = torch.stack([rollout(t, steps, meta_optimizer=rule) for t in tasks]).mean(0)
    for name, make in BASELINES.items():
        out[name] = torch.stack([rollout(t, steps, torch_optimizer=make(lrs[name])) for t in tasks]).mean(0)
    return out


def print_table(title: str, curves_: dict[str, torch.Tensor], lrs: dict[str, float]) -> dict:
    print(f"\n{title}")
    print("| optimizer | lr | step 100 | step 200 |\n|---|---|---|---|")
    table = {}
    for name, c in curves_.items():
        lr = lrs.get(name)
        table[name] = {"lr": lr, "step100": float(c[100]), "step200": float(c[200])}
        print(f"| {name} | {'learned' if lr is None else f'{lr:g}'} | {float(c[100]):.4f} | {float(c[200]):.4f} |")
    return table


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


def few_shot_speed(iterations: int = 20) -> dict:
    """Meta-iterations per second of the few-shot ``LearnedOptimizer`` on sinusoid batches (meta-batch 25,
    K=5, 10 queries, 2x40 MLP, 5 inner steps): the inner loop task by task against all tasks at once."""
    from rnnmeta.learners import LearnedOptimizer
    from rnnmeta.nets import MLP

    g = torch.Generator().manual_seed(0)
    amp = torch.rand(25, 1, 1, generator=g) * 4.9 + 0.1
    phase = torch.rand(25, 1, 1, generator=g) * torch.pi
    sx, qx = torch.rand(25, 5, 1, generator=g) * 10 - 5, torch.rand(25, 10, 1, generator=g) * 10 - 5
    sy, qy = amp * torch.sin(sx - phase), amp * torch.sin(qx - phase)
    out = {}
    for rule in ("ravi_larochelle", "lstm"):
        for batch_tasks in (False, True):
            torch.manual_seed(0)
            learner = LearnedOptimizer(kind="regression", backbone=MLP(1, [40, 40]), update_rule=rule, inner_steps=5,
                                       init_inner_lr=0.01, batch_tasks=batch_tasks)
            opt = torch.optim.Adam(learner.parameters(), lr=1e-3)

            def step() -> None:
                opt.zero_grad()
                learner.task_losses(learner(sx, sy, qx), qy).mean().backward()
                opt.step()

            step()
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(iterations):
                step()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            key = f"{rule}, {'all tasks at once' if batch_tasks else 'task by task'}"
            out[key] = {"iterations_per_s_wall": iterations / wall, "iterations_per_s_cpu": iterations / cpu}
            print(f"  {key}: {iterations / wall:.1f} meta-iterations/s ({iterations / cpu:.1f} per CPU second)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/learned_optimizer"))
    ap.add_argument("--iterations", type=int, default=1000, help="meta-training tasks on quadratics")
    ap.add_argument("--meta-batch", type=int, default=128, help="quadratics per meta-training task (128 as the authors)")
    ap.add_argument("--meta-lr", type=float, default=1e-3)
    ap.add_argument("--validate-every", type=int, default=50, help="tasks between validations (0: keep the last weights)")
    ap.add_argument("--tune-functions", type=int, default=1000, help="training quadratics the baselines are tuned on")
    ap.add_argument("--test-functions", type=int, default=1000)
    ap.add_argument("--mlp-iterations", type=int, default=0, help="also meta-train an LSTM on MLP tasks (0: only the quadratic-trained one)")
    ap.add_argument("--mlp-test-tasks", type=int, default=3, help="0 skips the MLP task")
    ap.add_argument("--mlp-tune-tasks", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--few-shot-speed", action="store_true", help="only time the few-shot learner's inner loop (per task vs batched)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "grid": GRID}
    if args.few_shot_speed:
        print("few-shot LearnedOptimizer, sinusoid meta-batch 25, K=5, 5 inner steps:")
        (args.out / "few_shot_speed.json").write_text(json.dumps(few_shot_speed(), indent=2))
        return

    # ---------------------------------------------------------------- quadratics
    validation = QuadraticFamily(batch_size=1000).sample(torch.Generator().manual_seed(50_000 + args.seed))

    def validate(rule) -> float:
        return float(rollout(validation, 100, meta_optimizer=rule)[100])

    print(f"meta-training the LSTM optimizer on quadratics: {args.iterations} tasks x {args.meta_batch} functions, "
          f"Adam {args.meta_lr:g}, {args.threads} thread(s)", flush=True)
    quad_lstm = CoordinatewiseLSTMOptimizer()
    cpu_start = time.process_time()
    res = meta_train(
        quad_lstm,
        QuadraticFamily(batch_size=args.meta_batch),
        iterations=args.iterations,
        meta_lr=args.meta_lr,
        seed=args.seed,
        checkpoint=args.out / "quadratic_lstm.pt",
        log_every=max(1, min(50, args.iterations // 10)),
        log=lambda line: print(line, flush=True),
        validate=validate if args.validate_every else None,
        validate_every=args.validate_every,
    )
    cpu = time.process_time() - cpu_start
    print(f"  done in {res.seconds:.0f} s wall, {cpu:.0f} s CPU ({cpu / args.iterations:.3f} s CPU per task, validation "
          f"included); kept the weights after {res.best_iteration or args.iterations} tasks", flush=True)
    results["quadratic_meta_train_seconds"] = res.seconds
    results["quadratic_meta_train_cpu_seconds"] = cpu
    results["quadratic_meta_train_validation"] = res.validation
    results["quadratic_best_iteration"] = res.best_iteration
    train_tasks = [QuadraticFamily(batch_size=args.tune_functions).sample(torch.Generator().manual_seed(10_000 + args.seed))]
    print(f"tuning baseline learning rates on {args.tune_functions} training quadratics (loss at step 100):", flush=True)
    quad_lrs = tune(train_tasks, 100, "train")
    test_task = QuadraticFamily(batch_size=args.test_functions).sample(torch.Generator().manual_seed(20_000 + args.seed))
    quad = curves([test_task], 200, quad_lrs, {"LSTM (learned)": quad_lstm})
    results["quadratic"] = print_table(f"{args.test_functions} held-out quadratics, mean loss:", quad, quad_lrs)
    print("for reference, each baseline at the grid learning rate best on the held-out functions (hindsight):", flush=True)
    oracle_lrs = tune([test_task], 100, "held-out")
    oracle = curves([test_task], 200, oracle_lrs, {})
    results["quadratic_hindsight"] = print_table("baselines tuned on the held-out functions, mean loss:", oracle, oracle_lrs)
    lstm = results["quadratic"]["LSTM (learned)"]
    for key, label, table in (
        ("goal_met", "tuned on training functions", results["quadratic"]),
        ("below_hindsight_baselines", "tuned in hindsight", results["quadratic_hindsight"]),
    ):
        rivals = {k: v for k, v in table.items() if k != "LSTM (learned)"}
        wins = all(lstm[s] < v[s] for v in rivals.values() for s in ("step100", "step200"))
        print(f"LSTM below every baseline {label} at steps 100 and 200: {'yes' if wins else 'no'}")
        results[key] = wins
    plot(quad, f"{args.test_functions} held-out 10-d quadratics", args.out / "quadratic_curves.png", 100)

    # ---------------------------------------------------------------- MLP on Omniglot
    root = default_omniglot_root()
    if args.mlp_test_tasks <= 0:
        print("\nMLP task skipped (--mlp-test-tasks 0)")
    elif root is None:
        print("\nMLP task skipped (no Omniglot zips next to the repository)")
    else:
        train_family = OmniglotMLPFamily(root, background=True)
        test_family = OmniglotMLPFamily(root, background=False)
        learned = {"LSTM (quadratic-trained)": quad_lstm}
        if args.mlp_iterations > 0:
            print(f"\nmeta-training the LSTM optimizer on the MLP task: {args.mlp_iterations} tasks", flush=True)
            mlp_lstm = CoordinatewiseLSTMOptimizer()
            res = meta_train(
                mlp_lstm,
                train_family,
                iterations=args.mlp_iterations,
                meta_lr=args.meta_lr,
                seed=args.seed,
                checkpoint=args.out / "mlp_lstm.pt",
                log_every=max(1, args.mlp_iterations // 5),
                log=lambda line: print(line, flush=True),
            )
            print(f"  done in {res.seconds:.0f} s")
            learned["LSTM (MLP-trained)"] = mlp_lstm
        gen = torch.Generator().manual_seed(30_000 + args.seed)
        print(f"\ntuning baseline learning rates on {args.mlp_tune_tasks} background-alphabet MLP task(s):", flush=True)
        mlp_lrs = tune([train_family.sample(gen) for _ in range(args.mlp_tune_tasks)], 100, "train")
        gen = torch.Generator().manual_seed(40_000 + args.seed)
        test_tasks = [test_family.sample(gen) for _ in range(args.mlp_test_tasks)]
        mlp = curves(test_tasks, 200, mlp_lrs, learned)
        results["mlp"] = print_table(f"MLP task, {args.mlp_test_tasks} evaluation-alphabet tasks, mean loss:", mlp, mlp_lrs)
        plot(mlp, "MLP (20 sigmoid units), Omniglot 10-way", args.out / "mlp_loss_curves.png", 100)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}/")


if __name__ == "__main__":
    t0, c0 = time.perf_counter(), time.process_time()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU")
