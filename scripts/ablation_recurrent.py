"""Why LSTMLearner sat at chance on Omniglot 20-way 1-shot: an ablation of its initialisation and size.

Each variant is the ``lstm`` learner of ``configs/compare/omniglot_20w1s.yaml`` with some of its
arguments changed, trained for the same number of meta-iterations (``--steps``, default 200) on the
same task stream and tested on the same fixed episodes, through :func:`rnnmeta.compare.compare`
(one thread per run). Prints the table that docs/RECURRENT.md shows; each run's curves, costs and
W&B log are in ``<output-dir>/recurrent_ablation_20w1s/``.

Variants (``--variants`` picks some):
  nn_lstm        nn.LSTM's default initialisation, no LayerNorm on the embedding (the first design)
  key_value      key-value initialisation and LayerNorm, a random head (the default before the fix)
  readout        + the head tied to the label directions of the cell (``readout_init``, the default now)
  readout_h512   + 512 hidden units
  sparse_h512    + sparser writes (``key_std: 4``, ``input_bias: -2``): the 20-way config's learner
  random_head    the 20-way config's learner with a random head (``readout_init: 0``)

Run:  python scripts/ablation_recurrent.py                       # about 6 x 50 CPU-seconds + tests
      python scripts/ablation_recurrent.py --steps 2 --test-episodes 20 --val-episodes 10   # smoke test
"""

from __future__ import annotations

import argparse
import copy

from comparison_config import REPO, load, narrowed

VARIANTS: dict[str, dict] = {
    "nn_lstm": {"hidden_size": 256, "key_value_init": False, "embedding_norm": False},
    "key_value": {"hidden_size": 256, "readout_init": 0.0},
    "readout": {"hidden_size": 256},
    "readout_h512": {"hidden_size": 512},
    "sparse_h512": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0},
    "random_head": {"hidden_size": 512, "key_std": 4.0, "input_bias": -2.0, "readout_init": 0.0},
}
# arguments a variant sets unless it names them: the LSTMLearner defaults, so that a change of the
# 20-way config's lstm entry does not leak into the variants
BASE = {"hidden_size": 256, "num_layers": 1, "key_value_init": True, "embedding_norm": True, "key_std": 2.0,
        "input_bias": None, "readout_init": 0.3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=200, help="meta-training steps per variant")
    parser.add_argument("--val-episodes", type=int, default=None, help="default: the config's")
    parser.add_argument("--test-episodes", type=int, default=None, help="default: the config's (1,000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the config's ([0])")
    parser.add_argument("--workers", type=int, default=None, help="runs at once (default: the config's 2)")
    parser.add_argument("--omniglot-root", default=str(REPO.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--output-dir", default="results", help="where recurrent_ablation_20w1s/ goes")
    args = parser.parse_args()

    config = narrowed(load("omniglot_20w1s"), ["lstm"], args.steps, args.val_episodes, args.test_episodes,
                      args.omniglot_root, args.output_dir, args.workers, args.seeds)
    config["name"] = "recurrent_ablation_20w1s"
    template = config["learners"].pop("lstm")
    for name in args.variants:
        run = copy.deepcopy(template)
        init_args = run["model"]["init_args"]
        init_args.update({**BASE, **VARIANTS[name]})
        config["learners"][name] = run

    from rnnmeta.compare import compare

    rows = compare(**config)
    print(f"\nOmniglot 20-way 1-shot, LSTMLearner variants, {args.steps} meta-iterations each (chance 0.05)\n")
    print("| variant | changed arguments | test acc | +- 95% CI | parameters |")
    print("|---|---|---|---|---|")
    for row in rows:
        changed = ", ".join(f"{k}: {v}" for k, v in VARIANTS[row["learner"]].items())
        print(f"| {row['learner']} | {changed} | {row['mean']:.4f} | {row['ci95']:.4f} | {row['parameters']:,} |")


if __name__ == "__main__":
    main()
