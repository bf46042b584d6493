"""Which floating-point results this CPU reproduces: a SHA-256 prefix of each probe's result, to diff between machines.

Portable numerics (:mod:`rnnmeta.numerics`) take MKL's, ATen's, oneDNN's and NNPACK's kernels off the
CPU so that any x86 CPU with AVX2 would print the same bits; an Intel Xeon and an AMD EPYC still
printed other main-job tables with them (docs/PERFORMANCE.md). This script finds where, piece by
piece: it runs, in a fresh process with the numerics asked for (``portable`` by default), a list of
probes on seeded inputs and prints a 16-hex-digit hash of each result:

* single operations at the sizes the learners use (matrix products through MKL, ``bmm``,
  element-wise functions and reductions through ATen's kernels, softmax, layer norm, an LSTM
  cell, convolutions), forward and backward;
* every learner of a comparison config: its parameters after 1, 5 and 20 training steps (Adam,
  one fixed training batch) and its predictions on one test batch in eval mode.

``--save FILE`` writes the hashes with the CPU's name; ``--compare FILE`` prints which probes give
other bits here than on the machine that wrote FILE, so the first operation that differs names the
library to look at. References written by this script are kept under ``docs/numerics/``.

Run:  python scripts/numerics_fingerprint.py [--numerics portable] [--config configs/compare/sinusoid.yaml]
          [--save docs/numerics/<machine>.json] [--compare docs/numerics/<other machine>.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
LEARNER_STEPS = (1, 5, 20)


def digest(*tensors) -> str:
    """The first 16 hex digits of the SHA-256 of the tensors' bytes, in order."""
    sha = hashlib.sha256()
    for tensor in tensors:
        sha.update(tensor.detach().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


def operation_probes() -> Iterator[tuple[str, Callable[[], tuple]]]:
    """(name, thunk returning tensors) for single operations at the learners' sizes, on seeded inputs."""
    import torch
    import torch.nn.functional as F

    def randn(*shape: int, seed: int = 0) -> torch.Tensor:
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))

    def with_grad(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> tuple:
        leaves = [x.clone().requires_grad_() for x in inputs]
        out = fn(*leaves)
        grads = torch.autograd.grad(out.square().sum(), leaves)
        return (out, *grads)

    for m, k, n in ((250, 40, 40), (25, 64, 256), (32, 512, 512), (1, 300, 1)):
        yield f"mm [{m},{k}]x[{k},{n}]", lambda m=m, k=k, n=n: (randn(m, k) @ randn(k, n, seed=1),)
    yield "linear 40->40 on [250,40], fwd+bwd", lambda: with_grad(F.linear, randn(250, 40), randn(40, 40, seed=1), randn(40, seed=2))
    yield "bmm [25,10,40]x[25,40,40], fwd+bwd", lambda: with_grad(torch.bmm, randn(25, 10, 40), randn(25, 40, 40, seed=1))
    yield "bmm [4,3,5]x[4,5,2]", lambda: (torch.bmm(randn(4, 3, 5), randn(4, 5, 2, seed=1)),)
    x = randn(4099) * 3
    for name, fn in (("exp", torch.exp), ("log", lambda t: torch.log(t.abs() + 0.1)), ("tanh", torch.tanh),
                     ("sigmoid", torch.sigmoid), ("sin", torch.sin), ("cos", torch.cos), ("sqrt", lambda t: t.abs().sqrt()),
                     ("rsqrt", lambda t: (t.abs() + 0.1).rsqrt()), ("reciprocal", lambda t: (t.abs() + 0.1).reciprocal()),
                     ("pow 1.5", lambda t: t.abs().pow(1.5)), ("softplus", F.softplus), ("elu", F.elu), ("erf", torch.erf)):
        yield f"{name} [4099]", lambda fn=fn: (fn(x),)
    yield "sum [100003]", lambda: (randn(100003).sum(),)
    yield "mean over dim 0 of [1000,97]", lambda: (randn(1000, 97).mean(0),)
    yield "var over dim 1 of [97,1000]", lambda: (randn(97, 1000).var(1),)
    yield "norm of [4099]", lambda: (torch.linalg.vector_norm(x),)
    yield "softmax [64,50], fwd+bwd", lambda: with_grad(lambda t: t.softmax(-1), randn(64, 50))
    yield "log_softmax [64,50], fwd+bwd", lambda: with_grad(lambda t: t.log_softmax(-1), randn(64, 50))
    yield "cross_entropy [64,20]", lambda: (F.cross_entropy(randn(64, 20), torch.arange(64) % 20),)
    yield "layer_norm [64,256], fwd+bwd", lambda: with_grad(lambda t: F.layer_norm(t, (256,)), randn(64, 256))
    yield "cosine_similarity [25,128,40]", lambda: (F.cosine_similarity(randn(25, 1, 40), randn(25, 128, 40, seed=1), dim=-1),)

    def lstm_cell() -> tuple:
        torch.manual_seed(0)
        cell = torch.nn.LSTMCell(41, 64)
        h = c = torch.zeros(25, 64)
        xs = randn(10, 25, 41)
        for t in range(10):
            h, c = cell(xs[t], (h, c))
        grads = torch.autograd.grad(h.square().sum(), list(cell.parameters()))
        return (h, c, *grads)

    yield "LSTMCell 41->64, 10 steps, fwd+bwd", lstm_cell

    def lstm() -> tuple:
        torch.manual_seed(0)
        layer = torch.nn.LSTM(41, 64, batch_first=True)
        out, _ = layer(randn(25, 10, 41))
        return (out, *torch.autograd.grad(out.square().sum(), list(layer.parameters())))

    yield "nn.LSTM 41->64, 10 steps, fwd+bwd", lstm
    yield "conv1d 32->32 k2 dilation 4 on [8,32,50], fwd+bwd", lambda: with_grad(
        lambda a, w: F.conv1d(a, w, dilation=4), randn(8, 32, 50), randn(32, 32, 2, seed=1))
    yield "conv2d 64->64 3x3 on [8,64,14,14], fwd+bwd", lambda: with_grad(
        lambda a, w: F.conv2d(a, w, padding=1), randn(8, 64, 14, 14), randn(64, 64, 3, 3, seed=1))
    yield "batch_norm [8,64,14,14] (training), fwd+bwd", lambda: with_grad(
        lambda t: F.batch_norm(t, None, None, training=True), randn(8, 64, 14, 14))

    def adam() -> tuple:
        weight = randn(40, 40).requires_grad_()
        optimizer = torch.optim.Adam([weight], lr=1e-3)
        for step in range(3):
            weight.grad = randn(40, 40, seed=10 + step)
            optimizer.step()
        return (weight,)

    yield "Adam, 3 steps on [40,40]", adam

    def dropout_probe(dropout: Callable[[torch.Tensor, float], torch.Tensor]) -> tuple:
        """The mask of ``dropout`` p=0.1 from a seeded generator, and the generator's next draws after it."""
        generator_before = torch.get_rng_state()
        torch.manual_seed(0)
        mask = dropout(torch.ones(4099), 0.1)
        after = torch.rand(8)
        torch.set_rng_state(generator_before)
        return (mask, after)

    def draws() -> tuple:
        # the samplers of the data streams and the meta-RL agents' policies
        generator = torch.Generator().manual_seed(0)
        probs = torch.rand(64, 10, generator=generator).softmax(-1)
        return (torch.rand(4099, generator=generator), torch.randn(4099, generator=generator),
                torch.normal(torch.zeros(64, 6), torch.ones(64, 6), generator=generator),
                torch.multinomial(probs, 1, generator=generator), torch.multinomial(probs[0], 5, generator=generator),
                torch.randperm(1000, generator=generator), torch.randint(0, 50, (4099,), generator=generator))

    yield "rand, randn, normal, multinomial, randperm, randint (seeded)", draws

    def python_math() -> tuple:
        # Python floats go through the C library's libm: Adam's bias corrections (beta ** step), the
        # cosine schedules (math.cos); another libm (glibc version, or its FMA/non-FMA variant) can round otherwise
        import math

        values = [math.cos(math.pi * i / 997) + math.exp(-i / 313) + math.log1p(i) + 0.999 ** i + 0.9 ** (i / 7)
                  for i in range(10000)]
        return (torch.tensor(values, dtype=torch.float64),)

    yield "Python math: cos, exp, log1p, pow over 10,000 arguments (libm)", python_math
    from rnnmeta.numerics import dropout

    # F.dropout is bernoulli_ with a scalar p: MKL's generator on Intel CPUs, torch's elsewhere (rnnmeta avoids it)
    yield "torch's F.dropout p=0.1 on [4099], and the generator after it", lambda: dropout_probe(F.dropout)
    yield "rnnmeta.numerics.dropout p=0.1 on [4099], and the generator after it", lambda: dropout_probe(dropout)


def learner_probes(config: str) -> Iterator[tuple[str, str]]:
    """(name, hash) for every learner of ``config``: parameters after LEARNER_STEPS steps, then eval predictions."""
    import pytorch_lightning as pl
    import torch
    import yaml

    from rnnmeta.compare.config import build_learner, validate_specs

    cfg = yaml.safe_load(Path(config).read_text())
    data, runs = validate_specs(cfg["data"], cfg["learners"])
    for learner in runs:
        pl.seed_everything(0, verbose=False)
        datamodule, model = build_learner(data, runs[learner])
        datamodule.setup("fit")
        batch = next(iter(datamodule.train_dataloader()))
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        for step in range(1, max(LEARNER_STEPS) + 1):
            optimizer.zero_grad()
            loss, _ = model.episode_step(batch)
            loss.backward()
            optimizer.step()
            if step in LEARNER_STEPS:
                yield f"{learner}: parameters after {step} training step{'s' * (step > 1)}", digest(*model.parameters())
        model.eval()
        with torch.no_grad():
            yield f"{learner}: eval predictions", digest(model(batch.support_x, batch.support_y, batch.query_x))


def report(record: dict, reference: dict | None) -> tuple[list[str], int]:
    """Markdown rows of ``record``'s hashes (against ``reference``'s where given) and how many differ from it."""
    if reference is None:
        return ["| probe | hash |", "|---|---|", *(f"| {name} | {value} |" for name, value in record["hashes"].items())], 0
    lines, differ = ["| probe | hash | same as the reference |", "|---|---|---|"], 0
    for name, value in record["hashes"].items():
        theirs = reference["hashes"].get(name)
        differ += theirs is not None and theirs != value
        lines.append(f"| {name} | {value} | {'-' if theirs is None else 'yes' if theirs == value else '**no**'} |")
    return lines, differ


def child(config: str, numerics: str) -> None:
    """Print one JSON object: the CPU, the numerics in force and every probe's hash."""
    import torch

    from rnnmeta.compare.runner import cpu_name
    from rnnmeta.numerics import describe, use

    torch.set_num_threads(1)
    with use(numerics):
        hashes = {name: digest(*thunk()) for name, thunk in operation_probes()}
        hashes.update(learner_probes(config))
        print(json.dumps({"cpu": cpu_name(), "numerics": describe(), "torch": torch.__version__, "config": config,
                          "libc": " ".join(platform.libc_ver()), "python": platform.python_version(), "hashes": hashes}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--numerics", choices=("portable", "native"), default="portable")
    ap.add_argument("--config", default="configs/compare/sinusoid.yaml", help="comparison whose learners are probed")
    ap.add_argument("--save", help="write the hashes to this JSON file")
    ap.add_argument("--compare", help="a JSON file written by --save on another machine: say which probes differ")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.config, args.numerics)
    from rnnmeta.numerics import portable_environment

    env = portable_environment() if args.numerics == "portable" else None
    config = str(Path(args.config).resolve())
    command = [sys.executable, __file__, "--child", "--numerics", args.numerics, "--config", config]
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        sys.exit(f"the probe process failed:\n{out.stderr[-3000:]}")
    record = json.loads(out.stdout.strip().splitlines()[-1])
    reference = json.loads(Path(args.compare).read_text()) if args.compare else None
    print(f"CPU: {record['cpu']}; torch {record['torch']}; {record['libc']}; Python {record['python']}; {record['numerics']}; 1 thread")
    if reference is not None:
        print(f"compared with {args.compare}: {reference['cpu']}; torch {reference['torch']}; {reference.get('libc')}; "
              f"Python {reference.get('python')}; {reference['numerics']}")
        if reference["numerics"] != record["numerics"] or reference["torch"] != record["torch"]:
            print("warning: the two records ran under other numerics or another torch; differences are expected")
    lines, differ = report(record, reference)
    print("\n" + "\n".join(lines))
    if reference is not None:
        print(f"\n{differ} of {len(record['hashes'])} probes give other bits than on the reference machine")
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(record, indent=1) + "\n")
        print(f"\nsaved to {args.save}")


if __name__ == "__main__":
    main()
