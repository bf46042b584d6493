"""MAML for reinforcement learning (Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation
of Deep Networks", Section 3.3 and 5.3), on the same trials as the memory agents.

An MLP policy ``pi_theta(a | obs)`` (2 x 100 ReLU in the paper) with no memory of its own; it
adapts to a task by policy-gradient steps. A trial of ``n_episodes`` episodes is split into
``eval_inner_steps + 1`` consecutive *chunks* of ``n_episodes // (eval_inner_steps + 1)`` episodes
(the last takes the remainder): chunk 0 is played with ``theta_0 = theta``; after chunk ``j`` one
REINFORCE step on that chunk's episodes gives ``theta_{j+1} = theta_j + alpha_j * grad J_j(theta_j)``
(``alpha_0 = inner_lr``, later steps ``later_inner_lr`` if set), which plays chunk ``j + 1``. Every
reward of the trial counts, as for the other agents. Training plays the first ``inner_steps + 1``
chunks of that trial (or, with ``train_chunk_episodes``, ``inner_steps + 1`` chunks of that many
episodes) and differentiates through ``inner_steps`` steps. Finn et al. trained with one step and
evaluated up to three, with the step size halved after the first (Appendix A.2: ``alpha = 0.1``,
then ``0.05``); the authors' code for the 2D navigation figure (``maml_rl``: ``maml_trpo_point.py``,
``test_maml_point.py``) trained on 20 trajectories per step with ``alpha = 0.5`` and a policy of
initial std 1, and tested on 40 trajectories per step with 0.5, then 0.25. ``inner_steps=1,
eval_inner_steps=3, later_inner_lr=...`` and ``n_episodes=160, train_chunk_episodes=20`` reproduce
those protocols.

* Inner step (per trial): REINFORCE with a linear feature baseline (Duan et al. 2016,
  "Benchmarking Deep RL"; as in the MAML paper): ``J = mean_t log pi(a_t | s_t) (G_t - b(s_t, t))``,
  ``G_t`` the discounted return to the end of the episode, ``b`` a ridge regression of ``G`` on
  ``[obs, obs^2, t/H, (t/H)^2, (t/H)^3, 1]`` fitted on the chunk itself.
* Outer step: PPO's clipped surrogate (the paper used TRPO), summed over the chunks after an
  inner step (``pre_update_objective`` adds chunk 0), each under its adapted ``theta_j(theta)``
  recomputed from the recorded trajectories, with returns minus a linear feature baseline fitted
  over the whole batch as advantages (``outer_baseline``), plus an entropy bonus of the
  pre-update policy (``entropy_coef``). ``first_order=True`` drops the second derivatives
  (the inner gradients are treated as constants); otherwise the outer gradient runs through the
  inner steps (``create_graph=True``). Like the paper's MAML, the gradient does not credit the
  pre-update policy for the information its samples give the inner step.

Per-trial parameters are ``[B, ...]`` tensors; the policy runs on them with
``torch.func.vmap(torch.func.functional_call(...))`` and per-trial gradients come from one
``autograd.grad`` of the summed per-trial losses with respect to ``theta`` expanded to ``[B, ...]``.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from rnnmeta.rl.agent import MetaRLAgent, action_entropy, action_kl, action_log_prob, check_same_spaces, sample_action
from rnnmeta.rl.base import Box, TaskFamily, Tasks, check_positive, encode, seeded_generator, space_width
from rnnmeta.rl.ppo import masked_mean, normalise_advantages, ppo_clip_objective, ridge_weights
from rnnmeta.rl.trial import run_trials

Params = dict[str, Tensor]

#: the key of the per-trial log-std among the adapted parameters (``adapt_log_std``)
LOG_STD = "log_std"


def returns_to_go(rewards: Tensor, episode_end: Tensor, gamma: float) -> Tensor:
    """``[B, T]`` discounted return from each step to the end of its episode."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running * (~episode_end[:, t]).to(rewards.dtype)
        out[:, t] = running
    return out


def linear_baseline(features: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """Per-trial ridge regression of ``returns [B, T]`` on ``features [B, T, F]`` (``mask``ed steps only): fitted values ``[B, T]``.

    Solved in float64: a trial whose observation stops changing (a point that reached its goal and
    is absorbing) makes ``obs``, ``obs^2`` and the constant collinear, and ``phi^T phi + reg I`` is
    then singular to float32 precision.
    """
    w = ridge_weights(features, returns, mask, reg)
    return (features.double() @ w.unsqueeze(-1)).squeeze(-1).to(returns.dtype)


class MAMLRL(MetaRLAgent):
    """MAML-RL: an MLP policy adapted per trial by REINFORCE steps, meta-trained by PPO through them.

    Args (beyond :class:`~rnnmeta.rl.agent.MetaRLAgent`'s):
        hidden_sizes: the MLP's hidden widths (paper: [100, 100]).
        inner_steps: adaptation steps the outer step trains through (>= 1; a training trial plays
            ``inner_steps + 1`` chunks).
        inner_lr: the step size of the first inner step (paper: 0.1), and of every step unless
            ``later_inner_lr`` is set.
        eval_inner_steps: adaptation steps of an evaluation trial (``n_episodes`` episodes in
            ``eval_inner_steps + 1`` chunks; default ``inner_steps``; at least ``inner_steps``).
        train_chunk_episodes: episodes of each chunk of a training trial (``inner_steps + 1`` chunks);
            default: the evaluation trial's chunks, so a training trial is the start of an evaluation
            trial. Set it to train on smaller chunks than the evaluation adapts on (the authors' code:
            20 trajectories per step in training, 40 at test).
        later_inner_lr: the step size of every inner step after the first, in training and evaluation
            (default ``inner_lr``; paper: 0.05 at evaluation after training with one step of 0.1).
        first_order: drop second derivatives.
        outer_baseline: the baseline of the outer step's advantages: ``"batch"`` (one linear feature
            baseline fitted over all trials of the batch, so a trial whose adaptation earned more
            than others' is credited) or ``"trial"`` (fitted per trial, as the inner step's; then
            only differences within a trial count, and on bandits the outer step cannot credit
            stronger adaptation).
        pre_update_objective: also maximise the reward of chunk 0 (played before any inner step) in
            the outer step. Off by default, as in Finn et al. (the outer objective is the return
            after adaptation; the pre-update policy's job is to explore).
        center_advantages: standardise the inner step's advantages per trial and chunk (mean 0, std 1
            over its steps), as rllab's ``center_adv`` (on by default there) did for the paper's runs;
            the paper's inner step size 0.1 is for advantages of this scale.
        gamma: discount of the returns within an episode.
        clip: PPO's clip range.
        ppo_epochs: outer updates per collected batch of trials.
        entropy_coef: weight of the pre-update policy's entropy bonus in the outer step. Without it the
            pre-update policy drifts onto one arm of a bandit within ~30 iterations and its chunk
            stops informing the inner step (measured: 2-armed bandits, 10 pulls, p = 0.9998 for one
            arm after 100 iterations with 0, 0.57 with 0.05).
        init_log_std: initial log standard deviation of the Gaussian policy (``Box`` actions; 0: std 1).
        optimizer: the meta-optimiser (:class:`~rnnmeta.rl.agent.MetaRLAgent`'s), or :class:`~rnnmeta.rl.trpo.TRPO`
            (``{class_path: rnnmeta.rl.TRPO, init_args: {max_kl: 0.01}}``), the paper's outer step: then each
            collected batch gets one trust-region step on the unclipped surrogate of the adapted policies,
            bounded by their mean KL divergence from the policies that acted (``clip`` and ``ppo_epochs``
            are not used; Lightning's manual optimisation, so no ``lr_scheduler`` and no gradient clipping).
        adapt_log_std: the inner steps adapt the policy's log-std too, per trial, as the authors' code
            does (``maml_rl``: the fast update runs over all the policy's parameters, its std included),
            so an adapted policy can act more (or less) deterministically than ``theta``. Off: only the
            MLP's weights adapt and every chunk acts with the shared log-std.

    Shapes: the policy maps ``encode(obs) [..., d_obs]`` to logits or means ``[..., width]``.
    """

    def __init__(
        self,
        family: TaskFamily,
        n_episodes: int,
        hidden_sizes: Optional[list[int]] = None,
        inner_steps: int = 1,
        inner_lr: float = 0.1,
        eval_inner_steps: Optional[int] = None,
        later_inner_lr: Optional[float] = None,
        train_chunk_episodes: Optional[int] = None,
        first_order: bool = False,
        outer_baseline: str = "batch",
        pre_update_objective: bool = False,
        center_advantages: bool = False,
        batch_trials: int = 40,
        gamma: float = 0.99,
        clip: float = 0.2,
        ppo_epochs: int = 4,
        entropy_coef: float = 0.05,
        init_log_std: float = 0.0,
        adapt_log_std: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(family, n_episodes, batch_trials=batch_trials, **kwargs)
        hidden_sizes = [100, 100] if hidden_sizes is None else list(hidden_sizes)
        eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        check_positive("MAMLRL", inner_steps=inner_steps, ppo_epochs=ppo_epochs, **{f"hidden_sizes[{i}]": h for i, h in enumerate(hidden_sizes)})
        if eval_inner_steps < inner_steps:
            raise ValueError(f"MAMLRL: eval_inner_steps={eval_inner_steps} must be at least inner_steps={inner_steps} (a training "
                             "trial is the first inner_steps + 1 chunks of an evaluation trial)")
        if eval_inner_steps + 1 > n_episodes:
            raise ValueError(f"MAMLRL: eval_inner_steps + 1 = {eval_inner_steps + 1} chunks need n_episodes >= {eval_inner_steps + 1}, "
                             f"got n_episodes={n_episodes}")
        if train_chunk_episodes is not None:
            check_positive("MAMLRL", train_chunk_episodes=train_chunk_episodes)
        if not inner_lr > 0 or (later_inner_lr is not None and not later_inner_lr > 0):
            raise ValueError(f"MAMLRL: inner_lr and later_inner_lr must be > 0, got inner_lr={inner_lr!r}, later_inner_lr={later_inner_lr!r}")
        if not 0.0 <= gamma <= 1.0 or not clip > 0:
            raise ValueError(f"MAMLRL: gamma must lie in [0, 1] and clip > 0, got gamma={gamma!r}, clip={clip!r}")
        if outer_baseline not in ("batch", "trial"):
            raise ValueError(f"MAMLRL: outer_baseline must be 'batch' or 'trial', got outer_baseline={outer_baseline!r}")
        self.inner_steps, self.eval_inner_steps, self.first_order = inner_steps, eval_inner_steps, first_order
        self.inner_lr, self.later_inner_lr = inner_lr, later_inner_lr
        self.outer_baseline, self.pre_update_objective = outer_baseline, pre_update_objective
        self.center_advantages = center_advantages
        self.gamma, self.clip, self.ppo_epochs, self.entropy_coef = gamma, clip, ppo_epochs, entropy_coef
        widths = [space_width(family.observation_space), *hidden_sizes]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], space_width(family.action_space)))
        self.net = nn.Sequential(*layers)
        self.log_std = (nn.Parameter(torch.full((space_width(family.action_space),), float(init_log_std)))
                        if isinstance(family.action_space, Box) else None)
        if adapt_log_std and self.log_std is None:
            raise ValueError(f"MAMLRL: adapt_log_std=True needs a Gaussian policy (Box actions); {family.describe()} has "
                             f"discrete actions")
        self.adapt_log_std = bool(adapt_log_std)
        per = n_episodes // (eval_inner_steps + 1)
        #: episodes of each chunk of an evaluation trial
        self.chunk_episodes = [per] * eval_inner_steps + [n_episodes - per * eval_inner_steps]
        #: episodes of each chunk of a training trial (``train_chunk_episodes`` each, or the evaluation trial's first ``inner_steps + 1``)
        self.train_chunks = (self.chunk_episodes[: inner_steps + 1] if train_chunk_episodes is None
                             else [train_chunk_episodes] * (inner_steps + 1))
        self._batch: Optional[dict[str, Tensor]] = None

    @property
    def updates_per_iteration(self) -> int:
        """Outer updates per collected batch of trials: ``ppo_epochs``, or one trust-region step with TRPO."""
        return 1 if self.uses_trpo else self.ppo_epochs

    # -- the functional policy ---------------------------------------------------------------------
    def batched_params(self, batch: int) -> Params:
        """``theta`` expanded to one copy per trial ``[B, ...]`` (views: gradients flow to ``theta``); with
        ``adapt_log_std`` the log-std too, under :data:`LOG_STD` (``[B, width]``)."""
        params = {k: p.unsqueeze(0).expand(batch, *p.shape) for k, p in self.net.named_parameters()}
        if self.adapt_log_std:
            params[LOG_STD] = self.log_std.unsqueeze(0).expand(batch, *self.log_std.shape)
        return params

    def policy_params(self, params: Params, obs: Tensor) -> Tensor:
        """Per-trial parameters ``[B, ...]`` and observations ``[B, T, *obs]`` -> distribution parameters ``[B, T, width]``."""
        weights = {k: v for k, v in params.items() if k != LOG_STD}
        # in the weights' dtype: encode() gives float32, and a gradient check runs the policy in float64
        x = self.observation_features(obs).to(next(iter(weights.values())).dtype)
        return vmap(lambda p, xb: functional_call(self.net, p, (xb,)))(weights, x)

    def log_std_of(self, params: Params, per_step: bool = True) -> Optional[Tensor]:
        """The log-std that the policy of ``params`` acts with: per trial (``adapt_log_std``; ``[B, 1, width]``
        to broadcast over a chunk's steps, ``[B, width]`` with ``per_step=False``), else the shared ``[width]``."""
        if LOG_STD not in params:
            return self.log_std
        return params[LOG_STD].unsqueeze(1) if per_step else params[LOG_STD]

    def _baseline_features(self, obs: Tensor, step_in_episode: Tensor) -> Tensor:
        o = encode(self.family.observation_space, obs)
        t = step_in_episode.to(o.dtype).unsqueeze(-1) / self.family.horizon
        return torch.cat([o, o**2, t, t**2, t**3, torch.ones_like(t)], -1)

    def chunk_advantages(self, obs: Tensor, rewards: Tensor, episode_end: Tensor, alive: Tensor, pooled: bool = False) -> Tensor:
        """``G_t - b(s_t, t)`` over one chunk ``[B, t]`` (returns within episodes; the baseline fitted on the
        chunk per trial, or with ``pooled`` over all the batch's trials at once)."""
        g = returns_to_go(rewards, episode_end, self.gamma)
        steps = torch.arange(rewards.shape[1], device=rewards.device) % self.family.horizon
        feats = self._baseline_features(obs, steps.expand_as(rewards))
        if pooled:
            b, t = g.shape
            return g - linear_baseline(feats.reshape(1, b * t, -1), g.reshape(1, b * t), alive.reshape(1, b * t)).reshape(b, t)
        return g - linear_baseline(feats, g, alive)

    def chunks(self, training: bool = False) -> list[int]:
        """Episodes of each chunk of a training trial (``inner_steps + 1`` chunks) or an evaluation trial."""
        return self.train_chunks if training else self.chunk_episodes

    def trial_episodes(self, training: bool = False) -> int:
        """Episodes of a training trial or of an evaluation trial (``n_episodes``)."""
        return sum(self.chunks(training))

    @property
    def train_episodes(self) -> int:
        """Episodes of a training trial."""
        return self.trial_episodes(training=True)

    @property
    def train_trial_len(self) -> int:
        return self.train_episodes * self.family.horizon

    def step_size(self, j: int) -> float:
        """``alpha_j``, the step size of inner step ``j`` (0-based): ``inner_lr``, then ``later_inner_lr`` if set."""
        return self.inner_lr if j == 0 or self.later_inner_lr is None else self.later_inner_lr

    def inner_step(self, params: Params, obs: Tensor, actions: Tensor, adv: Tensor, alive: Tensor, create_graph: bool,
                   lr: float) -> Params:
        """One REINFORCE ascent step of size ``lr`` per trial on a chunk ``[B, t]``: ``theta_j -> theta_{j+1}``."""
        if self.center_advantages:
            adv = normalise_advantages(adv, alive, dim=1)
        with torch.enable_grad():
            logp = action_log_prob(self.family.action_space, self.policy_params(params, obs), actions, self.log_std_of(params))
            m = alive.to(logp.dtype)
            objective = (logp * adv.detach() * m).sum(1) / m.sum(1).clamp_min(1)  # [B]
            names = list(params)
            grads = torch.autograd.grad(objective.sum(), [params[k] for k in names], create_graph=create_graph)
        return {k: params[k] + lr * g for k, g in zip(names, grads)}

    def chunk_bounds(self, training: bool = False) -> list[tuple[int, int]]:
        """``[(start, end)]`` steps of each chunk of a training trial or an evaluation trial."""
        h, out, start = self.family.horizon, [], 0
        for e in self.chunks(training):
            out.append((start, start + e * h))
            start += e * h
        return out

    def actor(self, greedy: bool = False, training: bool = False) -> "MAMLActor":
        """An actor that plays evaluation trials (``eval_inner_steps`` steps), or training trials (``inner_steps``)."""
        return MAMLActor(self, greedy, training)

    # -- training ----------------------------------------------------------------------------------
    def collect(self, iteration: int) -> dict[str, Tensor]:
        tasks = self.train_tasks(iteration)
        with torch.no_grad():
            traj = run_trials(self.actor(training=True), self.family, tasks, self.train_episodes,
                              seeded_generator(self.seed, "train-env", self.global_rank, iteration, device=self.device),
                              seeded_generator(self.seed, "train-actor", self.global_rank, iteration, device=self.device))
        chunks = [(traj.obs[:, a:b], traj.rewards[:, a:b], traj.episode_end[:, a:b], traj.alive[:, a:b])
                  for a, b in self.chunk_bounds(training=True)]
        inner = [self.chunk_advantages(*c) for c in chunks]  # what the actor adapted with
        advs = [self.chunk_advantages(*c, pooled=self.outer_baseline == "batch") for c in chunks]
        return {"obs": traj.obs, "actions": traj.actions, "rewards": traj.rewards, "episode_end": traj.episode_end,
                "alive": traj.alive, "old_logp": traj.extras["logp"], "advantages": torch.cat(advs, 1), "inner_advantages": torch.cat(inner, 1), "total": traj.total_reward}

    def adapted_chunks(self, batch: dict[str, Tensor]) -> Iterator[tuple[int, slice, Tensor, Optional[Tensor]]]:
        """``(j, steps of chunk j, distribution parameters [B, t, width] under theta_j(theta), its log-std)`` for
        each chunk: the inner steps recomputed from the recorded trajectories (``inner_advantages``, ``alive``), as
        the actor took them."""
        params = self.batched_params(batch["obs"].shape[0])
        for j, (a, b) in enumerate(self.chunk_bounds(training=True)):
            sl = slice(a, b)
            yield j, sl, self.policy_params(params, batch["obs"][:, sl]), self.log_std_of(params)
            if j < self.inner_steps:
                params = self.inner_step(params, batch["obs"][:, sl], batch["actions"][:, sl], batch["inner_advantages"][:, sl],
                                         batch["alive"][:, sl], create_graph=not self.first_order, lr=self.step_size(j))
                if self.first_order:
                    params = {k: p.detach() + (p0 - p0.detach()) for (k, p), p0 in zip(params.items(), self.batched_params(batch["obs"].shape[0]).values())}

    def outer_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Minus the PPO surrogate summed over the chunks, each under ``theta_j(theta)`` recomputed through the inner steps."""
        space, loss = self.family.action_space, 0.0
        for j, sl, dist, log_std in self.adapted_chunks(batch):
            logp = action_log_prob(space, dist, batch["actions"][:, sl], log_std)
            adv = normalise_advantages(batch["advantages"][:, sl], batch["alive"][:, sl])
            if j > 0 or self.pre_update_objective:
                loss = loss - ppo_clip_objective(logp, batch["old_logp"][:, sl], adv, self.clip, batch["alive"][:, sl])
            if self.entropy_coef and j == 0:  # the pre-update (exploring) policy's entropy
                loss = loss - self.entropy_coef * action_entropy(space, dist, self.log_std).mean()
        return loss

    def trpo_objective(self, batch: dict[str, Tensor], reference: dict[int, tuple[Tensor, Optional[Tensor]]]) -> tuple[Tensor, Tensor]:
        """TRPO's ``(loss, kl)`` at the current ``theta`` (:class:`~rnnmeta.rl.trpo.TRPO`'s closure).

        ``loss``: minus the importance-sampled surrogate ``mean(rho A)`` of the chunks the outer step optimises (those
        after an inner step, and chunk 0 with ``pre_update_objective``), minus the entropy bonus as in
        :meth:`outer_loss`; ``kl``: the mean over those chunks of ``KL(pi_ref || pi_theta_j)`` over their acted steps,
        where ``reference`` holds each chunk's distribution at the start of the step (filled, detached, on the first call).
        """
        space, loss, kls = self.family.action_space, 0.0, []
        for j, sl, dist, log_std in self.adapted_chunks(batch):
            alive = batch["alive"][:, sl]
            if j > 0 or self.pre_update_objective:
                logp = action_log_prob(space, dist, batch["actions"][:, sl], log_std)
                adv = normalise_advantages(batch["advantages"][:, sl], alive)
                loss = loss - masked_mean(torch.exp(logp - batch["old_logp"][:, sl]) * adv, alive)
                ref_dist, ref_log_std = reference.setdefault(j, (dist.detach(), None if log_std is None else log_std.detach()))
                kls.append(masked_mean(action_kl(space, ref_dist, dist, ref_log_std, log_std), alive))
            if self.entropy_coef and j == 0:
                loss = loss - self.entropy_coef * action_entropy(space, dist, self.log_std).mean()
        return loss, torch.stack(kls).mean()

    def training_step(self, batch: Tensor, batch_idx: int) -> Optional[Tensor]:
        iteration, k = divmod(int(self.global_step), self.updates_per_iteration)
        if k == 0 or self._batch is None or self._batch.get("iteration") != iteration:
            if self._batch is not None:  # the previous batch's updates are done: its observations join the statistics
                self.update_observation_statistics(self._batch["obs"], self._batch["alive"])
            self._batch = self.collect(iteration)
            self._batch["iteration"] = iteration
            self.log("train/return", self._batch["total"].mean(), prog_bar=True)
        if self.uses_trpo:
            reference: dict[int, tuple[Tensor, Optional[Tensor]]] = {}
            self.trust_region_step(lambda: self.trpo_objective(self._batch, reference))
            return None
        loss = self.outer_loss(self._batch)
        self.log("train/loss", loss.detach())
        return loss


class MAMLActor:
    """Runs :class:`MAMLRL` in trials: ``theta`` for chunk 0, then one inner step after each chunk (per trial):
    the agent's evaluation trials (``eval_inner_steps`` steps), or with ``training`` its training trials."""

    def __init__(self, agent: MAMLRL, greedy: bool = False, training: bool = False) -> None:
        self.agent, self.greedy, self.training = agent, greedy, training
        self.inner_steps = agent.inner_steps if training else agent.eval_inner_steps
        self.bounds = agent.chunk_bounds(training)

    def begin_trials(self, family: TaskFamily, tasks: Tasks, n_episodes: int, generator: torch.Generator) -> None:
        check_same_spaces(self.agent.family, family, "MAMLRL")
        expected = self.agent.trial_episodes(self.training)
        if n_episodes != expected:
            raise ValueError(f"MAMLRL with {self.inner_steps} inner steps plays trials of n_episodes={expected} (its chunks "
                             f"{self.agent.chunks(self.training)}), got n_episodes={n_episodes}")
        self.b = family.check_tasks(tasks)
        self.generator = generator
        self.params = {k: v.detach() for k, v in self.agent.batched_params(self.b).items()}
        self.t, self.chunk = 0, 0
        self.buffer: dict[str, list[Tensor]] = {"obs": [], "actions": [], "rewards": [], "episode_end": [], "alive": []}

    def act(self, obs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        agent = self.agent
        with torch.no_grad():
            dist = agent.policy_params(self.params, obs.unsqueeze(1))[:, 0]
            log_std = agent.log_std_of(self.params, per_step=False)
            action = sample_action(agent.family.action_space, dist, self.generator, self.greedy, log_std)
            logp = action_log_prob(agent.family.action_space, dist, action, log_std)
        self.buffer["obs"].append(obs)
        self.buffer["actions"].append(action)
        return action, {"logp": logp}

    def observe(self, action: Tensor, reward: Tensor, episode_end: Tensor, alive: Tensor) -> None:
        self.buffer["rewards"].append(reward)
        self.buffer["episode_end"].append(episode_end)
        self.buffer["alive"].append(alive)
        self.t += 1
        if self.chunk < self.inner_steps and self.t == self.bounds[self.chunk][1]:
            agent = self.agent
            obs, actions = torch.stack(self.buffer["obs"], 1), torch.stack(self.buffer["actions"], 1)
            rewards, ends = torch.stack(self.buffer["rewards"], 1), torch.stack(self.buffer["episode_end"], 1)
            alive = torch.stack(self.buffer["alive"], 1)  # the steps after a termination do not count, as in training
            adv = agent.chunk_advantages(obs, rewards, ends, alive)
            with torch.enable_grad():
                params = {k: v.detach().requires_grad_(True) for k, v in self.params.items()}
                new = agent.inner_step(params, obs, actions, adv, alive, create_graph=False, lr=agent.step_size(self.chunk))
            self.params = {k: v.detach() for k, v in new.items()}
            self.chunk += 1
            self.buffer = {k: [] for k in self.buffer}


__all__ = ["MAMLActor", "MAMLRL", "linear_baseline", "returns_to_go"]
