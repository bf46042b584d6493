"""Meta-training a learned optimizer on a task family (Andrychowicz et al. 2016, Section 2).

The meta-objective of an optimizer ``m_phi`` on a task ``f`` is the sum of the losses along its
trajectory, ``L(phi) = sum_{t=1..T} f(theta_t)``, with ``theta_{t+1} = theta_t + m_phi(grad_t, h_t)``.
It is minimised with Adam on ``phi``; the ``T = 100`` steps are unrolled in truncations of 20
(truncated backpropagation through time: parameters and optimizer state are carried across
truncations, cut from the graph).

**First order (default, as in the paper).** Second derivatives are dropped: the optimizee's
gradients ``grad_t`` (and losses) fed to the optimizer are treated as constants. The meta-gradient
is then exactly the gradient of ``L`` viewed as a function of ``phi`` with the sequence
``grad_1..grad_T`` held fixed at the values the trajectory produced; ``theta_t`` still depends on
``phi`` through every earlier update. ``second_order=True`` keeps ``grad_t`` in the graph
(``create_graph=True``), giving the gradient of the true unrolled loss at the cost of double
backward through the optimizee.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from rnnmeta.optim.base import MetaOptimizer, apply_updates
from rnnmeta.optim.tasks import OptimizeeTask, TaskFamily


def unroll(
    optimizer: MetaOptimizer,
    task: OptimizeeTask,
    params: Sequence[Tensor],
    state: Any,
    steps: int,
    start_step: int = 0,
    second_order: bool = False,
) -> tuple[Tensor, list[Tensor], Any]:
    """Run ``steps`` optimizer updates from ``params`` and return the truncation's meta-objective.

    Args:
        optimizer: the learned update rule.
        task: the optimizee.
        params: ``theta_0`` of this truncation (tensors that require grad).
        state: the optimizer state at ``theta_0``.
        steps: number of updates.
        start_step: index of the first step in the whole unroll (picks minibatches).
        second_order: keep the optimizee's gradients in the graph.

    Returns:
        ``(objective, params, state)`` where ``objective = sum_{t=1..steps} mean_F f(theta_t)``
        (a scalar with a graph back to the optimizer's parameters) and ``params``/``state`` are
        those after the last update (still in the graph).
    """
    if steps < 1:
        raise ValueError(f"unroll needs steps >= 1, got {steps}")
    params = list(params)
    objective = params[0].new_zeros(())
    for t in range(steps):
        losses = task.losses(params, start_step + t)
        if t > 0:
            objective = objective + losses.mean()
        grads = torch.autograd.grad(losses.sum(), params, create_graph=second_order, retain_graph=True)
        if not second_order:
            grads, losses = [g.detach() for g in grads], losses.detach()
        updates, state = optimizer.update(list(grads), state, params, losses.mean())
        params = apply_updates(params, updates)
    objective = objective + task.losses(params, start_step + steps).mean()
    return objective, params, state


@dataclass
class MetaTrainResult:
    """What :func:`meta_train` returns.

    Attributes:
        objectives: per iteration (task), the mean loss along its trajectory.
        seconds: wall-clock time of the meta-training loop (validation included).
        checkpoint: where the trained optimizer was saved, if it was.
        validation: ``(iteration, score)`` for every validation run (lower is better).
        best_iteration: the iteration whose weights were kept (the best validation score), or
            ``None`` without validation (the last weights are kept).
    """

    objectives: list[float] = field(default_factory=list)
    seconds: float = 0.0
    checkpoint: Optional[Path] = None
    validation: list[tuple[int, float]] = field(default_factory=list)
    best_iteration: Optional[int] = None


def meta_train(
    optimizer: MetaOptimizer,
    family: TaskFamily,
    iterations: int = 1000,
    unroll_steps: int = 100,
    truncation: int = 20,
    meta_lr: float = 1e-3,
    second_order: bool = False,
    grad_clip_norm: float = 0.0,
    seed: int = 0,
    checkpoint: Optional[Union[str, Path]] = None,
    log_every: int = 0,
    log: Callable[[str], None] = print,
    validate: Optional[Callable[[MetaOptimizer], float]] = None,
    validate_every: int = 0,
) -> MetaTrainResult:
    """Meta-train ``optimizer`` in place on tasks drawn from ``family`` (Andrychowicz et al. 2016).

    Each iteration draws a task, optimises it for ``unroll_steps`` steps in truncations of
    ``truncation`` steps, and after each truncation takes one Adam step on the optimizer's
    parameters (so ``unroll_steps / truncation`` meta-updates per iteration).

    With ``validate``, the optimizer is scored every ``validate_every`` iterations (and after
    the last one) and the weights with the best (lowest) score are kept at the end, as the
    authors' training script does (it saves the meta-optimizer whenever its evaluation cost is
    the best so far).

    Tensor ops here are tiny (a 20-unit LSTM over a few thousand coordinates): run with
    ``torch.set_num_threads(1)``; more threads are slower on a CPU (measured 4x on 2 cores).

    Args:
        optimizer: the learned optimizer; its parameters are updated.
        family: where tasks come from.
        iterations: number of tasks (the paper's "epochs").
        unroll_steps: optimisation steps per task (100 in the paper).
        truncation: steps per truncation (20 in the paper).
        meta_lr: Adam learning rate on the optimizer's parameters.
        second_order: keep second derivatives (see the module docstring).
        grad_clip_norm: clip each meta-gradient to this L2 norm; 0 disables.
        seed: seeds the task draws.
        checkpoint: where to save the trained optimizer (``MetaOptimizer.save``), if given.
        log_every: log the mean objective of the last ``log_every`` iterations, elapsed time and
            time per task every so many iterations; 0 is silent.
        log: where log lines go.
        validate: ``optimizer -> score`` (lower is better), e.g. the mean loss at step 100 on
            fixed validation functions (:func:`rollout` runs the optimizer without a meta-graph).
        validate_every: iterations between validations (needs ``validate``; 0 validates only
            at the end, which keeps the last weights).

    Returns:
        :class:`MetaTrainResult` with the mean loss per step of each iteration.
    """
    if iterations < 1 or unroll_steps < 1 or truncation < 1 or unroll_steps % truncation:
        raise ValueError(
            f"need iterations >= 1 and unroll_steps a positive multiple of truncation; got iterations={iterations}, "
            f"unroll_steps={unroll_steps}, truncation={truncation}"
        )
    if validate_every < 0 or (validate_every and validate is None):
        raise ValueError(f"validate_every={validate_every} needs a validate function and must be >= 0")
    meta_params = [p for p in optimizer.parameters() if p.requires_grad]
    if not meta_params:
        raise ValueError(f"{type(optimizer).__name__} has no trainable parameters to meta-train")
    adam = torch.optim.Adam(meta_params, lr=meta_lr)
    generator = torch.Generator().manual_seed(seed)
    result = MetaTrainResult()
    best_score, best_state = math.inf, None
    start = time.perf_counter()

    def run_validation(iteration: int) -> None:
        nonlocal best_score, best_state
        score = float(validate(optimizer))
        result.validation.append((iteration, score))
        if score < best_score:  # NaN never wins
            best_score, result.best_iteration = score, iteration
            best_state = {k: v.detach().clone() for k, v in optimizer.state_dict().items()}
        if log_every:
            log(f"  validation after {iteration} tasks: {score:.4f} (best {best_score:.4f} after {result.best_iteration})")

    for it in range(iterations):
        task = family.sample(generator)
        params = [p.detach().requires_grad_() for p in task.init_params()]
        state = optimizer.init(params)
        total = params[0].new_zeros(())
        for k in range(unroll_steps // truncation):
            objective, params, state = unroll(optimizer, task, params, state, truncation, k * truncation, second_order)
            adam.zero_grad(set_to_none=True)
            objective.backward()
            if grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(meta_params, grad_clip_norm)
            if all(bool(torch.isfinite(p.grad).all()) for p in meta_params if p.grad is not None):
                adam.step()
            total = total + objective.detach()
            params = [p.detach().requires_grad_() for p in params]
            state = state.detach()
        result.objectives.append(float(total) / unroll_steps)
        if log_every and (it + 1) % log_every == 0:
            recent = result.objectives[-log_every:]
            elapsed = time.perf_counter() - start
            log(
                f"meta-iteration {it + 1}/{iterations}: mean loss along the trajectory {sum(recent) / len(recent):.4f} "
                f"({elapsed:.0f} s, {elapsed / (it + 1):.2f} s/task)"
            )
        if validate is not None and validate_every and (it + 1) % validate_every == 0 and it + 1 < iterations:
            run_validation(it + 1)
    if validate is not None:
        run_validation(iterations)
        if best_state is not None:
            optimizer.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    if checkpoint is not None:
        result.checkpoint = optimizer.save(checkpoint)
    return result


def rollout(
    task: OptimizeeTask,
    steps: int,
    meta_optimizer: Optional[MetaOptimizer] = None,
    torch_optimizer: Optional[Callable[[list[Tensor]], torch.optim.Optimizer]] = None,
) -> Tensor:
    """Optimise ``task`` for ``steps`` steps and return the mean loss at each step ``[steps + 1]``.

    Exactly one of ``meta_optimizer`` (a learned rule, run without a meta-graph) and
    ``torch_optimizer`` (a factory ``params -> torch.optim.Optimizer``, e.g. a baseline) is given.
    Entry ``t`` is ``mean_F f(theta_t)``; a diverged run reads ``inf`` from there on.
    """
    if (meta_optimizer is None) == (torch_optimizer is None):
        raise ValueError("give exactly one of meta_optimizer and torch_optimizer")
    params = [p.detach().clone().requires_grad_() for p in task.init_params()]
    opt = None if torch_optimizer is None else torch_optimizer(params)
    state = None if meta_optimizer is None else meta_optimizer.init(params)
    curve = []
    for t in range(steps + 1):
        losses = task.losses(params, t)
        curve.append(float(losses.detach().mean()))
        if t == steps:
            break
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            continue
        grads = torch.autograd.grad(losses.sum(), params)
        with torch.no_grad():
            updates, state = meta_optimizer.update(list(grads), state, params, losses.mean().detach())
            params = [(p + u).requires_grad_() for p, u in zip(params, updates)]
    out = torch.tensor(curve, dtype=torch.float64)
    bad = ~torch.isfinite(out)
    if bad.any():
        out[int(bad.nonzero()[0]) :] = math.inf
    return out
