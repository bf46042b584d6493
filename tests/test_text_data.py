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


def test_clinc150_files_are_checked_again_when_they_change_after_a_first_load(tmp_path: Path) -> None:
    clinc_root_or_skip()
    data = (CLINC_DIR / "data_full.json").read_bytes()
    root = _root_with(tmp_path, data=data)
    first = CLINC150(str(root))
    first.texts[first.class_splits["train"][0]].clear()  # one dataset's lists are its own
    second = CLINC150(str(root))  # parsed once per process: the same files give the same contents
    assert second.texts == CLINC150(str(CLINC_DIR)).texts
    tampered = bytearray(data)
    tampered[100:103] = b"xyz"  # same size; only the content and the modification time change
    (root / "data_full.json").write_bytes(bytes(tampered))
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


# ----------------------------------------------------------------------------- character n-grams
@pytest.mark.slow
def test_subword_buckets_are_a_stable_pure_function_of_the_word() -> None:
    import subprocess
    import sys
    import zlib

    from rnnmeta.data.vocab import ngram_buckets

    # "<cat>": 3-grams <ca, cat, at>, then 4-grams <cat, cat>, then the 5-gram <cat>; bucket 1 + crc32 % 1000
    assert [1 + zlib.crc32(g.encode()) % 1000 for g in ("<ca", "cat", "at>", "<cat", "cat>", "<cat>")] == [525, 833, 277, 680, 240, 666]
    assert ngram_buckets("cat", 1000, 16) == (525, 833, 277, 680, 240, 666)
    assert ngram_buckets("cat", 1000, 4) == (525, 833, 277, 680)  # only the first max_ngrams
    vocab = Vocabulary.build(["the cat sat", "a dog"], subword_buckets=1000, max_ngrams=4)
    assert vocab.tokens == Vocabulary.build(["the cat sat", "a dog"]).tokens  # only words are stored, never n-grams
    ids = vocab.encode_batch(["cat zebra", ""], max_length=3)
    assert ids.shape == (2, 3, 5) and ids.dtype == torch.int64
    assert ids[0, 0].tolist() == [vocab.index["cat"], 525, 833, 277, 680]
    assert ids[0, 1, 0] == UNK_ID and bool((ids[0, 1, 1:] > 0).all())  # an unseen word still has its n-grams
    assert ids[0, 1, 1:].tolist() == list(ngram_buckets("zebra", 1000, 4))
    assert not bool(ids[0, 2].any()) and not bool(ids[1].any())  # padding: every channel 0
    # the same in another process with another hash seed (crc32, never Python's salted hash), and for a
    # vocabulary built from other texts: the buckets depend on the word and the settings only
    other = Vocabulary.build(["zebra zebra", "cat"], subword_buckets=1000, max_ngrams=4)
    assert torch.equal(other.encode_batch(["cat zebra", ""], 3)[..., 1:], ids[..., 1:])
    code = "from rnnmeta.data.vocab import ngram_buckets; print(ngram_buckets('zebra', 1000, 4))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(ngram_buckets("zebra", 1000, 4))
    assert ngram_buckets("a", 1000, 16) == (1 + zlib.crc32(b"<a>") % 1000,)  # a 1-letter word: one n-gram


def test_subwords_off_gives_the_word_ids_of_before_and_channel_0_with_them() -> None:
    texts = ["b a a zz", "", "a b c d a b"]
    off = Vocabulary.build(["b a a", "c a b", "d"])
    assert off.encode_batch(texts, max_length=4).tolist() == [[3, 2, 2, 1], [0, 0, 0, 0], [2, 3, 4, 5]]
    assert off.state_dict() == {"format": "rnnmeta.vocabulary/1", "tokens": off.tokens, "subword_buckets": 0, "max_ngrams": 16}
    assert off.fingerprint() == Vocabulary(off.tokens).fingerprint() and off.channels == 1
    on = Vocabulary.build(["b a a", "c a b", "d"], subword_buckets=50, max_ngrams=3)
    assert torch.equal(on.encode_batch(texts, 4)[..., 0], off.encode_batch(texts, 4))
    assert on != off and on.fingerprint() != off.fingerprint() and on.channels == 4


def test_subword_settings_survive_the_vocabulary_state() -> None:
    vocab = Vocabulary.build(["the cat sat", "a dog"], subword_buckets=777, max_ngrams=5)
    state = vocab.state_dict()
    assert (state["subword_buckets"], state["max_ngrams"]) == (777, 5)
    back = Vocabulary.from_state_dict(state)
    assert back == vocab and (back.subword_buckets, back.max_ngrams) == (777, 5)
    assert torch.equal(back.encode_batch(["a cat ate", "dogs"], 6), vocab.encode_batch(["a cat ate", "dogs"], 6))
    old = Vocabulary.from_state_dict({"format": "rnnmeta.vocabulary/1", "tokens": vocab.tokens})  # saved before subwords
    assert old.subword_buckets == 0 and old.encode_batch(["a cat"], 3).shape == (1, 3)


@pytest.mark.parametrize("bad", [-1, True, 2.5, "100"])
def test_bad_subword_settings_are_named(bad: object, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", labelled_rows())
    with pytest.raises(ValueError, match=rf"subword_buckets must be an integer >= 0.*{bad!r}"):
        Vocabulary(["<pad>", "<unk>"], subword_buckets=bad)
    with pytest.raises(ValueError, match=rf"subword_buckets must be an integer >= 0.*{bad!r}"):
        Vocabulary.build(["a"], subword_buckets=bad)
    with pytest.raises(ValueError, match=rf"TextFile subword_buckets must be an integer >= 0.*{bad!r}"):
        TextFile(str(path), subword_buckets=bad)
    bad_g = 0 if bad == -1 else bad
    with pytest.raises(ValueError, match=rf"max_ngrams must be an integer >= 1.*{bad_g!r}"):
        Vocabulary.build(["a"], subword_buckets=10, max_ngrams=bad_g)
    with pytest.raises(ValueError, match=rf"TextFile max_ngrams must be an integer >= 1.*{bad_g!r}"):
        TextFile(str(path), subword_buckets=10, max_ngrams=bad_g)


def test_clinc150_with_subwords(clinc: CLINC150) -> None:
    sub = CLINC150(str(CLINC_DIR), subword_buckets=5000, max_ngrams=12)
    assert sub.x_shape == (32, 13) and clinc.x_shape == (32,)
    assert sub.vocabulary.tokens == clinc.vocabulary.tokens  # still the training words only
    dm = EpisodicDataModule(sub, n_way=5, k_shot=1, q_queries=2, meta_batch_size=3, val_episodes=2, test_episodes=2)
    dm.setup()
    batch = dm.train_batch(0)
    assert batch.support_x.shape == (3, 5, 32, 13) and batch.query_x.shape == (3, 10, 32, 13)
    # channel 0 is the word-id episode of the same draw without subwords
    plain = EpisodicDataModule(clinc, n_way=5, k_shot=1, q_queries=2, meta_batch_size=3, val_episodes=2, test_episodes=2)
    plain.setup()
    assert torch.equal(batch.support_x[..., 0], plain.train_batch(0).support_x)
    assert dm.eval_episode("test", 0).query_x.shape[2:] == (32, 13)
    assert sub.oos_ids("oos_val").shape == (100, 32, 13)
    # every test token has n-gram buckets, the unknown ones included
    test = sub.split("test").images
    real = test[..., 0] != PAD_ID
    assert bool((test[..., 1][real] > 0).all()) and bool(((test[..., 0] == UNK_ID) & real).any())
    assert sub.state_dict()["vocabulary"]["subword_buckets"] == 5000
    fresh = CLINC150(str(CLINC_DIR))
    fresh.load_state_dict(sub.state_dict())  # a checkpoint's settings win
    assert fresh.x_shape == (32, 13) and torch.equal(fresh.split("test").images, test)


def test_a_subword_learner_checkpoint_reads_new_text_the_same_way(tmp_path: Path) -> None:
    from rnnmeta.learners import ProtoNet
    from rnnmeta.nets import BagOfEmbeddings
    from rnnmeta.predict import TextReader, reader_for

    path = write_jsonl(tmp_path / "d.jsonl", labelled_rows(n_labels=10, per_label=6))
    ds = TextFile(str(path), max_length=12, subword_buckets=300, max_ngrams=6)
    dm = EpisodicDataModule(ds, n_way=2, k_shot=1, q_queries=2, meta_batch_size=2, train_batches_per_epoch=2, val_episodes=2, test_episodes=2)
    learner = ProtoNet(backbone=BagOfEmbeddings(vocab_size=64, embedding_dim=8, subword_buckets=300), n_way=2)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path), num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(learner, datamodule=dm)
    ckpt = tmp_path / "learner.ckpt"
    trainer.save_checkpoint(str(ckpt))
    new_text = ["sentence 3 about topic1 and an unseen word", "word2x1 topic0"]
    expected = ds.encode(new_text)
    assert expected.shape == (2, 12, 7)
    assert Vocabulary.from_checkpoint(ckpt) == ds.vocabulary
    restored = ProtoNet.load_from_checkpoint(str(ckpt))
    reader = reader_for(restored, ckpt)  # what `rnnmeta predict` reads .txt files with
    assert isinstance(reader, TextReader)
    for i, text in enumerate(new_text):
        (tmp_path / f"q{i}.txt").write_text(text, encoding="utf-8")
    assert torch.equal(reader.read([tmp_path / "q0.txt", tmp_path / "q1.txt"]), expected)
    assert restored.backbone.subword_buckets == 300
    torch.testing.assert_close(restored.backbone(expected), learner.backbone(expected))


# ---------------------------------------------------------------------------------- word dropout
def is_subsequence(short: list[int], long: list[int]) -> bool:
    rest = iter(long)
    return all(token in rest for token in short)


def test_drop_words_deletes_tokens_keeps_order_and_never_empties_a_text() -> None:
    from rnnmeta.data.text import drop_words

    ids = torch.randint(2, 50, (200, 12))
    lengths = torch.randint(1, 13, (200,))
    ids[torch.arange(12) >= lengths[:, None]] = PAD_ID
    dropped = drop_words(ids, 0.5, torch.Generator().manual_seed(0))
    assert dropped.shape == ids.shape and dropped.dtype == torch.int64
    kept = (dropped != PAD_ID).sum(1)
    assert bool((kept >= 1).all()) and bool((kept <= lengths).all())
    assert 0.35 < float(kept.sum() / lengths.sum()) < 0.65  # about half of the tokens stay
    for row, before, n in zip(dropped.tolist(), ids.tolist(), kept.tolist()):
        assert all(t == PAD_ID for t in row[n:])  # the kept tokens first, then padding
        assert is_subsequence(row[:n], before[: before.index(PAD_ID)] if PAD_ID in before else before)
    # a one-token text keeps its token whatever the draw
    single = torch.tensor([[7] + [PAD_ID] * 5] * 50)
    assert torch.equal(drop_words(single, 0.9, torch.Generator().manual_seed(1)), single)
    # the same generator state, the same deletions
    assert torch.equal(drop_words(ids, 0.5, torch.Generator().manual_seed(0)), dropped)


def test_drop_words_moves_a_tokens_subwords_with_it() -> None:
    from rnnmeta.data.text import drop_words

    words = torch.tensor([[5, 6, 7, 8, PAD_ID, PAD_ID]] * 40)
    grams = torch.stack([words, words * 10, words * 100], -1)  # [40, 6, 3]: the n-grams name their word
    dropped = drop_words(grams, 0.5, torch.Generator().manual_seed(2), subwords=True)
    assert torch.equal(dropped[..., 1], dropped[..., 0] * 10) and torch.equal(dropped[..., 2], dropped[..., 0] * 100)
    assert torch.equal(dropped[..., 0], drop_words(words, 0.5, torch.Generator().manual_seed(2)))
    assert bool((dropped[..., 0] != PAD_ID).sum(1).lt(4).any())  # something was deleted


def test_word_dropout_changes_training_texts_only(clinc: CLINC150) -> None:
    noisy = CLINC150(str(CLINC_DIR), word_dropout=0.3)

    def module(dataset: CLINC150) -> EpisodicDataModule:
        dm = EpisodicDataModule(dataset, n_way=5, k_shot=2, q_queries=3, meta_batch_size=4, val_episodes=3, test_episodes=3)
        dm.setup()
        return dm

    plain_dm, noisy_dm = module(clinc), module(noisy)
    plain, dropped = plain_dm.train_batch(3), noisy_dm.train_batch(3)
    assert torch.equal(plain.support_y, dropped.support_y) and torch.equal(plain.query_y, dropped.query_y)
    before = torch.cat([plain.support_x, plain.query_x], 1).flatten(0, 1)
    after = torch.cat([dropped.support_x, dropped.query_x], 1).flatten(0, 1)
    lengths_before, lengths_after = (before != PAD_ID).sum(1), (after != PAD_ID).sum(1)
    assert bool((lengths_after >= 1).all()) and int(lengths_after.sum()) < int(lengths_before.sum())
    for short, long, n, m in zip(after.tolist(), before.tolist(), lengths_after.tolist(), lengths_before.tolist()):
        assert is_subsequence(short[:n], long[:m])  # the same texts, some words deleted
    for split in ("val", "test"):  # the evaluation episodes every learner shares stay whole
        assert torch.equal(noisy_dm.eval_episode(split, 1).query_x, plain_dm.eval_episode(split, 1).query_x)
    assert "word_dropout=0.3" in repr(noisy)


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.2"])
def test_bad_word_dropout_is_named(bad: object, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", labelled_rows())
    with pytest.raises(ValueError, match=rf"TextFile word_dropout must be a probability in \[0, 1\), got {bad!r}"):
        TextFile(str(path), word_dropout=bad)
