"""The online protocol of Santoro et al. (2016) on 5-way Omniglot: per-instance accuracy of LSTMLearner, MANN and SNAIL.

Each learner is meta-trained on streams of N classes x 10 instances (labels one step late) for
``--steps`` meta-iterations, then evaluated on ``--test-streams`` fixed test streams (Vinyals split).
The runs are built by rnnmeta's command-line layer (:class:`rnnmeta.cli.RnnmetaCLI`, as
``rnnmeta fit`` builds its runs) from ``configs/online/omniglot_5w.yaml``, with ``model.learner``
swapped for each learner and this script's options applied. Writes one PNG plot of accuracy by
instance number, with Santoro's MANN numbers marked (82.8% at the 2nd instance, 94.9% at the 5th,
after 100,000 training episodes), the numbers beside it as JSON, and a Markdown table on stdout.

Run:  python scripts/online_protocol.py --steps 500 --out results/online_protocol.png
      python scripts/online_protocol.py --steps 2 --test-streams 10 --out /tmp/online.png   # smoke test
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from rnnmeta.data.online import OnlineDataModule
from rnnmeta.learners.online import REPORTED_INSTANCES, SANTORO_MANN, OnlineMetaLearner, format_table

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"
CONFIG = REPO / "configs" / "online" / "omniglot_5w.yaml"


def learner_spec(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ``model.learner`` of the config for learner ``name``, as a ``class_path`` spec."""
    backbone = {"class_path": "rnnmeta.nets.Conv4", "init_args": {"hidden": args.filters, "track_running_stats": True}}
    common = {"backbone": backbone, "n_way": args.n_way}
    # the label readout and MANN's key-value controller bind each image with the label of its own step; here the
    # label slot holds the previous step's label, so they start wrong (docs/RECURRENT.md, "The online protocol");
    # --episodic-init keeps them, to measure that
    if name == "lstm":
        readout = {} if args.episodic_init else {"readout_init": 0.0}
        return {"class_path": "rnnmeta.learners.LSTMLearner", "init_args": {
            **common, "hidden_size": args.hidden, "num_layers": 1, **readout}}
    if name.startswith("mann"):
        slots = int(name[4:]) if name[4:] else args.memory_slots
        controller = {} if args.episodic_init else {"key_value_init": False}
        return {"class_path": "rnnmeta.learners.MANN", "init_args": {
            **common, "controller_size": args.hidden, "memory_slots": slots, "memory_width": 40, "read_heads": 4,
            **controller}}
    if name == "snail":
        # one model for streams of n_way * instances steps: max_shots = instances
        return {"class_path": "rnnmeta.learners.SNAIL", "init_args": {**common, "max_shots": args.instances}}
    raise ValueError(f"unknown learner {name!r}; expected 'lstm', 'snail', 'mann' or 'mann<slots>' (e.g. mann16)")


def run_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """``configs/online/omniglot_5w.yaml`` with learner ``name`` and this script's options."""
    config = copy.deepcopy(yaml.safe_load(CONFIG.read_text()))
    config["seed_everything"] = args.seed
    config["trainer"]["max_steps"] = args.steps
    model = config["model"]
    model["learner"] = learner_spec(name, args)
    model["optimizer"]["init_args"]["lr"] = args.lr
    model["max_instance"] = args.instances
    data = config["data"]
    data["dataset"]["init_args"]["root"] = str(args.root)
    data.update(n_way=args.n_way, instances=args.instances, batch_size=args.batch_size, test_streams=args.test_streams,
                seed=args.seed)
    return config


def label_of(name: str, args: argparse.Namespace) -> str:
    if name == "lstm":
        return f"LSTMLearner {args.hidden}"
    if name == "snail":
        return "SNAIL"
    slots = int(name[4:]) if name[4:] else args.memory_slots
    return f"MANN {args.hidden}, memory {slots} x 40"


def run(name: str, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Train one learner for ``args.steps`` steps and test it: (mean [instances], ci95 [instances], steps, training CPU s)."""
    from rnnmeta.cli import LoggerSaveConfigCallback, RnnmetaCLI

    cli = RnnmetaCLI(OnlineMetaLearner, OnlineDataModule, save_config_callback=LoggerSaveConfigCallback,
                     save_config_kwargs={"overwrite": True}, args=run_config(name, args), run=False,
                     auto_configure_optimizers=False)
    cpu = time.process_time()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cpu = time.process_time() - cpu
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    mean, ci = cli.model.summary("test")
    return mean, ci, int(cli.trainer.global_step), cpu


def plot(results: dict[str, tuple[torch.Tensor, torch.Tensor]], path: Path, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (mean, ci) in results.items():
        x = list(range(1, mean.numel() + 1))
        ax.errorbar(x, (100 * mean).tolist(), yerr=(100 * ci).tolist(), marker="o", capsize=3, label=name)
    ax.scatter(list(SANTORO_MANN), [100 * v for v in SANTORO_MANN.values()], marker="*", s=180, color="black",
               zorder=5, label="MANN, Santoro et al. 2016")
    for i, v in SANTORO_MANN.items():
        ax.annotate(f"{100 * v:.1f}", (i, 100 * v), textcoords="offset points", xytext=(6, -12))
    ax.axhline(100 / 5, color="grey", linestyle=":", linewidth=1, label="chance (5-way)")
    ax.set_xlabel("instance of the class in the stream")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(list(range(1, 11)))
    ax.set_ylim(0, 100)
    ax.set_title("Online protocol, 5-way Omniglot", fontsize=10)
    ax.text(0.01, 0.01, caption, transform=ax.transAxes, fontsize=7, color="dimgrey")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500, help="meta-training steps per learner")
    parser.add_argument("--learners", default="lstm,mann,snail",
                        help="comma-separated: lstm, snail, mann (--memory-slots rows), mann<slots> (e.g. mann16)")
    parser.add_argument("--root", type=Path, default=OMNIGLOT)
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--filters", type=int, default=32, help="Conv4 filters of the embedding")
    parser.add_argument("--hidden", type=int, default=200, help="LSTM units / MANN controller units (200 in the paper)")
    parser.add_argument("--memory-slots", type=int, default=128, help="MANN memory rows (128 in the paper)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--test-streams", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--episodic-init", action="store_true",
                        help="keep the episodic initialisations (LSTMLearner's label readout, MANN's key-value controller)")
    parser.add_argument("--out", type=Path, default=Path("results/online_protocol.png"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from rnnmeta.logging import quiet_console

    quiet_console()  # no Lightning tips between the learners' lines
    torch.set_num_threads(args.threads)

    results, rows = {}, []
    for name in args.learners.split(","):
        mean, ci, steps, cpu = run(name, args)
        label = label_of(name, args)
        results[f"{label} ({steps} it.)"] = (mean, ci)
        rows.append((f"{label}, {steps} meta-iterations x {args.batch_size} streams, {cpu:.0f} CPU-s", mean, ci))
        print(f"{label}: {steps} meta-iterations, {cpu:.0f} CPU-s; "
              + ", ".join(f"inst {i}: {100 * float(mean[i - 1]):.1f}" for i in REPORTED_INSTANCES), flush=True)
    caption = f"{args.steps:,} meta-iterations per learner, {args.test_streams} test streams, 95% CI"
    plot(results, args.out, caption)
    print(format_table(rows, [i for i in REPORTED_INSTANCES if i <= args.instances]))
    record = {name: {"mean": mean.tolist(), "ci95": ci.tolist()} for name, (mean, ci) in results.items()}
    args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "accuracy_by_instance": record}, indent=1))
    print(f"plot: {args.out} (numbers: {args.out.with_suffix('.json')})")


if __name__ == "__main__":
    main()
