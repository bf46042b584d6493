"""``rnnmeta predict``: adapt a checkpoint's learner to a support folder once, one CSV row per query file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from rnnmeta.cli import main as cli_main
from rnnmeta.learners import MAML, SNAIL, ProtoNet
from rnnmeta.nets import MLP, Conv4
from rnnmeta.predict import load_learner, predict

SIDE, CLASSES = 16, ("circle", "cross", "stripes")


def pattern(name: str, rng: np.random.Generator) -> np.ndarray:
    """A 16x16 uint8 drawing of class ``name`` with noise: three visibly different classes."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    if name == "circle":
        base = ((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 30).astype(float)
    elif name == "cross":
        base = ((abs(yy - 7.5) < 2) | (abs(xx - 7.5) < 2)).astype(float)
    else:
        base = (yy % 4 < 2).astype(float)
    return np.clip(255 * (0.8 * base + 0.2 * rng.random((SIDE, SIDE))), 0, 255).astype(np.uint8)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """support/<class>/<k>.png (2 per class), query/ with 6 images (two in a sub-folder) and a hidden file."""
    rng = np.random.default_rng(0)
    support, query = tmp_path / "support", tmp_path / "query"
    for name in CLASSES:
        (support / name).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(pattern(name, rng), mode="L").save(support / name / f"{k}.png")
    truth = {}
    (query / "more").mkdir(parents=True)
    for i, name in enumerate(CLASSES * 2):
        rel = f"more/q{i}.png" if i >= 4 else f"q{i}.png"
        Image.fromarray(pattern(name, rng), mode="L").save(query / rel)
        truth[rel] = name
    (query / ".DS_Store").write_bytes(b"\x00junk")
    return support, query, truth


def save_checkpoint(learner: pl.LightningModule, path: Path) -> Path:
    """Write ``learner`` as Lightning does (with rnnmeta's identity record and backbone spec)."""
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    trainer.strategy.connect(learner)
    trainer.save_checkpoint(path)
    return path


def perturbed(learner: pl.LightningModule) -> pl.LightningModule:
    """Move the weights away from any seed's initialisation, so a learner not loaded from the file would differ."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return learner.eval()


def read_png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)[None]


def direct(learner, support: Path, query: Path) -> dict[str, tuple[str, float]]:
    """What the learner says when called on the tensors directly (support in class order, all queries at once)."""
    sx = torch.stack([read_png(p) for c in CLASSES for p in sorted((support / c).iterdir())])[None]
    sy = torch.tensor([i for i in range(len(CLASSES)) for _ in range(2)])[None]
    files = sorted(p.relative_to(query).as_posix() for p in query.rglob("*.png"))
    qx = torch.stack([read_png(query / f) for f in files])[None]
    with torch.set_grad_enabled(learner.needs_grad_at_eval):
        probs = torch.softmax(learner(sx, sy, qx)[0].detach().double(), -1)
    p, best = probs.max(-1)
    return {f: (CLASSES[int(b)], float(v)) for f, b, v in zip(files, best, p)}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def small_protonet() -> ProtoNet:
    torch.manual_seed(0)
    return perturbed(ProtoNet(backbone=Conv4(hidden=8, image_size=SIDE, track_running_stats=True), n_way=3))


# ------------------------------------------------------------------ the job
def test_csv_rows_equal_the_learner_called_directly(folders, tmp_path):
    support, query, truth = folders
    learner = small_protonet()
    ckpt = save_checkpoint(learner, tmp_path / "protonet.ckpt")
    out = tmp_path / "preds.csv"
    cli_main(["predict", "--ckpt_path", str(ckpt), "--support", str(support), "--query", str(query),
              "--output", str(out), "--threads", "1"])
    rows = read_csv(out)
    expected = direct(learner, support, query)
    assert [r["file"] for r in rows] == ["more/q4.png", "more/q5.png", "q0.png", "q1.png", "q2.png", "q3.png"]
    for row in rows:
        cls, prob = expected[row["file"]]
        assert row["predicted_class"] == cls
        assert float(row["probability"]) == pytest.approx(prob, abs=2e-6)
        assert 1 / 3 <= float(row["probability"]) <= 1
    # the file is a function of its inputs: the same command again writes the same bytes
    again = tmp_path / "again.csv"
    predict(str(ckpt), str(support), str(query), output=str(again))
    assert again.read_text() == out.read_text()
    # a ProtoNet's answers do not depend on the support order (--seed) or on how the queries are batched
    other = predict(str(ckpt), str(support), str(query), output=str(tmp_path / "other.csv"), seed=5, batch_size=2)
    for p, row in zip(other, rows):
        assert p.file == row["file"] and p.predicted_class == row["predicted_class"]
        assert p.probability == pytest.approx(float(row["probability"]), abs=1e-5)


def test_an_inner_loop_learner_transductive_queries(folders, tmp_path, capsys):
    """MAML adapts with autograd at evaluation and, with batch norm over the queries, gets them all in one call."""
    support, query, _ = folders
    torch.manual_seed(0)
    learner = perturbed(MAML(backbone=Conv4(hidden=4, image_size=SIDE), n_way=3, eval_inner_steps=2))
    assert learner.needs_grad_at_eval
    ckpt = save_checkpoint(learner, tmp_path / "maml.ckpt")
    preds = predict(str(ckpt), str(support), str(query), batch_size=1)  # to standard output
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "file,predicted_class,probability" and len(printed) == 7
    expected = direct(learner, support, query)
    for p in preds:
        assert (p.predicted_class, p.probability) == (expected[p.file][0], pytest.approx(expected[p.file][1], abs=1e-5))


def test_an_order_dependent_learner_sees_the_support_in_the_seeded_order(folders, tmp_path):
    """SNAIL reads the support set as a sequence: predict shows it in torch.randperm(S, seed) order of the sorted files."""
    support, query, _ = folders
    torch.manual_seed(0)
    learner = perturbed(SNAIL(backbone=Conv4(hidden=4, image_size=SIDE, track_running_stats=True), n_way=3, max_shots=2,
                              key_sizes=[8, 8], value_sizes=[8, 8], tc_filters=[8]))
    ckpt = save_checkpoint(learner, tmp_path / "snail.ckpt")
    preds = predict(str(ckpt), str(support), str(query), output=str(tmp_path / "p.csv"), seed=3)
    files = [p for c in CLASSES for p in sorted((support / c).iterdir())]
    labels = torch.tensor([i for i in range(3) for _ in range(2)])
    order = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    sx = torch.stack([read_png(files[i]) for i in order.tolist()])[None]
    qx = torch.stack([read_png(query / p.file) for p in preds])[None]
    with torch.no_grad():
        probs = torch.softmax(learner(sx, labels[order][None], qx)[0].double(), -1)
    for p, row in zip(preds, probs):
        assert p.predicted_class == CLASSES[int(row.argmax())] and p.probability == pytest.approx(float(row.max()), abs=1e-6)
    # another order gives other answers for a sequence learner (so the order above is the one that was used)
    shuffled = predict(str(ckpt), str(support), str(query), output=str(tmp_path / "q.csv"), seed=4)
    assert [p.probability for p in shuffled] != pytest.approx([p.probability for p in preds], abs=1e-6)


def test_the_learner_is_rebuilt_from_the_checkpoint_alone(tmp_path):
    learner = small_protonet()
    ckpt = save_checkpoint(learner, tmp_path / "p.ckpt")
    loaded = load_learner(ckpt)
    assert type(loaded) is ProtoNet and not loaded.training and loaded.backbone.init_args["hidden"] == 8
    for (name, a), b in zip(learner.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------ bad input: one line, exit status 1
def run_cli(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        cli_main(["predict", *args])
    err = capsys.readouterr().err
    assert exc.value.code == 1, err
    assert err.startswith("rnnmeta: error: ") and "--debug" in err
    return err.splitlines()[0]


@pytest.fixture()
def protonet_ckpt(tmp_path: Path) -> Path:
    return save_checkpoint(small_protonet(), tmp_path / "protonet.ckpt")


def test_missing_folders(folders, protonet_ckpt, tmp_path, capsys):
    support, query, _ = folders
    msg = run_cli(capsys, "--ckpt_path", str(protonet_ckpt), "--support", str(tmp_path / "nope"), "--query", str(query))
    assert "FileNotFoundError: support folder" in msg and "nope" in msg
    msg = run_cli(capsys, "--ckpt_path", str(protonet_ckpt), "--support", str(support), "--query", str(tmp_path / "none"))
    assert "FileNotFoundError: query folder" in msg
    msg = run_cli(capsys, "--ckpt_path", str(tmp_path / "x.ckpt"), "--support", str(support), "--query", str(query))
    assert "FileNotFoundError: checkpoint" in msg


def test_wrong_number_of_classes(folders, protonet_ckpt, capsys):
    support, query, _ = folders
    (support / "cross").rename(support / ".cross")  # hidden: not a class
    msg = run_cli(capsys, "--ckpt_path", str(protonet_ckpt), "--support", str(support), "--query", str(query))
    assert "has 2 classes (circle, stripes) but the learner was trained for n_way=3" in msg


def test_files_that_are_not_images(folders, protonet_ckpt, capsys):
    support, query, _ = folders
    (query / "notes.txt").write_text("not an image")
    msg = run_cli(capsys, "--ckpt_path", str(protonet_ckpt), "--support", str(support), "--query", str(query))
    assert "query file" in msg and "notes.txt is not an image file" in msg and ".png" in msg
    (query / "notes.txt").unlink()
    (support / "circle" / "broken.png").write_text("not a png")
    msg = run_cli(capsys, "--ckpt_path", str(protonet_ckpt), "--support", str(support), "--query", str(query))
    assert "cannot read image" in msg and "broken.png" in msg


def test_checkpoints_that_are_not_rnnmeta_learners(folders, tmp_path, capsys):
    support, query, _ = folders
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {}}, foreign)
    msg = run_cli(capsys, "--ckpt_path", str(foreign), "--support", str(support), "--query", str(query))
    assert "was not written by an rnnmeta learner" in msg
    text = tmp_path / "text.ckpt"
    text.write_text("hello")
    msg = run_cli(capsys, "--ckpt_path", str(text), "--support", str(support), "--query", str(query))
    assert "CorruptCheckpointError" in msg
    outside = tmp_path / "outside.ckpt"
    saved = torch.load(save_checkpoint(small_protonet(), tmp_path / "p.ckpt"), weights_only=True)
    saved["rnnmeta"]["learner"] = "os.system"
    torch.save(saved, outside)
    msg = run_cli(capsys, "--ckpt_path", str(outside), "--support", str(support), "--query", str(query))
    assert "'os.system', outside the rnnmeta package" in msg


def test_regression_learners_are_refused(folders, tmp_path, capsys):
    support, query, _ = folders
    torch.manual_seed(0)
    ckpt = save_checkpoint(MAML(kind="regression", backbone=MLP(in_features=1, hidden=[8], out_features=0)), tmp_path / "r.ckpt")
    msg = run_cli(capsys, "--ckpt_path", str(ckpt), "--support", str(support), "--query", str(query),
                  "--image_size", "16", "--channels", "1")
    assert "is a regression learner" in msg


def test_more_shots_than_the_learner_was_built_for(folders, tmp_path, capsys):
    support, query, _ = folders
    torch.manual_seed(0)
    ckpt = save_checkpoint(SNAIL(backbone=Conv4(hidden=4, image_size=SIDE, track_running_stats=True), n_way=3, max_shots=1),
                           tmp_path / "snail.ckpt")
    msg = run_cli(capsys, "--ckpt_path", str(ckpt), "--support", str(support), "--query", str(query))
    assert "max_shots=1" in msg and "circle (2)" in msg


def test_parse_errors_exit_with_status_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["predict", "--ckpt_path", "x.ckpt"])
    assert exc.value.code == 2 and "rnnmeta predict:" in capsys.readouterr().err


# ------------------------------------------------------------------ text, where the text data layer exists
def test_text_files_with_the_checkpoints_vocabulary(tmp_path):
    vocab_module = pytest.importorskip("rnnmeta.data.vocab")
    text_nets = pytest.importorskip("rnnmeta.nets.text")
    texts = {"greet": ["hello there", "hi friend"], "bye": ["goodbye now", "see you later"],
             "thanks": ["thank you", "many thanks"]}
    vocabulary = vocab_module.Vocabulary.build([t for ts in texts.values() for t in ts])
    torch.manual_seed(0)
    learner = perturbed(ProtoNet(backbone=text_nets.BagOfEmbeddings(vocab_size=len(vocabulary) + 2, embedding_dim=8), n_way=3))
    ckpt = tmp_path / "text.ckpt"
    saved = torch.load(save_checkpoint(learner, ckpt), weights_only=True)
    saved["EpisodicDataModule"] = {"dataset": {"vocabulary": vocabulary.state_dict(), "max_length": 6}}
    torch.save(saved, ckpt)
    for label, items in texts.items():
        (tmp_path / "support" / label).mkdir(parents=True)
        for i, t in enumerate(items):
            (tmp_path / "support" / label / f"{i}.txt").write_text(t)
    (tmp_path / "query").mkdir()
    (tmp_path / "query" / "a.txt").write_text("hello friend")
    (tmp_path / "query" / "b.txt").write_text("thanks a lot")
    preds = predict(str(ckpt), str(tmp_path / "support"), str(tmp_path / "query"), output=str(tmp_path / "p.csv"))
    names = sorted(texts)
    sx = vocabulary.encode_batch([t for n in names for t in texts[n]], 6)[None]
    sy = torch.tensor([i for i in range(3) for _ in range(2)])[None]
    qx = vocabulary.encode_batch(["hello friend", "thanks a lot"], 6)[None]
    with torch.no_grad():
        probs = torch.softmax(learner(sx, sy, qx)[0].double(), -1)
    assert [p.file for p in preds] == ["a.txt", "b.txt"]
    for p, row in zip(preds, probs):
        assert p.predicted_class == names[int(row.argmax())] and p.probability == pytest.approx(float(row.max()), abs=1e-6)


# ------------------------------------------------------------------ the whole path: rnnmeta fit on any dataset, then predict
class Blobs(torch.utils.data.Dataset):
    """9 classes x 8 noisy copies of a fixed random 16x16 uint8 image per class (a torchvision-style dataset)."""

    def __len__(self) -> int:
        return 72

    def __getitem__(self, i: int):
        label = i % 9
        base = torch.rand(1, SIDE, SIDE, generator=torch.Generator().manual_seed(label))
        noise = torch.rand(1, SIDE, SIDE, generator=torch.Generator().manual_seed(100 + i))
        return (255 * (0.8 * base + 0.2 * noise)).to(torch.uint8), label


def test_fit_on_a_labelled_dataset_then_predict_from_its_checkpoint(folders, tmp_path, monkeypatch, capsys):
    """`rnnmeta fit` with LabelledDataset in the config (2 steps), then `rnnmeta predict` with the run's checkpoint."""
    import sys

    import yaml

    support, query, _ = folders
    config = {
        "trainer": {"max_steps": 2, "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / "run"), "accelerator": "cpu"},
        "model": {"class_path": "rnnmeta.learners.ProtoNet", "init_args": {
            "backbone": {"class_path": "rnnmeta.nets.Conv4", "init_args": {"hidden": 4, "image_size": SIDE,
                                                                           "track_running_stats": True}}}},
        "data": {"class_path": "rnnmeta.data.EpisodicDataModule", "init_args": {
            "dataset": {"class_path": "rnnmeta.data.LabelledDataset", "init_args": {
                "dataset": {"class_path": f"{__name__}.Blobs"},
                "split_labels": {"train": [0, 1, 2], "val": [3, 4, 5], "test": [6, 7, 8]}}},
            "n_way": 3, "k_shot": 1, "q_queries": 2, "meta_batch_size": 2, "train_batches_per_epoch": 2,
            "val_episodes": 4, "test_episodes": 4}},
    }
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(sys, "argv", ["rnnmeta"])
    cli_main(["fit", "--config", str(path)])
    (last,) = (tmp_path / "run").rglob("*.ckpt")  # Lightning's default checkpoint: epoch=0-step=2.ckpt
    cli_main(["predict", "--ckpt_path", str(last), "--support", str(support), "--query", str(query),
              "--output", str(tmp_path / "p.csv")])
    rows = read_csv(tmp_path / "p.csv")
    expected = direct(load_learner(last), support, query)
    assert len(rows) == 6
    for row in rows:
        assert row["predicted_class"] == expected[row["file"]][0]
        assert float(row["probability"]) == pytest.approx(expected[row["file"]][1], abs=2e-6)
