"""SNAIL at initialisation on a comparison's test episodes: its attention vote against its output.

Builds one SNAIL row of a comparison config untrained (``torch.manual_seed(seed)`` before the
learner is built), and reports on the first test episodes (a) the accuracy of the *attention vote*,
the argmax over classes of the first attention block's attention mass on the support examples
(``SNAIL.attention_vote``), (b) the mean mass the query gives the support set (the rest goes to its
own position) and (c) the accuracy of SNAIL's output. With ``similarity_init`` the vote compares
the query with the support set from the start; (c) says whether the rest of the network passes it on.

    OMP_NUM_THREADS=1 python scripts/attention_vote.py --config configs/compare/clinc150_5w1s.yaml --learner snail
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from rnnmeta.compare.config import build_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a comparison config (rnnmeta compare --config ...)")
    parser.add_argument("--learner", default="snail", help="the name of a SNAIL row in the config's learners")
    parser.add_argument("--episodes", type=int, default=100, help="first test episodes to evaluate on")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed before the learner is built")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = yaml.safe_load(Path(args.config).read_text())
    if args.learner not in cfg["learners"]:
        raise SystemExit(f"{args.config} has no learner {args.learner!r}; it has {sorted(cfg['learners'])}")
    torch.manual_seed(args.seed)
    data, learner = build_run(cfg["learners"][args.learner]["model"], cfg["data"])
    if not hasattr(learner, "attention_vote"):
        raise SystemExit(f"{args.learner!r} is a {type(learner).__name__}, not a SNAIL learner")
    data.setup("test")
    learner.eval()
    vote_right = out_right = mass = n = 0.0
    with torch.no_grad():
        for index in range(args.episodes):
            ep = data.eval_episode("test", index)
            votes = learner.attention_vote(ep.support_x, ep.support_y, ep.query_x)  # [B, M, N]
            logits = learner(ep.support_x, ep.support_y, ep.query_x)
            vote_right += float((votes.argmax(-1) == ep.query_y).float().sum())
            out_right += float((logits.argmax(-1) == ep.query_y).float().sum())
            mass += float(votes.sum(-1).sum())
            n += ep.query_y.numel()
    print(f"{args.config} / {args.learner}, untrained (seed {args.seed}), first {args.episodes} test episodes:")
    print(f"  attention vote accuracy {vote_right / n:.3f}")
    print(f"  attention mass on the support set {mass / n:.3f}")
    print(f"  output accuracy {out_right / n:.3f}")


if __name__ == "__main__":
    main()
