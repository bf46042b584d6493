"""Ablations of the memory learners on Omniglot, each a table of docs/RECURRENT.md or docs/SNAIL.md.

Every variant is a learner of a shipped comparison config with some arguments changed, trained on
the same task stream and tested on the same fixed episodes through :func:`rnnmeta.compare.compare`
(one thread per run); each run's curves, costs and W&B log are in ``<output-dir>/ablation_<study>/``.

``--study lstm_20w1s`` (default): why LSTMLearner sat at chance on 20-way 1-shot. The ``lstm``
learner of ``configs/compare/omniglot_20w1s.yaml``, ``--steps`` (default 200) meta-iterations each.
Variants (``--variants`` picks some):
  nn_lstm        nn.LSTM's default initialisation, no LayerNorm on the embedding (the first design)
  key_value      key-value initialisation and LayerNorm, a random head (the default before the fix)
  readout        + the head tied to the label directions of the cell (``readout_init``, the default now)
  readout_h512   + 512 hidden units
  sparse_h512    + sparser writes (``key_std: 4``, ``input_bias: -2``): the 20-way config's learner
  random_head    the 20-way config's learner with a random head (``readout_init: 0``)
  sparse_h1024   sparse_h512 with 1024 units
  sparse_h512_fb6  sparse_h512 with the forget gate's bias 6 (3 by default), so early support examples fade less
  sparse_h512_q5   sparse_h512 trained on 5 queries per class (1 in the config)
  sparse_h512_lr3  sparse_h512 with Adam's learning rate 3e-3 (1e-3 in the config)
  sparse_h512_b8   sparse_h512 trained on 8 tasks a step (4 in the config)
  slots_h512     sparse_h512 with each label writing into its own block of units (``label_slots``), forget bias 6
  slots_h1280    slots_h512 with 1280 units (64 a label)
  sparse_h512_metric1    sparse_h512 with ProtoNet's loss on its embeddings added in training (``metric_loss_weight: 1``)
  sparse_h512_metric0.3  the same with weight 0.3
  sparse_read    sparse_h512 with the output gate (the read key) as sparse as the input gate (``output_bias: -2``)
                 and no recurrent weights at first (``zero_recurrent``)
  sparse_read_k8 sparse_read with sharper, sparser keys (``key_std: 8``, input and output biases -6)

``--study snail_5w1s``: SNAIL's training protocol and initialisation at the budget of
``configs/compare/omniglot_5w1s.yaml`` (3 CPU-minutes each, or ``--steps``):
  snail          the config's: 32 tasks of one query per class per step, rnnmeta's initialisation
  many_queries   8 tasks of 5 queries per class per step (the data module's default)
  paper_init     32 tasks of one query per class, the paper's initialisation

``--study mann_5w1s``: MANN's controller initialisation, size and learning rate. The ``mann``
learner of ``configs/compare/omniglot_5w1s.yaml`` (Santoro et al.'s addressing and sizes: controller
200, memory 128 x 40, 4 heads), ``--steps`` (default 150) meta-iterations each:
  lstm_cell_init   nn.LSTMCell's initialisation (``key_value_init: false``), Adam 1e-3
  small_64_lr3     nn.LSTMCell's initialisation, 64 units, Adam 3e-3
  key_value        the controller starts as LSTMLearner's first layer, with the label readout (the default)
  random_head      key-value controller, a random head (``readout_init: 0``)
  sparse_read      key-value controller with sparse writes and reads (input and output gate biases -2) and
                   no recurrent weights at first (``zero_recurrent``), as the 20-way ``sparse_read`` rows

``--study mann_20w1s``: whether the 20-way LSTMLearner's changes carry over to MANN. The ``mann``
learner of ``configs/compare/omniglot_20w1s.yaml`` at the config's budget (2 CPU-minutes each, or ``--steps``):
  key_value        the config's before the study: key-value controller (``key_std: 2``), label readout, 200 units
  sparse           + sparser writes (``key_std: 4``, ``input_bias: -2``), as the 20-way LSTMLearner
  sparse_c512      + 512 controller units, as the 20-way LSTMLearner (the config's ``mann`` now)
  sparse_read_c512 + sparse reads in the controller (``output_bias: -2``, ``zero_recurrent``), as LSTMLearner's ``sparse_read``

Run:  python scripts/ablation_recurrent.py                       # about 6 x 50 CPU-seconds + tests
      python scripts/ablation_recurrent.py --variants sparse_h512 sparse_h1024 sparse_h512_fb6 sparse_h512_q5 --steps 300
      python scripts/ablation_recurrent.py --variants sparse_h512 sparse_h512_lr3 sparse_h512_b8 --steps 300
      python scripts/ablation_recurrent.py --variants slots_h512 slots_h1280 --steps 300
      python scripts/ablation_recurrent.py --study snail_5w1s    # 3 x 3 CPU-minutes + tests
      python scripts/ablation_recurrent.py --study mann_5w1s     # about 5 x 75 CPU-seconds + tests
      python scripts/ablation_recurrent.py --study mann_5w1s --variants key_value sparse_read --steps 300
      python scripts/ablation_recurrent.py --study mann_20w1s    # 4 x 2 CPU-minutes + tests
      python scripts/ablation_recurrent.py --variants sparse_h512 sparse_h512_metric1 sparse_read sparse_read_k8 --steps 300
      python scripts/ablation_recurrent.py --study mann_20w1s --variants sparse_c512 sparse_read_c512 --steps 300
      python scripts/ablation_recurrent.py --steps 2 --test-episodes 20 --val-episodes 10   # smoke test
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass, field
from functools import partial
from typing import Optional

from comparison_config import REPO, load, narrowed

VARIANTS: dict[str, dict] = {
    "nn_lstm": {"hidden_size": 256, "key_value_init": False, "embedding_norm": False},
    "key_value": {"hidden_size": 256, "readout_init": 0.0},
    "readout": {"hidden_size": 256},
    "readout_h512": {"hidden_size": 512},
    "sparse_h512": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0},
    "random_head": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0, "readout_init": 0.0},
    "sparse_h1024": {"hidden_size": 1024, "key_std": 4.0, "input_bias": -2.0},
    "sparse_h512_fb6": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0, "forget_bias": 6.0},
    "sparse_h512_q5": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0, "train_data": {"q_queries": 5}},
    "sparse_h512_lr3": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0, "lr": 0.003},
    "sparse_h512_b8": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0, "train_data": {"meta_batch_size": 8}},
    "slots_h512": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0, "forget_bias": 6.0, "label_slots": True},
    "slots_h1280": {"hidden_size": 1280, "key_std": 4.0, "input_bias": -2.0, "forget_bias": 6.0, "label_slots": True},
    "sparse_h512_metric1": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0, "metric_loss_weight": 1.0},
    "sparse_h512_metric0.3": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0, "metric_loss_weight": 0.3},
    "sparse_read": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0, "output_bias": -2.0, "zero_recurrent": True},
    "sparse_read_k8": {"hidden_size": 512, "key_std": 8.0, "input_bias": -6.0, "output_bias": -6.0, "zero_recurrent": True},
    "matching_h512": {"hidden_size": 512, "matching_init": True, "key_std": 1.0, "readout_init": 1.0},
    "matching_h1280": {"hidden_size": 1280, "matching_init": True, "key_std": 1.0, "readout_init": 1.0},
}
# a variant's keys are the learner's arguments, except "train_data" (the run's training data
# arguments) and "lr" (Adam's learning rate)
SNAIL_VARIANTS: dict[str, dict] = {
    "snail": {"train_data": {"meta_batch_size": 32, "q_queries": 1}},
    "many_queries": {"train_data": {"meta_batch_size": 8, "q_queries": 5}},
    "paper_init": {"embedding_norm": False, "similarity_init": False, "train_data": {"meta_batch_size": 32, "q_queries": 1}},
}
MANN_VARIANTS: dict[str, dict] = {
    "lstm_cell_init": {"key_value_init": False},
    "small_64_lr3": {"key_value_init": False, "controller_size": 64, "lr": 0.003},
    "key_value": {},
    "random_head": {"readout_init": 0.0},
    "sparse_read": {"input_bias": -2.0, "output_bias": -2.0, "zero_recurrent": True},
}
MANN_20W_VARIANTS: dict[str, dict] = {
    "key_value": {},
    "sparse": {"key_std": 4.0, "input_bias": -2.0},
    "sparse_c512": {"key_std": 4.0, "input_bias": -2.0, "controller_size": 512},
    "sparse_read_c512": {"key_std": 4.0, "input_bias": -2.0, "controller_size": 512, "output_bias": -2.0,
                         "zero_recurrent": True},
}
# arguments an LSTM variant sets unless it names them: the LSTMLearner defaults, so that a change of
# the 20-way config's lstm entry does not leak into the variants
BASE = {"hidden_size": 256, "num_layers": 1, "key_value_init": True, "embedding_norm": True, "key_std": 2.0,
        "input_bias": None, "readout_init": 0.3}


@dataclass(frozen=True)
class Study:
    """Variants of one learner of a shipped comparison config."""

    config: str  # configs/compare/<config>.yaml
    learner: str  # the learner of that config the variants change
    variants: dict[str, dict]
    steps: Optional[int]  # default budget in meta-iterations; None: the config's own budget
    base: dict = field(default_factory=dict)  # arguments every variant sets unless it names them


STUDIES = {
    "lstm_20w1s": Study("omniglot_20w1s", "lstm", VARIANTS, 200, BASE),
    "snail_5w1s": Study("omniglot_5w1s", "snail", SNAIL_VARIANTS, None),
    "mann_5w1s": Study("omniglot_5w1s", "mann", MANN_VARIANTS, 150),
    # pinned to the config's mann before the study (the config now holds the winner)
    "mann_20w1s": Study("omniglot_20w1s", "mann", MANN_20W_VARIANTS, None,
                        {"controller_size": 200, "key_std": 2.0, "input_bias": None}),
}


def build(study: Study, args: argparse.Namespace) -> dict:
    """The study's config narrowed to its learner, one run per variant (``args.variants``, or all)."""
    config = narrowed(load(study.config), [study.learner], args.steps or study.steps, args.val_episodes,
                      args.test_episodes, args.omniglot_root, args.output_dir, args.workers, args.seeds)
    template = config["learners"].pop(study.learner)
    for name in args.variants or list(study.variants):
        variant = dict(study.variants[name])
        run = copy.deepcopy(template)
        if "train_data" in variant:
            run["train_data"] = variant.pop("train_data")
        if "lr" in variant:
            run["model"]["init_args"]["optimizer"] = {"class_path": "torch.optim.Adam", "init_args": {"lr": variant.pop("lr")}}
        run["model"]["init_args"].update({**study.base, **variant})
        config["learners"][name] = run
    if config.get("reference") not in config["learners"]:
        config.pop("reference", None)
    return config


lstm_study, snail_study, mann_study = (partial(build, STUDIES[name]) for name in ("lstm_20w1s", "snail_5w1s", "mann_5w1s"))


def described(variant: dict) -> str:
    """``"embedding_norm: False, meta_batch_size: 32, ..."``: a variant's changes, training data arguments inlined."""
    flat = {k: v for k, v in variant.items() if k != "train_data"} | variant.get("train_data", {})
    return ", ".join(f"{k}: {v}" for k, v in flat.items()) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="lstm_20w1s", choices=list(STUDIES))
    parser.add_argument("--variants", nargs="+", default=None, help="some of the study's variants (default: all)")
    parser.add_argument("--steps", type=int, default=None,
                        help="meta-training steps per variant (default: 200 for lstm_20w1s, 150 for mann_5w1s, the config's budget for "
                             "snail_5w1s and mann_20w1s)")
    parser.add_argument("--val-episodes", type=int, default=None, help="default: the config's")
    parser.add_argument("--test-episodes", type=int, default=None, help="default: the config's (1,000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the config's ([0])")
    parser.add_argument("--workers", type=int, default=None, help="runs at once (default: the config's 2)")
    parser.add_argument("--omniglot-root", default=str(REPO.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--output-dir", default="results", help="where <study>/ goes")
    args = parser.parse_args()

    study = STUDIES[args.study]
    unknown = sorted(set(args.variants or ()) - set(study.variants))
    if unknown:
        parser.error(f"{args.study} has no variant {unknown}; it has {sorted(study.variants)}")
    config = build(study, args)
    config["name"] = f"ablation_{args.study}"

    from rnnmeta.compare import compare

    rows = compare(**config)
    budget = f"{config['max_steps']} meta-iterations" if config.get("max_steps") else f"{config['max_cpu_minutes']} CPU-minutes"
    print(f"\nOmniglot {args.study}: variants, {budget} each\n")
    print("| variant | changed arguments | test acc | +- 95% CI | steps | parameters |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['learner']} | {described(study.variants[row['learner']])} | {row['mean']:.4f} | {row['ci95']:.4f} | "
              f"{row['steps']:,.0f} | {row['parameters']:,} |")


if __name__ == "__main__":
    main()
