"""MAML (Finn et al. 2017), first-order MAML and Meta-SGD (Li et al. 2017).

The model is a backbone plus a linear head. For every task, ``inner_steps`` steps of gradient
descent on the support loss turn the meta-parameters ``theta`` into task weights ``theta'``::

    theta'_0 = theta,   theta'_{k+1} = theta'_k - alpha * grad L_support(theta'_k)

and the queries are predicted with ``theta'``. The meta-gradient of the query loss flows back
through the inner loop: exactly (second order, ``create_graph=True``) or with the inner
gradients treated as constants (first order: the meta-gradient is the query gradient at
``theta'``). ``alpha`` is one scalar, or a learned tensor per parameter (Meta-SGD).

The whole algorithm is :meth:`MAML._inner_loop` (the update above) and :meth:`MAML.episode_step`
(the meta-gradient, task by task, one task's graph in memory at a time). For an MLP all tasks run
at once by default (:mod:`rnnmeta.learners.maml_batched`); both paths give the same losses and
gradients (``tests/test_maml.py``).

References:
    C. Finn, P. Abbeel, S. Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep
    Networks. ICML 2017.
    Z. Li, F. Zhou, F. Chen, H. Li. Meta-SGD: Learning to Learn Quickly for Few-Shot
    Learning. arXiv:1707.09835, 2017.
"""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Any, Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from rnnmeta.episode import CLASSIFICATION, Episode
from rnnmeta.learners.base import MetaLearner
from rnnmeta.learners.maml_batched import Params, batched_forward, batched_layers
from rnnmeta.learners.sequence import check_query
from rnnmeta.nets import (
    MLP,
    batch_norm_layers,
    check_query_bn,
    reference_batch_norm,
    require_batch_statistics,
    resolve_backbone,
)

def maml_update(params: Params, grads: Params, lrs: dict[str, Tensor] | float) -> Params:
    """One step of gradient descent on a dict of (possibly task-stacked) weights."""
    return {n: p - (lrs if isinstance(lrs, float) else lrs[n]) * grads[n] for n, p in params.items()}


def loss_with_gradient(value: Tensor, params: list[Tensor], grads: list[Tensor]) -> Tensor:
    """A scalar equal to ``value`` whose gradient with respect to ``params`` is ``grads``.

    Lets a learner compute its meta-gradient task by task inside ``training_step`` (freeing each
    task's graph as it goes) and still hand Lightning an ordinary loss: ``backward()`` on the
    result writes ``grads`` into ``.grad`` (so gradient clipping, accumulation, DDP's all-reduce
    and the non-finite checks work unchanged) at the cost of one multiply per weight.
    """
    surrogate = sum((p * g).sum() for p, g in zip(params, grads))
    return value.detach() + (surrogate - surrogate.detach())


def compiled_or_eager(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``torch.compile(fn)``, or ``fn`` itself with a one-line warning where compiling cannot work.

    The CPU backend (inductor) needs a C++ compiler at run time; without one (``CXX``, ``c++``,
    ``g++`` or ``clang++`` on ``PATH``), or when the first compiled call fails, the query pass runs
    eagerly: the same values, without the speed-up. An error of ``fn`` itself is raised by the
    eager call.
    """
    compilers = [c for c in (os.environ.get("CXX"), "c++", "g++", "clang++") if c]
    if not any(shutil.which(c) for c in compilers):
        warnings.warn("MAML compile_query: no C++ compiler found (CXX, c++, g++, clang++); the query pass runs eagerly", stacklevel=3)
        return fn
    return _FirstCallFallback(torch.compile(fn, dynamic=False), fn)


class _FirstCallFallback:
    """Calls ``compiled``; if its first call fails, warns once and calls ``eager`` from then on."""

    def __init__(self, compiled: Callable[..., Tensor], eager: Callable[..., Tensor]) -> None:
        self.compiled, self.eager, self.first = compiled, eager, True

    def __call__(self, *args: Any) -> Tensor:
        if not self.first:
            return self.compiled(*args)
        self.first = False
        try:
            return self.compiled(*args)
        except Exception as err:  # noqa: BLE001 - a backend failure: the same computation, eagerly
            warnings.warn(f"MAML compile_query: torch.compile failed ({type(err).__name__}: {str(err)[:120]}); "
                          "the query pass runs eagerly", stacklevel=2)
            self.compiled = self.eager
            return self.eager(*args)


class MAML(MetaLearner):
    """Model-Agnostic Meta-Learning: second order, first order, or Meta-SGD.

    Batch norm uses per-task batch statistics (no running statistics), as in the paper; see
    ``query_bn`` and docs/MAML.md. At evaluation (``not self.training``) the inner loop uses
    ``eval_inner_steps`` and ``eval_inner_lr`` and builds no graph that outlives the call, so
    thousands of evaluation episodes run in flat memory.

    Args:
        backbone: embedding network ``[..., *x_shape] -> [..., out_features]`` (must expose
            ``out_features``). Default: ``Conv4(in_channels, 64, image_size)`` for
            classification, ``MLP(in_channels, [40, 40])`` for regression (the paper's nets).
            Batch norm layers must not track running statistics.
        first_order: drop the second-order term (inner gradients become constants).
        inner_steps: inner gradient steps in training (paper, Omniglot 5-way: 1).
        inner_lr: inner learning rate ``alpha`` (paper: 0.4 Omniglot 5-way, 0.1 20-way, 0.01
            sinusoid); the initial value of the learned rates with ``learn_inner_lr``.
        inner_loss: how the support loss of the inner step is reduced. ``"mean"``: the mean over
            the ``S = N * K`` support examples. ``"sum_over_k"``: the sum divided by ``K``, as in
            the authors' code (``N`` times the mean for classification; the paper's learning rates
            refer to this scaling).
        query_bn: ``"transductive"`` (the paper: batch norm over the query batch) or
            ``"support"`` (queries normalised with the support set's statistics; answers each
            query independently). No effect on a backbone without batch norm.
        eval_inner_steps: inner steps at evaluation; default ``inner_steps`` (paper: 3).
        eval_inner_lr: inner learning rate at evaluation; default ``inner_lr``. Not allowed
            with ``learn_inner_lr`` (the learned rates are used).
        learn_inner_lr: Meta-SGD: meta-learn one inner learning rate per weight.
        batch_tasks: run all tasks at once (grouped convolutions, batched matmuls) when the
            backbone allows it. ``None`` (default) picks what measured faster on the CPU: batched
            for an :class:`~rnnmeta.nets.MLP`, the per-task loop otherwise (docs/MAML.md). Both
            compute the same values.
        compile_query: run the per-task query pass (backbone and head at the adapted weights)
            through :func:`torch.compile`; the support step stays eager. The first training step
            compiles (tens of seconds on a CPU). Results equal the eager ones to float rounding.
        in_channels: image channels (classification) or input features (regression) of the
            default backbone.
        image_size: image side of the default Conv4.
        **kwargs: kind, n_way, target_dim, optimizer, lr_scheduler: see :class:`~rnnmeta.learners.MetaLearner`.

    Shapes: those of :meth:`~rnnmeta.learners.base.MetaLearner.forward`.

    Example:
        >>> learner = MAML(inner_steps=1, inner_lr=0.4, eval_inner_steps=3, n_way=5)
        >>> logits = learner(support_x, support_y, query_x)   # [B, M, 5]
    """

    needs_grad_at_eval = True

    def __init__(
        self,
        backbone: Optional[nn.Module] = None,
        first_order: bool = False,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        eval_inner_steps: Optional[int] = None,
        eval_inner_lr: Optional[float] = None,
        learn_inner_lr: bool = False,
        inner_loss: Literal["mean", "sum_over_k"] = "mean",
        query_bn: Literal["transductive", "support"] = "transductive",
        batch_tasks: Optional[bool] = None,
        compile_query: bool = False,
        in_channels: int = 1,
        image_size: int = 28,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        if inner_steps < 0 or eval_inner_steps < 0:
            raise ValueError(f"inner_steps and eval_inner_steps must be >= 0, got {inner_steps} and {eval_inner_steps}")
        if not inner_lr > 0 or (eval_inner_lr is not None and not eval_inner_lr > 0):
            raise ValueError(f"inner_lr and eval_inner_lr must be > 0, got {inner_lr} and {eval_inner_lr}")
        if learn_inner_lr and eval_inner_lr is not None:
            raise ValueError("eval_inner_lr cannot be set with learn_inner_lr=True: evaluation uses the learned rates")
        backbone = resolve_backbone(
            backbone, self.kind, track_running_stats=False, in_channels=in_channels, image_size=image_size
        )
        if not isinstance(getattr(backbone, "out_features", None), int):
            raise ValueError(f"backbone {type(backbone).__name__} must expose an int attribute out_features")
        require_batch_statistics(backbone, "MAML")
        if inner_loss not in ("mean", "sum_over_k"):
            raise ValueError(f"inner_loss must be 'mean' or 'sum_over_k', got {inner_loss!r}")
        self.inner_loss = inner_loss
        self.query_bn = check_query_bn(query_bn)
        self._has_batch_norm = bool(batch_norm_layers(backbone))
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_features, self.output_dim)
        self.first_order = first_order
        self.inner_steps, self.inner_lr = inner_steps, inner_lr
        self.eval_inner_steps = eval_inner_steps
        self.eval_inner_lr = inner_lr if eval_inner_lr is None else eval_inner_lr
        self.learn_inner_lr = learn_inner_lr
        # Meta-SGD rates, one tensor per weight, stored flat as "<param name with / for .>"
        self.inner_lrs = nn.ParameterDict(
            {n.replace(".", "/"): nn.Parameter(torch.full_like(p, inner_lr)) for n, p in self._weights().items()}
            if learn_inner_lr
            else {}
        )
        if batch_tasks is None:
            batch_tasks = isinstance(backbone, MLP) and not compile_query and not (query_bn == "support" and self._has_batch_norm)
        self._layers = batched_layers(self.backbone, self.head) if batch_tasks else None
        if compile_query and batch_tasks:
            raise ValueError("compile_query applies to the per-task loop: set batch_tasks=False")
        if batch_tasks and query_bn == "support" and self._has_batch_norm:
            raise ValueError("query_bn='support' runs task by task: set batch_tasks=False (or leave it None)")
        if compile_query and query_bn == "support" and self._has_batch_norm:
            raise ValueError("compile_query is not available with query_bn='support': set compile_query=False")
        self.compile_query = compile_query
        self._compiled_task_forward = None

    # ------------------------------------------------------------------ model
    def _weights(self) -> Params:
        """The adapted weights: backbone and head parameters, by name."""
        return {n: p for n, p in self.named_parameters() if n.startswith(("backbone.", "head."))}

    def _lrs(self) -> dict[str, Tensor] | float:
        if self.learn_inner_lr:
            return {n.replace("/", "."): p for n, p in self.inner_lrs.items()}
        return self.inner_lr if self.training else self.eval_inner_lr

    @property
    def transductive(self) -> bool:
        """True when batch norm normalises the query batch (``query_bn="transductive"`` and a backbone with batch norm)."""
        return self.query_bn == "transductive" and self._has_batch_norm

    def _inner_loss_scale(self) -> float:
        """1 for ``inner_loss="mean"``; ``S / K = N`` (the number of classes) for ``"sum_over_k"``."""
        return float(self.n_way) if self.inner_loss == "sum_over_k" and self.kind == CLASSIFICATION else 1.0

    def predict(self, params: Params, x: Tensor, query: bool = False, support_x: Optional[Tensor] = None) -> Tensor:
        """Predictions ``[B, N, out]`` for inputs ``x [B, N, *x]`` with stacked task weights ``[B, *shape]``.

        ``query=True`` marks the pass whose backward is first order (compiled with ``compile_query``);
        ``support_x [B, S, *x]`` given with ``query_bn="support"`` supplies the batch-norm statistics.
        """
        if self._layers is not None:
            return batched_forward(self._layers, params, x)
        outs = [
            self._one_task_forward(
                {n: p[t] for n, p in params.items()}, x[t : t + 1], query, None if support_x is None else support_x[t : t + 1]
            )
            for t in range(x.shape[0])
        ]
        return torch.cat(outs)

    def _task_forward(self, task: Params, x: Tensor) -> Tensor:
        feats = functional_call(self.backbone, {n[9:]: p for n, p in task.items() if n.startswith("backbone.")}, (x,))
        return F.linear(feats, task["head.weight"], task.get("head.bias"))

    def _query_support(self, support_x: Tensor) -> Optional[Tensor]:
        """The support inputs the query pass normalises with (``query_bn="support"``), else None."""
        return support_x if self.query_bn == "support" and self._has_batch_norm else None

    # ------------------------------------------------------------------ inner loop
    def adapt_weights(self, support_x: Tensor, support_y: Tensor) -> Params:
        """Run the inner loop for every task: stacked adapted weights ``[B, *shape]`` by name."""
        return self._inner_loop(support_x, support_y, self.predict, tasks=support_x.shape[0])

    def _inner_loop(
        self, support_x: Tensor, support_y: Tensor, predict: Callable[[Params, Tensor], Tensor], tasks: Optional[int]
    ) -> Params:
        """Inner gradient steps from the meta-parameters; ``tasks=None``: one task, unstacked weights.

        ``predict(params, support_x)`` returns ``[B, S, out]`` (``B = 1`` for one task). Stacked
        weights start as an ``expand`` of the meta-parameters to ``[tasks, *shape]``.
        """
        steps = self.inner_steps if self.training else self.eval_inner_steps
        lrs = self._lrs()
        meta_graph = self.training  # keep the graph from the adapted weights to the meta-parameters
        second_order = meta_graph and not self.first_order
        weights = self._weights()
        # a frozen weight (requires_grad=False, e.g. a fixed embedding table) is neither adapted nor meta-learned
        adapted = [n for n, p in weights.items() if p.requires_grad]
        params = {n: p if meta_graph else p.detach() for n, p in weights.items()}
        if tasks is not None:
            params = {n: p.expand(tasks, *p.shape) for n, p in params.items()}
        if not meta_graph:  # evaluation: nothing of the graph outlives a step
            params = {n: p.requires_grad_() if n in adapted else p for n, p in params.items()}
            lrs = lrs if isinstance(lrs, float) else {n: r.detach() for n, r in lrs.items()}
        with torch.enable_grad():
            for _ in range(steps):
                # sum over tasks: each task gets its own gradient
                loss = self.task_losses(predict(params, support_x), support_y).sum() * self._inner_loss_scale()
                grads = dict(zip(adapted, torch.autograd.grad(loss, [params[n] for n in adapted], create_graph=second_order)))
                updated = maml_update({n: params[n] for n in adapted}, grads, lrs)
                if not meta_graph:
                    updated = {n: p.detach().requires_grad_() for n, p in updated.items()}
                params = {**params, **updated}
        return params

    def _one_task_forward(
        self, params: Params, x: Tensor, query: bool = False, support_x: Optional[Tensor] = None
    ) -> Tensor:
        """Predictions ``[1, N, out]`` for one task's inputs ``x [1, N, *x]`` with unstacked weights.

        With ``support_x [1, S, *x]``, batch norm takes its statistics from the support rows only.
        """
        if support_x is not None:
            n_support = support_x.shape[1]
            with reference_batch_norm(self.backbone, n_support):
                return self._task_forward(params, torch.cat([support_x[0], x[0]]))[n_support:].unsqueeze(0)
        forward = self._task_forward
        if query and self.compile_query:
            if self._compiled_task_forward is None:
                self._compiled_task_forward = compiled_or_eager(self._task_forward)
            forward = self._compiled_task_forward
        return forward(params, x[0]).unsqueeze(0)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        self.check_inputs(support_x, support_y, query_x)
        return self._adapt(support_x, support_y)(query_x)

    def episode_step(self, batch: Episode) -> tuple[Tensor, Tensor]:
        """Mean query loss and per-task metric ``[B]``; in training, meta-gradients task by task.

        With the per-task loop in training, each task is adapted, its query loss differentiated
        with respect to the meta-parameters at once (``autograd.grad``: second order through the
        inner loop unless ``first_order``) and its graph freed; the returned loss carries the
        accumulated meta-gradient (:func:`loss_with_gradient`). Peak memory is one task's graph
        instead of ``B``. The value and the gradient equal those of ``forward`` on the whole
        batch (``tests/test_maml.py``).
        """
        if not (self.training and self._layers is None and torch.is_grad_enabled()):
            return super().episode_step(batch)
        self._check_episode(batch)
        self.check_inputs(batch.support_x, batch.support_y, batch.query_x)
        meta_params = [p for p in self.parameters() if p.requires_grad]
        meta_grads = [torch.zeros_like(p) for p in meta_params]
        losses, metrics = [], []
        n_tasks = batch.batch_size
        for t in range(n_tasks):
            task = slice(t, t + 1)
            params = self._inner_loop(batch.support_x[task], batch.support_y[task], self._one_task_forward, tasks=None)
            preds = self._one_task_forward(
                params, batch.query_x[task], query=True, support_x=self._query_support(batch.support_x[task])
            )
            loss = self.task_losses(preds, batch.query_y[task])
            grads = torch.autograd.grad(loss.sum() / n_tasks, meta_params, allow_unused=True)
            for acc, g in zip(meta_grads, grads):
                if g is not None:
                    acc += g
            losses.append(loss.detach())
            metrics.append(self.task_metrics(preds, batch.query_y[task]))
        return loss_with_gradient(torch.cat(losses).mean(), meta_params, meta_grads), torch.cat(metrics)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> "MAMLPredictor":
        """Fine-tune on the support set and return a predictor holding the adapted weights.

        In evaluation mode the weights are detached (no graph); in training mode they keep the
        graph to the meta-parameters. Batch norm of the queries follows ``query_bn``.
        """
        self.check_inputs(support_x, support_y)
        return self._adapt(support_x, support_y)

    def _adapt(self, support_x: Tensor, support_y: Tensor) -> "MAMLPredictor":
        with torch.inference_mode(False), torch.enable_grad():
            if support_x.is_inference():  # tensors made under inference mode cannot be saved for backward
                support_x, support_y = support_x.clone(), support_y.clone()
            params = self.adapt_weights(support_x, support_y)
        if not self.training:
            params = {n: p.detach() for n, p in params.items()}
        return MAMLPredictor(self, params, support_x[:, :0], self._query_support(support_x))


class MAMLPredictor:
    """Predictor with task weights adapted by :meth:`MAML.adapt`: ``query_x [B, M, *x] -> preds``.

    ``shape_ref`` is ``support_x[:, :0]`` (the support set's shape, for checking queries);
    ``support_x``, given with ``query_bn="support"``, supplies the queries' batch-norm statistics.
    """

    def __init__(self, learner: MAML, params: Params, shape_ref: Tensor, support_x: Optional[Tensor] = None) -> None:
        self.learner, self.params, self.shape_ref, self.support_x = learner, params, shape_ref, support_x

    def __call__(self, query_x: Tensor) -> Tensor:
        check_query(self.shape_ref, query_x)
        with torch.set_grad_enabled(self.learner.training and torch.is_grad_enabled()):
            return self.learner.predict(self.params, query_x, query=True, support_x=self.support_x)
