"""Out-of-scope evaluation of the learners of a CLINC150 comparison (rnnmeta.oos; docs/TEXT.md).

For every run of ``results/<comparison>/runs/<learner>-seed<s>/``: rebuild the learner and data
module from its ``run_config.json``, load ``checkpoints/last.ckpt`` (the last checkpoint of the
run, written every 50 steps; the TF-IDF row has none and needs none), check that the checkpoint's
vocabulary is the data's, choose the confidence threshold on validation episodes with
``oos_val`` queries, and report in-scope accuracy and out-of-scope recall on test episodes with
``oos_test`` queries. Writes ``results/<comparison>/oos.md``.

    OMP_NUM_THREADS=1 python scripts/oos_eval.py results/clinc150_5w1s results/clinc150_5w5s
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from rnnmeta.compare.config import build_run  # noqa: E402
from rnnmeta.data import CLINC150, Vocabulary  # noqa: E402
from rnnmeta.oos import choose_threshold, oos_metrics, score_episodes, summarize  # noqa: E402


def evaluate_comparison(folder: Path, val_episodes: int, test_episodes: int, n_oos: int) -> str:
    rows = []
    for run in sorted((folder / "runs").iterdir()):
        cfg_path = run / "run_config.json"
        if not cfg_path.is_file():
            continue
        cfg = json.loads(cfg_path.read_text())["config"]
        data = copy.deepcopy(cfg["data"])
        data["init_args"]["val_episodes"] = max(val_episodes, data["init_args"].get("val_episodes", 0))
        data["init_args"]["test_episodes"] = max(test_episodes, data["init_args"].get("test_episodes", 0))
        datamodule, learner = build_run(cfg["model"], data)
        dataset = datamodule.dataset
        if not isinstance(dataset, CLINC150):
            raise SystemExit(f"{run}: the out-of-scope evaluation needs CLINC150 data, got {type(dataset).__name__}")
        ckpt = run / "checkpoints" / "last.ckpt"
        if learner.num_parameters() > 0:
            if not ckpt.is_file():
                print(f"skipping {run.name}: no checkpoints/last.ckpt", file=sys.stderr)
                continue
            if Vocabulary.from_checkpoint(ckpt) != dataset.vocabulary:
                raise SystemExit(f"{ckpt}: its vocabulary differs from the one the config builds")
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            learner.load_state_dict(state["state_dict"])
            step = state.get("global_step")
        else:
            step = 0
        start = time.process_time()
        val = score_episodes(learner, datamodule, dataset.oos_ids("oos_val"), "val", val_episodes, n_oos)
        threshold = choose_threshold(val)
        test = score_episodes(learner, datamodule, dataset.oos_ids("oos_test"), "test", test_episodes, n_oos)
        result = oos_metrics(test, threshold)
        print(f"{run.name}: step {step}, {result.in_scope_accuracy} in-scope, {result.oos_recall} OOS recall "
              f"({time.process_time() - start:.0f} CPU s)", flush=True)
        rows.append((f"{run.name} (step {step})", result))
    table = summarize(rows)
    header = (
        f"Out-of-scope evaluation of {folder.name}: threshold chosen on {val_episodes} validation episodes "
        f"(+{n_oos} oos_val queries each), reported on {test_episodes} test episodes (+{n_oos} oos_test queries "
        f"each); command: python scripts/oos_eval.py {folder}\n\n"
    )
    (folder / "oos.md").write_text(header + table + "\n")
    return header + table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comparisons", nargs="+", type=Path, help="comparison folders, e.g. results/clinc150_5w1s")
    parser.add_argument("--val-episodes", type=int, default=200)
    parser.add_argument("--test-episodes", type=int, default=600)
    parser.add_argument("--n-oos", type=int, default=5, help="out-of-scope queries per episode")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for folder in args.comparisons:
        print(evaluate_comparison(folder, args.val_episodes, args.test_episodes, args.n_oos))


if __name__ == "__main__":
    main()
