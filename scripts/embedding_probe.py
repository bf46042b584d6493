"""Is it the embedding or the memory? A trained learner's accuracy beside a prototype probe of its embeddings.

For each checkpoint (``NAME=PATH``, e.g. ``runs/<row>-seed0/checkpoints/last.ckpt`` of a comparison),
scores on the first ``--episodes`` fixed test episodes of ``--config`` (eval mode, one thread):

* the learner itself (its predictions from the support set, as the comparison tests it);
* the nearest-prototype classifier on the learner's own embeddings (``embed_inputs`` where the learner
  has it, the backbone's output otherwise): ProtoNet's rule (Snell et al. 2017, eq. 2) with nothing
  trained for it.

A learner far below its own probe has embeddings that separate the classes and a memory that does not
read them back; a probe near chance says the backbone has not learned the classes' metric.

``--fresh ARGS`` (repeatable; ``ARGS`` a YAML mapping without braces, e.g. ``"output_bias: -2"``) adds a row
per checkpoint: a new learner of the same class and hyperparameters with ``ARGS`` changed, built after
``torch.manual_seed(--seed)``, given the checkpoint's backbone (and ``norm``) weights and nothing else. Its
accuracy is the vote of an untrained memory on trained embeddings: how well an initialisation reads
features that already separate the classes.

    OMP_NUM_THREADS=1 python scripts/embedding_probe.py --config configs/compare/omniglot_20w1s.yaml --episodes 200 \\
        lstm=results/ablation_lstm_20w1s/runs/sparse_h512-seed0/checkpoints/last.ckpt
    OMP_NUM_THREADS=1 python scripts/embedding_probe.py --config configs/compare/omniglot_20w1s.yaml --episodes 60 \\
        --fresh "" --fresh "output_bias: -2" --fresh "output_bias: -2, zero_recurrent: true" \\
        lstm=results/ablation_lstm_20w1s/runs/sparse_h512-seed0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml
from jsonargparse import ArgumentParser

from rnnmeta.data import EpisodicDataModule
from rnnmeta.learners.protonet import class_prototypes, squared_euclidean_logits
from rnnmeta.learners.sequence import embed
from rnnmeta.predict import load_learner


def test_data(config: Path) -> EpisodicDataModule:
    """The comparison's data module, set up for its fixed test episodes."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(EpisodicDataModule, "data", required=True)
    cfg = yaml.safe_load(config.read_text())
    data = parser.instantiate_classes(parser.parse_object({"data": cfg["data"]})).data
    data.setup("test")
    return data


def probe(learner: torch.nn.Module, data: EpisodicDataModule, episodes: int) -> tuple[float, float]:
    """(the learner's accuracy, the prototype probe's accuracy) over the first ``episodes`` test episodes."""
    learner.eval()
    embed_inputs = getattr(learner, "embed_inputs", None) or (lambda x: embed(learner.backbone, x))
    right_learner = right_probe = total = 0
    with torch.no_grad():
        for index in range(episodes):
            ep = data.eval_episode("test", index)
            right_learner += int((learner(ep.support_x, ep.support_y, ep.query_x).argmax(-1) == ep.query_y).sum())
            prototypes = class_prototypes(embed_inputs(ep.support_x), ep.support_y, ep.n_way)
            logits = squared_euclidean_logits(embed_inputs(ep.query_x), prototypes)
            right_probe += int((logits.argmax(-1) == ep.query_y).sum())
            total += ep.query_y.numel()
    return right_learner / total, right_probe / total


def fresh_learner(trained: torch.nn.Module, changes: dict, seed: int) -> torch.nn.Module:
    """A new learner like ``trained`` with ``changes`` to its hyperparameters, holding only ``trained``'s embedding weights."""
    torch.manual_seed(seed)
    fresh = type(trained)(**{**dict(trained.hparams), **changes})
    embedding = {name: value for name, value in trained.state_dict().items() if name.startswith(("backbone.", "norm."))}
    if not any(name.startswith("backbone.") for name in embedding):
        raise SystemExit(f"{type(trained).__name__} has no backbone weights to carry over")
    fresh.load_state_dict(embedding, strict=False)
    return fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="the comparison config the checkpoints were trained in")
    parser.add_argument("--episodes", type=int, default=200, help="first test episodes to evaluate on")
    parser.add_argument("--fresh", action="append", default=[], metavar="ARGS",
                        help='a row of an untrained learner on the trained embeddings, hyperparameters changed by ARGS ("" for none)')
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed before each fresh learner is built")
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=PATH", help="a label and a learner checkpoint")
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    runs = []
    for item in args.checkpoints:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            parser.error(f"each checkpoint is NAME=PATH to an existing file, got {item!r}")
        runs.append((name, path))
    torch.set_num_threads(1)
    data = test_data(args.config)
    print(f"{args.config}: first {args.episodes} test episodes, eval mode")
    print("| learner | its test acc | prototype probe on its embeddings |\n|---|---|---|")
    fresh = [(changes.strip(), yaml.safe_load("{" + changes + "}")) for changes in args.fresh]
    for name, path in runs:
        trained = load_learner(path)
        learner_acc, probe_acc = probe(trained, data, args.episodes)
        print(f"| {name} | {learner_acc:.4f} | {probe_acc:.4f} |", flush=True)
        for label, changes in fresh:
            learner_acc, probe_acc = probe(fresh_learner(trained, changes, args.seed), data, args.episodes)
            print(f"| {name}: fresh memory ({label or 'same arguments'}) | {learner_acc:.4f} | {probe_acc:.4f} |", flush=True)


if __name__ == "__main__":
    main()
