"""The agent contract: a LightningModule that acts in a batch of trials step by step, trained by PPO.

A memory-based meta-RL agent (RL^2: Duan et al. 2016, Wang et al. 2016; SNAIL: Mishra et al. 2018)
reads, at step ``t`` of a trial, the input

    ``x_t = [encode(obs_t), encode(action_{t-1}), reward_{t-1}, done_{t-1}]``      ``[B, D]``

(zeros for the ``t-1`` parts at ``t = 0``): the previous action, reward and episode-end flag are
shifted by one step, so the agent never sees a reward before acting on it. Its memory (a GRU's
state, SNAIL's cached keys and convolution inputs) starts fresh with each trial and carries across
the trial's episodes. From its features a policy head gives the action distribution (categorical
for :class:`~rnnmeta.rl.base.Discrete`, a diagonal Gaussian with a learned log-std for
:class:`~rnnmeta.rl.base.Box`) and a value head ``V_t``.

A subclass provides the memory, as two views of one function:

* :meth:`SequenceAgent.initial_state` and :meth:`SequenceAgent.step` ``(x_t [B, D], state) ->
  (features [B, F], state)``: acting, one step at a time, from cached state;
* :meth:`SequenceAgent.features` ``x [B, T, D] -> features [B, T, F]``: training, whole trials at
  once. Both must agree (tested for every agent).

Training (:class:`SequenceAgent`): each PPO *iteration* collects ``batch_trials`` trials of tasks
drawn from the seeded training stream, computes GAE advantages over whole trials (the episode
boundaries are not terminal: the objective is the trial's total reward), and makes
``ppo_epochs * ppo_minibatches`` gradient steps on them; one Lightning training step is one
gradient step (``trainer.max_steps`` counts updates), so the Trainer's gradient clipping,
accumulation and schedulers apply. Evaluation (``validate``/``test``) runs the fixed, seeded
validation or test tasks (:func:`rnnmeta.rl.trial.eval_tasks`) and logs the mean total reward per
trial (``val/return``, ``test/return`` and ``test/return_ci95``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Optional

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from rnnmeta.learners.base import InjectedOptimizerModule
from rnnmeta.rl.base import Box, Discrete, Space, TaskFamily, Tasks, check_positive, encode, index_tasks, seeded_generator, space_width, tasks_to
from rnnmeta.rl.normalization import RunningNorm
from rnnmeta.rl.ppo import gae, masked_mean, normalise_advantages, ppo_clip_objective, ridge_weights, value_loss
from rnnmeta.rl.trial import Evaluation, Trajectory, eval_tasks, run_trials, summarise_rewards
from rnnmeta.rl.trpo import TRPO
from rnnmeta.specs import callable_spec, import_class


# ---------------------------------------------------------------------------------- policy heads
def sample_action(space: Space, params: Tensor, generator: torch.Generator, greedy: bool = False,
                  log_std: Optional[Tensor] = None) -> Tensor:
    """An action for distribution parameters ``params [B, width]``: ``[B]`` int64 (logits) or ``[B, *shape]`` (Gaussian means)."""
    if isinstance(space, Discrete):
        if greedy:
            return params.argmax(-1)
        return torch.multinomial(params.softmax(-1), 1, generator=generator).squeeze(-1)
    noise = torch.zeros_like(params) if greedy else torch.randn(params.shape, generator=generator, device=params.device)
    return (params + log_std.exp() * noise).reshape(*params.shape[:-1], *space.shape)


def action_log_prob(space: Space, params: Tensor, action: Tensor, log_std: Optional[Tensor] = None) -> Tensor:
    """``[...]`` log-probability of ``action`` under ``params [..., width]`` (categorical logits or Gaussian means)."""
    if isinstance(space, Discrete):
        return params.log_softmax(-1).gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
    a = action.reshape(*params.shape)
    z = (a - params) / log_std.exp()
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def action_entropy(space: Space, params: Tensor, log_std: Optional[Tensor] = None) -> Tensor:
    """``[...]`` entropy of the action distribution."""
    if isinstance(space, Discrete):
        logp = params.log_softmax(-1)
        return -(logp.exp() * logp).sum(-1)
    return (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum().expand(params.shape[:-1])


def action_kl(space: Space, old: Tensor, new: Tensor, old_log_std: Optional[Tensor] = None,
              new_log_std: Optional[Tensor] = None) -> Tensor:
    """``[...]`` ``KL(old || new)`` between two action distributions of parameters ``[..., width]`` (TRPO's constraint)."""
    if isinstance(space, Discrete):
        old_logp, new_logp = old.log_softmax(-1), new.log_softmax(-1)
        return (old_logp.exp() * (old_logp - new_logp)).sum(-1)
    var_ratio = torch.exp(2 * (old_log_std - new_log_std))
    mahalanobis = (old - new) ** 2 * torch.exp(-2 * new_log_std)
    return (new_log_std - old_log_std + 0.5 * (var_ratio + mahalanobis - 1)).sum(-1)


class PolicyHead(nn.Module):
    """Features ``[..., F]`` -> an action distribution over ``space``.

    ``Discrete(n)``: logits ``Linear(F, n)``. ``Box(shape)``: mean ``Linear(F, prod(shape))`` and a
    state-independent learned log-std (initial ``init_log_std``); actions are not clipped here (the
    environment clips).
    """

    def __init__(self, features: int, space: Space, init_log_std: float = 0.0) -> None:
        super().__init__()
        self.space = space
        self.out = nn.Linear(features, space_width(space))
        self.log_std = nn.Parameter(torch.full((space_width(space),), float(init_log_std))) if isinstance(space, Box) else None

    def forward(self, h: Tensor) -> Tensor:
        """Distribution parameters ``[..., width]`` (logits or means)."""
        return self.out(h)

    def sample(self, params: Tensor, generator: torch.Generator, greedy: bool = False) -> tuple[Tensor, Tensor]:
        """``(action, logp)`` for params ``[B, width]``."""
        action = sample_action(self.space, params, generator, greedy, self.log_std)
        return action, self.log_prob(params, action)

    def log_prob(self, params: Tensor, action: Tensor) -> Tensor:
        return action_log_prob(self.space, params, action, self.log_std)

    def entropy(self, params: Tensor) -> Tensor:
        return action_entropy(self.space, params, self.log_std)


class PrivilegedCritic(nn.Module):
    """A value head that reads the task beside the memory's features: ``V(h, task)`` (asymmetric actor-critic,
    Pinto et al. 2018; a task-informed critic for meta-RL, Humplik et al. 2019, "Meta reinforcement learning as
    task inference").

    ``h [..., F]`` and ``task [..., P]`` (the family's :meth:`~rnnmeta.rl.base.TaskFamily.task_features`) ->
    ``Linear(F + P, hidden) -> tanh -> Linear(hidden, 1)`` -> ``[..., 1]``. The task's parameters (the arm means
    of a bandit, the goal of a navigation task) say most of what the rest of a trial is worth, which the memory
    alone must first infer: the critic's baselines, and so the policy's advantages, are less noisy. The
    simulator knows the task during training; the policy never reads it, and acting needs no critic.
    """

    def __init__(self, features: int, task_features: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features + task_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, h: Tensor, task: Tensor) -> Tensor:
        if task.dim() < h.dim():  # one task vector per trial [B, P] for features over its steps [B, T, F]
            task = task.unsqueeze(-2).expand(*h.shape[:-1], task.shape[-1])
        return self.net(torch.cat([h, task.to(h.dtype)], dim=-1))


def check_same_spaces(agent_family: TaskFamily, family: TaskFamily, who: str) -> None:
    """Refuse a family whose observation or action space differs from the one the agent was built for."""
    for kind in ("observation_space", "action_space"):
        mine, theirs = getattr(agent_family, kind), getattr(family, kind)
        if mine != theirs:
            raise ValueError(
                f"{who} was built for {agent_family.describe()} with {kind} {mine}, but is asked to act in "
                f"{family.describe()} whose {kind} is {theirs}; build the agent for that family"
            )


class _UpdateStream(IterableDataset):
    """``0, 1, 2, ...``: the training loop's batches are only update indices (tasks are drawn in the step)."""

    def __iter__(self):
        i = 0
        while True:
            yield torch.tensor(i)
            i += 1


# ---------------------------------------------------------------------------------- the agent contract
class MetaRLAgent(InjectedOptimizerModule):
    """Base of the meta-RL agents: the family and trial protocol they are built for, evaluation, the optimiser.

    Args:
        family: the task family (its spaces size the networks).
        n_episodes: episodes per trial (>= 1).
        batch_trials: trials collected per training iteration.
        val_trials, test_trials: size of the fixed validation and test task sets.
        eval_seed: seed of the validation and test tasks and of their environment randomness (the
            same for every agent of a comparison).
        seed: seed of the training task stream (the ``(seed, iteration)`` -> tasks map).
        optimizer: the meta-optimiser (``torch.optim.Adam`` with its defaults, lr 1e-3, unless configured), or
            :class:`~rnnmeta.rl.trpo.TRPO` (``{class_path: rnnmeta.rl.TRPO, init_args: {max_kl: 0.01}}``), the
            papers' optimiser: then each collected batch gets one trust-region step (:attr:`uses_trpo`; Lightning's
            manual optimisation, so no ``lr_scheduler`` and no ``trainer.gradient_clip_val``). What the step
            bounds and maximises is the agent's (:class:`SequenceAgent`, :class:`~rnnmeta.rl.maml_rl.MAMLRL`).
        lr_scheduler: an optional schedule of it, stepped after every update (e.g.
            ``{class_path: torch.optim.lr_scheduler.CosineAnnealingLR, init_args: {T_max: 4000}}``).
        normalize_observations: standardise ``Box`` observations by running mean and variance
            (:class:`~rnnmeta.rl.normalization.RunningNorm`, clipped to +-10; buffers, so saved in the
            checkpoint), updated with each training batch once its updates are done.
    """

    def __init__(
        self,
        family: TaskFamily,
        n_episodes: int,
        batch_trials: int = 64,
        val_trials: int = 200,
        test_trials: int = 1000,
        eval_seed: int = 0,
        seed: int = 0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        normalize_observations: bool = False,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        check_positive(type(self).__name__, n_episodes=n_episodes, batch_trials=batch_trials, val_trials=val_trials,
                       test_trials=test_trials)
        if not isinstance(family, TaskFamily):
            raise TypeError(f"{type(self).__name__}: family must be a rnnmeta.rl.TaskFamily, got {type(family).__name__}")
        self.family, self.n_episodes = family, n_episodes
        self.batch_trials, self.val_trials, self.test_trials = batch_trials, val_trials, test_trials
        self.eval_seed, self.seed = eval_seed, seed
        self.trial_len = n_episodes * family.horizon
        self._eval_totals: list[Tensor] = []
        self.last_evaluation: Optional[Evaluation] = None
        self.obs_norm: Optional[RunningNorm] = None
        if normalize_observations:
            if not isinstance(family.observation_space, Box):
                raise ValueError(f"{type(self).__name__}: normalize_observations needs a Box observation space, "
                                 f"got {family.observation_space} of {family.describe()}")
            self.obs_norm = RunningNorm(space_width(family.observation_space))
        # the arguments of the whole __init__ chain (this one's and the agent's), the family by its description
        self.save_hyperparameters(ignore=["family", "optimizer"])
        self.hparams["family"] = family.describe()
        spec = callable_spec(self.optimizer_factory)
        #: the optimiser is TRPO: one trust-region step per collected batch, through manual optimisation
        self.uses_trpo = spec is not None and issubclass(import_class(spec["class_path"], "optimizer"), TRPO)
        if self.uses_trpo:
            if self.lr_scheduler_factory is not None:
                raise ValueError(f"{type(self).__name__}: an lr_scheduler has nothing to schedule with the TRPO optimizer (its "
                                 "step is set by max_kl); remove lr_scheduler")
            self.automatic_optimization = False

    def trust_region_step(self, closure: Callable[[], tuple[Tensor, Tensor]]) -> Tensor:
        """One :class:`~rnnmeta.rl.trpo.TRPO` step with ``closure() -> (loss, kl)``; logs ``train/loss`` and
        ``train/trpo_*`` (``kl``, ``step_fraction``, ``accepted``, ``loss_before``, ``loss_after``). Returns the loss
        before the step."""
        optimizer = self.optimizers()
        loss = optimizer.step(closure=closure)
        self.log_dict({f"train/trpo_{key}": value for key, value in optimizer.optimizer.last_step.items()})
        self.log("train/loss", loss)
        return loss

    @property
    def train_trial_len(self) -> int:
        """Environment steps of one training trial (``trial_len``, unless training plays shorter trials: MAMLRL)."""
        return self.trial_len

    def observation_features(self, obs: Tensor) -> Tensor:
        """``encode(obs)`` ``[..., d_obs]``, standardised by the running statistics when ``normalize_observations``."""
        x = encode(self.family.observation_space, obs)
        return x if self.obs_norm is None else self.obs_norm(x)

    def update_observation_statistics(self, obs: Tensor, alive: Tensor) -> None:
        """Merge a batch's observations ``[B, T, *obs]`` (steps where ``alive [B, T]``) into the running statistics."""
        if self.obs_norm is not None:
            self.obs_norm.update(encode(self.family.observation_space, obs), alive)

    # -- acting (subclasses) -----------------------------------------------------------------------
    def actor(self, greedy: bool = False):
        """An :class:`~rnnmeta.rl.base.Actor` that runs this agent (memory reset at ``begin_trials``)."""
        raise NotImplementedError

    @torch.no_grad()
    def rollout(self, family: TaskFamily, tasks: Tasks, seed: int = 0, greedy: bool = False,
                n_episodes: Optional[int] = None) -> Trajectory:
        """Run one trial per task (``n_episodes`` defaults to the agent's); the environment seeded by ``(seed, "env")``."""
        check_same_spaces(self.family, family, type(self).__name__)
        tasks = tasks_to(tasks, self.device)
        n = self.n_episodes if n_episodes is None else n_episodes
        return run_trials(self.actor(greedy), family, tasks, n,
                          seeded_generator(seed, "env", device=self.device), seeded_generator(seed, "actor", device=self.device))

    # -- data ------------------------------------------------------------------------------------
    def train_tasks(self, iteration: int) -> Tasks:
        """The training tasks of ``iteration``: a pure function of ``(seed, rank, iteration)``."""
        g = seeded_generator(self.seed, "train", self.global_rank, iteration)
        return tasks_to(self.family.sample_tasks(self.batch_trials, g), self.device)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_UpdateStream(), batch_size=None)

    def _eval_loader(self, n: int) -> DataLoader:
        return DataLoader(list(range(math.ceil(n / self.batch_eval))), batch_size=None)

    #: trials per evaluation chunk (as :func:`rnnmeta.rl.trial.evaluate`'s ``batch_trials``).
    batch_eval = 500

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_trials)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_trials)

    def _eval_step(self, chunk: Tensor, split: str) -> None:
        n = self.val_trials if split == "val" else self.test_trials
        tasks = eval_tasks(self.family, n, self.eval_seed, split)
        i = int(chunk)
        part = index_tasks(tasks, slice(i * self.batch_eval, (i + 1) * self.batch_eval))
        dev = self.device
        # outside inference mode: MAMLRL adapts with autograd while it acts (the others only pay nothing for it)
        with torch.inference_mode(False), torch.no_grad():  # the same generators as rnnmeta.rl.trial.evaluate: common random numbers with the baselines
            traj = run_trials(self.actor(), self.family, tasks_to(part, dev), self.n_episodes,
                              seeded_generator(self.eval_seed, "env", i, device=dev),
                              seeded_generator(self.eval_seed, "actor", i, device=dev))
        self._eval_totals.append(traj.total_reward.detach().double().cpu())

    def _eval_end(self, split: str) -> None:
        if not self._eval_totals:
            return
        ev = summarise_rewards(torch.cat(self._eval_totals))
        self._eval_totals = []
        self.last_evaluation = ev
        self.log(f"{split}/return", ev.mean, prog_bar=True)
        if split == "test":
            self.log("test/return_ci95", ev.ci95)

    def _eval_start(self, split: str) -> None:
        self._eval_totals = []

    #: where a checkpoint holds the trials of the iteration in progress (:meth:`on_save_checkpoint`)
    TRAINING_BATCH_KEY = "rnnmeta_training_batch"

    def checkpoint_identity(self) -> dict[str, Any]:
        return {"learner": type(self).__name__, "family": self.family.describe(), "n_episodes": self.n_episodes}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Write the agent's identity and, during training, its current iteration's trials (:attr:`TRAINING_BATCH_KEY`);
        the optimiser and schedule factories become specs (:class:`~rnnmeta.learners.base.InjectedOptimizerModule`)."""
        checkpoint["rnnmeta"] = self.checkpoint_identity()
        super().on_save_checkpoint(checkpoint)
        batch = getattr(self, "_batch", None)
        if batch is not None:
            checkpoint[self.TRAINING_BATCH_KEY] = apply_to_collection(batch, Tensor, lambda t: t.detach().cpu())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take back the iteration's trials that :meth:`on_save_checkpoint` wrote, so that a resumed run goes on
        exactly as one that never stopped: its remaining updates use the same trials (collected again, under the
        updated policy, they would differ), and their observations join the statistics when the next iteration
        starts, as they would have."""
        batch = checkpoint.get(self.TRAINING_BATCH_KEY)
        if batch is not None:
            self._batch = apply_to_collection(batch, Tensor, lambda t: t.to(self.device))


class SequenceAgent(MetaRLAgent):
    """A memory agent trained by PPO + GAE on whole trials (RL^2, SNAIL). See the module docstring.

    Args (beyond :class:`MetaRLAgent`'s):
        gamma: discount over the trial's steps.
        gae_lambda: GAE's lambda.
        clip: PPO's clip range epsilon.
        ppo_epochs: passes over each iteration's trials.
        ppo_minibatches: minibatches (of whole trials) per pass.
        value_coef: weight of the value loss.
        entropy_coef: weight of the entropy bonus.
        init_log_std: initial log standard deviation of the Gaussian policy (``Box`` actions; 0: std 1).
        scale_rewards: divide the rewards that GAE and the value head see by the running standard
            deviation of the discounted return (OpenAI baselines' ``VecNormalize`` reward scaling, measured
            in Engstrom et al. 2020, "Implementation Matters in Deep RL"). The value head then predicts
            returns of order 1 whatever the reward's scale, so its loss does not swamp the policy's
            gradient in the shared memory. The statistics are a buffer (:class:`RunningNorm`, in the
            checkpoint). A batch is scaled by the statistics merged with its own returns (so the first batch
            by its own), and the merge is kept once the batch's updates are done, as for the observations.
            The agent's own reward input stays unscaled.
        time_input: one more input channel, the step's position in the trial ``t / T`` (0 at the
            first step, ``(T - 1) / T`` at the last; ``T = n_episodes * horizon``), as in Wang et al.
            2016 ("Learning to reinforcement learn"), whose bandit agents read the time step beside the
            previous action and reward. The memory could count the steps itself; given, the position
            tells the policy how much of the trial is left to exploit what it has found.
        privileged_critic: the value head reads the trial's task beside the memory's features
            (:class:`PrivilegedCritic`, an MLP of ``critic_hidden`` tanh units over ``[h, task_features(tasks)]``);
            only during training, where the simulator knows the task. The policy and its inputs are unchanged, so a
            trained agent acts exactly as without it. PPO only: TRPO's value head is a ridge regression on the
            features (:meth:`fit_value_head`).
        critic_hidden: hidden units of the privileged critic.
        memory_value_coef: with ``privileged_critic``: weight of the loss of a second value head on the memory's
            features alone (``memory_value``, a linear head as without the privileged critic), trained on the same
            returns and used for nothing else. Without the privileged critic the value loss also teaches the memory
            what the history says about the rest of the trial; a critic that reads the task no longer needs the
            memory for that, so this head keeps that signal. 0 leaves it out.

    With :class:`~rnnmeta.rl.trpo.TRPO` as the ``optimizer`` (RL^2's and SNAIL's optimiser in their papers), each
    collected batch gets one trust-region step over the memory and the policy head: the loss is minus the
    importance-sampled surrogate ``mean(rho A)`` (minus the entropy bonus), the constraint the mean
    ``KL(pi_old || pi)`` over the batch's acted steps (:meth:`trpo_objective`). The value head is then fitted
    to the batch's returns by ridge regression on the updated memory's features, detached
    (:meth:`fit_value_head`, as rllab's linear baselines are fitted), so the value never moves the policy.
    ``clip``, ``ppo_epochs``, ``ppo_minibatches`` and ``value_coef`` are not used then.
    """

    #: ridge of :meth:`fit_value_head`, relative to the mean diagonal of the features' Gram matrix
    value_ridge = 1e-3

    def __init__(
        self,
        family: TaskFamily,
        n_episodes: int,
        gamma: float = 0.99,
        gae_lambda: float = 0.3,
        clip: float = 0.2,
        ppo_epochs: int = 4,
        ppo_minibatches: int = 1,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        init_log_std: float = 0.0,
        scale_rewards: bool = False,
        time_input: bool = False,
        privileged_critic: bool = False,
        critic_hidden: int = 128,
        memory_value_coef: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(family, n_episodes, **kwargs)
        self.init_log_std = float(init_log_std)
        if not isinstance(privileged_critic, bool):
            raise TypeError(f"{type(self).__name__}: privileged_critic must be true or false, got privileged_critic={privileged_critic!r}")
        check_positive(type(self).__name__, critic_hidden=critic_hidden)
        if privileged_critic and self.uses_trpo:
            raise ValueError(f"{type(self).__name__}: privileged_critic needs PPO (an optimizer such as torch.optim.Adam); with "
                             "TRPO the value head is fitted by ridge regression on the memory's features (fit_value_head)")
        if memory_value_coef < 0 or (memory_value_coef > 0 and not privileged_critic):
            raise ValueError(f"{type(self).__name__}: memory_value_coef must be >= 0, and > 0 only with privileged_critic=True, got "
                             f"memory_value_coef={memory_value_coef!r}, privileged_critic={privileged_critic!r}")
        self.privileged_critic, self.critic_hidden = privileged_critic, critic_hidden
        self.memory_value_coef = float(memory_value_coef)
        if not isinstance(scale_rewards, bool):
            raise TypeError(f"{type(self).__name__}: scale_rewards must be true or false, got scale_rewards={scale_rewards!r}")
        self.return_norm: Optional[RunningNorm] = RunningNorm(1) if scale_rewards else None
        check_positive(type(self).__name__, ppo_epochs=ppo_epochs, ppo_minibatches=ppo_minibatches)
        if ppo_minibatches > self.batch_trials:
            raise ValueError(f"{type(self).__name__}: ppo_minibatches={ppo_minibatches} exceeds batch_trials={self.batch_trials}")
        for name, v in (("gamma", gamma), ("gae_lambda", gae_lambda)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{type(self).__name__}: {name} must lie in [0, 1], got {name}={v!r}")
        if not clip > 0:
            raise ValueError(f"{type(self).__name__}: clip must be > 0, got clip={clip!r}")
        self.gamma, self.gae_lambda, self.clip = gamma, gae_lambda, clip
        self.ppo_epochs, self.ppo_minibatches = ppo_epochs, ppo_minibatches
        self.value_coef, self.entropy_coef = value_coef, entropy_coef
        if not isinstance(time_input, bool):
            raise TypeError(f"{type(self).__name__}: time_input must be true or false, got time_input={time_input!r}")
        self.time_input = time_input
        self.input_size = space_width(family.observation_space) + space_width(family.action_space) + 2 + int(time_input)
        self._batch: Optional[dict[str, Tensor]] = None
        self._reward_input = True  # False only inside reward_input_off()

    def build_heads(self, features: int) -> None:
        """Policy and value heads on ``features`` channels (call from the subclass's ``__init__``); the value head a
        :class:`PrivilegedCritic` with ``privileged_critic``."""
        self.policy = PolicyHead(features, self.family.action_space, self.init_log_std)
        if self.privileged_critic:
            probe = self.family.sample_tasks(1, torch.Generator().manual_seed(0))
            self.value = PrivilegedCritic(features, self.family.task_features(probe).shape[-1], self.critic_hidden)
            if self.memory_value_coef:
                self.memory_value = nn.Linear(features, 1)
        else:
            self.value = nn.Linear(features, 1)

    def value_estimate(self, h: Tensor, task_features: Optional[Tensor] = None) -> Tensor:
        """``V`` ``[...]`` for features ``h [..., F]``; ``task_features`` ``[B, P]`` (required with ``privileged_critic``,
        ignored without)."""
        if not self.privileged_critic:
            return self.value(h).squeeze(-1)
        if task_features is None:
            raise ValueError(f"{type(self).__name__} has privileged_critic=True: its value needs the tasks' features")
        return self.value(h, task_features).squeeze(-1)

    # -- the memory (subclasses) -------------------------------------------------------------------
    def initial_state(self, batch: int) -> Any:
        raise NotImplementedError

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One step ``x [B, D]`` -> ``(features [B, F], state)``."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """Whole trials ``x [B, T, D]`` -> ``features [B, T, F]``."""
        raise NotImplementedError

    # -- inputs ----------------------------------------------------------------------------------
    def make_input(
        self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, prev_done: Tensor, step: Optional[Tensor] = None
    ) -> Tensor:
        """``[encode(obs), prev_action features, prev_reward, prev_done(, step / T)]`` ``[..., D]`` (prev_action
        already encoded; the reward 0 inside :meth:`reward_input_off`). ``step`` (the step's index in the trial,
        shaped like ``prev_reward``) is read with ``time_input`` only, and required then."""
        reward = prev_reward if self._reward_input else torch.zeros_like(prev_reward)
        parts = [self.observation_features(obs), prev_action, reward.unsqueeze(-1).float(), prev_done.unsqueeze(-1).float()]
        if self.time_input:
            if step is None:
                raise ValueError(f"{type(self).__name__} has time_input=True: make_input needs the step index")
            parts.append((step.float() / self.trial_len).unsqueeze(-1))
        return torch.cat(parts, dim=-1)

    @contextlib.contextmanager
    def reward_input_off(self) -> Iterator["SequenceAgent"]:
        """Within the block the agent reads every previous reward as 0 (its other inputs as they are).

        The control of an evaluation: the task (a goal, a target velocity, a direction) reaches a memory
        agent only through its rewards, so the drop in return with the reward input off is what its
        memory's adaptation to the task earns, even where it adapts within the first episode and the
        returns of later episodes show no gain (``scripts/robot_compare.py``, ``reward_input_gain``). For
        evaluation only: the agent never trained that way.
        """
        self._reward_input = False
        try:
            yield self
        finally:
            self._reward_input = True

    def trajectory_inputs(self, traj: Trajectory) -> Tensor:
        """The inputs ``[B, T, D]`` the agent saw while acting in ``traj`` (previous action/reward/done shifted by one)."""
        def shift(x: Tensor) -> Tensor:
            return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)

        act = encode(self.family.action_space, traj.actions)
        step = torch.arange(traj.rewards.shape[1], device=traj.rewards.device).expand_as(traj.rewards)
        return self.make_input(traj.obs, shift(act), shift(traj.rewards), shift(traj.episode_end), step)

    def actor(self, greedy: bool = False) -> "SequenceActor":
        return SequenceActor(self, greedy)

    # -- PPO -------------------------------------------------------------------------------------
    @property
    def updates_per_iteration(self) -> int:
        """Updates per collected batch: ``ppo_epochs * ppo_minibatches``, or one trust-region step with TRPO."""
        return 1 if self.uses_trpo else self.ppo_epochs * self.ppo_minibatches

    def configure_optimizers(self) -> Any:
        """The injected optimiser; TRPO's over every parameter but the value head's (fitted by :meth:`fit_value_head`)."""
        if not self.uses_trpo:
            return super().configure_optimizers()
        value_params = {id(p) for p in self.value.parameters()}
        return self.optimizer_factory([p for p in self.parameters() if p.requires_grad and id(p) not in value_params])

    def collect(self, iteration: int) -> dict[str, Tensor]:
        """Trials of the training stream's ``iteration`` under the current policy, with advantages and returns."""
        was_training = self.training
        self.eval()
        tasks = self.train_tasks(iteration)
        with torch.no_grad():
            traj = run_trials(self.actor(), self.family, tasks, self.n_episodes,
                              seeded_generator(self.seed, "train-env", self.global_rank, iteration, device=self.device),
                              seeded_generator(self.seed, "train-actor", self.global_rank, iteration, device=self.device))
        self.train(was_training)
        rewards, discounted = traj.rewards, None
        if self.return_norm is not None:
            discounted = gae(rewards, torch.zeros_like(rewards), self.gamma, 1.0)[1]  # G_t = r_t + gamma G_{t+1}
            rewards = rewards / self.return_scale(discounted, traj.alive)
        adv, ret = gae(rewards, traj.extras["value"], self.gamma, self.gae_lambda)
        batch = {"inputs": self.trajectory_inputs(traj), "actions": traj.actions, "old_logp": traj.extras["logp"],
                 "advantages": adv, "returns": ret, "alive": traj.alive, "total": traj.total_reward, "obs": traj.obs,
                 "discounted": discounted}
        if self.privileged_critic:
            batch["task_features"] = self.family.task_features(tasks)
        return batch

    def return_scale(self, discounted: Tensor, alive: Tensor) -> Tensor:
        """The standard deviation ``[]`` of the discounted returns ``[B, T]`` (at the ``alive`` steps) merged with the
        running statistics, which are left as they are (``scale_rewards``)."""
        _, _, var = self.return_norm.merged(discounted.unsqueeze(-1), alive)
        return (var + self.return_norm.eps).sqrt().to(discounted.dtype).squeeze(0)

    def ppo_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The PPO loss of a minibatch of whole trials (recomputed with :meth:`features`)."""
        h = self.features(batch["inputs"])
        params = self.policy(h)
        logp = self.policy.log_prob(params, batch["actions"])
        mask = batch["alive"]
        adv = normalise_advantages(batch["advantages"], mask)
        objective = ppo_clip_objective(logp, batch["old_logp"], adv, self.clip, mask)
        v_loss = value_loss(self.value_estimate(h, batch.get("task_features")), batch["returns"], mask)
        entropy = (self.policy.entropy(params) * mask).sum() / mask.sum().clamp_min(1)
        loss = -objective + self.value_coef * v_loss - self.entropy_coef * entropy
        stats = {"objective": objective.detach(), "value_loss": v_loss.detach(), "entropy": entropy.detach()}
        if self.memory_value_coef:
            memory_v_loss = value_loss(self.memory_value(h).squeeze(-1), batch["returns"], mask)
            loss = loss + self.memory_value_coef * memory_v_loss
            stats["memory_value_loss"] = memory_v_loss.detach()
        return loss, stats

    def trpo_objective(self, batch: dict[str, Tensor], reference: list[Tensor]) -> tuple[Tensor, Tensor]:
        """TRPO's ``(loss, kl)`` at the current parameters (:class:`~rnnmeta.rl.trpo.TRPO`'s closure) on whole trials.

        ``loss``: ``-mean(rho A) - entropy_coef * entropy`` over the acted steps, ``rho = exp(logp - old_logp)``;
        ``kl``: the mean over those steps of ``KL(pi_ref || pi)``, where ``reference`` holds the distribution
        parameters ``[B, T, width]`` at the start of the step (filled, detached, on the first call).
        """
        h = self.features(batch["inputs"])
        params = self.policy(h)
        mask = batch["alive"]
        adv = normalise_advantages(batch["advantages"], mask)
        logp = self.policy.log_prob(params, batch["actions"])
        loss = -masked_mean(torch.exp(logp - batch["old_logp"]) * adv, mask)
        if self.entropy_coef:
            loss = loss - self.entropy_coef * masked_mean(self.policy.entropy(params), mask)
        log_std = self.policy.log_std
        if not reference:
            reference += [params.detach(), None if log_std is None else log_std.detach()]
        kl = action_kl(self.family.action_space, reference[0], params, reference[1], log_std)
        return loss, masked_mean(kl, mask)

    @torch.no_grad()
    def fit_value_head(self, batch: dict[str, Tensor]) -> None:
        """Set the value head to the ridge regression of the batch's ``returns`` on the memory's features ``[B, T, F]``
        at the acted steps (in float64; ridge :attr:`value_ridge` times the mean diagonal of the Gram matrix)."""
        h = self.features(batch["inputs"])
        x = torch.cat([h, torch.ones_like(h[..., :1])], -1).flatten(0, 1)  # [B * T, F + 1]: the bias as a feature
        solution = ridge_weights(x, batch["returns"].flatten(), batch["alive"].flatten(), self.value_ridge, relative=True)
        self.value.weight.copy_(solution[:-1].unsqueeze(0))
        self.value.bias.copy_(solution[-1:])

    def training_step(self, batch: Tensor, batch_idx: int) -> Optional[Tensor]:
        update = int(self.global_step)
        iteration, k = divmod(update, self.updates_per_iteration)
        if k == 0 or self._batch is None or self._batch.get("iteration") != iteration:
            if self._batch is not None:  # the previous batch's updates are done: its observations (and returns) join the statistics
                self.update_observation_statistics(self._batch["obs"], self._batch["alive"])
                if self.return_norm is not None:
                    self.return_norm.update(self._batch["discounted"].unsqueeze(-1), self._batch["alive"])
            self._batch = self.collect(iteration)
            self._batch["iteration"] = iteration
            self.log("train/return", self._batch["total"].mean(), prog_bar=True)
        if self.uses_trpo:
            reference: list[Tensor] = []
            self.trust_region_step(lambda: self.trpo_objective(self._batch, reference))
            self.fit_value_head(self._batch)
            return None
        epoch, mb = divmod(k, self.ppo_minibatches)
        perm = torch.randperm(self.batch_trials, generator=seeded_generator(self.seed, "minibatch", iteration, epoch))
        idx = perm.chunk(self.ppo_minibatches)[mb].to(self.device)
        keys = ("inputs", "actions", "old_logp", "advantages", "returns", "alive") + (("task_features",) if self.privileged_critic else ())
        loss, stats = self.ppo_loss({key: self._batch[key][idx] for key in keys})
        self.log("train/loss", loss.detach())
        self.log_dict({f"train/{k}": v for k, v in stats.items()})
        return loss


class SequenceActor:
    """Runs a :class:`SequenceAgent` as an :class:`~rnnmeta.rl.base.Actor`: memory fresh per trial, inputs shifted by one."""

    def __init__(self, agent: SequenceAgent, greedy: bool = False) -> None:
        self.agent, self.greedy = agent, greedy

    def begin_trials(self, family: TaskFamily, tasks: Tasks, n_episodes: int, generator: torch.Generator) -> None:
        check_same_spaces(self.agent.family, family, type(self.agent).__name__)
        if n_episodes * family.horizon > self.agent.trial_len:
            raise ValueError(
                f"{type(self.agent).__name__} was built for trials of {self.agent.trial_len} steps, got "
                f"n_episodes={n_episodes} x horizon {family.horizon}"
            )
        b = family.check_tasks(tasks)
        dev = next(iter(tasks.values())).device
        self.generator = generator
        self.state = self.agent.initial_state(b)
        self.prev_action = torch.zeros(b, space_width(family.action_space), device=dev)
        self.prev_reward = torch.zeros(b, device=dev)
        self.prev_done = torch.zeros(b, device=dev)
        self.step = torch.zeros(b, device=dev)  # the next step's index in the trial
        # the critic's view of the tasks (never the policy's)
        self.task_features = family.task_features(tasks) if self.agent.privileged_critic else None

    def act(self, obs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        agent = self.agent
        x = agent.make_input(obs, self.prev_action, self.prev_reward, self.prev_done, self.step)
        self.step = self.step + 1
        h, self.state = agent.step(x, self.state)
        action, logp = agent.policy.sample(agent.policy(h), self.generator, self.greedy)
        return action, {"logp": logp, "value": agent.value_estimate(h, self.task_features)}

    def observe(self, action: Tensor, reward: Tensor, episode_end: Tensor, alive: Tensor) -> None:
        self.prev_action = encode(self.agent.family.action_space, action)
        self.prev_reward = reward.float()
        self.prev_done = episode_end.float()


__all__ = ["MetaRLAgent", "PolicyHead", "PrivilegedCritic", "SequenceActor", "SequenceAgent", "action_entropy", "action_log_prob", "check_same_spaces", "sample_action"]
