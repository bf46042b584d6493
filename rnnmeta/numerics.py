"""Portable floating point on x86 CPUs: kernels that do not follow the CPU, so that other machines can print the same bits.

On one machine a run with a step budget is bitwise reproducible (one thread, seeded streams). Across
CPUs it is not, by default: the same code and config gave the sinusoid main job MANN test MSE
0.1982 on an Intel Xeon and 0.1463 on an AMD EPYC (both AVX-512), because three libraries under
torch choose their kernels, and with them the order of floating-point sums, from the CPU they find
(portable numerics fix the four below). **The goal is not reached yet**: with them, the main job
printed other values on a 2-core AMD EPYC without AVX-512 (MANN 0.1856) than on the Intel Xeon
(0.1354); something else still follows the CPU, and ``scripts/numerics_fingerprint.py`` compares
single operations and learners between machines to find it (docs/PERFORMANCE.md, "Portable numerics").

* **MKL** (matrix products, ``torch.mm``/``nn.Linear``/``nn.LSTM``'s fallback): a code branch per
  ISA and vendor. Its conditional numerical reproducibility mode ``MKL_CBWR=COMPATIBLE`` runs one
  SSE2 branch without the approximate ``rcpps``/``rsqrtps``, documented to give the same results
  on Intel and compatible (AMD) processors. Only the environment variable read when MKL starts
  sets it: MKL refuses to change branch later (``mkl_cbwr_set`` returns ``MKL_CBWR_ERR_MODE_CHANGE``).
* **ATen's vectorised kernels** (element-wise ops, reductions, softmax): compiled for DEFAULT,
  AVX2 and AVX-512 and chosen at the first call; ``ATEN_CPU_CAPABILITY=avx2`` pins the AVX2 ones,
  which every x86-64 CPU of the last decade runs.
* **oneDNN** (convolutions, ``nn.LSTM`` in float32): JIT kernels shaped by the ISA and the cache
  sizes. ``torch.backends.mkldnn.enabled = False`` sends those ops to ATen's own kernels (and MKL).
* **NNPACK**, which then takes 2-D convolutions (Conv4's): its blocking follows the cache sizes it
  detects, so it is switched off too, and convolutions run as im2col and MKL's product (slower).

:func:`portable_environment` gives the two variables, which a process must have from its start;
:func:`use` switches oneDNN off (and checks that the variables took effect);
:func:`describe` says what is in force, for the records. The cost is speed: measured in
docs/PERFORMANCE.md ("Portable numerics"). Comparisons (:func:`rnnmeta.compare.compare`) run
every run in a child process with this environment when ``numerics`` is ``portable``; the meta-RL
comparison's command and ``rnnmeta fit --numerics portable`` restart themselves with it
(:func:`restart_portable`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from pathlib import Path
from typing import Iterator, Literal, NoReturn, Optional, get_args

import torch

__all__ = [
    "NUMERICS",
    "PORTABLE_ENVIRONMENT",
    "PORTABLE_ENVIRONMENT_TEXT",
    "Numerics",
    "check_numerics",
    "describe",
    "dropout",
    "environment_is_portable",
    "portable_environment",
    "portable_unsupported_reason",
    "restart_portable",
    "use",
]

Numerics = Literal["native", "portable"]
NUMERICS: tuple[str, ...] = get_args(Numerics)

# read once, when MKL and ATen start: a process must be started with them
PORTABLE_ENVIRONMENT: dict[str, str] = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "avx2"}
#: The same, as a shell prefix for messages: ``"MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=avx2"``.
PORTABLE_ENVIRONMENT_TEXT = " ".join(f"{key}={value}" for key, value in PORTABLE_ENVIRONMENT.items())

# mkl_cbwr.h: MKL_CBWR_BRANCH selects the branch field; the branch constants it returns
_MKL_CBWR_BRANCH = 1
_MKL_BRANCHES = {
    1: "off", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX", 10: "AVX2",
    11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1",
}


def check_numerics(value: object, name: str = "numerics") -> Numerics:
    """``value`` if it is ``"native"`` or ``"portable"``, else a ``ValueError`` naming it."""
    if value not in NUMERICS:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, NUMERICS))}, got {value!r}")
    return value  # type: ignore[return-value]


def portable_environment(base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the variables portable numerics need."""
    return {**(dict(os.environ) if base is None else base), **PORTABLE_ENVIRONMENT}


def portable_unsupported_reason() -> Optional[str]:
    """Why this machine cannot run portable numerics (not x86 with AVX2, or a torch without MKL), else None."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return f"portable numerics are defined for x86-64 CPUs; this one is {machine or 'unknown'}"
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512") and not environment_is_portable():
        return f"portable numerics need AVX2; torch runs {capability} kernels on this CPU"
    if not torch.backends.mkl.is_available():
        return "portable numerics need a torch built with MKL (the x86 wheels are)"
    return None


def environment_is_portable() -> bool:
    """Whether this process was started with :data:`PORTABLE_ENVIRONMENT` (then it can run portable numerics itself)."""
    return all(os.environ.get(key) == value for key, value in PORTABLE_ENVIRONMENT.items())


def mkl_branch() -> Optional[str]:
    """The MKL code branch in force (``"off"``: not in reproducible mode; ``"COMPATIBLE"``, ...), or None without MKL."""
    if not torch.backends.mkl.is_available():
        return None
    with contextlib.suppress(OSError, AttributeError):
        library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = library.mkl_serv_cbwr_get
        get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
        torch.ones(2, 2) @ torch.ones(2, 2)  # MKL reads MKL_CBWR at its first call
        code = get(_MKL_CBWR_BRANCH)
        return _MKL_BRANCHES.get(code, f"code {code}")
    return None


def describe() -> str:
    """What decides this process's floating point, e.g. ``"MKL branch COMPATIBLE, ATen AVX2, oneDNN off, NNPACK off"``."""
    branch = mkl_branch()
    parts = [] if branch is None else [f"MKL branch {branch}"]
    parts.append(f"ATen {torch.backends.cpu.get_cpu_capability()}")
    parts.append(f"oneDNN {'on' if torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available() else 'off'}")
    parts.append(f"NNPACK {'on' if torch._C._get_nnpack_enabled() and torch.backends.nnpack.is_available() else 'off'}")
    return ", ".join(parts)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout`` whose mask comes from ``torch.rand``: the same draws on an Intel and an AMD CPU.

    torch's CPU dropout draws its mask with ``bernoulli_(1 - p)``, which runs MKL's own generator
    (seeded by one draw from torch's) on Intel processors and torch's generator on all others, so
    the mask, and every random number drawn after it, depend on the CPU's vendor (ATen's
    ``bernoulli_scalar_kernel`` checks ``cpuinfo_vendor_intel``). Here the mask is
    ``torch.rand_like(x) >= p``, from torch's generator everywhere; kept values are scaled by
    ``1 / (1 - p)``, as in ``F.dropout``. ``p == 0`` or ``training=False`` returns ``x`` and draws nothing.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    if not training or p == 0.0:
        return x
    return x * (torch.rand_like(x) >= p).to(x.dtype) / (1.0 - p)


def restart_portable(args: list[str]) -> NoReturn:
    """Replace this process by ``python -m rnnmeta.command <args>`` started with :data:`PORTABLE_ENVIRONMENT`.

    For a command that can only learn from its config that it wants portable numerics (the
    meta-RL comparison, which trains in its own process): nothing of this process survives.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "rnnmeta.command", *args], portable_environment())


@contextlib.contextmanager
def use(numerics: Numerics) -> Iterator[None]:
    """Run the block with ``numerics``; oneDNN's and NNPACK's switches are restored afterwards.

    ``"portable"`` switches oneDNN and NNPACK off and requires a process started with
    :data:`PORTABLE_ENVIRONMENT`: MKL's branch and ATen's kernels are fixed when they start.
    ``"native"`` leaves everything as it is.

    Raises:
        RuntimeError: ``"portable"`` in a process started without the environment, or on a CPU
            where it did not take effect (MKL not in its COMPATIBLE branch, ATen not on AVX2 kernels).
    """
    check_numerics(numerics)
    enabled = torch.backends.mkldnn.enabled
    if numerics == "portable":
        if not environment_is_portable():
            raise RuntimeError(
                f"portable numerics need a process started with {PORTABLE_ENVIRONMENT_TEXT} (MKL and ATen read them once, at start); "
                f"this one has {' '.join(f'{k}={os.environ.get(k)}' for k in PORTABLE_ENVIRONMENT)}"
            )
        branch, capability = mkl_branch(), torch.backends.cpu.get_cpu_capability()
        if branch not in (None, "COMPATIBLE") or capability != "AVX2":
            raise RuntimeError(
                f"portable numerics did not take effect on this CPU: MKL branch {branch} (expected COMPATIBLE), "
                f"ATen {capability} (expected AVX2; a CPU without AVX2 cannot run them)"
            )
        torch.backends.mkldnn.enabled = False
    try:
        with torch.backends.nnpack.flags(enabled=numerics == "native" and torch._C._get_nnpack_enabled()):
            yield
    finally:
        torch.backends.mkldnn.enabled = enabled
