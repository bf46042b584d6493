"""SNAIL on Omniglot: the cost of answering M queries, training throughput, and a timed training run.

(a) Time per episode to answer M = 1, 15, 75 queries with the cached batched pass
    (``SNAIL.forward``: support encoded once, M next steps in one pass) against one full
    sequence per query (``SNAIL.forward_naive``: B * M sequences), both in eval mode without
    gradients, and the same for the sequence network alone (support and query embeddings
    precomputed), which isolates what the caching saves.
(b) Training throughput in episodes per second (forward, backward and Adam step), 5-way 1-shot,
    with the meta-batch and queries per class given.
(c) ``--train-steps N``: meta-train on Omniglot 5-way 1-shot for N steps and report test accuracy
    with its 95% CI over the 1,000 fixed test episodes: the ``snail`` learner of
    ``configs/compare/omniglot_5w1s.yaml`` run by :func:`rnnmeta.compare.compare` (the same data,
    test episodes and logging as that comparison), with this script's layout, ``--max-shots``,
    ``--meta-batch`` and ``--queries`` as its training protocol.

Run:  python scripts/benchmark_snail.py [--repeats 10] [--meta-batch 32] [--queries 15]
      python scripts/benchmark_snail.py --skip-timing --train-steps 2000 [--compact --max-shots 1 --queries 1]
      python scripts/benchmark_snail.py --skip-timing --train-steps 2 --test-episodes 20 --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import torch
from comparison_config import REPO, load, narrowed

from rnnmeta.learners.snail import SNAIL
from rnnmeta.nets import Conv4

OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"
#: The compact layout for CPU runs: Conv4 with 32 filters, narrow blocks (the paper's is SNAIL's default).
COMPACT: dict[str, Any] = {
    "backbone": {"class_path": "rnnmeta.nets.Conv4", "init_args": {"hidden": 32, "track_running_stats": True}},
    "key_sizes": [16, 32, 64],
    "value_sizes": [16, 32, 32],
    "tc_filters": [32, 32],
}


def random_episode(batch: int, n_way: int, k_shot: int, m: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(batch, n_way * k_shot, 1, 28, 28, generator=g)
    sy = torch.stack([torch.randperm(n_way * k_shot, generator=g) % n_way for _ in range(batch)])
    qx = torch.rand(batch, m, 1, 28, 28, generator=g)
    qy = torch.randint(0, n_way, (batch, m), generator=g)
    return sx, sy, qx, qy


def fastest(
    fns: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Fastest of ``repeats`` calls of each function, in seconds of ``clock``, after one warm-up call each.

    Calls are interleaved round by round so that load from other processes hits all alike; the
    minimum is the least disturbed measurement.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: min(ts) for name, ts in times.items()}


def query_cost(repeats: int) -> None:
    # CPU time of one thread: the compute cost, insensitive to other processes sharing the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print("(a) CPU time per episode (ms, 1 thread, fastest of repeats) to answer M queries, eval mode, no grad;")
    print("    'net' columns: the sequence network alone, embeddings precomputed")
    print(f"{'setting':>8} {'M':>4} | {'cached':>9} {'naive':>9} {'ratio':>6} | {'net cached':>10} {'net naive':>10} {'ratio':>6}")
    for k_shot in (1, 5):
        torch.manual_seed(0)
        learner = SNAIL(n_way=5, max_shots=5).eval()
        for m in (1, 15, 75):
            sx, sy, qx, _ = random_episode(1, 5, k_shot, m)
            with torch.no_grad():
                sup, qry = learner.support_steps(sx, sy), learner.query_steps(qx)
                s, c = sup.shape[1:]
                seqs = torch.cat([sup.unsqueeze(1).expand(1, m, s, c), qry.unsqueeze(2)], 2).reshape(m, s + 1, c)
                t = fastest(
                    {
                        "cached": lambda: learner(sx, sy, qx),
                        "naive": lambda: learner.forward_naive(sx, sy, qx),
                        "net_cached": lambda: learner.network.step(qry, learner.network.encode(sup)),
                        "net_naive": lambda: learner.network(seqs)[:, -1],
                    },
                    repeats,
                    clock=time.process_time,
                )
                cached, naive, net_cached, net_naive = t["cached"], t["naive"], t["net_cached"], t["net_naive"]
            print(
                f"{'5w' + str(k_shot) + 's':>8} {m:>4} | {1e3 * cached:9.2f} {1e3 * naive:9.2f} {naive / cached:6.1f} | "
                f"{1e3 * net_cached:10.2f} {1e3 * net_naive:10.2f} {net_naive / net_cached:6.1f}"
            )
    torch.set_num_threads(threads)


def throughput(meta_batch: int, queries: int, max_shots: int, repeats: int, compact: bool) -> None:
    torch.manual_seed(0)
    learner = make_learner(compact, max_shots).train()
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    sx, sy, qx, qy = random_episode(meta_batch, 5, 1, 5 * queries)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        learner.task_losses(learner(sx, sy, qx), qy).mean().backward()
        opt.step()

    sec = fastest({"step": step}, repeats)["step"]
    cpu = fastest({"step": step}, repeats, clock=time.process_time)["step"]
    print(
        f"(b) training, {'compact' if compact else 'paper'} layout, 5-way 1-shot, max_shots={max_shots} (T={learner.seq_len}), meta-batch {meta_batch}, "
        f"{queries} queries per class: {sec:.3f} s per step = {meta_batch / sec:.1f} episodes/s wall-clock "
        f"({cpu:.3f} CPU-s per step over {torch.get_num_threads()} threads) "
        f"({learner.num_parameters():,} parameters)"
    )


def make_learner(compact: bool, max_shots: int) -> SNAIL:
    """The Omniglot layout of the paper, or the :data:`COMPACT` one for CPU runs."""
    if not compact:
        return SNAIL(n_way=5, max_shots=max_shots)
    layout = dict(COMPACT, backbone=Conv4(**COMPACT["backbone"]["init_args"]))
    return SNAIL(n_way=5, max_shots=max_shots, **layout)


def train(args: argparse.Namespace) -> None:
    """(c): the comparison's ``snail`` learner for ``args.train_steps`` steps, through :func:`rnnmeta.compare.compare`."""
    from rnnmeta.compare import compare

    config = narrowed(load("omniglot_5w1s"), ["snail"], args.train_steps, args.val_episodes, args.test_episodes,
                      str(args.omniglot_root), args.output_dir, workers=1, seeds=[args.seed])
    run = config["learners"]["snail"]
    init = run["model"]["init_args"]
    init["max_shots"] = args.max_shots
    if args.compact:
        init.update(COMPACT)
    run["train_data"] = {"meta_batch_size": args.meta_batch, "q_queries": args.queries}
    config["name"] = f"snail_{'compact' if args.compact else 'paper'}_{args.train_steps}_steps"
    (row,) = compare(**config)
    print(
        f"(c) {row['steps']:,.0f} steps x {args.meta_batch} episodes, {'compact' if args.compact else 'paper'} layout "
        f"({row['parameters']:,} parameters), max_shots={args.max_shots}, {args.queries} queries per class: test accuracy "
        f"5-way 1-shot = {100 * row['mean']:.2f} +- {100 * row['ci95']:.2f} % over {row['test_episodes']} episodes "
        f"(tables, costs and curves in {args.output_dir}/{config['name']}/)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=15, help="queries per class")
    parser.add_argument("--max-shots", type=int, default=5, help="T = 5 * max_shots + 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compact", action="store_true", help="compact layout for (b) and (c) (see make_learner)")
    parser.add_argument("--skip-timing", action="store_true", help="skip (a) and (b)")
    parser.add_argument("--train-steps", type=int, default=0, help="run (c) for this many meta-training steps")
    parser.add_argument("--val-episodes", type=int, default=None, help="(c): default the comparison's 100")
    parser.add_argument("--test-episodes", type=int, default=None, help="(c): default the comparison's 1,000")
    parser.add_argument("--omniglot-root", default=str(OMNIGLOT))
    parser.add_argument("--output-dir", default="results/snail", help="(c): where the comparison's folder goes")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU only")
    if not args.skip_timing:
        query_cost(args.repeats)
        throughput(args.meta_batch, args.queries, args.max_shots, args.repeats, args.compact)
    if args.train_steps > 0:
        train(args)


if __name__ == "__main__":
    main()
