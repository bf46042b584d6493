"""The `rnnmeta` command: fit from a shipped config, W&B offline run, checkpoint, test from it."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, omniglot_root_or_skip

CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))


def _rnnmeta(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "rnnmeta.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("config", [c for c in CONFIGS if c.parent.name != "compare"], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_parses_and_instantiates(config, tmp_path):
    from PIL import Image

    from rnnmeta.cli import build_cli

    extra = []
    if "ImageFolder" in config.read_text():  # point it at a generated folder of 10 classes x 3 images
        for c in range(10):
            (tmp_path / f"class{c}").mkdir()
            for i in range(3):
                Image.new("RGB", (90, 90), (25 * c, 10 * i, 0)).save(tmp_path / f"class{c}" / f"{i}.png")
        extra = [f"--data.init_args.dataset.init_args.root={tmp_path}"]
    if "TextFile" in config.read_text():  # point it at a generated JSON Lines file of 8 labels x 12 sentences
        import json

        lines = [json.dumps({"text": f"word{c} sentence number {i} about topic{c}", "label": f"label{c}"})
                 for c in range(8) for i in range(12)]
        (tmp_path / "my_text.jsonl").write_text("\n".join(lines) + "\n")
        extra = [f"--data.init_args.dataset.init_args.path={tmp_path / 'my_text.jsonl'}"]
    if config.parent.name == "rl":  # an agent owns its task family: no data module
        from rnnmeta.rl.agent import MetaRLAgent

        # (the accelerator-sized configs ask for a GPU; parsing and building them is what is checked here)
        cli = build_cli(["--config", str(config), "--trainer.logger", "false", "--trainer.accelerator", "cpu"], run=False)
        assert isinstance(cli.model, MetaRLAgent) and cli.datamodule is None
        return
    if config.parent.name == "online":  # the online protocol's own module and data (scripts/online_protocol.py)
        from rnnmeta.cli import RnnmetaCLI
        from rnnmeta.data import OnlineDataModule
        from rnnmeta.learners import OnlineMetaLearner

        cli = RnnmetaCLI(OnlineMetaLearner, OnlineDataModule, args=["--config", str(config)], run=False,
                         auto_configure_optimizers=False)
        assert cli.model.n_way == cli.datamodule.n_way
        return
    cli = build_cli(["--config", str(config), "--trainer.logger", "false", *extra], run=False)
    assert cli.model.kind == cli.datamodule.kind
    if cli.model.kind == "classification":
        assert cli.model.n_way == cli.datamodule.n_way


@pytest.mark.slow
def test_wrong_config_type_is_refused_with_the_key_named(tmp_path):
    cfg = yaml.safe_load((REPO / "configs/sinusoid/maml_k5.yaml").read_text())
    cfg["data"]["init_args"]["k_shot"] = "five"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = _rnnmeta(["fit", "--config", str(bad)], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "k_shot" in proc.stderr


@pytest.mark.slow
def test_print_config_shows_the_learner():
    proc = _rnnmeta(["fit", "--config", str(REPO / "configs/sinusoid/maml_k5.yaml"), "--print_config"], cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["model"]["class_path"] == "rnnmeta.learners.MAML"
    assert printed["model"]["init_args"]["inner_lr"] == 0.01


@pytest.mark.slow
def test_fit_writes_wandb_offline_run_and_checkpoint_then_test_prints_accuracy(tmp_path):
    root = omniglot_root_or_skip()
    config = REPO / "configs/omniglot/maml_5w1s.yaml"
    common = [
        "--config", str(config),
        f"--data.init_args.dataset.init_args.root={root}",
        "--data.init_args.dataset.init_args.download=false",
        "--data.init_args.meta_batch_size=4",
        "--data.init_args.q_queries=3",
        "--data.init_args.val_episodes=8",
        "--data.init_args.test_episodes=20",
        "--data.init_args.eval_batch_size=10",
        "--data.init_args.train_batches_per_epoch=5",
        "--trainer.logger.init_args.save_dir=runs",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        "--model.init_args.compile_query=false",  # compiling pays over a long run, not over 5 steps
    ]
    fit = _rnnmeta(["fit", *common, "--trainer.max_steps=5"], cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    runs = glob.glob(str(tmp_path / "runs/wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1, f"expected one offline W&B run, found {runs}"
    ckpts = glob.glob(str(tmp_path / "runs/**/checkpoints/last.ckpt"), recursive=True)
    assert len(ckpts) == 1, ckpts
    # the logged metrics are in the run's history records (the .wandb log stores their keys as text)
    data = Path(runs[0]).read_bytes()
    assert b"train/loss" in data and b"val/acc" in data
    test = _rnnmeta(["test", *common, f"--ckpt_path={ckpts[0]}"], cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    out = test.stdout + test.stderr
    assert "test/acc" in out and "test/acc_ci95" in out


@pytest.mark.parametrize("logger, pattern", [
    ("pytorch_lightning.loggers.CSVLogger", "runs/**/metrics.csv"),
    ("pytorch_lightning.loggers.TensorBoardLogger", "runs/**/events.out.tfevents.*"),
])
@pytest.mark.slow
def test_csv_and_tensorboard_loggers_work_from_the_command_line(tmp_path, logger, pattern):
    fit = _rnnmeta([
        "fit", "--config", str(REPO / "configs/sinusoid/maml_k5.yaml"),
        "--trainer.logger", logger, "--trainer.logger.init_args.save_dir", "runs",
        "--trainer.max_steps=4", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        "--data.init_args.train_batches_per_epoch=2", "--data.init_args.val_episodes=10",
        "--data.init_args.meta_batch_size=4",
    ], cwd=tmp_path, timeout=300)
    assert fit.returncode == 0, fit.stderr[-3000:]
    files = glob.glob(str(tmp_path / pattern), recursive=True)
    assert files, f"no {pattern} written"
    if logger.endswith("CSVLogger"):
        header = Path(files[0]).read_text().splitlines()[0]
        assert "train/loss" in header and "val/mse" in header
    assert glob.glob(str(tmp_path / "runs/**/checkpoints/last.ckpt"), recursive=True)


# ------------------------------------------------------------------------ issue 18: reliability
SINUSOID_LSTM = REPO / "configs/sinusoid/lstm_k5.yaml"
SINUSOID_MAML = REPO / "configs/sinusoid/maml_k5.yaml"
TINY = [
    "--trainer.max_steps=2", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    "--data.init_args.train_batches_per_epoch=2", "--data.init_args.val_episodes=10",
    "--data.init_args.test_episodes=10", "--data.init_args.meta_batch_size=4",
]


@pytest.fixture(scope="module")
def maml_checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of ``rnnmeta fit`` with the shipped sinusoid MAML config (2 steps, CSV log).

    Written by the command itself, so its hyperparameters carry LightningCLI's ``_class_path``:
    the case in which LightningCLI rebuilt the model from the checkpoint instead of the config.
    """
    from rnnmeta.cli import main

    folder = tmp_path_factory.mktemp("maml_fit")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setattr(sys, "argv", ["rnnmeta"])
        main(["fit", "--config", str(SINUSOID_MAML), "--trainer.logger=pytorch_lightning.loggers.CSVLogger",
              "--trainer.logger.init_args.save_dir=runs", *TINY])
    (path,) = folder.rglob("last.ckpt")
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def _main(args: list[str], monkeypatch) -> None:
    """Run the ``rnnmeta`` entry point in this process (as the console script would, minus the process)."""
    from rnnmeta.cli import main

    monkeypatch.setattr(sys, "argv", ["rnnmeta"])  # LightningCLI warns when sys.argv holds pytest's arguments
    main(args)


@pytest.mark.slow
def test_testing_a_checkpoint_of_another_learner_fails_naming_both_and_writes_nothing(maml_checkpoint, tmp_path):
    proc = _rnnmeta(["test", "--config", str(SINUSOID_LSTM), "--trainer.logger=false", f"--ckpt_path={maml_checkpoint}",
                     *TINY], cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(r"rnnmeta: error: ValueError: checkpoint \S+/last\.ckpt was saved from rnnmeta\.learners\.maml\.MAML, "
                     r"but the config builds rnnmeta\.learners\.lstm\.LSTMLearner", proc.stderr), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "test/mse" not in proc.stdout
    assert _listing(tmp_path) == [], "a refused checkpoint must leave no run folder"


def test_resuming_fit_from_another_learner_is_refused_before_loading(maml_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        _main(["fit", "--config", str(SINUSOID_LSTM), "--trainer.logger=false", f"--ckpt_path={maml_checkpoint}", *TINY],
              monkeypatch)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "saved from rnnmeta.learners.maml.MAML" in err and "LSTMLearner" in err
    assert _listing(tmp_path) == []


def test_a_checkpoint_of_another_architecture_names_the_tensors_and_hyperparameters(maml_checkpoint, tmp_path, monkeypatch):
    from rnnmeta.cli import build_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["rnnmeta"])
    with pytest.raises(ValueError, match=r"does not fit the configured MAML: backbone\.layers\.0\.weight \[40, 1\] in the "
                                         r"checkpoint, \[16, 1\] configured.*use the config the checkpoint was trained with"):
        build_cli(["test", "--config", str(SINUSOID_MAML), "--trainer.logger=false", f"--ckpt_path={maml_checkpoint}",
                   "--model.init_args.backbone.init_args.hidden=[16, 16]", *TINY])


def test_errors_after_parsing_are_one_message_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RNNMETA_DEBUG", raising=False)
    args = ["fit", "--config", str(SINUSOID_MAML), "--trainer.logger=false", "--model.init_args.optimizer.lr=.inf", *TINY]
    with pytest.raises(SystemExit) as info:
        _main(args, monkeypatch)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2:] == ["rnnmeta: error: ValueError: optimizer lr must be a finite number > 0, got inf",
                        "(run again with --debug, or RNNMETA_DEBUG=1, to see the traceback)"]
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got inf"):
        _main([*args, "--debug"], monkeypatch)
    monkeypatch.delenv("RNNMETA_DEBUG")  # --debug hands itself on to DDP ranks through the environment
    monkeypatch.setenv("RNNMETA_DEBUG", "1")
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got inf"):
        _main(args, monkeypatch)
    assert _listing(tmp_path) == []


@pytest.mark.slow
def test_without_a_logger_fit_and_test_keep_their_files_in_run_folders_of_their_own(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _main(["fit", "--config", str(SINUSOID_LSTM), "--trainer.logger=false", *TINY], monkeypatch)
    out = capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["runs"], "nothing may land in the current folder"
    (fit_dir,) = (tmp_path / "runs" / "LSTMLearner").iterdir()
    assert fit_dir.name.startswith("fit_")
    fit_config = (fit_dir / "config.yaml").read_bytes()
    last = fit_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    rel = fit_dir.relative_to(tmp_path).as_posix()
    assert re.search(rf"run folder +{re.escape(rel)}\n", out) and f"config           {rel}/config.yaml" in out
    assert re.search(rf"best checkpoint +{re.escape(rel)}/checkpoints/best-step=2\.ckpt \(val/mse = [\d.]+\)", out), out
    assert f"last checkpoint  {rel}/checkpoints/last.ckpt" in out

    test = _rnnmeta(["test", "--config", str(SINUSOID_LSTM), "--trainer.logger=false", f"--ckpt_path={last}", *TINY],
                    cwd=tmp_path, timeout=120)
    assert test.returncode == 0, test.stderr[-3000:]
    test_dirs = [p for p in (tmp_path / "runs" / "LSTMLearner").iterdir() if p != fit_dir]
    assert len(test_dirs) == 1 and test_dirs[0].name.startswith("test_")
    assert (fit_dir / "config.yaml").read_bytes() == fit_config, "test overwrote the fit's config"
    test_config = yaml.safe_load((test_dirs[0] / "config.yaml").read_text())
    assert test_config["ckpt_path"] == str(last) and test_config["model"]["class_path"] == "rnnmeta.learners.LSTMLearner"
    assert "test/mse" in test.stdout and f"checkpoint  {last}" in test.stdout
    assert f"run folder  {test_dirs[0].relative_to(tmp_path).as_posix()}" in test.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


@pytest.mark.slow
def test_wandb_runs_get_their_own_config_and_wandb_debug_logs_stay_beside_the_runs(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR")}
    env.update(WANDB_MODE="offline", PYTHONPATH=str(REPO), HOME=str(home), WANDB_CONFIG_DIR=str(home / "wandb_config"))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "rnnmeta.cli", "fit", "--config", str(SINUSOID_LSTM), *TINY], cwd=work,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (work / "runs" / "config.yaml").exists(), "every W&B run overwrote runs/config.yaml"
    (run_dir,) = (work / "runs" / "rnnmeta").iterdir()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    (offline,) = (work / "runs" / "wandb").glob(f"offline-run-*-{run_dir.name}")
    assert f"W&B run          offline, runs/wandb/{offline.name} (upload with: wandb sync runs/wandb/{offline.name})" in proc.stdout
    assert list((work / "runs" / "wandb" / "logs").glob("core-debug-*.log")), "W&B's debug logs are not beside the runs"
    assert not (home / ".cache" / "wandb").exists(), f"W&B wrote under ~/.cache/wandb: {_listing(home / '.cache' / 'wandb')}"


def test_the_data_section_decides_the_learners_task_kind_and_n_way():
    """kind and n_way are linked from the data module (LightningCLI link_arguments): stated once, in data."""
    from rnnmeta.cli import build_cli

    cli = build_cli(["--config", str(REPO / "configs/sinusoid/maml_k5.yaml"), "--trainer.logger", "false",
                     "--model.init_args.kind=classification"], run=False)
    assert cli.model.kind == "regression" == cli.datamodule.kind
    cfg = yaml.safe_load((REPO / "configs/sinusoid/lstm_k5.yaml").read_text())
    assert "kind" not in cfg["model"]["init_args"] and "n_way" not in cfg["model"]["init_args"]


def test_commands_keep_lightning_tips_and_third_party_chatter_out_of_the_console(caplog):
    import logging
    import warnings

    from rnnmeta.logging import quiet_console

    quiet_console()
    log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=log.name):
        log.info("💡 Tip: try installing something")
        log.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
    with warnings.catch_warnings(record=True) as seen:
        quiet_console()  # catch_warnings restores the filters on exit; install them again inside
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use something else", DeprecationWarning)
        warnings.warn("a warning of rnnmeta's own", UserWarning)
    assert [str(w.message) for w in seen] == ["a warning of rnnmeta's own"]


def test_predict_is_the_few_shot_job_not_lightnings_loop():
    from rnnmeta.cli import RnnmetaCLI

    assert set(RnnmetaCLI.subcommands()) == {"fit", "validate", "test"}


def test_threads_are_chosen_in_the_config_and_recorded(tmp_path, monkeypatch):
    import torch

    from rnnmeta.cli import build_cli

    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    try:
        cli = build_cli(["--config", str(REPO / "configs/sinusoid/maml_k5.yaml"), "--trainer.logger", "false",
                         "--threads", "1"], run=False)
        assert torch.get_num_threads() == 1 and cli.config["threads"] == 1
        cli = build_cli(["--config", str(REPO / "configs/sinusoid/maml_k5.yaml"), "--trainer.logger", "false",
                         "--threads", "null"], run=False)
        assert cli.config["threads"] == torch.get_num_threads()  # the number in force is what the run records
        with pytest.raises(ValueError, match=r"threads must be an integer >= 1 \(or null for torch's default\), got 0"):
            build_cli(["--config", str(REPO / "configs/sinusoid/maml_k5.yaml"), "--trainer.logger", "false",
                       "--threads", "0"], run=False)
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_fit_with_portable_numerics_restarts_itself_and_records_them(tmp_path):
    import torch

    from rnnmeta.numerics import portable_unsupported_reason

    if portable_unsupported_reason():
        pytest.skip(portable_unsupported_reason())
    args = ["fit", "--config", str(REPO / "configs/sinusoid/lstm_k5.yaml"), "--numerics", "portable", "--trainer.max_steps=2",
            "--trainer.logger.init_args.save_dir=runs", "--trainer.enable_progress_bar=false", "--data.init_args.val_episodes=4",
            "--data.init_args.eval_batch_size=4"]
    fit = _rnnmeta(args, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    mkl = "MKL branch COMPATIBLE, " if torch.backends.mkl.is_available() else ""
    assert f"numerics: portable ({mkl}ATen AVX2, oneDNN off, NNPACK off)" in fit.stdout + fit.stderr
    (saved,) = glob.glob(str(tmp_path / "runs/**/config.yaml"), recursive=True)
    assert yaml.safe_load(Path(saved).read_text())["numerics"] == "portable"
    bad = _rnnmeta(["fit", "--config", str(REPO / "configs/sinusoid/lstm_k5.yaml"), "--numerics", "fast"], cwd=tmp_path)
    assert bad.returncode != 0 and "fast" in bad.stderr


def test_the_command_profiles_nothing_unless_the_config_names_a_profiler(monkeypatch):
    from pytorch_lightning.profilers import SimpleProfiler

    from rnnmeta.callbacks import NullProfiler
    from rnnmeta.cli import build_cli

    monkeypatch.setattr(sys, "argv", ["rnnmeta"])
    config = str(REPO / "configs/sinusoid/maml_k5.yaml")
    trainer = build_cli(["--config", config, "--trainer.logger", "false"], run=False).trainer
    assert isinstance(trainer.profiler, NullProfiler)
    with trainer.profiler.profile("a"), trainer.profiler.profile("b"):  # reentrant: one shared context
        pass
    assert trainer.profiler.summary() == ""
    own = build_cli(["--config", config, "--trainer.logger", "false", "--trainer.profiler", "simple"], run=False).trainer
    assert isinstance(own.profiler, SimpleProfiler)
