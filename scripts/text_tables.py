"""Each learner of a text comparison against its TF-IDF floor: the difference and whether the 95% CIs overlap.

Reads ``results/<comparison>/results.csv`` (written by ``rnnmeta compare``) and prints a markdown
table: test accuracy +- 95% CI, steps, the difference to the ``tfidf`` row in points, and the verdict
(above / below with CIs apart, or overlapping).

    python scripts/text_tables.py results/clinc150_5w1s results/clinc150_5w5s
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def table(folder: Path, baseline: str = "tfidf") -> str:
    rows = list(csv.DictReader((folder / "results.csv").open()))
    base = next((r for r in rows if r["learner"] == baseline), None)
    if base is None:
        raise SystemExit(f"{folder}/results.csv has no {baseline!r} row")
    b_mean, b_ci = float(base["mean"]), float(base["ci95"])
    lines = [
        f"| learner | test acc +- 95% CI | steps | vs {baseline} (points) | 95% CIs |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        mean, ci = float(r["mean"]), float(r["ci95"])
        diff = 100 * (mean - b_mean)
        if r["learner"] == baseline:
            verdict, diff_text = "-", "-"
        else:
            apart = abs(mean - b_mean) > ci + b_ci
            verdict = ("above" if diff > 0 else "below") + (", apart" if apart else ", overlapping")
            diff_text = f"{diff:+.1f}"
        lines.append(f"| {r['learner']} | {mean:.4f} +- {ci:.4f} | {int(float(r['steps'])):,} | {diff_text} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comparisons", nargs="+", type=Path)
    parser.add_argument("--baseline", default="tfidf")
    args = parser.parse_args()
    for folder in args.comparisons:
        print(f"{folder.name}\n\n{table(folder, args.baseline)}\n")


if __name__ == "__main__":
    main()
