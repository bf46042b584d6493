"""scripts/ablation_recurrent.py: the variants it runs are the config's learner with only the named arguments changed."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from helpers import REPO, omniglot_root_or_skip

sys.path.insert(0, str(REPO / "scripts"))
import ablation_recurrent  # noqa: E402


def namespace(**overrides) -> argparse.Namespace:
    args = dict(variants=None, steps=None, val_episodes=None, test_episodes=None, seeds=None, workers=None,
                omniglot_root="/data/omniglot", output_dir="out")
    args.update(overrides)
    return argparse.Namespace(**args)


def test_lstm_study_changes_only_the_variant_arguments():
    config = ablation_recurrent.lstm_study(namespace(variants=["readout", "random_head"]))
    assert sorted(config["learners"]) == ["random_head", "readout"]
    assert "reference" not in config  # the 20-way config's paired reference (maml) is not a row of the study
    assert config["max_steps"] == 200 and config["data"]["init_args"]["n_way"] == 20
    readout = config["learners"]["readout"]["model"]["init_args"]
    random_head = config["learners"]["random_head"]["model"]["init_args"]
    assert readout["readout_init"] == 0.3 and random_head["readout_init"] == 0.0
    assert random_head["hidden_size"] == 512 and random_head["input_bias"] == -2.0
    assert readout["input_bias"] is None and readout["hidden_size"] == 256
    # everything else is the 20-way config's lstm learner (optimizer, clipping)
    assert readout["optimizer"] == {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001}}
    assert config["learners"]["readout"]["trainer"] == {"gradient_clip_val": 1.0}
    # the later levers: the training data or one argument of the 20-way config's learner, the rest as sparse_h512
    later = ablation_recurrent.lstm_study(namespace(variants=["sparse_h512", "sparse_h512_fb6", "sparse_h512_q5"]))["learners"]
    assert later["sparse_h512_q5"]["train_data"] == {"q_queries": 5} and "train_data" not in later["sparse_h512"]
    assert later["sparse_h512_fb6"]["model"]["init_args"]["forget_bias"] == 6.0
    assert later["sparse_h512_q5"]["model"]["init_args"] == later["sparse_h512"]["model"]["init_args"]
    rates = ablation_recurrent.lstm_study(namespace(variants=["sparse_h512", "sparse_h512_lr3", "sparse_h512_b8"]))["learners"]
    assert rates["sparse_h512_lr3"]["model"]["init_args"]["optimizer"] == {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.003}}
    assert {k: v for k, v in rates["sparse_h512_lr3"]["model"]["init_args"].items() if k != "optimizer"} == {
        k: v for k, v in rates["sparse_h512"]["model"]["init_args"].items() if k != "optimizer"
    }
    assert rates["sparse_h512_b8"]["train_data"] == {"meta_batch_size": 8}
    assert rates["sparse_h512_b8"]["model"]["init_args"] == rates["sparse_h512"]["model"]["init_args"]


def test_snail_study_varies_protocol_and_initialisation():
    config = ablation_recurrent.snail_study(namespace())
    assert config["max_cpu_minutes"] == 3 and "max_steps" not in config
    runs = config["learners"]
    assert "reference" not in config
    assert runs["snail"]["train_data"] == {"meta_batch_size": 32, "q_queries": 1}
    assert runs["many_queries"]["train_data"] == {"meta_batch_size": 8, "q_queries": 5}
    assert runs["paper_init"]["model"]["init_args"]["similarity_init"] is False
    assert runs["snail"]["model"]["init_args"]["similarity_init"] is True


@pytest.mark.slow
def test_smoke_run_prints_the_variants_row(tmp_path):
    root = omniglot_root_or_skip()
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "ablation_recurrent.py"), "--steps", "2", "--test-episodes", "20",
         "--val-episodes", "10", "--workers", "1", "--variants", "random_head", "--omniglot-root", str(root),
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    table = out.stdout.split("Omniglot lstm_20w1s: variants, 2 meta-iterations each")[-1]
    # one variant: each run is a child process that imports torch and loads 20-way Omniglot (about 20 s);
    # the study's variants are built in process by the tests above
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| variant ")]
    assert [row.split("|")[1].strip() for row in rows] == ["random_head"], out.stdout[-2000:]
    for row in rows:
        accuracy = float(row.split("|")[3])
        assert 0.0 <= accuracy <= 1.0
    assert (tmp_path / "ablation_lstm_20w1s" / "results.csv").is_file()


def test_mann_study_varies_controller_initialisation_size_and_learning_rate():
    config = ablation_recurrent.mann_study(namespace())
    assert config["max_steps"] == 150 and sorted(config["learners"]) == sorted(ablation_recurrent.MANN_VARIANTS)
    runs = {name: run["model"]["init_args"] for name, run in config["learners"].items()}
    assert runs["key_value"]["controller_size"] == 200 and "key_value_init" not in runs["key_value"]
    assert runs["key_value"]["optimizer"]["init_args"] == {"lr": 0.001}
    assert runs["lstm_cell_init"]["key_value_init"] is False
    assert runs["small_64_lr3"]["controller_size"] == 64 and runs["small_64_lr3"]["optimizer"]["init_args"] == {"lr": 0.003}
    assert runs["random_head"]["readout_init"] == 0.0
    assert {r["memory_slots"] for r in runs.values()} == {128}


def test_mann_20way_study_carries_the_lstm_changes_over():
    config = ablation_recurrent.build(ablation_recurrent.STUDIES["mann_20w1s"], namespace())
    assert config["max_cpu_minutes"] == 2 and config["data"]["init_args"]["n_way"] == 20
    runs = {name: run["model"]["init_args"] for name, run in config["learners"].items()}
    assert sorted(runs) == ["key_value", "sparse", "sparse_c512", "sparse_read_c512"]
    read = runs["sparse_read_c512"]
    assert read["output_bias"] == -2.0 and read["zero_recurrent"] is True and read["controller_size"] == 512
    assert "output_bias" not in runs["sparse_c512"]  # the study's other rows keep the random output-gate bias
    assert runs["key_value"]["key_std"] == 2.0 and runs["key_value"]["input_bias"] is None
    assert runs["key_value"]["controller_size"] == 200
    assert runs["sparse"]["key_std"] == 4.0 and runs["sparse"]["input_bias"] == -2.0 and runs["sparse"]["controller_size"] == 200
    assert runs["sparse_c512"]["controller_size"] == 512
