"""The meta-RL agents: memory across episodes and trials, shifted inputs, acting equals training, learning a bandit."""

from __future__ import annotations

import warnings
from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from rnnmeta.rl import TRPO, BernoulliBandits, TabularMDPs, evaluate, run_trials, seeded_generator
from rnnmeta.rl.classical import make_baseline
from rnnmeta.rl.maml_rl import MAMLRL, linear_baseline, returns_to_go
from rnnmeta.rl.navigation import PointNavigation2D
from rnnmeta.rl.rl2 import RL2
from rnnmeta.rl.snail_agent import SNAILAgent

torch.set_num_threads(1)

SMALL = {
    "rl2": lambda fam, n: RL2(fam, n, hidden_size=16, batch_trials=4),
    "lstm": lambda fam, n: RL2(fam, n, cell="lstm", hidden_size=16, batch_trials=4),
    "snail": lambda fam, n: SNAILAgent(fam, n, layout=["tc:8", "attn:8:8", "tc:4"], embed_size=8, batch_trials=4),
    "maml": lambda fam, n: MAMLRL(fam, n, hidden_sizes=[16], inner_steps=2, inner_lr=1.0, batch_trials=4),
    # with the trial position as an input (Wang et al. 2016)
    "rl2_time": lambda fam, n: RL2(fam, n, hidden_size=16, batch_trials=4, time_input=True),
    # with a tanh trunk over [memory output, input] before the heads
    "rl2_trunk": lambda fam, n: RL2(fam, n, hidden_size=16, trunk_sizes=[16, 8], batch_trials=4),
    "snail_time": lambda fam, n: SNAILAgent(fam, n, layout=["tc:8", "attn:8:8", "tc:4"], embed_size=8, batch_trials=4, time_input=True),
}


def _trial(agent, fam, tasks, n_episodes, seed=0, greedy=False):
    return run_trials(agent.actor(greedy), fam, tasks, n_episodes, seeded_generator(seed, "e"), seeded_generator(seed, "a"))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_memory_persists_across_episodes_and_resets_between_trials(name):
    torch.manual_seed(0)
    fam = TabularMDPs(n_states=3, n_actions=2, horizon=3)
    agent = SMALL[name](fam, 6)
    tasks = fam.sample_tasks(4, seeded_generator(0, "t"))
    first = _trial(agent, fam, tasks, 6)
    # reset between trials: the same actor object, run again, acts exactly as on its first trial
    actor = agent.actor()
    runs = [run_trials(actor, fam, tasks, 6, seeded_generator(0, "e"), seeded_generator(0, "a")) for _ in range(2)]
    for run in runs:
        torch.testing.assert_close(run.extras["logp"], first.extras["logp"], rtol=0, atol=0)
        assert torch.equal(run.actions, first.actions)
    # persistence: the later episodes' action probabilities depend on the first episode's rewards
    other = fam.sample_tasks(4, seeded_generator(1, "t"))  # other rewards and transitions, same seeds
    second = _trial(agent, fam, other, 6)
    # at the first step the agent knows nothing of its task: the same start states (common random numbers) and
    # the same actions get the same probabilities on other tasks
    assert torch.equal(first.obs[:, 0], second.obs[:, 0])
    same = first.actions[:, 0] == second.actions[:, 0]
    torch.testing.assert_close(second.extras["logp"][:, 0][same], first.extras["logp"][:, 0][same])
    late = slice(fam.horizon * 4, fam.horizon * 6)  # episodes 5 and 6 (for MAMLRL: its last chunk, after adapting)
    log_probs = lambda traj: _replay_logp(agent, fam, tasks, traj, late)  # noqa: E731
    assert not torch.allclose(log_probs(first), log_probs(_swap_rewards(first))), "later episodes ignore the first ones"


def _swap_rewards(traj):
    """The same trajectory with other rewards in its first episodes."""
    from dataclasses import replace

    rewards = traj.rewards.clone()
    rewards[:, :6] = rewards[:, :6] + 5.0
    return replace(traj, rewards=rewards)


def _replay_logp(agent, fam, tasks, traj, steps):
    """log pi(a_t) over ``steps`` when the agent is fed ``traj``'s observations, actions and rewards step by step."""
    actor = agent.actor()
    actor.begin_trials(fam, tasks, agent.n_episodes, seeded_generator(0, "a"))
    out = []
    for t in range(traj.obs.shape[1]):
        if isinstance(agent, MAMLRL):
            # the adapted policy's log-probability of the recorded action
            with torch.no_grad():
                dist = agent.policy_params(actor.params, traj.obs[:, t : t + 1])[:, 0]
            from rnnmeta.rl.agent import action_log_prob

            out.append(action_log_prob(fam.action_space, dist, traj.actions[:, t]))
            actor.buffer["obs"].append(traj.obs[:, t])
            actor.buffer["actions"].append(traj.actions[:, t])
        else:
            x = agent.make_input(traj.obs[:, t], actor.prev_action, actor.prev_reward, actor.prev_done,
                                 torch.full_like(actor.prev_reward, t))
            with torch.no_grad():
                h, actor.state = agent.step(x, actor.state)
                out.append(agent.policy.log_prob(agent.policy(h), traj.actions[:, t]))
        actor.observe(traj.actions[:, t], traj.rewards[:, t], traj.episode_end[:, t], traj.alive[:, t])
    return torch.stack(out, 1)[:, steps]


@pytest.mark.parametrize("name", ["rl2", "lstm", "snail", "rl2_time", "snail_time", "rl2_trunk"])
def test_acting_step_by_step_equals_training_on_whole_trials(name):
    torch.manual_seed(0)
    fam = TabularMDPs(n_states=3, n_actions=2, horizon=3)
    agent = SMALL[name](fam, 5)
    traj = _trial(agent, fam, fam.sample_tasks(4, seeded_generator(0, "t")), 5)
    with torch.no_grad():
        h = agent.features(agent.trajectory_inputs(traj))
        logp = agent.policy.log_prob(agent.policy(h), traj.actions)
        value = agent.value(h).squeeze(-1)
    torch.testing.assert_close(logp, traj.extras["logp"], atol=1e-5, rtol=0)
    torch.testing.assert_close(value, traj.extras["value"], atol=1e-5, rtol=0)


def test_snail_acting_cache_with_autograd_matches_whole_trials_and_leaves_the_old_state():
    """Under autograd SNAILAgent.step returns a new cache (the in-place path is for acting without a graph); its
    features and their gradients equal those of the whole trial, with dilations longer than the trial's start."""
    torch.manual_seed(0)
    agent = SNAILAgent(TabularMDPs(n_states=3, n_actions=2, horizon=3), 3, layout=["tc:4", "attn:4:4", "tc:3"], embed_size=5)
    x = torch.randn(2, agent.trial_len, agent.input_size, dtype=torch.float64)
    agent = agent.double()
    whole = agent.features(x)
    state, stepped = agent.initial_state(2), []
    first = state
    for t in range(agent.trial_len):
        h, new = agent.step(x[:, t], state)
        assert new is not state and state.t == t
        stepped.append(h)
        state = new
    assert first.t == 0 and all(r.eq(d.conv.bias).all() for r, d in zip(first.rings[0], agent.blocks[0].blocks))
    stepped = torch.stack(stepped, 1)
    torch.testing.assert_close(stepped, whole, rtol=0, atol=1e-12)
    weights = torch.randn_like(whole)
    grads = torch.autograd.grad((stepped * weights).sum(), list(agent.parameters()), allow_unused=True)
    reference = torch.autograd.grad((whole * weights).sum(), list(agent.parameters()), allow_unused=True)
    for g, r in zip(grads, reference):
        assert (g is None) == (r is None)
        if g is not None:
            torch.testing.assert_close(g, r, rtol=0, atol=1e-10)
    with torch.no_grad():  # acting: the same cache object, updated in place, and no step past the trial
        state = agent.initial_state(2)
        for t in range(agent.trial_len):
            h, same = agent.step(x[:, t], state)
            assert same is state
        torch.testing.assert_close(h, whole[:, -1], rtol=0, atol=1e-12)
        with pytest.raises(ValueError, match=f"trials of {agent.trial_len} steps; this is step {agent.trial_len + 1}"):
            agent.step(x[:, 0], state)


@pytest.mark.parametrize("name", ["rl2", "snail", "rl2_trunk"])
def test_reward_reaches_the_agent_one_step_later(name):
    torch.manual_seed(0)
    fam = BernoulliBandits(3)
    agent = SMALL[name](fam, 8)
    traj = _trial(agent, fam, fam.sample_tasks(4, seeded_generator(0, "t")), 8)
    x = agent.trajectory_inputs(traj)
    from dataclasses import replace

    rewards = traj.rewards.clone()
    rewards[:, 4] = 7.0
    x2 = agent.trajectory_inputs(replace(traj, rewards=rewards))
    assert torch.equal(x[:, :5], x2[:, :5])  # steps 0..4 act before reward 4 is known
    assert x2[:, 5, -2].eq(7.0).all() and not torch.equal(x[:, 5], x2[:, 5])  # step 5 reads it as previous reward
    with torch.no_grad():  # and the network is causal: features up to step 4 do not change
        torch.testing.assert_close(agent.features(x)[:, :5], agent.features(x2)[:, :5], rtol=0, atol=0)
        assert not torch.allclose(agent.features(x)[:, 5:], agent.features(x2)[:, 5:])
    assert x[:, 0, -3:].eq(0).all()  # no previous action bit... (bandit: one-hot prev action, reward, done all 0 at t = 0)


def test_the_time_input_is_the_steps_position_in_the_trial():
    torch.manual_seed(0)
    fam = TabularMDPs(n_states=3, n_actions=2, horizon=3)
    plain, timed = SMALL["rl2"](fam, 4), SMALL["rl2_time"](fam, 4)
    assert timed.input_size == plain.input_size + 1
    traj = _trial(timed, fam, fam.sample_tasks(2, seeded_generator(0, "t")), 4)
    x = timed.trajectory_inputs(traj)
    torch.testing.assert_close(x[..., -1], (torch.arange(12) / 12.0).expand(2, 12), rtol=0, atol=0)  # t / T, T = 4 x 3
    torch.testing.assert_close(x[..., :-1], plain.trajectory_inputs(traj), rtol=0, atol=0)  # the other inputs as before
    with pytest.raises(ValueError, match="time_input=True: make_input needs the step index"):
        timed.make_input(traj.obs[:, 0], torch.zeros(2, 2), torch.zeros(2), torch.zeros(2))
    with pytest.raises(TypeError, match="time_input must be true or false, got time_input='yes'"):
        RL2(fam, 4, time_input="yes")


def test_maml_returns_and_linear_baseline():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    ends = torch.tensor([[False, True, False, True]])
    torch.testing.assert_close(returns_to_go(r, ends, 0.5), torch.tensor([[2.0, 2.0, 5.0, 4.0]]))
    # a baseline on [t, 1] recovers a linear return exactly
    t = torch.arange(5.0)
    feats = torch.stack([t, torch.ones(5)], -1).unsqueeze(0)
    g = (3 * t + 1).unsqueeze(0)
    torch.testing.assert_close(linear_baseline(feats, g, torch.ones(1, 5, dtype=torch.bool)), g, atol=1e-3, rtol=0)


def test_maml_first_and_second_order_gradients_differ_only_through_the_inner_step():
    # (an MDP: on bandits the observation is constant, the fitted baseline's residuals sum to zero over a chunk
    # and the second-order term nearly vanishes)
    fam = TabularMDPs(n_states=3, n_actions=2, horizon=3)
    grads = {}
    for first_order in (False, True):
        torch.manual_seed(0)
        agent = MAMLRL(fam, 4, hidden_sizes=[8], inner_steps=1, inner_lr=0.5, first_order=first_order, batch_trials=6)
        batch = agent.collect(0)
        agent.outer_loss(batch).backward()
        grads[first_order] = torch.cat([p.grad.flatten() for p in agent.net.parameters()])
    assert torch.isfinite(grads[False]).all() and not torch.allclose(grads[False], grads[True])
    assert torch.nn.functional.cosine_similarity(grads[False], grads[True], dim=0) > 0.5


def test_maml_meta_gradient_through_inner_steps_that_adapt_the_log_std_matches_finite_differences():
    """``adapt_log_std``: two second-order inner steps move the weights and the log-std per trial; the outer loss's
    gradient with respect to theta's log-std and to some first-layer weights matches central differences in float64."""
    from rnnmeta.rl.navigation import PointNavigation2D

    torch.manual_seed(0)
    agent = MAMLRL(PointNavigation2D(horizon=5), 4, hidden_sizes=[8], inner_steps=2, inner_lr=0.5, batch_trials=4,
                   center_advantages=True, adapt_log_std=True, init_log_std=-0.5)
    batch = agent.collect(0)
    agent.double()
    batch = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
    weight = agent.net[0].weight
    g_std, g_w = torch.autograd.grad(agent.outer_loss(batch), [agent.log_std, weight])

    def central(param, index, eps=1e-6):
        param.data[index] += eps
        plus = agent.outer_loss(batch).item()
        param.data[index] -= 2 * eps
        minus = agent.outer_loss(batch).item()
        param.data[index] += eps
        return (plus - minus) / (2 * eps)

    for i in range(2):
        assert g_std[i].item() == pytest.approx(central(agent.log_std, i), rel=1e-5, abs=1e-8)
        assert g_w[i, 0].item() == pytest.approx(central(weight, (i, 0)), rel=1e-5, abs=1e-8)
    assert g_std.abs().min() > 1e-3


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: RL2(BernoulliBandits(2), 0), "n_episodes=0"),
        (lambda: RL2(BernoulliBandits(2), 5, cell="rnn"), "cell='rnn'"),
        (lambda: RL2(BernoulliBandits(2), 5, trunk_sizes=[8, 0]), r"trunk_sizes=\[8, 0\]"),
        (lambda: SNAILAgent(BernoulliBandits(2), 5, layout=["conv:3"]), "conv:3"),
        (lambda: MAMLRL(BernoulliBandits(2), 1), "n_episodes=1"),
        (lambda: MAMLRL(BernoulliBandits(2), 4, adapt_log_std=True), "adapt_log_std=True needs a Gaussian policy"),
        (lambda: RL2(BernoulliBandits(2), 5, gamma=2.0), "gamma=2.0"),
        (lambda: RL2(BernoulliBandits(5), 5).rollout(BernoulliBandits(3), {"means": torch.rand(2, 3)}), "action_space"),
        (lambda: MAMLRL(BernoulliBandits(5), 5).rollout(TabularMDPs(), TabularMDPs().sample_tasks(2, seeded_generator(0))), "space"),
    ],
)
def test_bad_agent_settings_name_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---------------------------------------------------------------------------------- learning
LEARN = {
    "rl2": (lambda fam: RL2(fam, 10, hidden_size=64, batch_trials=64, optimizer=partial(torch.optim.Adam, lr=1e-2)), 300),
    "snail": (lambda fam: SNAILAgent(fam, 10, layout=["tc:16", "attn:16:16"], embed_size=16, batch_trials=64,
                                     optimizer=partial(torch.optim.Adam, lr=3e-3)), 300),
    "maml": (lambda fam: MAMLRL(fam, 10, batch_trials=64, inner_lr=0.1, optimizer=partial(torch.optim.Adam, lr=3e-3)), 300),
    # the papers' optimiser: one trust-region step per batch of 64 trials (measured: RL2 5.86, SNAIL 5.89 after 60)
    "rl2_trpo": (lambda fam: RL2(fam, 10, hidden_size=64, batch_trials=64, gae_lambda=0.95, entropy_coef=0.0,
                                 optimizer=partial(TRPO, max_kl=0.01)), 60),
    "snail_trpo": (lambda fam: SNAILAgent(fam, 10, layout=["tc:16", "attn:16:16"], embed_size=16, batch_trials=64,
                                          gae_lambda=0.95, entropy_coef=0.0, optimizer=partial(TRPO, max_kl=0.01)), 60),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LEARN))
def test_every_agent_learns_a_two_armed_bandit(name):
    """2 arms, 10 pulls: random earns 5.05 on these test tasks, Gittins 6.13; each agent must pass 5.5 within 300 updates."""
    fam = BernoulliBandits(2)
    pl.seed_everything(0, verbose=False)
    make, updates = LEARN[name]
    agent = make(fam)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_steps=updates, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             limit_val_batches=0, enable_model_summary=False)
        trainer.fit(agent)
        trainer.test(agent, verbose=False)
    random = evaluate(make_baseline("random"), fam, _test_tasks(fam, agent), 10).mean
    assert random < 5.2
    assert agent.last_evaluation.mean > 5.5, f"{name}: {agent.last_evaluation.mean:.3f} after {updates} updates (random {random:.3f})"


def _test_tasks(fam, agent):
    from rnnmeta.rl import eval_tasks

    return eval_tasks(fam, agent.test_trials, agent.eval_seed)


def test_maml_per_trial_outer_baseline_loses_the_second_order_term_on_bandits():
    """Constant observations: per-trial baseline residuals sum to zero in each trial, and the second-order term goes."""
    fam = BernoulliBandits(3)

    def relative_gap(outer_baseline):
        grads = {}
        for first_order in (False, True):
            torch.manual_seed(0)
            agent = MAMLRL(fam, 4, hidden_sizes=[8], inner_steps=1, inner_lr=0.5, first_order=first_order, batch_trials=6,
                           outer_baseline=outer_baseline)
            agent.outer_loss(agent.collect(0)).backward()
            grads[first_order] = torch.cat([p.grad.flatten() for p in agent.net.parameters()])
        return float((grads[False] - grads[True]).abs().max() / grads[False].abs().max())

    assert relative_gap("trial") < 1e-5
    assert relative_gap("batch") > 1e-3


@pytest.mark.parametrize("name", ["rl2", "snail", "maml"])
def test_injected_lr_schedule_steps_once_per_update(name):
    fam = BernoulliBandits(2)
    schedule = partial(torch.optim.lr_scheduler.LinearLR, start_factor=1.0, end_factor=0.0, total_iters=6)
    cls = {"rl2": RL2, "snail": SNAILAgent, "maml": MAMLRL}[name]
    agent = cls(fam, 4, batch_trials=4, lr_scheduler=schedule, optimizer=partial(torch.optim.SGD, lr=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             limit_val_batches=0, enable_model_summary=False)
        trainer.fit(agent)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25)  # half of the 6 updates: half the lr


@pytest.mark.parametrize("center, adapt_log_std", [(False, False), (True, False), (True, True)])
def test_maml_actor_adapts_as_the_outer_step_recomputes_when_episodes_end_early(center, adapt_log_std):
    """The actor's inner steps leave out the steps after a termination, as the outer step's recomputation does:
    under theta_j(theta) rebuilt from the recorded trajectory, every alive step's log-probability is the acted one
    (with ``adapt_log_std``, under each trial's adapted log-std, which then differs from theta's)."""
    from rnnmeta.rl.navigation import PointNavigation2D
    from rnnmeta.rl.agent import action_log_prob

    torch.manual_seed(0)
    fam = PointNavigation2D(horizon=8, max_step=0.2, success_tolerance=0.15)  # many episodes end early
    agent = MAMLRL(fam, 4, hidden_sizes=[16], inner_steps=2, inner_lr=1.0, batch_trials=16, center_advantages=center,
                   adapt_log_std=adapt_log_std)
    batch = agent.collect(0)
    alive = batch["alive"]
    assert (~alive[:, :8]).any() and (~alive[:, 8:16]).any(), "the test needs terminations in the chunks the actor adapts on"
    chunks, stds = [], []
    for _, sl, dist, log_std in agent.adapted_chunks(batch):
        chunks.append((sl, action_log_prob(fam.action_space, dist, batch["actions"][:, sl], log_std).detach()))
        stds.append(log_std.detach())
    assert len(chunks) == 3
    if adapt_log_std:  # per trial [B, 1, 2]; the inner steps moved it away from theta's
        assert stds[2].shape == (16, 1, 2) and (stds[2] - agent.log_std.detach()).abs().max() > 1e-3
    else:
        assert all(torch.equal(s, agent.log_std.detach()) for s in stds)
    for sl, logp in chunks:
        torch.testing.assert_close(logp[alive[:, sl]], batch["old_logp"][:, sl][alive[:, sl]], atol=1e-4, rtol=0)


def test_maml_evaluates_more_inner_steps_than_it_trains_through_with_the_later_step_size():
    """Finn et al.'s protocol: train through 1 step, evaluate 2 (here) with alpha_0 = inner_lr, then later_inner_lr.
    The evaluation actor's log-probabilities are rebuilt by hand, step by step with those sizes."""
    from rnnmeta.rl.agent import action_log_prob

    torch.manual_seed(0)
    fam = TabularMDPs(n_states=3, n_actions=2, horizon=3)
    agent = MAMLRL(fam, 6, hidden_sizes=[8], inner_steps=1, eval_inner_steps=2, inner_lr=1.0, later_inner_lr=0.25, batch_trials=5)
    assert agent.chunk_episodes == [2, 2, 2] and agent.train_episodes == 4 and agent.train_trial_len == 12
    assert agent.collect(0)["obs"].shape[1] == 4 * 3  # a training trial: chunks 0 and 1 only
    tasks = fam.sample_tasks(5, seeded_generator(1))
    traj = agent.rollout(fam, tasks)
    assert traj.obs.shape[1] == 6 * 3

    def rebuilt(step_sizes):
        params, out = agent.batched_params(5), []
        for j, (a, e) in enumerate(agent.chunk_bounds()):
            sl = slice(a, e)
            out.append(action_log_prob(fam.action_space, agent.policy_params(params, traj.obs[:, sl]), traj.actions[:, sl]).detach())
            if j < 2:
                adv = agent.chunk_advantages(traj.obs[:, sl], traj.rewards[:, sl], traj.episode_end[:, sl], traj.alive[:, sl])
                params = agent.inner_step(params, traj.obs[:, sl], traj.actions[:, sl], adv, traj.alive[:, sl], create_graph=False,
                                          lr=step_sizes[j])
        return torch.cat(out, 1)

    torch.testing.assert_close(rebuilt([1.0, 0.25]), traj.extras["logp"], atol=1e-5, rtol=0)
    assert (rebuilt([1.0, 1.0])[:, 12:] - traj.extras["logp"][:, 12:]).abs().max() > 1e-3  # the later size is used
    with pytest.raises(ValueError, match="eval_inner_steps=1 must be at least inner_steps=2"):
        MAMLRL(fam, 6, inner_steps=2, eval_inner_steps=1)
    with pytest.raises(ValueError, match="later_inner_lr=-0.1"):
        MAMLRL(fam, 6, later_inner_lr=-0.1)


def test_maml_trains_on_smaller_chunks_than_it_evaluates_with():
    """``train_chunk_episodes``: a training trial is ``inner_steps + 1`` chunks of that many episodes, the outer step
    recomputes the actor's adapted policy on those chunks, and evaluation keeps ``n_episodes // (eval_inner_steps + 1)``."""
    from rnnmeta.rl.agent import action_log_prob

    torch.manual_seed(0)
    fam = TabularMDPs(n_states=3, n_actions=2, horizon=3)
    agent = MAMLRL(fam, 8, hidden_sizes=[8], inner_steps=1, eval_inner_steps=3, train_chunk_episodes=1, inner_lr=1.0, batch_trials=5)
    assert agent.chunks() == [2, 2, 2, 2] and agent.chunks(training=True) == [1, 1]
    assert agent.train_episodes == 2 and agent.train_trial_len == 6 and agent.trial_episodes() == 8
    assert agent.chunk_bounds(training=True) == [(0, 3), (3, 6)] and agent.chunk_bounds()[1] == (6, 12)
    batch = agent.collect(0)
    assert batch["obs"].shape[1] == 6
    rebuilt = [action_log_prob(fam.action_space, dist, batch["actions"][:, sl]).detach() for _, sl, dist, _ in agent.adapted_chunks(batch)]
    torch.testing.assert_close(torch.cat(rebuilt, 1), batch["old_logp"], atol=1e-5, rtol=0)
    assert (rebuilt[1] - rebuilt[0]).abs().max() > 1e-3  # chunk 1 is played by the adapted policy
    assert agent.rollout(fam, fam.sample_tasks(5, seeded_generator(1))).obs.shape[1] == 8 * 3
    with pytest.raises(ValueError, match="n_episodes=2 .*chunks \\[1, 1\\].*got n_episodes=8"):
        run_trials(agent.actor(training=True), fam, fam.sample_tasks(5, seeded_generator(1)), 8, seeded_generator(0), seeded_generator(1))
    with pytest.raises(ValueError, match="train_chunk_episodes"):
        MAMLRL(fam, 8, train_chunk_episodes=0)


RESUMABLE = {
    "rl2": lambda fam: RL2(fam, 4, hidden_size=16, batch_trials=4, normalize_observations=True, scale_rewards=True),
    "snail": lambda fam: SNAILAgent(fam, 4, layout=["tc:8", "attn:8:8"], embed_size=8, batch_trials=4, normalize_observations=True),
    "maml": lambda fam: MAMLRL(fam, 4, hidden_sizes=[16], inner_steps=1, inner_lr=1.0, batch_trials=4, normalize_observations=True),
    "maml_trpo": lambda fam: MAMLRL(fam, 4, hidden_sizes=[16], inner_steps=1, inner_lr=1.0, batch_trials=4,
                                    optimizer=partial(TRPO, max_kl=0.01)),
}


def _fit(agent, max_steps, ckpt_path=None, save_to=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             limit_val_batches=0, enable_model_summary=False,
                             gradient_clip_val=None if agent.uses_trpo else 1.0)  # TRPO steps itself
        trainer.fit(agent, ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return trainer


@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_a_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run(name, tmp_path):
    """Stopped after any update, in the middle of an iteration's updates or at its end, and resumed from the
    checkpoint by a fresh process's Trainer, training ends with the weights, optimiser state and observation
    statistics of the run that was never stopped: the iteration's trials and its pending statistics travel in
    the checkpoint (a resumed run that collected its trials again, under the updated policy, would differ)."""
    fam = PointNavigation2D(horizon=5)  # observation statistics need a Box observation space
    torch.manual_seed(0)
    whole = RESUMABLE[name](fam)
    per_iter = whole.updates_per_iteration
    total = 2 * per_iter + max(1, per_iter // 2)
    _fit(whole, total)
    for stop in sorted({max(1, per_iter // 2), per_iter, per_iter + 1}):
        torch.manual_seed(0)
        first = RESUMABLE[name](fam)
        _fit(first, stop, save_to=tmp_path / f"stop{stop}.ckpt")
        torch.manual_seed(1)  # another initialisation: everything must come from the checkpoint
        resumed = RESUMABLE[name](fam)
        trainer = _fit(resumed, total, ckpt_path=tmp_path / f"stop{stop}.ckpt")
        assert trainer.global_step == total
        for (key, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
            assert torch.equal(a, b), f"stopped after update {stop} of {total}: {key} differs"
        assert resumed._batch["iteration"] == whole._batch["iteration"]
