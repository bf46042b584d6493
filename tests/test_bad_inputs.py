"""Bad inputs, one matrix: every wrong input gives its own error, naming the value and what was expected.

The cases cover configuration values (through the ``rnnmeta`` command's parser and the classes),
tensors passed to ``forward``/``adapt``, and data on disk (fake folders built in a temporary
folder). Each case asserts the exception type, a pattern on its message (for the command's
parser, which prints the error and exits, on what it printed), and that nothing new was left in
the case's working folder, which is also the current folder and the cache folder of the run.
"""

from __future__ import annotations

from functools import partial
import io
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from PIL import Image

from rnnmeta.data import EpisodicDataModule, ImageFolder, Omniglot, Sinusoid
from rnnmeta.data.archive import CorruptArchiveError
from rnnmeta.episode import Episode
from rnnmeta.learners import MAML, MANN, SNAIL, LSTMLearner, LearnedOptimizer, NonFiniteLossError
from rnnmeta.nets import MLP

REPO = Path(__file__).resolve().parents[1]
SINUSOID_MAML = REPO / "configs/sinusoid/maml_k5.yaml"
SINUSOID_SNAIL = REPO / "configs/sinusoid/snail_k5.yaml"
SINUSOID_LSTM = REPO / "configs/sinusoid/lstm_k5.yaml"


# ------------------------------------------------------------------------------------- helpers
def _cli(*extra: str, config: Path = SINUSOID_MAML) -> Callable[[], Any]:
    """Parse and instantiate (no run) the command with ``extra`` arguments after a shipped config."""

    def run() -> Any:
        from rnnmeta.cli import build_cli

        return build_cli(["--config", str(config), "--trainer.logger", "false", *extra], run=False)

    return run


def _images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A valid 5-way 1-shot batch of 2 tasks of 28x28 grey images, with 3 queries each."""
    g = torch.Generator().manual_seed(0)
    support_x = torch.rand(2, 5, 1, 28, 28, generator=g)
    support_y = torch.arange(5).repeat(2, 1)
    query_x = torch.rand(2, 3, 1, 28, 28, generator=g)
    return support_x, support_y, query_x


def _points(k: int = 5, m: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A valid regression batch of 2 tasks: ``[2, k, 1]`` inputs and targets, ``[2, m, 1]`` queries."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, k, 1, generator=g), torch.rand(2, k, 1, generator=g), torch.rand(2, m, 1, generator=g)


def _small_snail() -> SNAIL:
    return SNAIL(n_way=5, max_shots=1, key_sizes=[8], value_sizes=[8], tc_filters=[])


def _png(path: Path, shade: int, size: int = 20) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), shade).save(path)


def _class_folders(root: Path, names: list[str], per_class: int = 3) -> Path:
    for c, name in enumerate(names):
        for i in range(per_class):
            _png(root / name / f"{i}.png", 20 * c + i)
    return root


def _omniglot_zip(path: Path, top: str, alphabets: int = 1, characters: int = 2, drawings: int = 2) -> None:
    """A tiny archive laid out like Omniglot's: ``<top>/<Alphabet>/characterNN/<drawing>.png``."""
    with zipfile.ZipFile(path, "w") as zf:
        for a in range(alphabets):
            for c in range(1, characters + 1):
                for d in range(drawings):
                    buf = io.BytesIO()
                    Image.new("1", (105, 105), d % 2).save(buf, format="PNG")
                    zf.writestr(f"{top}/Alphabet{a}/character{c:02d}/{c:02d}{d:02d}_{d + 1:02d}.png", buf.getvalue())


# ------------------------------------------------------------------------------ comparisons
_COMPARE_DATA = {"class_path": "rnnmeta.data.EpisodicDataModule",
                 "init_args": {"dataset": {"class_path": "rnnmeta.data.Sinusoid"}, "k_shot": 2, "q_queries": 2,
                               "meta_batch_size": 2, "train_batches_per_epoch": 2, "val_episodes": 2, "test_episodes": 4}}
_COMPARE_LSTM = {"model": {"class_path": "rnnmeta.learners.LSTMLearner",
                           "init_args": {"kind": "regression", "hidden_size": 8, "num_layers": 1}}}


def _compare(**overrides: Any) -> Callable[[], Any]:
    """A tiny comparison (written under the case's working folder) with ``overrides``."""

    def run() -> Any:
        from rnnmeta.compare import compare

        kwargs = dict(name="c", data=_COMPARE_DATA, learners={"lstm": _COMPARE_LSTM}, seeds=[0], max_steps=2,
                      trainer={"enable_progress_bar": False}, output_dir="results", numerics="native")
        kwargs.update(overrides)
        return compare(**kwargs)

    return run


def _stale_run_case(work: Path) -> Callable[[], Any]:
    _compare()()  # a finished run with hidden_size 8 ...
    changed = {"model": {**_COMPARE_LSTM["model"], "init_args": {**_COMPARE_LSTM["model"]["init_args"], "hidden_size": 4}}}
    return _compare(learners={"lstm": changed})  # ... asked for again with hidden_size 4


def _locked_folder_case(work: Path) -> Callable[[], Any]:
    import fcntl

    folder = work / "results" / "c"
    folder.mkdir(parents=True)
    handle = open(folder / ".lock", "a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another comparison holds the folder
    run = _compare()
    return lambda: (handle, run())[1]


# ------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """``build(work)`` makes the case's files and returns the call that must fail with ``error`` matching ``match``."""

    id: str
    build: Callable[[Path], Callable[[], Any]]
    error: type[BaseException]
    match: str


def _corrupt_image_case(work: Path) -> Callable[[], Any]:
    root = _class_folders(work / "images", ["a", "b", "c"])
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    dataset = ImageFolder(str(root), image_size=8, channels=1, cache_dir=str(work / "cache"))
    return dataset.prepare


def _missing_split_list_case(work: Path) -> Callable[[], Any]:
    # a small Omniglot-like folder of class folders with Vinyals-style split lists beside it, test.txt missing
    names = [f"Alphabet_{i}_character01" for i in range(6)]
    root = _class_folders(work / "omniglot_small", names)
    lists = work / "splits" / "vinyals"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(names[:4]) + "\n")
    (lists / "val.txt").write_text(names[4] + "\n")
    split_lists = {s: f"splits/vinyals/{s}.txt" for s in ("train", "val", "test")}
    return lambda: ImageFolder(str(root), image_size=8, channels=1, split_lists=split_lists, cache_dir=str(work / "cache"))


def _omniglot_missing_archive_case(work: Path) -> Callable[[], Any]:
    root = work / "omniglot"
    root.mkdir()
    _omniglot_zip(root / "images_background.zip", "images_background")
    return lambda: Omniglot(root=str(root), cache_dir=str(work / "cache"))


def _omniglot_corrupt_archive_case(work: Path) -> Callable[[], Any]:
    root = work / "omniglot"
    root.mkdir()
    _omniglot_zip(root / "images_background.zip", "images_background")
    (root / "images_evaluation.zip").write_bytes(b"PK\x03\x04 this is not the rest of a zip")
    dataset = Omniglot(root=str(root), cache_dir=str(work / "cache"))
    return dataset.prepare


def _too_many_ways_case(work: Path) -> Callable[[], Any]:
    root = _class_folders(work / "images", ["a", "b", "c", "d", "e", "f"])
    dataset = ImageFolder(str(root), image_size=8, channels=1, split_fractions=(0.5, 0.5, 0.0), cache_dir=str(work / "cache"))
    dataset.prepare()  # the decoded cache exists before the case runs
    data = EpisodicDataModule(dataset, n_way=5, k_shot=1, q_queries=1)
    return lambda: data.setup("fit")


def _too_many_shots_case(work: Path) -> Callable[[], Any]:
    root = _class_folders(work / "images", ["a", "b", "c", "d"], per_class=3)
    dataset = ImageFolder(str(root), image_size=8, channels=1, split_fractions=(0.5, 0.5, 0.0), cache_dir=str(work / "cache"))
    dataset.prepare()
    data = EpisodicDataModule(dataset, n_way=2, k_shot=2, q_queries=2)
    return lambda: data.setup("fit")


def _wrong_way_episode_case(work: Path) -> Callable[[], Any]:
    learner = LSTMLearner(n_way=5, hidden_size=8, num_layers=1)
    sx, _, qx = _images()
    episode = Episode(sx[:, :3], torch.arange(3).repeat(2, 1), qx, torch.zeros(2, 3, dtype=torch.long), n_way=3)
    return lambda: learner.episode_step(episode)


def _bomb_image_case(work: Path) -> Callable[[], Any]:
    root = _class_folders(work / "images", ["a", "b"])
    _png(root / "a" / "huge.png", 0, size=40)
    dataset = ImageFolder(str(root), image_size=8, channels=1, cache_dir=str(work / "cache"))

    def call() -> None:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = 300  # 40 x 40 = 1,600 pixels > 2 x 300 > the 20 x 20 of the others: a bomb
        try:
            dataset.prepare()
        finally:
            Image.MAX_IMAGE_PIXELS = limit

    return call


def _omniglot_root_is_the_zip_case(work: Path) -> Callable[[], Any]:
    root = work / "omniglot"
    root.mkdir()
    _omniglot_zip(root / "images_background.zip", "images_background")
    return lambda: Omniglot(root=str(root / "images_background.zip"), cache_dir=str(work / "cache"))


def _maml_checkpoint_file(path: Path) -> Path:
    """A checkpoint as a sinusoid MAML run writes it (identity, hyperparameters, weights), without training."""
    learner = MAML(kind="regression", inner_lr=0.01)
    checkpoint = {"state_dict": learner.state_dict(), "hyper_parameters": dict(learner.hparams)}
    learner.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def _wrong_learner_checkpoint_case(work: Path) -> Callable[[], Any]:
    ckpt = _maml_checkpoint_file(work / "maml.ckpt")

    def call() -> Any:
        from rnnmeta.cli import build_cli

        return build_cli(["test", "--config", str(SINUSOID_LSTM), "--trainer.logger=false", f"--ckpt_path={ckpt}"])

    return call


def _diverging_evaluation_case(work: Path) -> Callable[[], Any]:
    import pytorch_lightning as pl

    data = EpisodicDataModule(Sinusoid(), k_shot=5, q_queries=5, test_episodes=10, eval_batch_size=10)
    learner = MAML(kind="regression", eval_inner_lr=1e6, eval_inner_steps=10)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    return lambda: trainer.test(learner, datamodule=data, verbose=False)


CASES = [
    # ---- configuration values through the `rnnmeta` command (parsed and instantiated, not run)
    Case("cli-n_way-zero", lambda w: _cli("--data.init_args.n_way=0"), ValueError, r"EpisodicDataModule n_way must be >= 1, got 0"),
    Case("cli-k_shot-negative", lambda w: _cli("--data.init_args.k_shot=-1"), ValueError, r"EpisodicDataModule k_shot must be >= 1, got -1"),
    Case("cli-q_queries-zero", lambda w: _cli("--data.init_args.q_queries=0"), ValueError, r"EpisodicDataModule q_queries must be >= 1, got 0"),
    Case("cli-meta_batch_size-zero", lambda w: _cli("--data.init_args.meta_batch_size=0"), ValueError,
         r"EpisodicDataModule meta_batch_size must be >= 1, got 0"),
    Case("cli-k_shot_max-below-k_shot", lambda w: _cli("--data.init_args.k_shot=3", "--data.init_args.k_shot_max=2"), ValueError,
         r"k_shot_max=2 must be >= k_shot=3"),
    Case("cli-inner_steps-negative", lambda w: _cli("--model.init_args.inner_steps=-1"), ValueError,
         r"inner_steps and eval_inner_steps must be >= 0, got -1"),
    Case("cli-inner_lr-zero", lambda w: _cli("--model.init_args.inner_lr=0"), ValueError, r"inner_lr and eval_inner_lr must be > 0, got 0"),
    Case("cli-snail-max_shots-zero", lambda w: _cli("--model.init_args.max_shots=0", config=SINUSOID_SNAIL), ValueError,
         r"max_shots must be >= 1, got 0"),
    Case("cli-max_steps-negative", lambda w: _cli("--trainer.max_steps=-5"), Exception,
         r"`max_steps` must be a non-negative integer or -1 \(infinite steps\). You passed in -5"),
    Case("cli-unknown-learner", lambda w: _cli("--model=rnnmeta.learners.NoSuchLearner"), SystemExit,
         r"(?s)Parser key \"model\".*rnnmeta\.learners\.NoSuchLearner.*has no attribute 'NoSuchLearner'"),
    Case("cli-n_way-not-an-int", lambda w: _cli("--model.init_args.n_way", "five"), SystemExit,
         r"(?s)Parser key \"n_way\":\s*Expected a <class 'int'>\. Got value: five"),
    Case("cli-k_shot-fractional", lambda w: _cli("--data.init_args.k_shot=2.5"), SystemExit,
         r"(?s)Parser key \"k_shot\":\s*Expected a <class 'int'>\. Got value: 2\.5"),
    Case("cli-unknown-task-kind", lambda w: _cli("--model.init_args.kind=clasification"), SystemExit,
         r"(?s)Parser key \"kind\":.*classification.*regression.*Got value: clasification"),
    Case("cli-lr-infinite", lambda w: _cli("--model.init_args.optimizer.lr=.inf"), ValueError,
         r"optimizer lr must be a finite number > 0, got inf"),
    Case("cli-weight_decay-nan", lambda w: _cli("--model.init_args.optimizer=AdamW", "--model.init_args.optimizer.weight_decay=.nan"),
         ValueError, r"optimizer weight_decay must be a finite number >= 0, got nan"),
    Case("cli-checkpoint-of-another-learner", _wrong_learner_checkpoint_case, ValueError,
         r"checkpoint \S+/maml\.ckpt was saved from rnnmeta\.learners\.maml\.MAML, but the config builds "
         r"rnnmeta\.learners\.lstm\.LSTMLearner"),
    # ---- configuration values through the classes
    Case("learner-lr-infinite", lambda w: lambda: LSTMLearner(optimizer=partial(torch.optim.Adam, lr=float("inf"))), ValueError,
         r"optimizer lr must be a finite number > 0, got inf"),
    Case("learned-optimizer-init_inner_lr-negative", lambda w: lambda: LearnedOptimizer(init_inner_lr=-1), ValueError,
         r"init_inner_lr must lie in \(0, 1\) \(the update rule's input gate at initialisation\), got -1"),
    Case("learner-n_way-one", lambda w: lambda: MAML(n_way=1), ValueError, r"n_way must be >= 2 for classification, got 1"),
    Case("learner-kind-misspelt", lambda w: lambda: LSTMLearner(kind="clasification"), ValueError,
         r"kind must be one of \('classification', 'regression'\), got 'clasification'"),
    Case("mann-memory_slots-zero", lambda w: lambda: MANN(memory_slots=0), ValueError, r"memory_slots must be a positive int, got 0"),
    Case("learned-optimizer-inner_steps-zero", lambda w: lambda: LearnedOptimizer(inner_steps=0), ValueError,
         r"inner_steps must be >= 1, got 0"),
    Case("data-n_way-float", lambda w: lambda: EpisodicDataModule(Sinusoid(), n_way=2.5), ValueError,
         r"EpisodicDataModule n_way must be an integer >= 1, got 2\.5 \(float\)"),
    Case("data-dataset-not-a-dataset", lambda w: lambda: EpisodicDataModule("omniglot"), TypeError,
         r"dataset must be a rnnmeta\.data\.FewShotDataset, got str"),
    # ---- tensors passed to forward / adapt
    Case("forward-support_x-rank", lambda w: lambda: MAML(kind="regression")(_points()[0][..., 0], _points()[1], _points()[2]),
         ValueError, r"support_x must be \[B, S, \*x_shape\] \(at least 3 dims\), got \[2, 5\]"),
    Case("forward-batch-mismatch", lambda w: lambda: _small_snail()(_images()[0], _images()[1], _images()[2][:1]), ValueError,
         r"query_x must be \[B, M, \*x_shape\] matching support_x \[2, 5, 1, 28, 28\] in B and x_shape, got \[1, 3, 1, 28, 28\]"),
    Case("forward-label-out-of-range", lambda w: lambda: LSTMLearner(n_way=5, hidden_size=8, num_layers=1)(
        _images()[0], _images()[1] + 1, _images()[2]), ValueError, r"support_y labels must lie in 0\.\.4, got range 1\.\.5"),
    Case("forward-label-negative", lambda w: lambda: MANN(n_way=5, controller_size=8, memory_slots=4, memory_width=4, read_heads=1)(
        _images()[0], _images()[1] - 1, _images()[2]), ValueError, r"support_y labels must lie in 0\.\.4, got range -1\.\.3"),
    Case("forward-float-class-labels", lambda w: lambda: MAML(n_way=5)(_images()[0], _images()[1].float(), _images()[2]), TypeError,
         r"support_y must be int64 class labels for a classification learner, got torch\.float32"),
    Case("forward-integer-regression-targets", lambda w: lambda: LSTMLearner(kind="regression", hidden_size=8, num_layers=1)(
        _points()[0], _points()[1].long(), _points()[2]), TypeError, r"support_y must be a float tensor for regression, got torch\.int64"),
    Case("forward-support_y-length", lambda w: lambda: MAML(n_way=5)(_images()[0], _images()[1][:, :4], _images()[2]), ValueError,
         r"support_y must have shape \[2, 5\], got \[2, 4\]"),
    Case("adapt-unbatched-support", lambda w: lambda: LearnedOptimizer(n_way=5).adapt(_images()[0][0], _images()[1][0]), ValueError,
         r"support_y must have shape \[5, 1\], got \[5\]"),
    Case("adapt-snail-too-many-shots", lambda w: lambda: _small_snail().adapt(torch.cat([_images()[0]] * 2, 1), _images()[1].repeat(1, 2)),
         ValueError, r"SNAIL was built for sequences of at most T=6 steps \(max_shots=1\), but a support set of 10 examples"),
    Case("adapted-snail-query-shape", lambda w: lambda: _small_snail().adapt(*_images()[:2])(torch.rand(2, 3, 1, 32, 32)), ValueError,
         r"query_x must be \[B=2, M, \*\[1, 28, 28\]\] like the adapted support set, got \[2, 3, 1, 32, 32\]"),
    Case("forward-empty-support", lambda w: lambda: MAML(kind="regression")(_points()[0][:, :0], _points()[1][:, :0], _points()[2]),
         ValueError, r"support_x holds no examples \(S=0, got \[2, 0, 1\]\)"),
    Case("forward-support_y-width", lambda w: lambda: MAML(kind="regression")(_points()[0], _points()[1].repeat(1, 1, 3), _points()[2]),
         ValueError, r"support_y must have shape \[2, 5, 1\] \(target_dim=1\), got \[2, 5, 3\]"),
    Case("forward-maml-backbone-width", lambda w: lambda: MAML(kind="regression", backbone=MLP(in_features=2, hidden=[8]))(*_points()),
         ValueError, r"MAML: the backbone MLP expects examples \[2\] \(in_features=2\) but support_x has examples \[1\] "
         r".*set the backbone's in_features to match the data"),
    Case("evaluation-diverges", _diverging_evaluation_case, NonFiniteLossError,
         r"MAML: test evaluation gave a non-finite loss or mse in 10 of 10 episodes .*lower eval_inner_lr \(now 1e\+06\)"),
    Case("episode-n_way-mismatch", _wrong_way_episode_case, ValueError,
         r"LSTMLearner was built for n_way=5 but the data gives 3-way episodes"),
    # ---- data on disk
    Case("image-folder-empty-class", lambda w: (lambda root: (root / "empty").mkdir() or (lambda: ImageFolder(str(root))))(
        _class_folders(w / "images", ["a", "b"])), ValueError, r"class folder \S+/images/empty holds no images \(expected files ending in \.png"),
    Case("image-folder-unreadable-image", _corrupt_image_case, ValueError, r"cannot read image \S+/images/b/broken\.png"),
    Case("image-folder-missing-split-list", _missing_split_list_case, FileNotFoundError,
         r"split list for 'test' not found: splits/vinyals/test\.txt \(also tried \S+/omniglot_small/splits/vinyals/test\.txt\)"),
    Case("omniglot-missing-archive", _omniglot_missing_archive_case, FileNotFoundError,
         r"Omniglot: neither \S+/images_evaluation\.zip nor \S+/images_evaluation/ exists"),
    Case("omniglot-corrupt-archive", _omniglot_corrupt_archive_case, CorruptArchiveError,
         r"\S+/omniglot/images_evaluation\.zip is not a readable zip archive \(corrupt or truncated\?\)"),
    Case("image-folder-decompression-bomb", _bomb_image_case, ValueError,
         r"refusing image \S+/images/a/huge\.png: .*decompression-bomb limit"),
    Case("omniglot-root-is-the-zip", _omniglot_root_is_the_zip_case, NotADirectoryError,
         r"Omniglot: root \S+/images_background\.zip is a file, not a folder.*set root to \S+/omniglot"),
    Case("data-n_way-exceeds-classes", _too_many_ways_case, ValueError, r"n_way=5 exceeds the 3 classes of split 'train'"),
    Case("data-shots-exceed-images", _too_many_shots_case, ValueError,
         r"k_shot \+ q_queries = 2 \+ 2 = 4 exceeds the 3 images of the smallest class \(\w\) of split 'train'"),
    # ---- comparisons: refused before anything is trained or written
    Case("compare-seeds-repeated", lambda w: _compare(seeds=[0, 0]), ValueError, r"seeds \[0, 0\] repeat \[0\]: each seed is one run"),
    Case("compare-seeds-empty", lambda w: _compare(seeds=[]), ValueError, r"seeds must be a non-empty list of integers >= 0, got \[\]"),
    Case("compare-name-outside-output", lambda w: _compare(name="../../victim"), ValueError,
         r"comparison name '../../victim' is not a plain name"),
    Case("compare-learner-name-path", lambda w: _compare(learners={"/tmp/x": _COMPARE_LSTM}), ValueError,
         r"learner name '/tmp/x' is not a plain name"),
    Case("compare-learner-unknown-key", lambda w: _compare(learners={"lstm": {"model": {**_COMPARE_LSTM["model"], "init_args": {
         "kind": "regression", "hidden_sise": 8}}}}), ValueError, r"(?s)learner 'lstm'.*hidden_sise"),
    Case("compare-trainer-budget-key", lambda w: _compare(trainer={"max_time": "00:00:01:00"}), ValueError,
         r"trainer.max_time is set by the comparison: set max_cpu_minutes or max_wall_minutes"),
    Case("compare-no-budget", lambda w: _compare(max_steps=None), ValueError, r"a comparison needs a budget"),
    Case("compare-stale-run", _stale_run_case, ValueError,
         r"runs/lstm-seed0 was made with another config \(model.init_args.hidden_size: 8 -> 4\).*force"),
    Case("compare-folder-locked", _locked_folder_case, RuntimeError, r"results/c is being written by another process"),
]


# Inputs that would otherwise fail deep inside torch: the backbone checks its input shape,
# MetaLearner its argument types and the input dtype.
BACKBONE_AND_DTYPE_CASES = [
    pytest.param(Case("forward-image-size", lambda w: lambda: MAML(n_way=5)(*(t if t.dtype == torch.long else
                 torch.nn.functional.pad(t, (2, 2, 2, 2)) for t in _images())), ValueError, r"1, 28, 28\].*1, 32, 32\]"),
                 id="forward-image-size"),
    pytest.param(Case("forward-float64-inputs", lambda w: lambda: MAML(n_way=5)(_images()[0].double(), _images()[1],
                 _images()[2].double()), TypeError, r"float64.*float32"), id="forward-float64-inputs"),
    pytest.param(Case("learner-n_way-float", lambda w: lambda: MAML(n_way=2.5), ValueError, r"n_way must be an int.*2\.5"),
                 id="learner-n_way-float"),
]


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES] + BACKBONE_AND_DTYPE_CASES)
def test_bad_input_gives_its_own_error_and_leaves_no_file(case: Case, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("RNNMETA_CACHE", str(work / "cache"))
    monkeypatch.setattr(sys, "argv", ["rnnmeta"])
    call = case.build(work)
    before = _files(work)
    capsys.readouterr()
    with pytest.raises(case.error) as info:
        call()
    message = capsys.readouterr().err if case.error is SystemExit else str(info.value)
    assert re.search(case.match, message), f"{case.id}: {type(info.value).__name__}: {message[-2000:]}"
    assert _files(work) == before, f"{case.id} left files behind"
