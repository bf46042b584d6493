"""GAE and PPO's clipped objective against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rnnmeta.rl.ppo import gae, normalise_advantages, ppo_clip_objective, value_loss


def test_gae_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 0.0]])
    adv, ret = gae(rewards, values, gamma=0.9, lam=0.5)
    # delta = [1 + .9 * 1 - .5, 0 + .9 * 0 - 1, 2 - 0] = [1.4, -1, 2]; A2 = 2, A1 = -1 + .45 * 2 = -.1, A0 = 1.4 + .45 * -.1
    torch.testing.assert_close(adv, torch.tensor([[1.355, -0.1, 2.0]]))
    torch.testing.assert_close(ret, torch.tensor([[1.855, 0.9, 2.0]]))
    # a terminal first step does not bootstrap: A0 = 1 - .5
    adv_t, _ = gae(rewards, values, 0.9, 0.5, terminal=torch.tensor([[True, False, False]]))
    assert adv_t[0, 0].item() == pytest.approx(0.5)
    # a bootstrap value after the last step: delta2 = 2 + .9 * 10 - 0
    adv_b, _ = gae(rewards, values, 0.9, 0.5, last_value=torch.tensor([10.0]))
    assert adv_b[0, 2].item() == pytest.approx(11.0)
    # lambda = 1, gamma = 1: Monte-Carlo returns minus V
    adv_mc, _ = gae(rewards, values, 1.0, 1.0)
    torch.testing.assert_close(adv_mc, torch.tensor([[3.0 - 0.5, 2.0 - 1.0, 2.0]]))
    with pytest.raises(ValueError, match="gamma=1.5"):
        gae(rewards, values, 1.5, 0.5)


def test_ppo_clipped_objective_against_a_reference():
    logp = torch.log(torch.tensor([0.5, 0.3, 0.2])).requires_grad_(True)
    old = torch.log(torch.tensor([0.4, 0.4, 0.4]))
    adv = torch.tensor([1.0, 1.0, -1.0])
    obj = ppo_clip_objective(logp, old, adv, clip=0.2)
    # ratios 1.25, 0.75, 0.5: min(1.25, 1.2) = 1.2; min(.75, .8) = .75; min(-.5, -.8) = -.8
    assert obj.item() == pytest.approx((1.2 + 0.75 - 0.8) / 3)
    (grad,) = torch.autograd.grad(obj, logp)
    # clipped entries carry no gradient; the unclipped one d(ratio * A)/dlogp = ratio * A / 3
    torch.testing.assert_close(grad, torch.tensor([0.0, 0.75 / 3, 0.0]))
    masked = ppo_clip_objective(logp, old, adv, 0.2, mask=torch.tensor([True, True, False]))
    assert masked.item() == pytest.approx((1.2 + 0.75) / 2)
    with pytest.raises(ValueError, match="clip=0"):
        ppo_clip_objective(logp, old, adv, clip=0)


def test_value_loss_and_advantage_normalisation():
    assert value_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])).item() == pytest.approx(0.5 * (1 + 9) / 2)
    a = normalise_advantages(torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([True, True, True, False]))
    assert a[:3].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert a[:3].tolist() == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)], rel=1e-4)


def test_advantage_normalisation_per_row():
    adv = torch.tensor([[1.0, 2.0, 3.0, 100.0], [10.0, 30.0, -5.0, 7.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    a = normalise_advantages(adv, mask, dim=1)
    assert a[0, :3].tolist() == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)], rel=1e-4)  # row 0 as on its own
    assert a[1, :2].tolist() == pytest.approx([-1.0, 1.0], rel=1e-4)  # row 1: mean 20, std 10 over its two steps
