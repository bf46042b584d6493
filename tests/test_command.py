"""The `rnnmeta` console script answers --help without importing torch or Lightning, and hands subcommands on."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_help_lists_every_subcommand_without_importing_torch():
    code = (
        "import sys\n"
        "from rnnmeta.command import main\n"
        "main(['--help'])\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'wandb', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for sub in ("fit", "validate", "test", "predict", "compare"):
        assert f"  {sub} " in proc.stdout
    assert proc.stdout.startswith("usage: rnnmeta")


def test_no_arguments_prints_the_help_and_fails():
    proc = subprocess.run([sys.executable, "-m", "rnnmeta.command"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "usage: rnnmeta" in proc.stdout


@pytest.mark.slow
def test_a_subcommand_reaches_the_comparison_parser():
    proc = subprocess.run([sys.executable, "-m", "rnnmeta.command", "compare", "--help"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--learners" in proc.stdout and "--max_cpu_minutes" in proc.stdout and "EpisodicDataModule" in proc.stdout
