"""Where a trained bandit agent departs from the greedy algorithm, pull by pull.

On Bernoulli bandits with few pulls (N = 10) the greedy algorithm on the Beta(1, 1) posterior means
is within a few tenths of a point of the Gittins index, so an agent below Gittins can be read
against it: at every pull of the test trials this script asks whether the agent's arm is one of
those with the highest posterior mean ``(s + 1) / (s + f + 2)`` given the trial so far, and counts
the situations where it is not (the pull, the chosen arm's successes and failures, the best
posterior mean then). It also prints the agent's mean total reward with sampled and with most
likely actions, and the greedy algorithm's and the Gittins index's on the same test trials (the
same tasks and environment randomness), each as a paired difference to the agent's.

Run:  python scripts/audit_bandit_agent.py results/<comparison>/runs/<agent>-seed<k> [--top 10]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch


def posterior_means(successes: torch.Tensor, failures: torch.Tensor) -> torch.Tensor:
    """Beta(1, 1) posterior means ``[B, K]`` of every arm."""
    return (successes + 1) / (successes + failures + 2)


def audit(actions: torch.Tensor, rewards: torch.Tensor, n_arms: int) -> tuple[torch.Tensor, Counter]:
    """Per pull, the share of trials whose arm has the highest posterior mean (``[T]``), and the departures.

    ``actions [B, T]`` (arm indices) and ``rewards [B, T]`` (0 or 1) of ``B`` trials. A departure is
    counted under ``(pull, "<s>s<f>f" of the chosen arm or "untried", best posterior mean rounded to 2)``.
    """
    trials, pulls = actions.shape
    successes, failures = torch.zeros(trials, n_arms), torch.zeros(trials, n_arms)
    agreement, departures = torch.zeros(pulls), Counter()
    for t in range(pulls):
        means = posterior_means(successes, failures)
        best = means == means.max(1, keepdim=True).values
        chosen = actions[:, t : t + 1]
        agrees = best.gather(1, chosen).squeeze(1)
        agreement[t] = agrees.double().mean()
        for i in torch.nonzero(~agrees).flatten().tolist():
            arm = int(chosen[i])
            s, f = int(successes[i, arm]), int(failures[i, arm])
            departures[(t + 1, "untried" if s + f == 0 else f"{s}s{f}f", round(float(means[i].max()), 2))] += 1
        successes.scatter_add_(1, chosen, rewards[:, t : t + 1])
        failures.scatter_add_(1, chosen, 1 - rewards[:, t : t + 1])
    return agreement, departures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder of `rnnmeta compare` on BernoulliBandits")
    parser.add_argument("--top", type=int, default=10, help="departures to list (default 10)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from rnnmeta.evaluation import paired_difference
    from rnnmeta.rl import BernoulliBandits
    from rnnmeta.rl.classical import make_baseline
    from rnnmeta.rl.compare import load_run_agent
    from rnnmeta.rl.trial import eval_tasks, evaluate

    agent = load_run_agent(args.run)
    family = agent.family
    if not isinstance(family, BernoulliBandits):
        raise SystemExit(f"{args.run}: the agent plays {family.describe()}; this audit reads Bernoulli bandits only")
    tasks = eval_tasks(family, agent.test_trials, agent.eval_seed)
    n = agent.n_episodes
    sampled = evaluate(agent.actor(), family, tasks, n, seed=agent.eval_seed, batch_trials=agent.batch_eval)
    print(f"{args.run}: {family.describe()}, {n} pulls, {sampled.trials} test trials (the comparison's)")
    print(f"agent, sampled actions: {sampled.mean:.3f} +- {sampled.ci95:.3f}")
    for name, actor in (("agent, most likely actions", agent.actor(greedy=True)), ("greedy algorithm", make_baseline("greedy")),
                        ("Gittins index", make_baseline("gittins"))):
        ev = evaluate(actor, family, tasks, n, seed=agent.eval_seed, batch_trials=agent.batch_eval)
        diff = paired_difference(ev.per_trial, sampled.per_trial)
        print(f"{name}: {ev.mean:.3f} +- {ev.ci95:.3f}; minus the agent's, paired: {diff.mean:+.3f} +- {diff.ci95:.3f}")

    trajectory = agent.rollout(family, tasks, seed=agent.eval_seed, greedy=True)
    agreement, departures = audit(trajectory.actions.long().reshape(len(trajectory.rewards), -1), trajectory.rewards, family.n_arms)
    print(f"\nmost likely actions on the highest posterior mean: {float(agreement.mean()):.3f} of all pulls")
    print("| pull | " + " | ".join(str(t + 1) for t in range(len(agreement))) + " |")
    print("|---|" + "---|" * len(agreement))
    print("| share | " + " | ".join(f"{float(a):.3f}" for a in agreement) + " |")
    print(f"\nthe {args.top} most frequent departures (pull, the chosen arm's record, the best posterior mean then): trials")
    for (pull, record, best), count in departures.most_common(args.top):
        print(f"  pull {pull}, chose a {record} arm while the best posterior mean was {best}: {count}")


if __name__ == "__main__":
    main()
