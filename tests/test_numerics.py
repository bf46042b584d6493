"""Portable numerics (rnnmeta.numerics): the same bits whatever kernels the CPU would pick, in comparisons too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnmeta.compare import ComparisonConfigError, compare
from rnnmeta.compare.config import plan_runs
from rnnmeta.compare.workers import _child_env
from rnnmeta.numerics import PORTABLE_ENVIRONMENT, describe, environment_is_portable, portable_environment, use

from test_compare import DATA, QUIET

needs_avx2 = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="portable numerics run ATen's AVX2 kernels"
)
MLP = {"class_path": "rnnmeta.nets.MLP", "init_args": {"in_features": 1, "hidden": [40, 40]}}
# the main job's sizes: matrix products of these shapes go to other kernels on another CPU
# the learners whose native results moved when the kernels did (nn.LSTM on oneDNN, matrix products on MKL)
LEARNERS = {
    "lstm": {"model": {"class_path": "rnnmeta.learners.LSTMLearner",
                       "init_args": {"backbone": MLP, "hidden_size": 64, "num_layers": 2}}},
    "mann": {"model": {"class_path": "rnnmeta.learners.MANN",
                       "init_args": {"backbone": MLP, "controller_size": 64, "memory_slots": 16, "memory_width": 20}}},
}
MAIN_JOB_DATA = {**DATA, "init_args": {**DATA["init_args"], "q_queries": 10, "meta_batch_size": 25}}
# what another x86 CPU would pick: oneDNN's SSE4.1 kernels, MKL's AVX2 branch, ATen's plain C++ kernels
OTHER_CPU = {"ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "default"}


def test_portable_numerics_refuse_a_process_started_without_their_environment():
    assert not environment_is_portable()  # the suite runs natively
    with pytest.raises(RuntimeError, match=r"MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=avx2 .*read them once, at start"):
        with use("portable"):
            pass
    with pytest.raises(ValueError, match=r"numerics must be one of 'native', 'portable', got 'fast'"):
        with use("fast"):  # type: ignore[arg-type]
            pass
    with use("native"):  # changes nothing
        assert torch.backends.mkldnn.enabled


@needs_avx2
def test_a_process_started_portable_runs_the_compatible_kernels_and_restores_onednn():
    code = (
        "import torch; from rnnmeta.numerics import describe, use\n"
        "before = describe()\n"
        "with use('portable'): inside = describe()\n"
        "print(before); print(inside); print(describe())"
    )
    env = portable_environment()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    mkl = "MKL branch COMPATIBLE, " if torch.backends.mkl.is_available() else ""
    nnpack = "on" if torch.backends.nnpack.is_available() else "off"
    assert out == [f"{mkl}ATen AVX2, oneDNN on, NNPACK {nnpack}", f"{mkl}ATen AVX2, oneDNN off, NNPACK off",
                   f"{mkl}ATen AVX2, oneDNN on, NNPACK {nnpack}"]
    # and this process, started natively, says what it runs
    assert describe().endswith(f"oneDNN on, NNPACK {nnpack}") and "COMPATIBLE" not in describe()


def test_auto_numerics_are_portable_for_step_budgets_only_and_enter_the_fingerprint():
    steps = plan_runs(DATA, LEARNERS, [0], 4, None, None, 1, QUIET, None, numerics="auto")
    cpu = plan_runs(DATA, LEARNERS, [0], None, 0.1, None, 1, QUIET, None, numerics="auto")
    native = plan_runs(DATA, LEARNERS, [0], 4, None, None, 1, QUIET, None, numerics="native")
    assert {p.numerics for p in steps} == {"portable"} and {p.numerics for p in cpu} == {"native"}
    # a native run keeps the fingerprint it had before numerics existed; a portable one is another run
    assert "numerics" not in native[0].resolved() and steps[0].resolved()["numerics"] == "portable"
    assert steps[0].fingerprint != native[0].fingerprint
    assert _child_env("portable").items() >= PORTABLE_ENVIRONMENT.items()
    assert _child_env("native").get("MKL_CBWR") == os.environ.get("MKL_CBWR")
    with pytest.raises(ComparisonConfigError, match=r"numerics must be one of 'native', 'portable', got 'fast' \(or 'auto'\)"):
        plan_runs(DATA, LEARNERS, [0], 4, None, None, 1, QUIET, None, numerics="fast")


def _table(tmp_path: Path, tag: str, numerics: str) -> tuple[bytes, list[dict]]:
    out = tmp_path / tag
    compare(name="num", data=MAIN_JOB_DATA, learners=LEARNERS, seeds=[0], max_steps=20, trainer=QUIET, workers=2,
            output_dir=str(out), numerics=numerics, plot_tasks=0)
    results = [json.loads(p.read_text()) for p in sorted((out / "num" / "runs").glob("*/result.json"))]
    return (out / "num" / "results.csv").read_bytes(), results


@needs_avx2
@pytest.mark.slow
def test_a_portable_table_is_bitwise_the_same_when_the_cpu_would_pick_other_kernels(tmp_path, monkeypatch):
    """Each run is a child process; OTHER_CPU in their environment stands in for another machine's choices."""
    native_here, _ = _table(tmp_path, "native_here", "native")
    here, here_runs = _table(tmp_path, "portable_here", "portable")
    for key, value in OTHER_CPU.items():
        monkeypatch.setenv(key, value)
    native_there, _ = _table(tmp_path, "native_there", "native")
    if native_here == native_there:  # then the check below would prove nothing
        pytest.skip("this CPU picks the same kernels under OTHER_CPU: the emulation of another machine has no effect")
    there, there_runs = _table(tmp_path, "portable_there", "portable")
    assert here == there
    assert {r["numerics_in_force"].split(", ", 1)[-1] for r in here_runs + there_runs} == {"ATen AVX2, oneDNN off, NNPACK off"}
    assert {r["numerics"] for r in here_runs} == {"portable"}
    assert b",portable" in here  # the results table says how it was computed


def test_a_machine_without_portable_numerics_falls_back_to_native_under_auto_and_refuses_portable(monkeypatch):
    import rnnmeta.compare.config as config

    monkeypatch.setattr(config, "portable_unsupported_reason", lambda: "portable numerics are defined for x86-64 CPUs; this one is arm64")
    with pytest.warns(UserWarning, match=r"numerics: native \(.*this one is arm64\): this table is reproducible on this machine only"):
        plans = plan_runs(DATA, LEARNERS, [0], 4, None, None, 1, QUIET, None, numerics="auto")
    assert {p.numerics for p in plans} == {"native"}
    with pytest.raises(ComparisonConfigError, match=r"numerics: portable cannot run here: .*arm64; use native or auto"):
        plan_runs(DATA, LEARNERS, [0], 4, None, None, 1, QUIET, None, numerics="portable")


def _fingerprint_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "numerics_fingerprint.py"
    spec = importlib.util.spec_from_file_location("numerics_fingerprint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fingerprint_probes_are_deterministic_and_the_report_names_what_differs():
    script = _fingerprint_script()
    first = {name: script.digest(*thunk()) for name, thunk in script.operation_probes()}
    second = {name: script.digest(*thunk()) for name, thunk in script.operation_probes()}
    assert first == second and len(first) >= 30
    assert len(set(first.values())) == len(first)  # every probe hashes a different result
    # the committed reference was written by the script on a known machine, with these very probes
    reference = json.loads((Path(__file__).resolve().parents[1] / "docs" / "numerics" / "amd-epyc-avx2.json").read_text())
    assert set(first) <= set(reference["hashes"])
    changed = dict(first, **{"exp [4099]": "0" * 16})
    lines, differ = script.report({"hashes": changed}, {"hashes": first})
    assert differ == 1 and "| exp [4099] | 0000000000000000 | **no** |" in lines
    assert sum("| yes |" in line for line in lines) == len(first) - 1
    lines, differ = script.report({"hashes": first}, None)
    assert differ == 0 and len(lines) == len(first) + 2


def test_rnnmeta_dropout_draws_its_mask_from_torch_rand_and_scales_the_kept_values():
    from rnnmeta.numerics import dropout

    x = torch.ones(20000)
    torch.manual_seed(3)
    out = dropout(x, 0.25)
    torch.manual_seed(3)
    expected = (torch.rand(20000) >= 0.25).float() / 0.75  # the mask is torch.rand's, nothing else
    assert torch.equal(out, expected)
    assert abs((out == 0).float().mean().item() - 0.25) < 0.02
    state = torch.get_rng_state()
    assert dropout(x, 0.0) is x and dropout(x, 0.5, training=False) is x
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\), got 1.0"):
        dropout(x, 1.0)
