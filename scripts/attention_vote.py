"""SNAIL on a comparison's test episodes, untrained or from a checkpoint: its attention vote against its output.

Builds one SNAIL row of a comparison config untrained (``torch.manual_seed(seed)`` before the
learner is built), and reports on the first test episodes (a) the accuracy of the *attention vote*,
the argmax over classes of the first attention block's attention mass on the support examples
(``SNAIL.attention_vote``), (b) the mean mass the query gives the support set (the rest goes to its
own position) and (c) the accuracy of SNAIL's output. With ``similarity_init`` the vote compares
the query with the support set from the start; (c) says whether the rest of the network passes it on,
and (d) its mean cross-entropy. ``--vote-readout G`` builds the row with ``vote_readout: G`` (the
output layer starts as G times the vote; ``SNAIL``'s docstring). It also reports (e) the nearest class
mean of SNAIL's own embeddings (``SNAIL.embed``, after its LayerNorm), by Euclidean distance (ProtoNet's rule) and
by cosine: what a fixed comparison makes of the same embeddings. ``--ckpt`` loads a trained row's weights
(e.g. ``results/<name>/runs/<learner>-seed0/checkpoints/last.ckpt`` of ``rnnmeta compare``), so the four
numbers say whether a trained SNAIL loses accuracy in its embeddings, in its learned comparison (the vote
against the cosine rule) or in the rest of its network (the output against the vote).

    OMP_NUM_THREADS=1 python scripts/attention_vote.py --config configs/compare/clinc150_5w1s.yaml --learner snail
    OMP_NUM_THREADS=1 python scripts/attention_vote.py --config configs/compare/clinc150_5w1s.yaml --vote-readout 0 10 30
    OMP_NUM_THREADS=1 python scripts/attention_vote.py --config configs/compare/clinc150_5w1s.yaml \
        --learner snail_fixed_similarity --ckpt results/clinc150_5w1s/runs/snail_fixed_similarity-seed0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from comparison_config import learner_row
from rnnmeta.compare.config import build_run
from rnnmeta.learners.protonet import class_prototypes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a comparison config (rnnmeta compare --config ...)")
    parser.add_argument("--learner", default="snail", help="the name of a SNAIL row in the config's learners")
    parser.add_argument("--episodes", type=int, default=100, help="first test episodes to evaluate on")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed before the learner is built")
    parser.add_argument("--vote-readout", type=float, nargs="+", default=None,
                        help="build the row with each of these vote_readout gains instead of the config's")
    parser.add_argument("--ckpt", default=None, help="a checkpoint of the row (its state_dict is loaded): report the trained SNAIL")
    args = parser.parse_args()
    if args.ckpt is not None and args.vote_readout is not None:
        parser.error("--vote-readout changes an untrained row's initialisation; it does not apply with --ckpt")
    if args.ckpt is not None and not Path(args.ckpt).is_file():
        parser.error(f"--ckpt {args.ckpt}: no such file")
    torch.set_num_threads(1)
    cfg, model = learner_row(args.config, args.learner)
    for gain in args.vote_readout if args.vote_readout is not None else [None]:
        if gain is not None:
            model = {**model, "init_args": {**model["init_args"], "vote_readout": gain}}
        report(args, model, cfg["data"], "" if gain is None else f", vote_readout {gain:g}")


def report(args: argparse.Namespace, model: dict, data_cfg: dict, variant: str) -> None:
    """Print the vote's, the output's and the nearest-mean rules' accuracy (and the output's loss) of one learner."""
    torch.manual_seed(args.seed)
    data, learner = build_run(model, data_cfg)
    if not hasattr(learner, "attention_vote"):
        raise SystemExit(f"{args.learner!r} is a {type(learner).__name__}, not a SNAIL learner")
    if args.ckpt is not None:
        learner.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=False)["state_dict"])
    data.setup("test")
    learner.eval()
    right = dict.fromkeys(("attention vote", "output", "nearest mean (Euclidean)", "nearest mean (cosine)"), 0.0)
    mass = loss = n = 0.0
    with torch.no_grad():
        for index in range(args.episodes):
            ep = data.eval_episode("test", index)
            votes = learner.attention_vote(ep.support_x, ep.support_y, ep.query_x)  # [B, M, N]
            logits = learner(ep.support_x, ep.support_y, ep.query_x)
            means = class_prototypes(learner.embed(ep.support_x), ep.support_y, votes.shape[-1])  # [B, N, E]
            query = learner.embed(ep.query_x)  # [B, M, E]
            scores = {"attention vote": votes, "output": logits, "nearest mean (Euclidean)": -torch.cdist(query, means),
                      "nearest mean (cosine)": F.normalize(query, dim=-1) @ F.normalize(means, dim=-1).transpose(1, 2)}
            for name, score in scores.items():
                right[name] += float((score.argmax(-1) == ep.query_y).float().sum())
            mass += float(votes.sum(-1).sum())
            loss += float(F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten(), reduction="sum"))
            n += ep.query_y.numel()
    state = f"trained ({args.ckpt})" if args.ckpt else f"untrained (seed {args.seed})"
    print(f"{args.config} / {args.learner}{variant}, {state}, first {args.episodes} test episodes:")
    for name in ("attention vote", "output"):
        print(f"  {name} accuracy {right[name] / n:.3f}")
    print(f"  attention mass on the support set {mass / n:.3f}")
    print(f"  output cross-entropy {loss / n:.3f} (chance: log n_way)")
    for name in ("nearest mean (Euclidean)", "nearest mean (cosine)"):
        print(f"  {name} of its embeddings accuracy {right[name] / n:.3f}")


if __name__ == "__main__":
    main()
