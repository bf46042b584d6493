"""scripts/audit_bandit_agent.py: pulls read against the greedy algorithm's posterior means, and the departures named."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
import audit_bandit_agent  # noqa: E402


def test_audit_counts_each_pull_that_leaves_the_highest_posterior_mean():
    # trial 0: arm 0 fails, arm 0 again (1/3 while untried arms are at 1/2: a departure), then arm 1 (untried: greedy)
    # trial 1: arm 2 pays, arm 2 again (2/3: greedy), arm 2 fails (1/2, tied with the untried arms: greedy)
    actions = torch.tensor([[0, 0, 1], [2, 2, 2]])
    rewards = torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    agreement, departures = audit_bandit_agent.audit(actions, rewards, n_arms=3)
    assert agreement.tolist() == [1.0, 0.5, 1.0]
    assert departures == {(2, "0s1f", 0.5): 1}


@pytest.mark.slow
def test_the_script_audits_a_comparison_run(tmp_path):
    from rnnmeta.compare import main as compare_main

    cfg = {"name": "tiny", "family": {"class_path": "rnnmeta.rl.BernoulliBandits", "init_args": {"n_arms": 3}}, "n_episodes": 4,
           "test_trials": 30, "val_trials": 10, "seeds": [0], "max_steps": 2, "val_check_interval": 2, "baselines": [],
           "output_dir": str(tmp_path), "learners": {"rl2": {"model": {"class_path": "rnnmeta.rl.RL2",
                                                                        "init_args": {"hidden_size": 8, "batch_trials": 4}}}}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    compare_main(["--config", str(tmp_path / "tiny.yaml")])
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "audit_bandit_agent.py"), str(tmp_path / "tiny" / "runs" / "rl2-seed0")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "30 test trials" in out.stdout and "Gittins index:" in out.stdout and "| share | 1.000 |" in out.stdout
