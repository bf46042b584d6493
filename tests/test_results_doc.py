"""scripts/write_results_doc.py: the doc is what the comparison folders hold; --sections leaves the rest alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "write_results_doc.py"


def fake_comparison(results: Path, name: str, row: str) -> None:
    folder = results / name
    folder.mkdir(parents=True)
    (folder / "results.md").write_text(f"## Comparison: {name}\n\n| learner | acc |\n|---|---|\n| {row} |\n")
    (folder / "costs.md").write_text("## Costs on this machine\n\n| learner | CPU s |\n|---|---|\n| x | 1 |\n")


def write(results: Path, out: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--results", str(results), "--out", str(out),
                    "--notes", str(results / "no-notes"), *args], check=True, capture_output=True)


def test_sections_rewrites_the_named_sections_and_keeps_the_others(tmp_path: Path) -> None:
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "RESULTS.md"
    fake_comparison(first, "sinusoid", "maml 0.1")
    fake_comparison(first, "omniglot_20w1s", "snail 0.7")
    write(first, out)
    before = out.read_text()
    assert "| maml 0.1 |" in before and "| snail 0.7 |" in before
    assert "Not run yet: `" in before  # the comparisons without a folder
    # a second run of one comparison only: its section changes, every other stays as it was
    fake_comparison(second, "omniglot_20w1s", "snail 0.9")
    write(second, out, "--sections", "omniglot_20w1s")
    after = out.read_text()
    assert "| snail 0.9 |" in after and "| snail 0.7 |" not in after
    assert after.replace("| snail 0.9 |", "| snail 0.7 |") == before
    # without --sections the whole doc comes from the folders given
    write(second, out)
    assert "| maml 0.1 |" not in out.read_text()
