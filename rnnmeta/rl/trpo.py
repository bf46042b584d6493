"""Trust-region policy optimisation as a torch optimiser (Schulman et al. 2015, "Trust Region Policy Optimization").

TRPO trains the memory agents of RL^2 (Duan et al. 2016) and SNAIL (Mishra et al. 2018) in their
papers (:class:`~rnnmeta.rl.agent.SequenceAgent`: the surrogate of whole trials, bounded by the KL over
their steps), and is the outer step of MAML-RL in Finn et al. 2017: the authors' code
(``cbfinn/maml_rl``, on rllab) maximises the importance-sampled return of the adapted policies under a bound on their mean KL
divergence from the policies that collected the data, with rllab's ``ConjugateGradientOptimizer``:

1. ``g``: the gradient of the loss (minus the surrogate) at the current parameters ``theta``;
2. ``s ~ -F^{-1} g`` by ``cg_iters`` conjugate-gradient iterations, where ``F v`` is the Hessian of the
   mean KL at ``theta`` times ``v`` (the Fisher information, computed exactly by double
   backpropagation), plus ``damping * v``;
3. the largest step along ``s`` that reaches the KL bound under the quadratic model,
   ``sqrt(2 max_kl / s^T F s) s``, shrunk by ``backtrack_ratio`` until the loss has decreased and the
   measured KL is at most ``max_kl`` (``max_backtracks`` tries); if no try passes, the step is rejected
   and ``theta`` stays where it was.

Defaults are rllab's and the authors' (KL step 0.01, 10 iterations, damping 1e-5, ratio 0.8, 15 tries).

The closure that :meth:`TRPO.step` takes returns ``(loss, kl)``, both computed from the current values
of the parameters: ``kl`` is the mean KL divergence from the policy *at the start of the step* (zero
there; the closure holds that policy's distributions, detached), so its Hessian at the start is the
Fisher matrix. Through Lightning's manual optimisation, ``self.optimizers().step(closure=...)``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters

Closure = Callable[[], tuple[Tensor, Tensor]]


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10) -> Tensor:
    """``x ~ A^{-1} b`` for a symmetric positive definite ``A`` given as ``matvec(v) = A v``, from ``x = 0``.

    Stops after ``iters`` iterations or once ``|r|^2 < residual_tol`` (exact after ``len(b)`` iterations in exact
    arithmetic).
    """
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < residual_tol:
            break
        ap = matvec(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def _flat(grads: Iterable[Optional[Tensor]], params: list[Tensor]) -> Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


class TRPO(torch.optim.Optimizer):
    """One trust-region step per :meth:`step` (see the module docstring).

    Args:
        params: the parameters (one group).
        max_kl: the bound on the mean KL divergence of a step (the authors' ``step_size``: 0.01).
        cg_iters: conjugate-gradient iterations.
        damping: ``F + damping * I`` in place of ``F`` (rllab's ``reg_coeff``).
        backtrack_ratio: the line search's shrink factor, in (0, 1).
        max_backtracks: step sizes tried, the full step first.

    After each step, :attr:`last_step` holds ``loss_before``, ``loss_after``, ``kl`` (of the accepted step, 0 if
    rejected), ``step_fraction`` (of the full step; 0 if rejected) and ``accepted``.
    """

    def __init__(self, params: Iterable[Tensor], max_kl: float = 0.01, cg_iters: int = 10, damping: float = 1e-5,
                 backtrack_ratio: float = 0.8, max_backtracks: int = 15) -> None:
        if isinstance(max_kl, bool) or not (isinstance(max_kl, (int, float)) and math.isfinite(max_kl) and max_kl > 0):
            raise ValueError(f"TRPO: max_kl must be a finite number > 0, got {max_kl!r}")
        if any(isinstance(n, bool) or not (isinstance(n, int) and n >= 1) for n in (cg_iters, max_backtracks)):
            raise ValueError(f"TRPO: cg_iters and max_backtracks must be integers >= 1, got cg_iters={cg_iters!r}, "
                             f"max_backtracks={max_backtracks!r}")
        if not 0 < backtrack_ratio < 1 or not damping >= 0:
            raise ValueError(f"TRPO: backtrack_ratio must lie in (0, 1) and damping be >= 0, got backtrack_ratio={backtrack_ratio!r}, "
                             f"damping={damping!r}")
        super().__init__(params, dict(max_kl=float(max_kl), cg_iters=cg_iters, damping=float(damping),
                                      backtrack_ratio=float(backtrack_ratio), max_backtracks=max_backtracks))
        if len(self.param_groups) != 1:
            raise ValueError(f"TRPO takes one parameter group, got {len(self.param_groups)}")
        self.last_step: dict[str, float] = {}

    def step(self, closure: Optional[Closure] = None) -> Tensor:  # type: ignore[override]
        """One trust-region step; ``closure() -> (loss, kl)`` (module docstring). Returns the loss before the step."""
        if closure is None:
            raise ValueError("TRPO.step needs a closure returning (loss, kl) at the current parameters")
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.requires_grad]
        with torch.enable_grad():
            result = closure()
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(f"TRPO.step needs a closure returning (loss, kl), got {type(result).__name__}: TRPO trains the meta-RL "
                                "agents (rnnmeta.rl.RL2, SNAILAgent and MAMLRL pass that closure); the few-shot learners train with a "
                                "gradient optimizer such as torch.optim.Adam")
            loss, kl = result
            grad = _flat(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params)
            kl_grad = _flat(torch.autograd.grad(kl, params, create_graph=True, allow_unused=True), params)

        def fisher_vector(v: Tensor) -> Tensor:
            with torch.enable_grad():
                hv = torch.autograd.grad(kl_grad @ v, params, retain_graph=True, allow_unused=True)
            return _flat(hv, params).detach() + group["damping"] * v

        direction = conjugate_gradient(fisher_vector, -grad.detach(), group["cg_iters"])
        curvature = direction @ fisher_vector(direction)
        full_step = torch.sqrt(2 * group["max_kl"] / (curvature + 1e-8)) * direction
        start = parameters_to_vector(params).detach()
        loss_before = loss.detach()
        self.last_step = {"loss_before": float(loss_before), "loss_after": float(loss_before), "kl": 0.0,
                          "step_fraction": 0.0, "accepted": 0.0}
        with torch.no_grad():
            for k in range(group["max_backtracks"]):
                fraction = group["backtrack_ratio"] ** k
                vector_to_parameters(start + fraction * full_step, params)
                with torch.enable_grad():  # a closure may differentiate inside (MAML's inner steps)
                    new_loss, new_kl = closure()
                new_loss, new_kl = float(new_loss.detach()), float(new_kl.detach())
                if math.isfinite(new_loss) and new_loss < float(loss_before) and new_kl <= group["max_kl"]:
                    self.last_step.update(loss_after=new_loss, kl=new_kl, step_fraction=fraction, accepted=1.0)
                    break
            else:  # no step size passed: stay at theta
                vector_to_parameters(start, params)
        return loss_before


__all__ = ["TRPO", "conjugate_gradient"]
