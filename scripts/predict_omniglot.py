"""``rnnmeta predict`` end to end on image files: Omniglot test characters as a user's folders.

Writes ``--tasks`` few-shot jobs as a user would have them: for each, ``--ways`` characters of the
Vinyals test split (never seen in training), ``support/<character>/`` with ``--shots`` drawings
each and ``query/`` with ``--queries`` other drawings per character under anonymous names. The
drawings are written as Omniglot's loader sees them (ink white on black, 105 x 105 PNG; the
learner's decoding resizes them). Then every checkpoint answers every job through
:func:`rnnmeta.predict.predict` (what ``rnnmeta predict`` runs) and the script prints, per
learner, the accuracy of the CSV's ``predicted_class`` against the true characters (95% CI over
tasks), the mean ``probability`` of the predicted class, and the test accuracy the comparison
measured on its own fixed episodes. The comparison tests the weights of its last training step,
while ``last.ckpt`` holds those of its last validation (up to ``train_batches_per_epoch - 1`` steps
earlier): the table gives both step counts, since a learner still rising fast scores lower at the
checkpoint's step.

Run:  python scripts/predict_omniglot.py                       # the omniglot_5w1s comparison's checkpoints
      python scripts/predict_omniglot.py --tasks 2 --learners protonet maml   # smoke test
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"


def test_characters(root: Path) -> dict[str, tuple[zipfile.ZipFile, list[str]]]:
    """Vinyals test characters (unrotated) -> (their archive, their drawings' member names)."""
    listed = [line.strip() for line in (root / "splits" / "vinyals" / "test.txt").read_text().splitlines()]
    wanted = {line.rsplit("/", 1)[0] for line in listed if line.endswith("rot000")}
    found: dict[str, tuple[zipfile.ZipFile, list[str]]] = {}
    for name in ("images_background.zip", "images_evaluation.zip"):
        archive = zipfile.ZipFile(root / name)
        for member in archive.namelist():
            parts = member.split("/")
            if len(parts) == 4 and parts[3].endswith(".png") and f"{parts[1]}/{parts[2]}" in wanted:
                found.setdefault(f"{parts[1]}/{parts[2]}", (archive, []))[1].append(member)
    if len(found) != len(wanted):
        raise SystemExit(f"found {len(found)} of the {len(wanted)} Vinyals test characters in {root}")
    return found


def write_task(folder: Path, chars: dict, rng: random.Random, ways: int, shots: int, queries: int) -> dict[str, str]:
    """One user's job under ``folder``: support/<character>/, query/; returns query file -> true character folder name."""
    truth, picked = {}, rng.sample(sorted(chars), ways)
    numbers = list(range(ways * queries))
    rng.shuffle(numbers)
    for c, name in enumerate(picked):
        archive, members = chars[name]
        drawings = rng.sample(sorted(members), shots + queries)
        label = name.replace("/", "_")
        for i, member in enumerate(drawings):
            with Image.open(io.BytesIO(archive.read(member))) as img:
                ink_white = ImageOps.invert(img.convert("L"))  # as rnnmeta.data.Omniglot decodes it
            if i < shots:
                path = folder / "support" / label / f"{i}.png"
            else:
                path = folder / "query" / f"q{numbers[c * queries + i - shots]:03d}.png"
                truth[path.name] = label
            path.parent.mkdir(parents=True, exist_ok=True)
            ink_white.save(path)
    return truth


def comparison_accuracy(results_csv: Path) -> dict[str, tuple[float, float, int]]:
    """Learner -> (test accuracy, its 95% CI, the step it was measured at) from a comparison's results.csv."""
    if not results_csv.is_file():
        return {}
    with open(results_csv, newline="") as f:
        return {row["learner"]: (float(row["mean"]), float(row["ci95"]), round(float(row["steps"])))
                for row in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comparison", type=Path, default=REPO / "results" / "omniglot_5w1s",
                        help="a comparison folder: runs/<learner>-seed<s>/checkpoints/last.ckpt and results.csv")
    parser.add_argument("--learners", nargs="+", default=None, help="default: every run of the comparison")
    parser.add_argument("--seed", type=int, default=0, help="the comparison's seed, and the seed of the jobs")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=5, help="query drawings per character")
    parser.add_argument("--root", type=Path, default=OMNIGLOT)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from rnnmeta.evaluation import mean_ci95
    from rnnmeta.predict import predict

    import torch

    runs = sorted(args.comparison.glob(f"runs/*-seed{args.seed}/checkpoints/last.ckpt"))
    learners = {p.parents[1].name.rsplit("-seed", 1)[0]: p for p in runs}
    if args.learners:
        missing = [n for n in args.learners if n not in learners]
        if missing:
            raise SystemExit(f"no checkpoint for {missing} in {args.comparison}/runs; found {sorted(learners)}")
        learners = {n: learners[n] for n in args.learners}
    chars = test_characters(args.root)
    work = Path(tempfile.mkdtemp(prefix="predict_omniglot_"))
    rng = random.Random(args.seed)
    jobs = [(work / f"task{t:03d}", write_task(work / f"task{t:03d}", chars, rng, args.ways, args.shots, args.queries))
            for t in range(args.tasks)]
    reference = comparison_accuracy(args.comparison / "results.csv")
    print(f"{args.tasks} jobs of {args.ways} Vinyals test characters, {args.shots} support and {args.queries} query "
          f"drawings each, {args.threads} torch thread(s); files under {work}")
    print("\n| learner | checkpoint step | accuracy of predict's CSV | +- 95% CI (over jobs) | mean probability | "
          "seconds per job | the comparison's test accuracy (step) |")
    print("|---|---|---|---|---|---|---|")
    for name, ckpt in learners.items():
        per_task, confidence, start = [], [], time.perf_counter()
        for folder, truth in jobs:
            rows = predict(str(ckpt), str(folder / "support"), str(folder / "query"), output=str(folder / f"{name}.csv"),
                           threads=args.threads)
            per_task.append(sum(r.predicted_class == truth[r.file] for r in rows) / len(rows))
            confidence += [r.probability for r in rows]
        seconds = (time.perf_counter() - start) / len(jobs)
        stats = mean_ci95(torch.tensor(per_task, dtype=torch.float64))
        ref = reference.get(name)
        ref_text = f"{100 * ref[0]:.2f} +- {100 * ref[1]:.2f} % ({ref[2]:,})" if ref else "-"
        step = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        print(f"| {name} | {step:,} | {100 * stats.mean:.2f} % | {100 * stats.ci95:.2f} | "
              f"{sum(confidence) / len(confidence):.3f} | {seconds:.1f} | {ref_text} |", flush=True)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
