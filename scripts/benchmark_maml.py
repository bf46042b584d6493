"""Seconds per meta-iteration and peak memory of MAML: rnnmeta against a plain loop and torchopt.

Setup (Finn et al. 2017, Omniglot 5-way 1-shot): Conv4 with 64 filters, meta-batch 32,
15 queries per class, 1 inner step at lr 0.4, second and first order. Compared in the same
process, interleaved iteration by iteration so that load from other processes hits all alike:

* ``rnnmeta``: :class:`rnnmeta.learners.MAML` as ``rnnmeta fit`` runs it (``episode_step``:
  per-task loop, each task's meta-gradient taken and its graph freed at once, then ``backward``);
* ``rnnmeta+compile``: the same with ``compile_query=True`` (the query pass through
  ``torch.compile``; the first call, which compiles, is reported apart);
* ``rnnmeta batched``: ``batch_tasks=True`` (all tasks as groups of grouped convolutions);
* ``loop``: a plain per-task loop, ``torch.func.functional_call`` + ``torch.autograd.grad``
  (``create_graph=True`` for second order), query loss backpropagated task by task;
* ``torchopt``: ``torchopt.MetaSGD`` per task (second order only; torchopt has no first-order
  mode), as in torchopt's MAML example. Skipped with a note when torchopt does not import;
* ``floor``: not MAML, an ordinary training step of the network over the same images (the
  work of first-order MAML without the inner update), i.e. what the convolutions cost here;
* ``rnnmeta bf16`` / ``loop bf16``: under CPU bfloat16 autocast (``--trainer.precision
  bf16-mixed``); gradients then differ from float32 by bfloat16 rounding.

Peak memory (maximum resident set size) is measured per method in a fresh subprocess running
two meta-iterations on random images of the same shape (loading Omniglot would set the peak),
since the RSS peak of one process cannot be split between methods.

Each method is also timed against the first one iteration by iteration (``x1.05 of rnnmeta``: the
median ratio, with its quartiles), which cancels the load that hits both.

Run:  python scripts/benchmark_maml.py [--iters 5] [--meta-batch 32] [--threads 2] [--quick] [--methods rnnmeta loop ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from rnnmeta.episode import Episode
from rnnmeta.learners.maml import MAML
from rnnmeta.process import peak_resident_bytes, reset_peak_resident

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
N_WAY, K_SHOT, Q, INNER_LR = 5, 1, 15, 0.4


def make_batch(meta_batch: int, seed: int = 0, real: bool = True) -> tuple[tuple[torch.Tensor, ...], str]:
    """One Omniglot episode batch if the data layer and data are there (and ``real``), else random 28x28 images."""
    try:
        if not real:
            raise RuntimeError("random images requested")
        from rnnmeta.data import EpisodicDataModule, Omniglot

        if not (OMNIGLOT / "images_background.zip").exists():
            raise FileNotFoundError(OMNIGLOT)
        dm = EpisodicDataModule(
            Omniglot(root=str(OMNIGLOT)), n_way=N_WAY, k_shot=K_SHOT, q_queries=Q, meta_batch_size=meta_batch, seed=seed
        )
        dm.setup("fit")
        ep = next(iter(dm.train_dataloader()))
        return (ep.support_x, ep.support_y, ep.query_x, ep.query_y), "real Omniglot (Vinyals split, train classes)"
    except Exception as err:  # noqa: BLE001 - the benchmark runs without the data layer too
        g = torch.Generator().manual_seed(seed)
        sx = torch.rand(meta_batch, N_WAY * K_SHOT, 1, 28, 28, generator=g)
        qx = torch.rand(meta_batch, N_WAY * Q, 1, 28, 28, generator=g)
        sy = torch.arange(N_WAY).repeat_interleave(K_SHOT).repeat(meta_batch, 1)
        qy = torch.arange(N_WAY).repeat_interleave(Q).repeat(meta_batch, 1)
        return (sx, sy, qx, qy), f"random 28x28 images (no real data: {type(err).__name__}: {err})"


# ----------------------------------------------------------------------------- methods
def ours(learner: MAML, batch) -> list[torch.Tensor]:
    """What ``rnnmeta fit`` runs per step: ``episode_step`` (task-by-task meta-gradients) + ``backward``."""
    sx, sy, qx, qy = batch
    learner.zero_grad(set_to_none=True)
    loss, _ = learner.episode_step(Episode(sx, sy, qx, qy, kind="classification", n_way=N_WAY))
    loss.backward()
    return [p.grad for p in learner._weights().values()]


def plain_loop(learner: MAML, batch) -> list[torch.Tensor]:
    """The textbook per-task loop on the same nn.Module (its batch norm uses batch statistics)."""
    sx, sy, qx, qy = batch
    model = torch.nn.Sequential(learner.backbone, learner.head)
    names = [n for n, _ in model.named_parameters()]
    model.zero_grad(set_to_none=True)
    second_order = not learner.first_order
    for t in range(sx.shape[0]):
        params = dict(model.named_parameters())
        loss = F.cross_entropy(functional_call(model, params, (sx[t],)), sy[t])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=second_order)
        fast = {n: p - INNER_LR * g for (n, p), g in zip(params.items(), grads)}
        (F.cross_entropy(functional_call(model, fast, (qx[t],)), qy[t]) / sx.shape[0]).backward()
    return [dict(model.named_parameters())[n].grad for n in names]


def torchopt_metasgd(learner: MAML, batch) -> list[torch.Tensor]:
    import torchopt

    sx, sy, qx, qy = batch
    model = torch.nn.Sequential(learner.backbone, learner.head)
    model.zero_grad(set_to_none=True)
    inner_opt = torchopt.MetaSGD(model, lr=INNER_LR)
    net_state = torchopt.extract_state_dict(model, by="reference", detach_buffers=True)
    opt_state = torchopt.extract_state_dict(inner_opt)
    for t in range(sx.shape[0]):
        inner_opt.step(F.cross_entropy(model(sx[t]), sy[t]))
        (F.cross_entropy(model(qx[t]), qy[t]) / sx.shape[0]).backward()
        torchopt.recover_state_dict(model, net_state)
        torchopt.recover_state_dict(inner_opt, opt_state)
    return [p.grad for p in model.parameters()]


def higher_loop(learner: MAML, batch) -> list[torch.Tensor]:
    """higher's ``innerloop_ctx`` with a differentiable SGD step per task (``copy_initial_weights=False``)."""
    import higher

    sx, sy, qx, qy = batch
    model = torch.nn.Sequential(learner.backbone, learner.head)
    model.zero_grad(set_to_none=True)
    inner = torch.optim.SGD(model.parameters(), lr=INNER_LR)
    for t in range(sx.shape[0]):
        with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (
            fmodel, diffopt,
        ):
            diffopt.step(F.cross_entropy(fmodel(sx[t]), sy[t]))
            (F.cross_entropy(fmodel(qx[t]), qy[t]) / sx.shape[0]).backward()
    return [p.grad for p in model.parameters()]


def training_step_floor(learner: MAML, batch) -> list[torch.Tensor]:
    """Not MAML: one ordinary training step of the same network on the same images, task by task.

    First-order MAML does exactly this work (a forward and backward over every support and query
    image) plus a weight update per task, so this is the floor any first-order implementation
    meets at this network's convolution speed; second order adds the support double-backward.
    """
    sx, sy, qx, qy = batch
    model = torch.nn.Sequential(learner.backbone, learner.head)
    model.zero_grad(set_to_none=True)
    for t in range(sx.shape[0]):
        (F.cross_entropy(model(sx[t]), sy[t]) / sx.shape[0]).backward()
        (F.cross_entropy(model(qx[t]), qy[t]) / sx.shape[0]).backward()
    return [p.grad for p in model.parameters()]


def bf16(fn: Callable) -> Callable:
    """``fn`` under CPU bfloat16 autocast, which is what ``--trainer.precision bf16-mixed`` runs."""

    def run(learner: MAML, batch) -> list[torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(learner, batch)

    return run


# name -> (function, MAML keyword arguments of the learner it runs on)
METHODS: dict[str, tuple[Callable, dict]] = {
    "rnnmeta": (ours, {}),
    "rnnmeta+compile": (ours, {"compile_query": True}),
    "rnnmeta batched": (ours, {"batch_tasks": True}),
    "loop": (plain_loop, {}),
    "torchopt": (torchopt_metasgd, {}),
    "higher": (higher_loop, {}),
    "rnnmeta bf16": (bf16(ours), {}),
    "loop bf16": (bf16(plain_loop), {}),
    "floor": (training_step_floor, {}),
}


def methods(first_order: bool, names: list[str]) -> dict[str, tuple[Callable, dict]]:
    out = {n: METHODS[n] for n in names}
    if "torchopt" in out:
        reason = "torchopt has no first-order mode" if first_order else None
        if reason is None:
            try:
                import torchopt  # noqa: F401
            except Exception as err:  # noqa: BLE001
                reason = f"{type(err).__name__}: {err}"
        if reason:
            print(f"note: torchopt skipped ({reason})")
            del out["torchopt"]
    if "higher" in out and first_order:
        print("note: higher skipped (first order: its fast weights are cut from the initial ones, so no meta-gradient reaches them)")
        del out["higher"]
    if "higher" in out:
        try:
            import higher  # noqa: F401
        except Exception as err:  # noqa: BLE001
            print(f"note: higher skipped ({type(err).__name__}: {err}; pip install higher==0.2.1)")
            del out["higher"]
    return out


def conv4_flops_per_image(hidden: int = 64, side: int = 28, in_channels: int = 1) -> int:
    """Forward multiply-adds x 2 of the four 3x3 convs (batch norm, ReLU, pooling are negligible)."""
    flops, c = 0, in_channels
    for _ in range(4):
        flops += 2 * side * side * hidden * c * 9
        c, side = hidden, side // 2
    return flops


# ----------------------------------------------------------------------------- runs
def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (:func:`rnnmeta.process.peak_resident_bytes`)."""
    return peak_resident_bytes() / 2**20


def reset_peak_rss() -> None:
    """Reset the peak to the current RSS, so the warm-up's peak is not counted."""
    reset_peak_resident()


def memory_child(method: str, first_order: bool, meta_batch: int) -> None:
    torch.manual_seed(0)
    batch, _ = make_batch(meta_batch, real=False)  # loading Omniglot would dominate the peak; the cost is the same
    fn, kwargs = METHODS[method]
    learner = MAML(first_order=first_order, inner_lr=INNER_LR, n_way=N_WAY, **kwargs)
    fn(learner, batch)  # compile (if asked) and warm up before the baseline
    reset_peak_rss()
    base = peak_rss_mib()
    for _ in range(2):
        fn(learner, batch)
    print(json.dumps({"base_mib": base, "peak_mib": peak_rss_mib()}))


def measure_memory(method: str, first_order: bool, meta_batch: int) -> str:
    cmd = [sys.executable, __file__, "--memory-child", method, "--meta-batch", str(meta_batch)]
    cmd += ["--first-order"] if first_order else []
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return f"failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}"
    m = json.loads(res.stdout.strip().splitlines()[-1])
    return f"{m['peak_mib']:.0f} MiB peak ({m['peak_mib'] - m['base_mib']:+.0f} MiB over setup)"


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=5, help="timed meta-iterations per method (after 1 warm-up)")
    ap.add_argument("--meta-batch", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="meta-batch 8, 2 iterations, no memory subprocesses")
    ap.add_argument(
        "--methods", nargs="+", default=[m for m in METHODS if "bf16" not in m], choices=list(METHODS), help="what to time"
    )
    ap.add_argument("--orders", nargs="+", default=["second", "first"], choices=["second", "first"])
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (fixed, and printed, for every run)")
    ap.add_argument("--first-order", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.first_order, args.meta_batch)
    if args.quick:
        args.meta_batch, args.iters = 8, 2
    if args.threads < 1:
        ap.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    batch, source = make_batch(args.meta_batch)
    n_img = args.meta_batch * N_WAY * (K_SHOT + Q)
    f_img = conv4_flops_per_image()
    f_s, f_q = f_img * args.meta_batch * N_WAY * K_SHOT, f_img * args.meta_batch * N_WAY * Q
    print(f"CPU: {cpu_model()}, capability {torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.1f}")
    print(f"data: {source}")
    print(
        f"setup: 5-way 1-shot, {Q} queries/class, meta-batch {args.meta_batch} ({n_img} images), Conv4-64, 1 inner step; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"FLOP estimate: Conv4 forward {f_img / 1e6:.1f} MFLOP/image; support fwd {f_s / 1e9:.1f} G, query fwd {f_q / 1e9:.1f} G; "
        f"first order ~3(Fs+Fq) = {3 * (f_s + f_q) / 1e9:.0f} GFLOP, second order ~3Fq+9Fs = {(3 * f_q + 9 * f_s) / 1e9:.0f} GFLOP "
        "per meta-iteration"
    )
    for order in args.orders:
        first_order = order == "first"
        fns = methods(first_order, args.methods)
        torch.manual_seed(0)
        reference = MAML(first_order=first_order, inner_lr=INNER_LR, n_way=N_WAY)
        learners = {}
        for name, (_, kwargs) in fns.items():
            learners[name] = MAML(first_order=first_order, inner_lr=INNER_LR, n_way=N_WAY, **kwargs)
            learners[name].load_state_dict(reference.state_dict())
        times: dict[str, list[float]] = {name: [] for name in fns}
        grads: dict[str, list[torch.Tensor]] = {}
        warmup: dict[str, float] = {}
        for it in range(args.iters + 1):  # interleaved and shuffled, so that load and warm caches hit all alike
            order_names = list(fns)
            random.Random(it).shuffle(order_names)
            for name in order_names:
                fn = fns[name][0]
                t0 = time.perf_counter()
                g = fn(learners[name], batch)
                if it == 0:
                    warmup[name] = time.perf_counter() - t0
                else:
                    times[name].append(time.perf_counter() - t0)
                grads[name] = [x.clone() for x in g]
        print(f"\n{order} order:")
        first = next(iter(fns))
        for name in fns:
            diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(grads[name], grads[first]))
            scale = max(b.abs().max().item() for b in grads[first])
            med = statistics.median(times[name])
            flops = 3 * (f_s + f_q) if first_order or name == "floor" else 3 * f_q + 9 * f_s
            mem = "not measured (--quick)" if args.quick else measure_memory(name, first_order, args.meta_batch)
            # paired: this method's time over the first method's in the same iteration, which cancels
            # the load that hits both (on a noisy machine the spread of each method alone is wide)
            ratios = sorted(t / r for t, r in zip(times[name], times[first]))
            paired = "" if name == first else (
                f"x{statistics.median(ratios):.3f} of {first} per iteration [quartiles {ratios[len(ratios) // 4]:.3f}, "
                f"{ratios[(3 * len(ratios)) // 4]:.3f}], "
            )
            print(
                f"  {name:16s} {med:6.2f} s/iter median of {len(times[name])} [min {min(times[name]):.2f}, max {max(times[name]):.2f}], {paired}"
                f"{flops / med / 1e9:5.1f} GFLOP/s, "
                f"first call {warmup[name]:.1f} s;  max|grad - {first}| "
                + ("- (not MAML)" if name == "floor" else f"{diff:.1e} (of max {scale:.1e})")
                + f"  memory {mem}"
            )


if __name__ == "__main__":
    main()
