"""A training and test run under Lightning's DDP strategy on the CPU, for tests/test_distributed.py.

Run as a script (``python tests/ddp_worker.py --devices 2 ...``): with ``--devices 2`` Lightning's
``ddp`` strategy re-runs this script once more as rank 1, and the two processes talk over gloo.
Each rank writes ``<out>/<phase>_<task>_rank<r>.json`` with what it saw and computed:

* ``fit`` (train a few steps from a seeded init, save ``<out>/<task>.ckpt``, then test that
  checkpoint): the digest of every training batch and of the parameters before and after
  training, the validation and test metrics, the per-episode test values and the digest of every
  test episode this rank evaluated;
* ``test`` (load ``<out>/<task>.ckpt`` and test it): the test metrics, per-episode values and
  episode digests.

Tasks: ``omniglot`` (MAML, 5-way 1-shot, its inner loop running at test time) and ``sinusoid``
(an LSTMLearner regressing sinusoids, evaluated in inference mode).
"""

from __future__ import annotations

from functools import partial
import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import Callback  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rnnmeta.data import EpisodicDataModule, Omniglot, Sinusoid  # noqa: E402
from rnnmeta.episode import Episode  # noqa: E402
from rnnmeta.learners import MAML, LSTMLearner, MetaLearner  # noqa: E402

TASKS = ("omniglot", "sinusoid")
TRAIN_STEPS = 3
VAL_EPISODES = 11  # odd: the two ranks hold 6 and 5 episodes
TEST_EPISODES = 51  # odd, and with EVAL_BATCH 5 the ranks run 6 and 5 batches
EVAL_BATCH = 5


def digest(*tensors: torch.Tensor) -> str:
    """SHA-1 of the tensors' bytes (on the CPU, contiguous)."""
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def episode_digest(ep: Episode, b: int) -> str:
    """Digest of task ``b`` of an episode batch."""
    return digest(ep.support_x[b], ep.support_y[b], ep.query_x[b], ep.query_y[b])


def batch_digest(ep: Episode) -> str:
    """Digest of a whole episode batch."""
    return digest(ep.support_x, ep.support_y, ep.query_x, ep.query_y)


def params_digest(module: torch.nn.Module) -> str:
    """Digest of every parameter, in ``named_parameters`` order."""
    return digest(*[p for _, p in module.named_parameters()])


def datamodule(task: str, omniglot_root: str, cache_dir: str) -> EpisodicDataModule:
    """The task's data: small meta-batches, an odd number of val and test episodes."""
    common = dict(eval_batch_size=EVAL_BATCH, train_batches_per_epoch=TRAIN_STEPS, val_episodes=VAL_EPISODES,
                  test_episodes=TEST_EPISODES, seed=0)
    if task == "omniglot":
        return EpisodicDataModule(Omniglot(omniglot_root, cache_dir=cache_dir), n_way=5, k_shot=1, q_queries=5,
                                  meta_batch_size=4, **common)
    return EpisodicDataModule(Sinusoid(), k_shot=5, q_queries=10, meta_batch_size=8, **common)


def learner(task: str) -> MetaLearner:
    """A seeded learner for the task (the same init on every rank and in every run)."""
    torch.manual_seed(0)
    if task == "omniglot":
        return MAML(inner_steps=1, inner_lr=0.4, eval_inner_steps=3, kind="classification", n_way=5)
    return LSTMLearner(hidden_size=32, num_layers=1, kind="regression", target_dim=1, optimizer=partial(torch.optim.Adam, lr=1e-2))


class Recorder(Callback):
    """Digests of the training batches and the test episodes this rank saw."""

    def __init__(self) -> None:
        self.train: list[str] = []
        self.test: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.append(batch_digest(batch))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.test.extend(episode_digest(batch, b) for b in range(batch.batch_size))


def metrics(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


def trainer(devices: int, out: Path, recorder: Recorder) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=TRAIN_STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(out),
        callbacks=[recorder],
    )


def run(task: str, phase: str, devices: int, out: Path, omniglot_root: str, cache_dir: str) -> None:
    dm = datamodule(task, omniglot_root, cache_dir)
    recorder = Recorder()
    tr = trainer(devices, out, recorder)
    ckpt = out / f"{task}.ckpt"
    record: dict[str, object] = {"world_size": tr.world_size}
    if phase == "fit":
        pl.seed_everything(0, verbose=False)
        model = learner(task)
        record["params_init"] = params_digest(model)
        tr.fit(model, datamodule=dm)
        record["params_trained"] = params_digest(model)
        record["val"] = metrics({k: v for k, v in tr.callback_metrics.items() if k.startswith("val/")})
        record["train_batches"] = list(recorder.train)
        tr.save_checkpoint(str(ckpt))
        (result,) = tr.test(model, datamodule=dm, ckpt_path=str(ckpt), verbose=False)
    else:
        model = type(learner(task)).load_from_checkpoint(str(ckpt), map_location="cpu")
        (result,) = tr.test(model, datamodule=dm, verbose=False)
    record["params_tested"] = params_digest(model)
    record["test"] = metrics(result)
    record["test_values"] = model.eval_episode_values["test"].tolist()
    record["test_episodes"] = list(recorder.test)
    path = out / f"{phase}_{task}_rank{tr.global_rank}.json"
    path.write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=("fit", "test"), required=True)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--omniglot-root", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    for task in args.tasks:
        run(task, args.phase, args.devices, Path(args.out), args.omniglot_root, args.cache_dir)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # rank 0 exits only after every rank has written its record


if __name__ == "__main__":
    main()
