"""Optimizee task families for meta-training and judging a learned optimizer.

Andrychowicz et al. (2016) meta-train and test their optimizer on families of problems:

* :class:`QuadraticFamily`: random 10-dimensional quadratics ``f(x) = ||W x - y||^2`` with
  ``W`` and ``y`` drawn from a standard normal, a batch of independent functions at once.
* :class:`OmniglotMLPFamily`: a multilayer perceptron with one hidden layer of 20 sigmoid units
  classifying real images in minibatches of 128 (the paper used MNIST; here Omniglot characters,
  downsampled, which the project holds offline): each task draws 10 character classes.

A *task* is one problem instance: :meth:`init_params` gives its starting parameters (plain
tensors) and ``losses(params, step)`` its per-function losses ``[F]`` at step ``step`` (the step
picks the minibatch; quadratics ignore it). The gradient an optimizer follows is that of
``losses.sum()``, so each of the ``F`` functions of a batch gets exactly its own gradient.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Optional, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnmeta.optim.base import PathLike


class OptimizeeTask(Protocol):
    """One problem instance (possibly a batch of ``F`` independent functions)."""

    def init_params(self) -> list[Tensor]:
        """Fresh starting parameters (plain tensors, no graph)."""
        ...

    def losses(self, params: Sequence[Tensor], step: int = 0) -> Tensor:
        """Per-function losses ``[F]`` at ``params``; ``step`` picks the minibatch where there is one."""
        ...


class TaskFamily(Protocol):
    """A distribution over :class:`OptimizeeTask` instances."""

    def sample(self, generator: torch.Generator) -> OptimizeeTask: ...


# --------------------------------------------------------------------------- quadratics
class QuadraticTask:
    """A batch of ``F`` quadratics ``f_b(x_b) = ||W_b x_b - y_b||^2``.

    Args:
        weight: ``[F, d, d]``.
        target: ``[F, d]``.
        x0: ``[F, d]`` starting point.
    """

    def __init__(self, weight: Tensor, target: Tensor, x0: Tensor) -> None:
        if weight.dim() != 3 or weight.shape[1] != weight.shape[2] or target.shape != weight.shape[:2] or x0.shape != target.shape:
            raise ValueError(
                f"QuadraticTask needs weight [F, d, d], target [F, d], x0 [F, d]; got {tuple(weight.shape)}, "
                f"{tuple(target.shape)}, {tuple(x0.shape)}"
            )
        self.weight, self.target, self.x0 = weight, target, x0

    def init_params(self) -> list[Tensor]:
        return [self.x0.clone()]

    def losses(self, params: Sequence[Tensor], step: int = 0) -> Tensor:
        (x,) = params
        residual = torch.einsum("bij,bj->bi", self.weight, x) - self.target
        return residual.pow(2).sum(-1)

    def minimum(self) -> Tensor:
        """Per-function minimum value ``[F]`` (least squares), for reference."""
        solution = torch.linalg.lstsq(self.weight, self.target.unsqueeze(-1)).solution
        return self.losses([solution.squeeze(-1)])


class QuadraticFamily:
    """Random quadratics of Andrychowicz et al. (2016): ``W, y ~ N(0, 1)``, ``x0 ~ N(0, init_std^2)``.

    Args:
        dim: dimension ``d`` (10 in the paper).
        batch_size: functions per task ``F`` (128 in the authors' code).
        init_std: standard deviation of the starting point (0.01 in the authors' code).
        dtype: floating dtype of the tensors.
    """

    def __init__(self, dim: int = 10, batch_size: int = 128, init_std: float = 0.01, dtype: torch.dtype = torch.float32) -> None:
        if dim < 1 or batch_size < 1 or init_std < 0:
            raise ValueError(f"QuadraticFamily needs dim >= 1, batch_size >= 1, init_std >= 0; got {dim}, {batch_size}, {init_std}")
        self.dim, self.batch_size, self.init_std, self.dtype = dim, batch_size, init_std, dtype

    def sample(self, generator: torch.Generator) -> QuadraticTask:
        w = torch.randn(self.batch_size, self.dim, self.dim, generator=generator, dtype=self.dtype)
        y = torch.randn(self.batch_size, self.dim, generator=generator, dtype=self.dtype)
        x0 = torch.randn(self.batch_size, self.dim, generator=generator, dtype=self.dtype) * self.init_std
        return QuadraticTask(w, y, x0)


# --------------------------------------------------------------------------- MLP on Omniglot
@functools.lru_cache(maxsize=8)
def load_omniglot_classes(root: str, background: bool = True, max_classes: int = 200, image_size: int = 14) -> Tensor:
    """Decode Omniglot characters from the official zip layout into ``[C, 20, image_size**2]`` floats.

    Ink is 1 and background 0 (the PNGs store ink as black). The first ``max_classes``
    characters in archive order are read (``0`` reads all); images are downsampled with a box
    filter. The result is cached per process.

    Args:
        root: folder holding ``images_background.zip`` / ``images_evaluation.zip``.
        background: read the background (training) archive, else the evaluation archive.
        max_classes: characters to read.
        image_size: side of the downsampled images.
    """
    from PIL import Image

    from rnnmeta.data.archive import open_zip, read_member

    name = "images_background" if background else "images_evaluation"
    path = Path(root) / f"{name}.zip"
    with open_zip(path) as zf:
        by_class: dict[str, list[str]] = {}
        for n in sorted(n for n in zf.namelist() if n.endswith(".png")):
            by_class.setdefault(n.rsplit("/", 1)[0], []).append(n)
        classes = sorted(by_class)[: max_classes or None]
        images = []
        for c in classes:
            drawings = []
            for n in by_class[c][:20]:
                img = Image.open(io.BytesIO(read_member(zf, n, path))).convert("L")
                img = img.resize((image_size, image_size), Image.BOX)
                drawings.append(torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8))
            if len(drawings) != 20:
                raise ValueError(f"{path}: character {c} has {len(drawings)} drawings, expected 20")
            images.append(torch.stack(drawings))
    return 1.0 - torch.stack(images).float() / 255.0


class MLPClassificationTask:
    """Train an MLP (one hidden sigmoid layer) on minibatches of a small labelled set.

    Args:
        inputs: ``[n, d]`` features.
        labels: ``[n]`` int64 in ``0..n_classes-1``.
        n_classes: output width.
        hidden: hidden sigmoid units (20 in the paper).
        batch_size: minibatch size (128 in the paper).
        seed: seeds the starting weights and the minibatch of each step.
    """

    def __init__(self, inputs: Tensor, labels: Tensor, n_classes: int, hidden: int = 20, batch_size: int = 128, seed: int = 0) -> None:
        if inputs.dim() != 2 or labels.shape != inputs.shape[:1]:
            raise ValueError(f"MLPClassificationTask needs inputs [n, d] and labels [n]; got {tuple(inputs.shape)}, {tuple(labels.shape)}")
        self.inputs, self.labels = inputs, labels
        self.n_classes, self.hidden, self.batch_size, self.seed = n_classes, hidden, min(batch_size, len(labels)), seed

    def init_params(self) -> list[Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        d, h, c, dtype = self.inputs.shape[1], self.hidden, self.n_classes, self.inputs.dtype
        return [
            torch.randn(d, h, generator=g, dtype=dtype) / d**0.5,
            torch.zeros(h, dtype=dtype),
            torch.randn(h, c, generator=g, dtype=dtype) / h**0.5,
            torch.zeros(c, dtype=dtype),
        ]

    def minibatch(self, step: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + step + 1)
        idx = torch.randperm(len(self.labels), generator=g)[: self.batch_size]
        return self.inputs[idx], self.labels[idx]

    def losses(self, params: Sequence[Tensor], step: int = 0) -> Tensor:
        w1, b1, w2, b2 = params
        x, y = self.minibatch(step)
        logits = torch.sigmoid(x @ w1 + b1) @ w2 + b2
        return F.cross_entropy(logits, y).reshape(1)


class OmniglotMLPFamily:
    """MLP tasks on Omniglot: each task classifies ``n_classes`` random characters (20 drawings each).

    Meta-train on the background archive and test on the evaluation archive (disjoint
    alphabets). Images are downsampled to ``image_size x image_size`` and flattened.

    Args:
        root: folder with the Omniglot zips (``images_background.zip``, ``images_evaluation.zip``).
        background: draw characters from the background archive (else the evaluation one).
        n_classes: classes per task (10, as MNIST in the paper).
        image_size: side of the downsampled images (14 gives 196 inputs).
        hidden: hidden sigmoid units (20).
        batch_size: minibatch size (128).
        max_classes: characters read from the archive (the pool tasks draw from).
        dtype: floating dtype.
    """

    def __init__(
        self,
        root: PathLike,
        background: bool = True,
        n_classes: int = 10,
        image_size: int = 14,
        hidden: int = 20,
        batch_size: int = 128,
        max_classes: int = 200,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if n_classes < 2 or hidden < 1 or batch_size < 1:
            raise ValueError(f"OmniglotMLPFamily needs n_classes >= 2, hidden >= 1, batch_size >= 1; got {n_classes}, {hidden}, {batch_size}")
        self.pool = load_omniglot_classes(str(root), background, max_classes, image_size).to(dtype)
        if self.pool.shape[0] < n_classes:
            raise ValueError(f"only {self.pool.shape[0]} characters were read, fewer than n_classes={n_classes}")
        self.n_classes, self.hidden, self.batch_size = n_classes, hidden, batch_size

    def sample(self, generator: torch.Generator) -> MLPClassificationTask:
        classes = torch.randperm(self.pool.shape[0], generator=generator)[: self.n_classes]
        inputs = self.pool[classes].flatten(0, 1)
        labels = torch.arange(self.n_classes).repeat_interleave(self.pool.shape[1])
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return MLPClassificationTask(inputs, labels, self.n_classes, self.hidden, self.batch_size, seed)


def default_omniglot_root() -> Optional[Path]:
    """The project's shared Omniglot folder if it exists next to the repository, else ``None``."""
    candidate = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "omniglot"
    return candidate if (candidate / "images_background.zip").exists() else None
