"""Write docs/RESULTS.md from the folders that `rnnmeta compare` wrote, so the doc is exactly what the commands printed.

Run the comparisons first, then this script::

    rnnmeta compare --config configs/compare/sinusoid.yaml
    rnnmeta compare --config configs/compare/sinusoid_k10.yaml
    rnnmeta compare --config configs/compare/omniglot_5w1s.yaml
    rnnmeta compare --config configs/compare/omniglot_20w1s.yaml
    python scripts/benchmark_recurrent.py --learners protonet maml snail lstm_cosine mann_cosine \
        --tasks omniglot_5w1s --cpu-minutes 24 --seeds 0 1 --workers 2 --output-dir results   # the goal budget
    python scripts/benchmark_recurrent.py --learners snail maml lstm_cosine mann_cosine protonet \
        --tasks omniglot_20w1s --cpu-minutes 24 --seeds 0 1 2 --workers 2 --output-dir results
    python scripts/write_results_doc.py            # results/ -> docs/RESULTS.md
    python scripts/write_results_doc.py --sections omniglot_20w1s omniglot_20w1s_24cpumin   # only these

``--sections`` rewrites the named sections from their folders and keeps every other section as the
current doc has it, so a rerun of one comparison does not need the folders of the others.

Each section holds the command, the results table (a function of the config), the costs table
(of the machine named in it) and where the command writes its plots (curves and, for regression,
predictions; the plots are outputs of the command, not files of the repository). A comparison
whose folder is missing is listed as not run. Notes per comparison come from ``NOTES`` below and
are the only hand-written text.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (folder under results/, title, command that writes the folder; None: the shipped config of that name)
SECTIONS = [
    ("sinusoid", "Sinusoid regression, K = 5 (the main job)", None),
    ("sinusoid_k10", "Sinusoid regression, K = 10", None),
    ("omniglot_5w1s", "Omniglot 5-way 1-shot, the same CPU budget", None),
    ("omniglot_5w1s_24cpumin", "Omniglot 5-way 1-shot at the goal budget of 24 CPU-minutes",
     "python scripts/benchmark_recurrent.py --learners protonet maml snail lstm_cosine mann_cosine --tasks omniglot_5w1s "
     "--cpu-minutes 24 --seeds 0 1 --workers 2 --output-dir results"),
    ("omniglot_20w1s", "Omniglot 20-way 1-shot, the same CPU budget", None),
    ("omniglot_20w1s_24cpumin", "Omniglot 20-way 1-shot at the goal budget of 24 CPU-minutes",
     "python scripts/benchmark_recurrent.py --learners snail maml lstm_cosine mann_cosine protonet --tasks omniglot_20w1s "
     "--cpu-minutes 24 --seeds 0 1 2 --workers 2 --output-dir results"),
]

HEADER = """# Results

Written by `python scripts/write_results_doc.py` from the folders of the `rnnmeta compare` commands
named in each section; nothing in the tables is typed by hand. Each results table is a function of
its config (the budget is in steps, or the table says otherwise); each costs table names the CPU
that produced it. All learners in a table saw the same training task stream (up to their own
training protocol) and the same fixed test episodes (fingerprint in the table). No accelerator was
lent for these runs, so there are no GPU numbers yet. A table whose line says "Numerics: portable"
ran on kernels that do not follow the CPU (an Intel Xeon and an AMD EPYC still printed other values
for the main job: PERFORMANCE.md); the others ran with the kernels of the CPU their costs table
names (before 2026-12-01 every comparison did), and another CPU can give other values in the last
digits or more (README, "Comparisons", Numerics).
"""


def section(results: Path, name: str, title: str, command: str | None, notes: dict[str, str]) -> str:
    out = results / name
    command = command or f"rnnmeta compare --config configs/compare/{name}.yaml"
    lines = [f"## {title}", "", "```bash", command, "```", ""]
    if not (out / "results.md").exists():
        return "\n".join(lines + [f"Not run yet: `{out}/results.md` is missing.", ""])
    results_md = (out / "results.md").read_text().split("\n", 2)[2]  # drop the '## Comparison: ...' title
    costs_md = (out / "costs.md").read_text().replace("## Costs on this machine", "**Costs on the machine**", 1)
    lines += [results_md.strip(), "", costs_md.strip(), ""]
    plots = [f"`results/{name}/{plot}.png`" for plot in ("curves", "predictions") if (out / f"{plot}.png").exists()]
    if plots:
        lines += [f"Plots written by the command: {', '.join(plots)}.", ""]
    if name in notes:
        lines += [notes[name].strip(), ""]
    return "\n".join(lines)


def current_sections(doc: Path) -> dict[str, str]:
    """The sections of an existing doc by title (from its ``## title`` line to the next ``## ``), with a blank line after each."""
    if not doc.exists():
        return {}
    found: dict[str, list[str]] = {}
    title = None
    for line in doc.read_text().splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            found[title] = []
        if title is not None:
            found[title].append(line)
    return {t: "\n".join(lines).rstrip() + "\n" for t, lines in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=REPO / "results", help="output_dir of the comparisons")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "RESULTS.md")
    parser.add_argument("--notes", type=Path, default=REPO / "docs" / "results_notes",
                        help="folder of <comparison>.md notes appended to each section")
    parser.add_argument("--sections", nargs="+", choices=[name for name, _, _ in SECTIONS], default=None,
                        help="rewrite only these sections; the others stay as --out has them (default: all)")
    args = parser.parse_args()
    notes = {p.stem: p.read_text() for p in args.notes.glob("*.md")} if args.notes.is_dir() else {}
    kept = current_sections(args.out) if args.sections else {}
    body = [HEADER]
    for name, title, command in SECTIONS:
        if args.sections and name not in args.sections and title in kept:
            body.append(kept[title])
        else:
            body.append(section(args.results, name, title, command, notes))
    body.append("## Per-learner pages\n\n[SNAIL](SNAIL.md), [LSTMLearner and MANN](RECURRENT.md), "
                "[ProtoNet](PROTONET.md), [MAML](MAML.md), [the learned optimizer](LEARNED_OPTIMIZER.md).\n")
    args.out.write_text("\n".join(body))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
