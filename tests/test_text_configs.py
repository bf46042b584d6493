"""The shipped text configs: a user's JSON Lines file trains and tests with `rnnmeta fit`/`rnnmeta test`; every CLINC150
config and comparison builds."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEXT_FILE_CONFIG = REPO / "configs" / "text_file" / "protonet_5w1s.yaml"
CLINC_CONFIGS = sorted((REPO / "configs" / "clinc150").glob("*.yaml"))
CLINC_DIR = REPO.parent / "shared" / "data" / "clinc150"


def synthetic_intents(path: Path, n_labels: int = 30, per_label: int = 10, seed: int = 0) -> Path:
    """A few hundred sentences: each label has 3 keywords (from a pool every split draws on) among filler words."""
    rng = random.Random(seed)
    filler = "please can you i want to the a my for me now could would like".split()
    pool = [f"topic{i}" for i in range(40)]
    rows = []
    for label in range(n_labels):
        keys = rng.sample(pool, 3)
        for _ in range(per_label):
            words = rng.sample(filler, 4) + rng.sample(keys, 2)
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "label": f"intent_{label}"})
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _main(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnmeta.cli import main

    monkeypatch.setattr(sys, "argv", ["rnnmeta"])
    main(args)


@pytest.mark.slow
def test_a_users_jsonl_file_trains_validates_and_tests_with_the_shipped_config(tmp_path: Path, monkeypatch, capsys) -> None:
    data = synthetic_intents(tmp_path / "my_text.jsonl")
    monkeypatch.chdir(tmp_path)
    common = [
        "--config", str(TEXT_FILE_CONFIG), f"--data.init_args.dataset.init_args.path={data}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--data.init_args.val_episodes=50", "--data.init_args.test_episodes=100",
    ]
    _main(["fit", *common, "--trainer.max_steps=150", "--data.init_args.train_batches_per_epoch=150"], monkeypatch)
    (metrics,) = tmp_path.rglob("metrics.csv")
    header, *lines = metrics.read_text().splitlines()
    column = header.split(",").index("val/acc")
    val_acc = [float(line.split(",")[column]) for line in lines if line.split(",")[column]]
    assert val_acc and val_acc[-1] > 0.5  # chance is 0.2: the keywords of unseen labels are matched
    (last,) = tmp_path.rglob("last.ckpt")
    capsys.readouterr()
    _main(["test", *common, "--trainer.logger=false", f"--ckpt_path={last}"], monkeypatch)
    out = capsys.readouterr().out
    assert "test/acc" in out


@pytest.mark.parametrize("config", CLINC_CONFIGS, ids=[p.stem for p in CLINC_CONFIGS])
def test_clinc150_configs_build_their_learner_and_data(config: Path) -> None:
    from rnnmeta.compare.config import build_run

    assert len(CLINC_CONFIGS) == 18
    cfg = yaml.safe_load(config.read_text())
    if not (CLINC_DIR / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {CLINC_DIR}")
    cfg["data"]["init_args"]["dataset"]["init_args"]["root"] = str(CLINC_DIR)
    datamodule, learner = build_run(cfg["model"], cfg["data"])
    assert learner.n_way == datamodule.n_way == int(config.stem.split("_")[-1].split("w")[0])
    assert datamodule.dataset.max_vocab <= learner.backbone.vocab_size


@pytest.mark.parametrize("setup", ["5w1s", "5w5s", "10w5s"])
def test_clinc150_comparisons_plan_every_learner_with_the_tfidf_floor(setup: str, monkeypatch) -> None:
    from rnnmeta.compare.config import plan_runs

    if not (CLINC_DIR / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {CLINC_DIR}")
    monkeypatch.chdir(REPO)
    cfg = yaml.safe_load((REPO / "configs" / "compare" / f"clinc150_{setup}.yaml").read_text())
    plans = plan_runs(cfg["data"], cfg["learners"], cfg["seeds"], cfg.get("max_steps"), cfg.get("max_cpu_minutes"),
                      None, cfg["threads"], cfg.get("trainer"), cfg.get("target"))
    names = [p.learner for p in plans]
    assert {"tfidf", "protonet", "maml", "snail", "lstm", "mann", "learned_optimizer"} <= set(names)
    tfidf = plans[names.index("tfidf")]
    assert tfidf.budget.max_steps == 0


def test_the_10_way_comparison_is_the_5_way_5_shot_one_with_10_classes_a_task() -> None:
    five = yaml.safe_load((REPO / "configs" / "compare" / "clinc150_5w5s.yaml").read_text())
    ten = yaml.safe_load((REPO / "configs" / "compare" / "clinc150_10w5s.yaml").read_text())

    def as_5_way(node):  # every n_way: 10 of the 10-way config read as n_way: 5
        if isinstance(node, dict):
            return {k: (5 if k == "n_way" and v == 10 else as_5_way(v)) for k, v in node.items()}
        return [as_5_way(v) for v in node] if isinstance(node, list) else node

    assert ten["data"]["init_args"]["n_way"] == 10 and as_5_way(ten["data"]) == five["data"]
    assert set(ten["learners"]) == set(five["learners"]) - {"protonet_cnn"}
    for name, row in ten["learners"].items():
        assert row["model"]["init_args"]["n_way"] == 10 and as_5_way(row) == five["learners"][name], name
    for key in ("seeds", "max_cpu_minutes", "threads", "workers", "trainer"):
        assert ten[key] == five[key], key


@pytest.mark.slow
def test_attention_vote_script_separates_snails_vote_from_its_output(tmp_path: Path) -> None:
    """scripts/attention_vote.py on the 1-shot comparison's SNAIL row: the untrained vote compares, the output does not yet."""
    import os
    import subprocess

    if not (CLINC_DIR / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {CLINC_DIR}")
    command = [sys.executable, "scripts/attention_vote.py", "--config", "configs/compare/clinc150_5w1s.yaml", "--episodes", "4"]

    def accuracies(*extra: str) -> dict[str, float]:
        out = subprocess.run([*command, *extra], cwd=REPO, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr[-2000:]
        return {line.split(" accuracy ")[0].strip(): float(line.split()[-1]) for line in out.stdout.splitlines() if " accuracy " in line}

    values = accuracies()
    assert values["attention vote"] > 0.35 > values["output"], values  # 100 episodes: 0.542 against 0.197 (docs/TEXT.md)
    bad = subprocess.run([*command[:4], "--learner", "protonet"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "not a SNAIL learner" in bad.stderr
    readout = accuracies("--vote-readout", "30")
    assert readout["output"] == readout["attention vote"], readout  # the output starts as the vote
    # the fixed-similarity row at 1 shot: its scores are the dot products of layer-normalised embeddings, all of one
    # length, so its vote is the cosine nearest neighbour (the class mean of one example)
    fixed = accuracies("--learner", "snail_fixed_similarity")
    assert fixed["attention vote"] == fixed["nearest mean (cosine) of its embeddings"], fixed
    # --ckpt: the weights come from the checkpoint, not from the seed
    import torch
    from rnnmeta.compare.config import build_run

    config = yaml.safe_load((REPO / "configs" / "compare" / "clinc150_5w1s.yaml").read_text())
    torch.manual_seed(0)
    _, learner = build_run(config["learners"]["snail"]["model"], config["data"])
    torch.save({"state_dict": learner.state_dict()}, tmp_path / "seed0.ckpt")
    assert accuracies("--seed", "7", "--ckpt", str(tmp_path / "seed0.ckpt")) == values != accuracies("--seed", "7")


@pytest.mark.slow
def test_untrained_accuracy_script_reads_rows_and_changed_rows() -> None:
    """scripts/untrained_accuracy.py: TF-IDF needs no training, so its untrained row is its accuracy; --set changes a row."""
    import os
    import subprocess

    if not (CLINC_DIR / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {CLINC_DIR}")
    command = [sys.executable, "scripts/untrained_accuracy.py", "--config", "configs/compare/clinc150_5w1s.yaml", "--episodes", "6"]
    out = subprocess.run([*command, "--learners", "tfidf", "lstm", "--set", "lstm:label_slots: true"], cwd=REPO,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    table = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in out.stdout.splitlines()
             if line.startswith("| ") and not line.startswith("| learner")}
    assert list(table) == ["tfidf", "lstm", "lstm (label_slots: true)"], out.stdout
    assert table["tfidf"] > 0.4 and all(0.0 <= v <= 1.0 for v in table.values()), table  # 5-way: chance 0.2
    assert table["lstm"] != table["lstm (label_slots: true)"], table
    bad = subprocess.run([*command, "--set", "nosuch:hidden_size: 8"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "ROW:ARGS" in bad.stderr


def test_the_subword_ablation_configs_differ_only_in_the_subword_settings() -> None:
    from rnnmeta.compare.config import build_run

    on = yaml.safe_load((REPO / "configs" / "compare" / "clinc150_subword_ablation.yaml").read_text())
    off = yaml.safe_load((REPO / "configs" / "compare" / "clinc150_subword_ablation_off.yaml").read_text())
    dataset = on["data"]["init_args"]["dataset"]["init_args"]
    buckets = dataset.pop("subword_buckets")
    assert buckets > 0 and dataset.pop("max_ngrams") >= 1
    for name, run in on["learners"].items():
        backbone = run["model"]["init_args"].get("backbone")
        if backbone is not None:  # every encoder reads the data's n-grams
            assert backbone["init_args"].pop("subword_buckets") == buckets, name
    for key in ("name", "seeds", "max_cpu_minutes", "threads", "data", "learners"):
        if key != "name":
            assert on[key] == off[key], key
    assert on["seeds"] == [0, 1] and on["data"]["init_args"]["test_episodes"] == 600
    if not (CLINC_DIR / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {CLINC_DIR}")
    cfg = yaml.safe_load((REPO / "configs" / "compare" / "clinc150_subword_ablation.yaml").read_text())
    cfg["data"]["init_args"]["dataset"]["init_args"]["root"] = str(CLINC_DIR)
    datamodule, learner = build_run(cfg["learners"]["protonet"]["model"], cfg["data"])
    assert datamodule.x_shape == (32, 17) and learner.backbone.subword_buckets == buckets == 5000


def test_the_10_cpu_minute_encoder_config_is_the_shipped_rows_at_a_longer_budget() -> None:
    shipped = yaml.safe_load((REPO / "configs" / "compare" / "clinc150_5w1s.yaml").read_text())
    longer = yaml.safe_load((REPO / "configs" / "compare" / "clinc150_encoders_10cpumin.yaml").read_text())
    assert set(longer["learners"]) == {"protonet", "protonet_transformer"}
    for name, row in longer["learners"].items():
        assert row == shipped["learners"][name], name
    assert longer["data"] == shipped["data"] and longer["max_cpu_minutes"] == 10 and shipped["max_cpu_minutes"] == 1
    assert longer["learners"]["protonet_transformer"]["model"]["init_args"]["backbone"]["class_path"] == "rnnmeta.nets.TextTransformer"


def test_a_learners_word_dropout_reaches_its_training_texts_only(monkeypatch) -> None:
    import torch

    from rnnmeta.compare import ComparisonConfigError
    from rnnmeta.compare.config import build_run, plan_runs

    if not (CLINC_DIR / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {CLINC_DIR}")
    monkeypatch.chdir(REPO)
    cfg = yaml.safe_load((REPO / "configs" / "compare" / "clinc150_5w1s.yaml").read_text())
    lstm = cfg["learners"]["lstm"]
    learners = {"lstm": lstm, "lstm_dropout": {**lstm, "train_data": {"word_dropout": 0.3}}}
    plain, noisy = plan_runs(cfg["data"], learners, [0], 2, None, None, 1, {}, None)
    assert noisy.data["init_args"]["dataset"]["init_args"]["word_dropout"] == 0.3
    assert plain.data["init_args"]["dataset"]["init_args"]["word_dropout"] == 0.0  # the default, filled in
    (plain_dm, _), (noisy_dm, _) = build_run(plain.model, plain.data), build_run(noisy.model, noisy.data)
    plain_dm.setup(), noisy_dm.setup()
    assert noisy_dm.dataset.split("train").word_dropout == 0.3 and noisy_dm.dataset.split("test").word_dropout == 0.0
    train_a, train_b = plain_dm.train_batch(0), noisy_dm.train_batch(0)
    assert torch.equal(train_a.support_y, train_b.support_y) and not torch.equal(train_a.support_x, train_b.support_x)
    assert torch.equal(plain_dm.eval_episode("test", 0).query_x, noisy_dm.eval_episode("test", 0).query_x)
    with pytest.raises(ComparisonConfigError, match="word_dropout must be a probability in \\[0, 1\\), got 1.5"):
        plan_runs(cfg["data"], {"lstm": {**lstm, "train_data": {"word_dropout": 1.5}}}, [0], 2, None, None, 1, {}, None)



@pytest.mark.slow
def test_the_head_only_learned_optimizer_learns_clinc150_intents_far_above_chance(tmp_path: Path, monkeypatch) -> None:
    """The shipped 5-way 1-shot config of the learned optimizer (``adapted: head``), 300 meta-iterations on real data,
    validated on 100 episodes of unseen intents: far above chance (0.2). At 1 CPU-minute (about 2,000 steps) it
    reaches 0.676 on the test intents (docs/TEXT.md)."""
    from rnnmeta.cli import build_cli

    if not (CLINC_DIR / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {CLINC_DIR}")
    monkeypatch.chdir(REPO)  # the config's root is relative to the repository
    cli = build_cli(["--config", "configs/clinc150/learned_optimizer_5w1s.yaml", "--threads", "1", "--trainer.logger", "false",
                     "--trainer.max_steps", "300", "--data.init_args.train_batches_per_epoch", "300",
                     "--data.init_args.val_episodes", "100", "--trainer.enable_checkpointing", "false",
                     "--trainer.callbacks", "[]", "--trainer.enable_progress_bar", "false",
                     "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.model.adapted == "head"
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (metrics,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    assert metrics["val/acc"] > 0.45, metrics


@pytest.mark.slow
@pytest.mark.parametrize("learner", ["lstm", "mann", "snail"])
def test_the_label_memory_learners_learn_clinc150_intents_beyond_their_untrained_vote(learner: str, tmp_path: Path,
                                                                                       monkeypatch) -> None:
    """The shipped 5-way 1-shot configs of LSTMLearner, MANN and SNAIL (a label memory with its vote readout): untrained, the
    vote over a random bag's cosines already compares; 400 meta-iterations on the training intents must take the
    learner clearly beyond that start on 100 test episodes of unseen intents, so the embedding learns."""
    from rnnmeta.cli import build_cli

    if not (CLINC_DIR / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {CLINC_DIR}")
    monkeypatch.chdir(REPO)
    cli = build_cli(["--config", f"configs/clinc150/{learner}_5w1s.yaml", "--threads", "1", "--trainer.logger", "false",
                     "--trainer.max_steps", "400", "--data.init_args.train_batches_per_epoch", "400",
                     "--data.init_args.test_episodes", "100", "--trainer.limit_val_batches", "0",
                     "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
                     "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                     "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.model.label_memory is not None and cli.model.label_memory.rows == "classes"
    (untrained,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (trained,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    assert untrained["test/acc"] > 0.45, untrained  # the untrained vote: 0.597 here (docs/TEXT.md)
    assert trained["test/acc"] > untrained["test/acc"] + 0.04, (untrained, trained)  # 0.673 (LSTM), 0.694 (MANN), 0.689 (SNAIL)


@pytest.mark.slow
def test_label_memory_vote_script_reads_the_class_rows_as_the_cosine_nearest_mean(tmp_path: Path) -> None:
    """scripts/label_memory_vote.py on the 5-shot comparison's LSTM row, untrained: the head starts as the vote, and a
    class row's cosine is the cosine with the class mean, so the vote, the output and the cosine rule agree."""
    import os
    import subprocess

    if not (CLINC_DIR / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {CLINC_DIR}")
    out = subprocess.run([sys.executable, "scripts/label_memory_vote.py", "--config", "configs/compare/clinc150_5w5s.yaml",
                          "--learner", "lstm_label_memory", "--episodes", "4"], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    values = {line.split(" accuracy ")[0].strip(): float(line.split()[-1]) for line in out.stdout.splitlines() if " accuracy " in line}
    assert values["label memory vote"] == values["output"] == values["nearest mean (cosine)"] > 0.4, values
    # the head's own weights start at 0: without the vote every query gets class 0, right for a fifth of them
    assert values["output without the vote"] == pytest.approx(0.2), values
    refused = subprocess.run([sys.executable, "scripts/label_memory_vote.py", "--config", "configs/compare/clinc150_5w5s.yaml",
                              "--learner", "lstm", "--episodes", "1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "without a label memory" in refused.stderr, refused.stderr[-2000:]


def test_the_label_memory_chain_ends_at_the_shipped_rows() -> None:
    """configs/compare/clinc150_5w5s_label_memory.yaml, the steps of docs/TEXT.md, ends at the label-memory rows the
    5-shot comparison ships: its last row of each learner is that row, unchanged."""
    chain = yaml.safe_load((REPO / "configs" / "compare" / "clinc150_5w5s_label_memory.yaml").read_text())
    shipped = yaml.safe_load((REPO / "configs" / "compare" / "clinc150_5w5s.yaml").read_text())
    assert chain["data"] == shipped["data"]
    for key in ("max_cpu_minutes", "threads", "trainer", "reference"):
        assert chain[key] == shipped[key], key
    for step, row in (("lstm_lm_g100", "lstm_label_memory"), ("mann_lm_g100", "mann_label_memory"),
                      ("snail_lm_micro", "snail_label_memory")):
        assert chain["learners"][step] == shipped["learners"][row], (step, row)
