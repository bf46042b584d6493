"""Test accuracy of a comparison's classification learners before any training (step 0 of their curves).

Builds each named row of a comparison config untrained (``torch.manual_seed(seed)`` before each
learner is built), puts it in eval mode and scores it on the first ``--episodes`` fixed test
episodes of the config. ``--set ROW:ARGS`` adds a row built from ``ROW`` with some ``init_args``
changed (``ARGS`` is a YAML mapping without braces), so an initialisation option can be read
before anyone trains it. It says where a learner starts: whether the comparison of a query with the
support set is there at initialisation (ProtoNet's distances, LSTMLearner's kernel vote) or has
to be learned.

    OMP_NUM_THREADS=1 python scripts/untrained_accuracy.py --config configs/compare/clinc150_5w1s.yaml --learners protonet lstm \
        --set "lstm:label_slots: true, forget_bias: 6"
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
import yaml

from rnnmeta.compare.config import build_run


def rows(cfg: dict, names: list[str], settings: list[str]) -> list[tuple[str, dict]]:
    """``(label, model spec)`` for each named row, then each ``ROW:ARGS`` setting (a copy of ``ROW`` with ``ARGS``)."""
    learners = cfg["learners"]
    out = []
    for name in names:
        if name not in learners:
            raise SystemExit(f"the config has no learner {name!r}; it has {sorted(learners)}")
        out.append((name, learners[name]["model"]))
    for setting in settings:
        name, sep, changes = setting.partition(":")
        if not sep or name not in learners:
            raise SystemExit(f"--set takes ROW:ARGS with ROW one of {sorted(learners)}, got {setting!r}")
        overrides = yaml.safe_load("{" + changes + "}")
        model = copy.deepcopy(learners[name]["model"])
        model.setdefault("init_args", {}).update(overrides)
        out.append((f"{name} ({changes.strip()})", model))
    return out


def accuracy(model: dict, data_cfg: dict, episodes: int, seed: int) -> float:
    """Fraction of the queries of the first ``episodes`` test episodes that the untrained learner gets right."""
    torch.manual_seed(seed)
    data, learner = build_run(model, data_cfg)
    data.setup("test")
    learner.eval()
    right = total = 0
    with torch.no_grad():
        for index in range(episodes):
            ep = data.eval_episode("test", index)
            if ep.query_y.is_floating_point():
                raise SystemExit(f"{type(learner).__name__} on a regression task: accuracy is for classification")
            right += int((learner(ep.support_x, ep.support_y, ep.query_x).argmax(-1) == ep.query_y).sum())
            total += ep.query_y.numel()
    return right / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a comparison config (rnnmeta compare --config ...)")
    parser.add_argument("--learners", nargs="*", default=[], help="rows of the config, as they are")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="ROW:ARGS",
                        help='a row with some init_args changed, e.g. "lstm:label_slots: true, forget_bias: 6"')
    parser.add_argument("--episodes", type=int, default=100, help="first test episodes to evaluate on")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed before each learner is built")
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    torch.set_num_threads(1)
    cfg = yaml.safe_load(Path(args.config).read_text())
    todo = rows(cfg, args.learners, args.settings)
    if not todo:
        parser.error("name rows with --learners or --set")
    print(f"{args.config}: untrained (seed {args.seed}, eval mode), first {args.episodes} test episodes")
    print("| learner | test acc |\n|---|---|")
    for label, model in todo:
        print(f"| {label} | {accuracy(model, cfg['data'], args.episodes, args.seed):.4f} |", flush=True)


if __name__ == "__main__":
    main()
