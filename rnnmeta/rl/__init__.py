"""Meta-reinforcement learning: batched task families, trials, classical algorithms and agents (docs/RL.md)."""

from rnnmeta.rl.bandits import BernoulliBandits
from rnnmeta.rl.base import Actor, BatchedEnv, Box, Discrete, TaskFamily, Tasks, fingerprint, seeded_generator
from rnnmeta.rl.mdps import TabularMDPs, value_iteration
from rnnmeta.rl.agent import MetaRLAgent, SequenceAgent
from rnnmeta.rl.maml_rl import MAMLRL
from rnnmeta.rl.rl2 import RL2
from rnnmeta.rl.snail_agent import SNAILAgent
from rnnmeta.rl.trpo import TRPO
from rnnmeta.rl.trial import Evaluation, Trajectory, eval_tasks, evaluate, run_trials

__all__ = [
    "MAMLRL",
    "MetaRLAgent",
    "RL2",
    "SNAILAgent",
    "SequenceAgent",
    "TRPO",
    "Actor",
    "BatchedEnv",
    "BernoulliBandits",
    "Box",
    "Discrete",
    "Evaluation",
    "TabularMDPs",
    "TaskFamily",
    "Tasks",
    "Trajectory",
    "eval_tasks",
    "evaluate",
    "fingerprint",
    "run_trials",
    "seeded_generator",
    "value_iteration",
]
