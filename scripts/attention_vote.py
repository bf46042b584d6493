"""SNAIL at initialisation on a comparison's test episodes: its attention vote against its output.

Builds one SNAIL row of a comparison config untrained (``torch.manual_seed(seed)`` before the
learner is built), and reports on the first test episodes (a) the accuracy of the *attention vote*,
the argmax over classes of the first attention block's attention mass on the support examples
(``SNAIL.attention_vote``), (b) the mean mass the query gives the support set (the rest goes to its
own position) and (c) the accuracy of SNAIL's output. With ``similarity_init`` the vote compares
the query with the support set from the start; (c) says whether the rest of the network passes it on,
and (d) its mean cross-entropy. ``--vote-readout G`` builds the row with ``vote_readout: G`` (the
output layer starts as G times the vote; ``SNAIL``'s docstring).

    OMP_NUM_THREADS=1 python scripts/attention_vote.py --config configs/compare/clinc150_5w1s.yaml --learner snail
    OMP_NUM_THREADS=1 python scripts/attention_vote.py --config configs/compare/clinc150_5w1s.yaml --vote-readout 0 10 30
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from rnnmeta.compare.config import build_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a comparison config (rnnmeta compare --config ...)")
    parser.add_argument("--learner", default="snail", help="the name of a SNAIL row in the config's learners")
    parser.add_argument("--episodes", type=int, default=100, help="first test episodes to evaluate on")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed before the learner is built")
    parser.add_argument("--vote-readout", type=float, nargs="+", default=None,
                        help="build the row with each of these vote_readout gains instead of the config's")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = yaml.safe_load(Path(args.config).read_text())
    if args.learner not in cfg["learners"]:
        raise SystemExit(f"{args.config} has no learner {args.learner!r}; it has {sorted(cfg['learners'])}")
    model = cfg["learners"][args.learner]["model"]
    for gain in args.vote_readout if args.vote_readout is not None else [None]:
        if gain is not None:
            model = {**model, "init_args": {**model["init_args"], "vote_readout": gain}}
        report(args, model, cfg["data"], "" if gain is None else f", vote_readout {gain:g}")


def report(args: argparse.Namespace, model: dict, data_cfg: dict, variant: str) -> None:
    """Print the vote's and the output's accuracy (and the output's loss) of one untrained learner."""
    torch.manual_seed(args.seed)
    data, learner = build_run(model, data_cfg)
    if not hasattr(learner, "attention_vote"):
        raise SystemExit(f"{args.learner!r} is a {type(learner).__name__}, not a SNAIL learner")
    data.setup("test")
    learner.eval()
    vote_right = out_right = mass = loss = n = 0.0
    with torch.no_grad():
        for index in range(args.episodes):
            ep = data.eval_episode("test", index)
            votes = learner.attention_vote(ep.support_x, ep.support_y, ep.query_x)  # [B, M, N]
            logits = learner(ep.support_x, ep.support_y, ep.query_x)
            vote_right += float((votes.argmax(-1) == ep.query_y).float().sum())
            out_right += float((logits.argmax(-1) == ep.query_y).float().sum())
            mass += float(votes.sum(-1).sum())
            loss += float(F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten(), reduction="sum"))
            n += ep.query_y.numel()
    print(f"{args.config} / {args.learner}{variant}, untrained (seed {args.seed}), first {args.episodes} test episodes:")
    print(f"  attention vote accuracy {vote_right / n:.3f}")
    print(f"  attention mass on the support set {mass / n:.3f}")
    print(f"  output accuracy {out_right / n:.3f}")
    print(f"  output cross-entropy {loss / n:.3f} (chance: log n_way)")


if __name__ == "__main__":
    main()
