"""LSTMLearner, MANN or SNAIL with a label memory, on a comparison's test episodes: the memory's vote against the output.

Builds one row of a comparison config (``torch.manual_seed(seed)`` before the learner is built; ``--ckpt``
loads a trained row's weights, e.g. ``results/<name>/runs/<learner>-seed0/checkpoints/last.ckpt`` of
``rnnmeta compare``) and reports on the first test episodes the accuracy of (a) the label memory's vote
(``learner.vote``), (b) the learner's output, (b') its output with the vote replaced by zeros (what its own
network answers), and (c) the nearest class mean of the embeddings the memory reads (``learner.embed_inputs``),
by Euclidean distance (ProtoNet's rule) and by cosine. So it says whether a trained learner loses accuracy in
its embeddings (c), in its memory's rule (a against c) or in the rest of the network (b against a), and how
much the network answers on its own (b').

    OMP_NUM_THREADS=1 python scripts/label_memory_vote.py --config configs/compare/clinc150_5w5s.yaml \
        --learner lstm_label_memory --ckpt results/clinc150_5w5s/runs/lstm_label_memory-seed0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from comparison_config import learner_row
from rnnmeta.compare.config import build_run
from rnnmeta.learners.protonet import class_prototypes

RULES = ("label memory vote", "output", "output without the vote", "nearest mean (Euclidean)", "nearest mean (cosine)")


def without_vote(learner, support_x, support_y, query_x):
    """The learner's output with its label memory's vote replaced by zeros: what its own network answers."""
    def zero_vote(query_e, support_e, labels):
        return query_e.new_zeros(*query_e.shape[:2], learner.n_way)

    learner.vote = zero_vote  # an instance attribute hides the method for this call only
    try:
        return learner(support_x, support_y, query_x)
    finally:
        del learner.vote


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a comparison config (rnnmeta compare --config ...)")
    parser.add_argument("--learner", required=True, help="the name of an LSTMLearner, MANN or SNAIL row with label_memory")
    parser.add_argument("--episodes", type=int, default=100, help="first test episodes to evaluate on")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed before the learner is built")
    parser.add_argument("--ckpt", default=None, help="a checkpoint of the row (its state_dict is loaded)")
    args = parser.parse_args()
    if args.ckpt is not None and not Path(args.ckpt).is_file():
        parser.error(f"--ckpt {args.ckpt}: no such file")
    torch.set_num_threads(1)
    cfg, model = learner_row(args.config, args.learner)
    torch.manual_seed(args.seed)
    data, learner = build_run(model, cfg["data"])
    if getattr(learner, "label_memory", None) is None:
        raise SystemExit(f"{args.learner!r} is a {type(learner).__name__} without a label memory (label_memory: 0)")
    if args.ckpt is not None:
        learner.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=False)["state_dict"])
    data.setup("test")
    learner.eval()
    right, n = dict.fromkeys(RULES, 0.0), 0
    with torch.no_grad():
        for index in range(args.episodes):
            ep = data.eval_episode("test", index)
            support_e, query_e = learner.embed_inputs(ep.support_x), learner.embed_inputs(ep.query_x)
            means = class_prototypes(support_e, ep.support_y, learner.n_way)  # [B, N, E]
            scores = {"label memory vote": learner.vote(query_e, support_e, ep.support_y),
                      "output": learner(ep.support_x, ep.support_y, ep.query_x),
                      "output without the vote": without_vote(learner, ep.support_x, ep.support_y, ep.query_x),
                      "nearest mean (Euclidean)": -torch.cdist(query_e, means),
                      "nearest mean (cosine)": F.normalize(query_e, dim=-1) @ F.normalize(means, dim=-1).transpose(1, 2)}
            for name, score in scores.items():
                right[name] += float((score.argmax(-1) == ep.query_y).float().sum())
            n += ep.query_y.numel()
    state = f"trained ({args.ckpt})" if args.ckpt else f"untrained (seed {args.seed})"
    print(f"{args.config} / {args.learner}, {state}, first {args.episodes} test episodes:")
    for name in RULES:
        print(f"  {name} accuracy {right[name] / n:.3f}")


if __name__ == "__main__":
    main()
