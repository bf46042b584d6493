"""PPO with GAE as pure functions (Schulman et al. 2016, "High-Dimensional Continuous Control Using
Generalized Advantage Estimation"; Schulman et al. 2017, "Proximal Policy Optimization Algorithms").

The meta-RL agents optimise the total reward of a whole trial, so a trial is one sequence: the
episode boundaries inside it are not terminal (the memory and the value carry across them), and
the trial's last step is (``terminal`` marks other ends where needed).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Optional[Tensor], dim: Optional[int] = None) -> Tensor:
    """The mean of ``x`` over the entries where ``mask`` is true (all if ``None``; along ``dim`` only, kept, if given)."""
    if mask is None:
        return x.mean() if dim is None else x.mean(dim, keepdim=True)
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp_min(1.0)
    return (x * m).sum(dim, keepdim=True) / m.sum(dim, keepdim=True).clamp_min(1.0)


def gae(rewards: Tensor, values: Tensor, gamma: float, lam: float, last_value: Optional[Tensor] = None,
        terminal: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates and the value targets (returns).

    ``delta_t = r_t + gamma * V_{t+1} * (1 - terminal_t) - V_t``,
    ``A_t = delta_t + gamma * lam * (1 - terminal_t) * A_{t+1}``, ``returns = A + V``.

    Args:
        rewards: ``[B, T]``.
        values: ``[B, T]`` the value estimates ``V_t`` of the states acted in.
        gamma: discount in [0, 1].
        lam: GAE's lambda in [0, 1] (0: one-step TD; 1: Monte-Carlo returns minus ``V``).
        last_value: ``[B]`` the value after the last step (bootstrap); ``None``: 0 (the trial ended).
        terminal: ``[B, T]`` bool: step ``t`` ended the sequence (no bootstrap across it); ``None``: none.

    Returns:
        ``(advantages [B, T], returns [B, T])``, without gradient.
    """
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gae needs gamma and lam in [0, 1], got gamma={gamma}, lam={lam}")
    if rewards.shape != values.shape or rewards.dim() != 2:
        raise ValueError(f"gae needs rewards and values of one shape [B, T], got {list(rewards.shape)} and {list(values.shape)}")
    rewards, values = rewards.detach(), values.detach()
    b, t = rewards.shape
    nxt = torch.zeros(b, dtype=values.dtype, device=values.device) if last_value is None else last_value.detach()
    cont = torch.ones_like(rewards) if terminal is None else (~terminal).to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(nxt)
    for i in range(t - 1, -1, -1):
        delta = rewards[:, i] + gamma * nxt * cont[:, i] - values[:, i]
        running = delta + gamma * lam * cont[:, i] * running
        adv[:, i] = running
        nxt = values[:, i]
    return adv, adv + values


def ppo_clip_objective(logp: Tensor, old_logp: Tensor, advantages: Tensor, clip: float, mask: Optional[Tensor] = None) -> Tensor:
    """PPO's clipped surrogate, to be *maximised*: ``mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A))``, ``rho = exp(logp - old_logp)``.

    Args:
        logp: ``[...]`` log-probabilities of the taken actions under the current policy (with gradient).
        old_logp: ``[...]`` the same under the policy that collected the data.
        advantages: ``[...]``.
        clip: ``eps > 0``.
        mask: ``[...]`` bool: the entries that count (others are left out of the mean).
    """
    if not clip > 0:
        raise ValueError(f"ppo_clip_objective needs clip > 0, got clip={clip}")
    ratio = torch.exp(logp - old_logp.detach())
    adv = advantages.detach()
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    return masked_mean(surrogate, mask)


def value_loss(values: Tensor, returns: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """``mean((V - returns)^2) / 2``."""
    return 0.5 * masked_mean((values - returns.detach()) ** 2, mask)


def ridge_weights(features: Tensor, targets: Tensor, mask: Tensor, reg: float, relative: bool = False) -> Tensor:
    """``w [..., F]`` minimising ``|m (features w - targets)|^2 + reg |w|^2`` over the ``mask``ed rows, in float64.

    ``features [..., N, F]``, ``targets [..., N]``, ``mask [..., N]`` (leading dimensions batch independent fits);
    ``relative``: ``reg`` times the mean diagonal of the Gram matrix. The value baselines' regression: MAMLRL's
    linear feature baseline and the memory agents' value head under TRPO.
    """
    m = mask.to(torch.float64).unsqueeze(-1)
    phi = features.double() * m
    gram = phi.transpose(-1, -2) @ phi
    if relative:
        reg = reg * gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[..., None, None]
    eye = torch.eye(features.shape[-1], device=features.device, dtype=torch.float64)
    return torch.linalg.solve(gram + reg * eye, phi.transpose(-1, -2) @ (targets.double().unsqueeze(-1) * m)).squeeze(-1)


def normalise_advantages(advantages: Tensor, mask: Optional[Tensor] = None, eps: float = 1e-8, dim: Optional[int] = None) -> Tensor:
    """Advantages scaled to mean 0, std 1 (over the ``mask``ed entries; along ``dim`` only, if given)."""
    mean = masked_mean(advantages, mask, dim)
    var = masked_mean((advantages - mean) ** 2, mask, dim)
    return (advantages - mean) / (var.sqrt() + eps)


__all__ = ["gae", "masked_mean", "normalise_advantages", "ppo_clip_objective", "ridge_weights", "value_loss"]
