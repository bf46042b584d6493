"""``rnnmeta predict``: the few-shot job a user has, on their own files.

Given a trained learner's checkpoint, a support folder of labelled examples and a query folder of
unlabelled files::

    support/                    query/
      cat/  a.jpg b.jpg           img_001.jpg
      dog/  c.png                 img_002.png
      ...                         more/img_003.jpg

``rnnmeta predict --ckpt_path <ckpt> --support support/ --query query/ --output preds.csv``
rebuilds the learner from the checkpoint alone (its hyperparameters, read with
``torch.load(weights_only=True)``), reads the support set once (:meth:`MetaLearner.adapt`) and
writes one CSV row per query file::

    file,predicted_class,probability
    img_001.jpg,cat,0.912345
    more/img_003.jpg,dog,0.734561

``probability`` is the softmax of the learner's logits over the support classes for the predicted
class. Rows follow the sorted relative paths of the query files; the support set is presented in
a seeded random order (``--seed``), as training episodes present it (labels never in blocks), so
the output is a function of the files, the checkpoint and the seed.

Reading examples is the job of an :class:`ExampleReader`, chosen from the checkpoint:

* :class:`ImageReader` (learners trained on images): files with an image extension, decoded
  exactly as :class:`~rnnmeta.data.ImageFolder` decodes them
  (:func:`~rnnmeta.data.image_folder.decode_image`), at the backbone's input size and channels;
* :class:`TextReader` (learners whose checkpoint carries a text vocabulary, saved by the text
  data module): ``.txt`` files, one example per file, tokenised with the checkpoint's vocabulary.

A new kind of data is one more reader and one more line in :func:`reader_for`.

Classification learners only: a regression learner is refused (a support "class" has no meaning
there). The support folder must have exactly the learner's ``n_way`` classes, and at most its
``max_shots`` examples per class where the learner has that limit (SNAIL's sequence length).
"""

from __future__ import annotations

import csv
import io
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol, Sequence

if TYPE_CHECKING:  # torch and Lightning load only when the command runs
    from torch import Tensor

    from rnnmeta.learners import MetaLearner

__all__ = [
    "ExampleReader",
    "ImageReader",
    "Prediction",
    "TextReader",
    "build_parser",
    "class_folder_files",
    "load_learner",
    "main",
    "predict",
    "query_files",
    "reader_for",
]

#: Module prefix a checkpoint's learner class must have to be imported by ``rnnmeta predict``.
TRUSTED_PREFIX = "rnnmeta."


@dataclass(frozen=True)
class Prediction:
    """One query file's answer: its path relative to the query folder, the class and its softmax probability."""

    file: str
    predicted_class: str
    probability: float


# ---------------------------------------------------------------------------------- readers
class ExampleReader(Protocol):
    """Turns files into the learner's inputs.

    Attributes:
        what: what one file holds, for messages (``"image"``, ``"text"``).
        extensions: lower-case file endings it reads (``".png"``, ``".txt"``).
    """

    what: str
    extensions: tuple[str, ...]

    def read(self, paths: Sequence[Path]) -> "Tensor":
        """``[len(paths), *x_shape]``: the examples, as the learner was trained on them."""
        ...


class ImageReader:
    """Images decoded as :class:`~rnnmeta.data.ImageFolder` does, as float32 ``[n, channels, size, size]`` in ``[0, 1]``."""

    what = "image"

    def __init__(self, image_size: int, channels: int) -> None:
        from rnnmeta.data.image_folder import IMAGE_EXTENSIONS

        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3 (grayscale or RGB images), got {channels!r}")
        self.image_size, self.channels = image_size, channels
        self.extensions = tuple(IMAGE_EXTENSIONS)

    def read(self, paths: Sequence[Path]) -> "Tensor":
        import numpy as np
        import torch

        from rnnmeta.data.image_folder import decode_image

        images = np.stack([decode_image(p, self.image_size, self.channels, owner="rnnmeta predict") for p in paths])
        return torch.from_numpy(images).to(torch.float32).div_(255.0)  # as ClassIndexSource converts uint8

    def __repr__(self) -> str:
        return f"ImageReader(image_size={self.image_size}, channels={self.channels})"


class TextReader:
    """``.txt`` files, one example each (the whole file, UTF-8), as int64 token ids ``[n, max_length]``."""

    what = "text"
    extensions = (".txt",)

    def __init__(self, vocabulary: Any, max_length: int) -> None:
        self.vocabulary, self.max_length = vocabulary, max_length

    def read(self, paths: Sequence[Path]) -> "Tensor":
        texts = []
        for path in paths:
            try:
                texts.append(path.read_bytes().decode("utf-8-sig").strip())
            except UnicodeDecodeError as err:
                raise ValueError(f"rnnmeta predict: {path} is not UTF-8 text ({err})") from err
        return self.vocabulary.encode_batch(texts, self.max_length)

    def __repr__(self) -> str:
        return f"TextReader({self.vocabulary!r}, max_length={self.max_length})"


def _text_state(path: Path) -> Optional[dict[str, Any]]:
    """The text dataset's state a checkpoint carries (``{"vocabulary": ..., "max_length": ...}``), or None."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for value in checkpoint.values():
        dataset = value.get("dataset") if isinstance(value, dict) else None
        if isinstance(dataset, dict) and "vocabulary" in dataset:
            return dataset
    return None


def reader_for(
    learner: "MetaLearner", ckpt_path: Path, image_size: Optional[int] = None, channels: Optional[int] = None
) -> ExampleReader:
    """The reader for the data the learner was trained on: text if the checkpoint carries a vocabulary, else images.

    Images are read at the backbone's input shape (``image_size``/``channels`` override it, and
    are needed when the backbone does not declare one).

    Raises:
        ValueError: the image shape is unknown or not square ``[C, S, S]`` with ``C`` 1 or 3.
    """
    state = _text_state(ckpt_path)
    if state is not None:
        from rnnmeta.data.vocab import Vocabulary

        return TextReader(Vocabulary.from_state_dict(state["vocabulary"]), int(state.get("max_length", 32)))
    from rnnmeta.nets.factory import backbone_input_shape

    backbone = getattr(learner, "backbone", None)
    shape = backbone_input_shape(backbone) if backbone is not None else None
    if shape is not None and (len(shape) != 3 or shape[1] != shape[2]):
        raise ValueError(
            f"the learner's backbone {type(backbone).__name__} takes examples of shape {list(shape)}, not square images "
            "[channels, size, size]; rnnmeta predict reads image files (and .txt files for learners trained on text)"
        )
    size = image_size if image_size is not None else (shape[1] if shape else None)
    chans = channels if channels is not None else (shape[0] if shape else None)
    if size is None or chans is None:
        raise ValueError(
            f"the learner's backbone {type(backbone).__name__} does not declare its input shape: pass --image_size "
            "and --channels (the size and channels of the images it was trained on)"
        )
    return ImageReader(size, chans)


# ---------------------------------------------------------------------------------- files
def _visible_files(folder: Path) -> list[Path]:
    """Files under ``folder`` at any depth, none of whose path parts below ``folder`` is hidden, sorted by that path."""
    found = [p for p in folder.rglob("*") if p.is_file()]
    visible = [p for p in found if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(visible, key=lambda p: p.relative_to(folder).as_posix())


def _check_extension(path: Path, reader: ExampleReader, where: str) -> None:
    if path.suffix.lower() not in reader.extensions:
        raise ValueError(
            f"{where} file {path} is not {'an' if reader.what[0] in 'aeiou' else 'a'} {reader.what} file this learner "
            f"reads (expected one of {', '.join(reader.extensions)}); move it out of the folder"
        )


def class_folder_files(root: Path, reader: ExampleReader) -> dict[str, list[Path]]:
    """The support folder: class name -> its files (sorted), from ``root/<class>/<file>``.

    Hidden files and folders are ignored; any other file must be one the reader reads.

    Raises:
        FileNotFoundError: ``root`` is missing.
        ValueError: no class folders, a file directly in ``root``, an empty class folder, a file of another kind.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"support folder {root} does not exist or is not a folder (expected {root}/<class>/<file>)")
    classes: dict[str, list[Path]] = {}
    for entry in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not entry.is_dir():
            raise ValueError(f"support file {entry} is not in a class folder: put each example in {root}/<class>/")
        files = _visible_files(entry)
        if not files:
            raise ValueError(f"support class folder {entry} holds no {reader.what} files")
        for path in files:
            _check_extension(path, reader, "support")
        classes[entry.name] = files
    if not classes:
        raise ValueError(f"support folder {root} holds no class folders; expected {root}/<class>/<file>")
    return classes


def query_files(root: Path, reader: ExampleReader) -> list[Path]:
    """The query folder's files, at any depth, sorted by their path relative to ``root`` (hidden ones ignored).

    Raises:
        FileNotFoundError: ``root`` is missing.
        ValueError: no files, or a file of another kind.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"query folder {root} does not exist or is not a folder")
    files = _visible_files(root)
    if not files:
        raise ValueError(f"query folder {root} holds no files to predict")
    for path in files:
        _check_extension(path, reader, "query")
    return files


# ---------------------------------------------------------------------------------- the learner
def load_learner(ckpt_path: str | os.PathLike, learner_class: Optional[type] = None) -> "MetaLearner":
    """The learner a checkpoint holds, rebuilt from its hyperparameters alone (``weights_only=True``), in eval mode.

    Args:
        ckpt_path: a checkpoint written by an rnnmeta learner (``rnnmeta fit``, ``rnnmeta compare``).
        learner_class: the class to load into; default the one the checkpoint records, which must
            live in the ``rnnmeta`` package (a checkpoint never makes this import other code).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated or corrupt file, a checkpoint not written by an rnnmeta learner,
            a learner class that cannot be imported or is not a :class:`MetaLearner`.
    """
    from rnnmeta.checkpoint import check_checkpoint_file
    from rnnmeta.cli import read_checkpoint_header
    from rnnmeta.learners import MetaLearner
    from rnnmeta.specs import import_class

    path = check_checkpoint_file(ckpt_path)
    try:
        header = read_checkpoint_header(path)
    except Exception as err:  # a zip that torch.save did not write, or one holding pickled objects
        raise ValueError(f"{path} is not a checkpoint that loads with torch.load(weights_only=True): {err}") from err
    identity = header.get("identity")
    if learner_class is None:
        if not isinstance(identity, dict) or not isinstance(identity.get("learner"), str):
            raise ValueError(
                f"{path} was not written by an rnnmeta learner (it has no 'rnnmeta' record of the learner class); "
                "use a checkpoint of `rnnmeta fit` or `rnnmeta compare` (runs/.../checkpoints/*.ckpt)"
            )
        class_path = identity["learner"]
        if not class_path.startswith(TRUSTED_PREFIX):
            raise ValueError(
                f"{path} names the learner class {class_path!r}, outside the rnnmeta package; load it from Python with "
                "rnnmeta.predict.load_learner(path, learner_class=YourLearner) if you trust it"
            )
        try:
            learner_class = import_class(class_path, "learner class")
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: {err}") from err
    if not (isinstance(learner_class, type) and issubclass(learner_class, MetaLearner)):
        raise ValueError(f"{learner_class!r} is not an rnnmeta MetaLearner class")
    with warnings.catch_warnings():  # the backbone is among the hyperparameters on purpose (stored as its spec)
        warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module` and is already saved")
        learner = learner_class.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
    return learner.eval()


# ---------------------------------------------------------------------------------- the job
def _check_classifier(learner: "MetaLearner") -> None:
    from rnnmeta.episode import CLASSIFICATION

    if learner.kind != CLASSIFICATION:
        raise ValueError(
            f"{type(learner).__name__} in this checkpoint is a {learner.kind} learner; rnnmeta predict answers "
            "classification (a class per support folder). Call learner.adapt(support_x, support_y) from Python instead"
        )


def _check_support(learner: "MetaLearner", classes: dict[str, list[Path]], support: Path) -> None:
    if len(classes) != learner.n_way:
        names = ", ".join(list(classes)[:10]) + (", ..." if len(classes) > 10 else "")
        raise ValueError(
            f"the support folder {support} has {len(classes)} classes ({names}) but the learner was trained for "
            f"n_way={learner.n_way}: give it exactly {learner.n_way} class folders"
        )
    max_shots = getattr(learner, "max_shots", None)
    if isinstance(max_shots, int):
        over = {name: len(files) for name, files in classes.items() if len(files) > max_shots}
        if over:
            listed = ", ".join(f"{name} ({n})" for name, n in list(over.items())[:5])
            raise ValueError(
                f"{type(learner).__name__} was trained with max_shots={max_shots} examples per class at most, but "
                f"support classes have more: {listed}; keep at most {max_shots} files per class folder"
            )


def predict(
    ckpt_path: str,
    support: str,
    query: str,
    output: Optional[str] = None,
    threads: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    image_size: Optional[int] = None,
    channels: Optional[int] = None,
) -> list[Prediction]:
    """Adapt a trained learner to a support folder once and predict the class of every query file.

    Args:
        ckpt_path: the learner's checkpoint (``rnnmeta fit`` / ``rnnmeta compare``); the learner
            is rebuilt from it alone.
        support: folder of class folders, ``support/<class>/<file>``: exactly ``n_way`` classes.
        query: folder of unlabelled files (at any depth).
        output: CSV file to write (``file,predicted_class,probability``); ``None``: standard output.
        threads: torch intra-op threads.
        batch_size: queries per call of the adapted predictor, for learners that answer each
            query on its own; a transductive learner (batch norm over the queries) gets all
            queries in one call, so its answers do not depend on this.
        seed: seed of the order in which the support set is presented.
        image_size: side of the images the learner takes; default its backbone's input size.
        channels: 1 (grayscale) or 3 (RGB); default its backbone's input channels.

    Returns:
        One :class:`Prediction` per query file, in the order of the CSV rows.

    Raises:
        FileNotFoundError: a missing checkpoint, support or query folder.
        ValueError: a checkpoint that is not rnnmeta's, a regression learner, a support folder
            with another number of classes than ``n_way`` or more than ``max_shots`` files in a
            class, a file the learner cannot read (named).
    """
    import torch

    for name, value, low in (("threads", threads, 1), ("batch_size", batch_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    torch.set_num_threads(threads)
    learner = load_learner(ckpt_path)
    _check_classifier(learner)
    reader = reader_for(learner, Path(ckpt_path), image_size, channels)
    support_dir, query_dir = Path(support).expanduser(), Path(query).expanduser()
    classes = class_folder_files(support_dir, reader)
    _check_support(learner, classes, support_dir)
    queries = query_files(query_dir, reader)

    names = list(classes)  # sorted folder names; label i is names[i]
    files = [p for files in classes.values() for p in files]
    labels = torch.tensor([i for i, name in enumerate(names) for _ in classes[name]], dtype=torch.int64)
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))
    support_x = reader.read([files[i] for i in order.tolist()]).unsqueeze(0)  # [1, S, *x_shape]
    support_y = labels[order].unsqueeze(0)  # [1, S]

    chunk = len(queries) if learner.transductive else batch_size
    probabilities = []
    with torch.set_grad_enabled(learner.needs_grad_at_eval):  # an inner loop needs autograd
        predictor = learner.adapt(support_x, support_y)
        for start in range(0, len(queries), chunk):
            query_x = reader.read(queries[start : start + chunk]).unsqueeze(0)  # [1, m, *x_shape]
            logits = predictor(query_x)[0].detach()  # [m, n_way]
            probabilities.append(torch.softmax(logits.double(), dim=-1))
    probs, best = torch.cat(probabilities).max(dim=-1)
    predictions = [
        Prediction(path.relative_to(query_dir).as_posix(), names[int(b)], float(p))
        for path, b, p in zip(queries, best, probs)
    ]
    write_csv(predictions, output)
    return predictions


def write_csv(predictions: Sequence[Prediction], output: Optional[str]) -> None:
    """``file,predicted_class,probability`` (6 decimals), to ``output`` or standard output."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "predicted_class", "probability"])
    for p in predictions:
        writer.writerow([p.file, p.predicted_class, f"{p.probability:.6f}"])
    if output is None:
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()
        return
    path = Path(output).expanduser()
    if path.parent and not path.parent.is_dir():
        raise FileNotFoundError(f"the folder of --output {path} does not exist")
    path.write_text(buffer.getvalue())
    print(f"rnnmeta predict: {len(predictions)} predictions written to {path}", file=sys.stderr)


# ---------------------------------------------------------------------------------- command line
def build_parser():
    """The ``rnnmeta predict`` argument parser: the arguments of :func:`predict`, typed."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(
        prog="rnnmeta predict",
        description="Adapt a trained learner to a support folder (<class>/<files>) once and predict the class of "
        "every file of a query folder; writes file,predicted_class,probability as CSV.",
        exit_on_error=False,
    )
    parser.add_function_arguments(predict)
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    """``rnnmeta predict --ckpt_path <ckpt> --support <folder> --query <folder> [--output preds.csv] [--threads N]``.

    Errors after parsing propagate to :func:`rnnmeta.cli.main`, which prints them as one line
    (``--debug`` for the traceback).
    """
    parser = build_parser()
    try:
        cfg = parser.parse_args(argv)
    except Exception as err:  # a missing or mistyped argument: the parser's message, no traceback
        print(f"rnnmeta predict: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    kwargs = cfg.as_dict()
    kwargs.pop("__path__", None)
    predict(**kwargs)
