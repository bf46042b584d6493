"""Text data: tokenisation, the vocabulary (no test-class word, checkpoint round trip), CLINC150, TextFile."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from rnnmeta.data import CLINC150, ChecksumError, EpisodicDataModule, TextFile, Vocabulary, tokenize
from rnnmeta.data.vocab import PAD_ID, UNK_ID

REPO = Path(__file__).resolve().parents[1]
CLINC_DIR = REPO.parent / "shared" / "data" / "clinc150"


def clinc_root_or_skip() -> Path:
    if (CLINC_DIR / "data_full.json").exists():
        return CLINC_DIR
    msg = f"CLINC150 not found at {CLINC_DIR}: put clinc/oos-eval's data/data_full.json and data/domains.json there"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def clinc() -> CLINC150:
    return CLINC150(str(clinc_root_or_skip()))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def labelled_rows(n_labels: int = 6, per_label: int = 8) -> list[dict]:
    return [
        {"text": f"sentence {i} about topic{label} with word{label}x{i % 3}", "label": f"label{label}"}
        for label in range(n_labels)
        for i in range(per_label)
    ]


# ------------------------------------------------------------------------------------ vocabulary
def test_tokenize_normalises_and_splits_punctuation() -> None:
    assert tokenize("What's  2+2?") == ["what", "'", "s", "2", "+", "2", "?"]
    assert tokenize("ＣＡＦÉ") == ["café"]  # NFKC folds full-width letters


def test_vocabulary_ids_order_and_state_round_trip() -> None:
    vocab = Vocabulary.build(["b a a", "c a b", "d"], min_freq=1)
    assert vocab.tokens[:2] == ["<pad>", "<unk>"] and vocab.tokens[2:] == ["a", "b", "c", "d"]
    assert vocab.encode("a zzz d") == [2, UNK_ID, 5]
    ids = vocab.encode_batch(["a b", "", "a b c d a b"], max_length=4)
    assert ids.tolist() == [[2, 3, 0, 0], [0, 0, 0, 0], [2, 3, 4, 5]]
    assert Vocabulary.from_state_dict(vocab.state_dict()) == vocab
    assert Vocabulary.build(["b a a", "c a b", "d"], min_freq=2).tokens[2:] == ["a", "b"]
    assert len(Vocabulary.build(["b a a", "c a b", "d"], max_size=3)) == 3
    with pytest.raises(ValueError, match="not an rnnmeta vocabulary"):
        Vocabulary.from_state_dict({"tokens": ["<pad>", "<unk>"]})
    with pytest.raises(ValueError, match="appears twice"):
        Vocabulary(["<pad>", "<unk>", "a", "a"])


# -------------------------------------------------------------------------------------- CLINC150
def test_clinc150_domain_split_sizes_and_no_shared_domain(clinc: CLINC150) -> None:
    sizes = {k: len(v) for k, v in clinc.class_splits.items()}
    assert sizes == {"train": 75, "val": 30, "test": 45}
    assert all(len(clinc.texts[i]) == 150 for i in clinc.texts) and len(clinc.texts) == 150
    domain_of = {i: d for d, intents in clinc.domains.items() for i in intents}
    split_domains = {s: {domain_of[i] for i in v} for s, v in clinc.class_splits.items()}
    assert not (split_domains["train"] & split_domains["test"]) and not (split_domains["train"] & split_domains["val"])
    assert split_domains["test"] == {"banking", "travel", "home"}
    for split in ("train", "val", "test"):
        listed = (CLINC_DIR / "splits" / "domain" / f"{split}.txt").read_text().split()
        assert sorted(listed) == clinc.class_splits[split]
    assert [len(clinc.oos_texts(k)) for k in CLINC150.OOS_KEYS] == [100, 100, 1000]


def test_no_test_class_word_enters_the_vocabulary(clinc: CLINC150) -> None:
    train_words = {t for i in clinc.class_splits["train"] for text in clinc.texts[i] for t in tokenize(text)}
    held_out = {t for s in ("val", "test") for i in clinc.class_splits[s] for text in clinc.texts[i] for t in tokenize(text)}
    vocab_words = set(clinc.vocabulary.tokens[2:])
    assert vocab_words <= train_words
    only_held_out = held_out - train_words
    assert len(only_held_out) > 100  # the check has something to find
    assert not (vocab_words & only_held_out)
    # those words map to <unk> in the test split's tensors
    word = sorted(only_held_out)[0]
    assert clinc.vocabulary.encode(word) == [UNK_ID]
    # the vocabulary does not change when the held-out texts change
    before = clinc.vocabulary.tokens
    other = CLINC150(str(CLINC_DIR))
    other.texts = {k: (v if k in other.class_splits["train"] else ["zebra quokka"] * 150) for k, v in other.texts.items()}
    assert other.vocabulary.tokens == before


def test_clinc150_episodes_are_token_ids_built_by_indexing(clinc: CLINC150) -> None:
    dm = EpisodicDataModule(clinc, n_way=5, k_shot=2, q_queries=3, meta_batch_size=4, eval_batch_size=2, val_episodes=4, test_episodes=4)
    dm.setup()
    batch = dm.train_batch(0)
    assert batch.support_x.shape == (4, 10, 32) and batch.support_x.dtype == torch.int64
    assert batch.query_x.shape == (4, 15, 32)
    assert torch.equal(batch.support_x, dm.train_batch(0).support_x)
    # every row is a real utterance of its class: decode one and find it
    source = dm.source("train")
    ep = source.sample(torch.Generator().manual_seed(3), 1, 5, 1, 0)
    text = " ".join(clinc.vocabulary.decode(ep.support_x[0, 0]))
    assert (ep.support_x != PAD_ID).sum() > 0 and text
    test_ep = dm.eval_episode("test", 0)
    assert test_ep.support_x.shape == (1, 10, 32)


def _root_with(tmp_path: Path, data: bytes | None = None, split_lines: dict[str, list[str]] | None = None) -> Path:
    root = tmp_path / "clinc"
    root.mkdir()
    if data is None:
        (root / "data_full.json").symlink_to(CLINC_DIR / "data_full.json")
    else:
        (root / "data_full.json").write_bytes(data)
    (root / "domains.json").symlink_to(CLINC_DIR / "domains.json")
    if split_lines:
        (root / "splits" / "domain").mkdir(parents=True)
        for split, lines in split_lines.items():
            (root / "splits" / "domain" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_clinc150_rejects_a_tampered_split_file(tmp_path: Path) -> None:
    clinc_root_or_skip()
    lines = {s: (CLINC_DIR / "splits" / "domain" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    moved = lines["test"].pop()  # a test intent moved into training
    lines["train"].append(moved)
    root = _root_with(tmp_path, split_lines=lines)
    with pytest.raises(ValueError, match=rf"split list .*train\.txt differs from the domain split.*{moved}"):
        CLINC150(str(root))


def test_clinc150_checks_md5_of_a_tampered_data_file(tmp_path: Path) -> None:
    clinc_root_or_skip()
    data = bytearray((CLINC_DIR / "data_full.json").read_bytes())
    data[100:103] = b"xyz"
    root = _root_with(tmp_path, data=bytes(data))
    with pytest.raises(ChecksumError, match="data_full.json has md5 .* expected 30c29dc6ab78edf3b5dfa640be204cde"):
        CLINC150(str(root))


def test_clinc150_missing_files_and_download_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clinc_root_or_skip()
    with pytest.raises(FileNotFoundError, match="data_full.json.*download: true"):
        CLINC150(str(tmp_path / "empty"))
    served: list[str] = []

    def opener(url: str, timeout: float = 0):
        served.append(url)
        return io.BytesIO((CLINC_DIR / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(CLINC150, "opener", staticmethod(opener))
    ds = CLINC150(str(tmp_path / "dl"), download=True)
    assert served == [CLINC150.BASE_URL + "data_full.json", CLINC150.BASE_URL + "domains.json"]
    assert len(ds.class_splits["test"]) == 45

    def bad_opener(url: str, timeout: float = 0):
        data = bytearray((CLINC_DIR / url.rsplit("/", 1)[1]).read_bytes())
        data[-5] ^= 1
        return io.BytesIO(bytes(data))

    monkeypatch.setattr(CLINC150, "opener", staticmethod(bad_opener))
    with pytest.raises(ChecksumError, match="discarded"):
        CLINC150(str(tmp_path / "dl2"), download=True)
    assert not (tmp_path / "dl2" / "data_full.json").exists()


# -------------------------------------------------------------------------------------- TextFile
def test_textfile_jsonl_and_csv_give_the_same_dataset(tmp_path: Path) -> None:
    rows = labelled_rows()
    jsonl = write_jsonl(tmp_path / "d.jsonl", rows)
    csv_path = tmp_path / "d.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        import csv

        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        for i, r in enumerate(rows):
            writer.writerow([i, r["text"], r["label"]])
    a, b = TextFile(str(jsonl)), TextFile(str(csv_path))
    assert a.texts == b.texts and a.class_splits == b.class_splits
    assert {k: len(v) for k, v in a.class_splits.items()} == {"train": 4, "val": 1, "test": 1}
    assert sorted(sum(a.class_splits.values(), [])) == [f"label{i}" for i in range(6)]
    assert a.vocabulary == b.vocabulary


def test_textfile_split_lists_and_vocabulary_from_train_labels_only(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", labelled_rows())
    (tmp_path / "train.txt").write_text("label0\nlabel1\nlabel2  # comment\n\n")
    (tmp_path / "val.txt").write_text("label3\n")
    (tmp_path / "test.txt").write_text("label4\nlabel5\n")
    ds = TextFile(str(path), split_lists={"train": "train.txt", "val": "val.txt", "test": "test.txt"}, min_freq=1)
    assert ds.class_splits == {"train": ["label0", "label1", "label2"], "val": ["label3"], "test": ["label4", "label5"]}
    assert "topic0" in ds.vocabulary and "topic4" not in ds.vocabulary and "word5x1" not in ds.vocabulary
    (tmp_path / "val.txt").write_text("label0\n")
    with pytest.raises(ValueError, match="'label0' is listed in both 'train' and 'val'"):
        TextFile(str(path), split_lists={"train": "train.txt", "val": "val.txt"})
    (tmp_path / "val.txt").write_text("nosuch\n")
    with pytest.raises(ValueError, match="label 'nosuch' on line 1"):
        TextFile(str(path), split_lists={"train": "train.txt", "val": "val.txt"})


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "a b", "label": "x"}\n{"text": "  ", "label": "y"}\n', r"line 2: the text is empty"),
        ('{"text": "a b", "label": "x"}\n{"text": "c d"}\n', r"line 2 has no 'label' field"),
        ('{"text": "a b", "label": "x"}\n{"text": "c", "label": "x"}\n', r"only the label 'x'.*at least two labels"),
        ('{"text": "a b", "label": "x"}\n\n{"text": "c", "label": ', r"line 3 is not valid JSON"),
        ('{"text": "a", "label": "x"}\n["a", "x"]\n', r"line 2 is a JSON list"),
        ('{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n', r"line 2: label must be a string"),
    ],
)
def test_textfile_jsonl_errors_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        TextFile(str(path))


def test_textfile_csv_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("sentence,label\nhello,a\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1 \(the header\) has no 'text' column"):
        TextFile(str(path))
    path.write_text("text,category\nhello,a\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no 'label' column \(columns: \['text', 'category'\]\)"):
        TextFile(str(path))
    path.write_text('text,label\nhello,a\n"two\nlines",b\n,c\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 5: the text is empty"):  # a quoted newline counts as a line
        TextFile(str(path))


def test_textfile_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "ok", "label": "a"}\n{"text": "ok", "label": "b"}\n{"text": "caf\xe9", "label": "a"}\n')
    with pytest.raises(ValueError, match=r"line 3 is not valid UTF-8 \(byte 0xe9"):
        TextFile(str(path))


def test_labels_with_too_few_examples_are_named(tmp_path: Path) -> None:
    rows = labelled_rows(n_labels=6, per_label=8)
    rows += [{"text": "tiny one", "label": "tiny"}, {"text": "small one", "label": "small"}, {"text": "small two", "label": "small"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "train.txt").write_text("label0\nlabel1\nlabel2\ntiny\nsmall\n")
    (tmp_path / "val.txt").write_text("label3\nlabel4\n")
    (tmp_path / "test.txt").write_text("label5\n")
    ds = TextFile(str(path), split_lists={"train": "train.txt", "val": "val.txt", "test": "test.txt"})
    dm = EpisodicDataModule(ds, n_way=2, k_shot=2, q_queries=1)
    with pytest.raises(ValueError, match=r"2 \+ 1 = 3 exceeds the texts of 2 label\(s\) of split 'train': 'small' \(2\), 'tiny' \(1\)"):
        dm.setup("fit")


# ---------------------------------------------------------------------------- checkpoint round trip
def test_same_text_same_ids_after_a_checkpoint_round_trip(tmp_path: Path) -> None:
    from rnnmeta.learners import ProtoNet
    from rnnmeta.nets import BagOfEmbeddings

    path = write_jsonl(tmp_path / "d.jsonl", labelled_rows(n_labels=10, per_label=6))
    ds = TextFile(str(path), max_length=12, min_freq=1)
    dm = EpisodicDataModule(ds, n_way=2, k_shot=1, q_queries=2, meta_batch_size=2, train_batches_per_epoch=2, val_episodes=2, test_episodes=2)
    learner = ProtoNet(backbone=BagOfEmbeddings(vocab_size=64, embedding_dim=8), n_way=2)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path), num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(learner, datamodule=dm)
    ckpt = tmp_path / "learner.ckpt"
    trainer.save_checkpoint(str(ckpt))
    new_text = ["sentence 3 about topic1 and an unseen word", "word2x1 topic0"]
    expected = ds.encode(new_text)
    assert Vocabulary.from_checkpoint(ckpt) == ds.vocabulary
    assert torch.equal(Vocabulary.from_checkpoint(ckpt).encode_batch(new_text, 12), expected)
    # the data file changed since (new training words): the checkpoint's vocabulary still wins when testing
    write_jsonl(path, labelled_rows(n_labels=10, per_label=6) + [{"text": "brand new words here", "label": ds.class_splits["train"][0]}])
    changed = TextFile(str(path), max_length=12, min_freq=1)
    assert changed.vocabulary != ds.vocabulary
    dm2 = EpisodicDataModule(changed, n_way=2, k_shot=1, q_queries=2, val_episodes=2, test_episodes=2)
    restored = ProtoNet.load_from_checkpoint(str(ckpt))
    trainer2 = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer2.test(restored, datamodule=dm2, ckpt_path=str(ckpt), verbose=False)
    assert changed.vocabulary == ds.vocabulary
    assert torch.equal(changed.encode(new_text), expected)
    assert torch.equal(dm2.source("test").images, ds.split("test").images)
