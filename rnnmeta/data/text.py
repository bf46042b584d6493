"""Few-shot text classification: CLINC150 intents and a user's own labelled text file.

Data flows as for images: every text is tokenised once (:mod:`rnnmeta.data.vocab`) into one
int64 tensor of token ids ``[n_texts, max_length]``, right-padded with 0, rows grouped by class;
an episode is drawn by indexing that tensor (:class:`TextSource`, the same vectorised N-way
K-shot sampler as Omniglot's), so it carries

* ``support_x [B, N*K, L]`` and ``query_x [B, M, L]`` int64 token ids (``L = max_length``,
  padding 0, so a mask is ``ids != 0`` and no lengths tensor is needed) -- with character n-grams
  on (``subword_buckets > 0``), ``[B, N*K, L, 1 + max_ngrams]``: channel 0 the word ids, the
  others each token's n-gram buckets (:mod:`rnnmeta.data.vocab`), and
* the usual int64 labels.

The vocabulary is built from the texts of the meta-training classes only, and travels with the
data module's state into checkpoints (:meth:`TextDataset.state_dict`).

Datasets:

* :class:`CLINC150` (Larson et al. 2019, "An Evaluation Dataset for Intent Classification and
  Out-of-Scope Prediction", EMNLP-IJCNLP; CC BY 3.0): 150 intents x 150 utterances in 10 domains,
  split by domain for meta-learning (75 / 30 / 45 intents, no domain shared), plus out-of-scope
  utterances for the "none of the above" evaluation (:meth:`CLINC150.oos_ids`).
* :class:`TextFile`: JSON Lines (one ``{"text": ..., "label": ...}`` object a line) or CSV
  (``text,label`` header), with class-level splits by fractions or by label lists, the
  conventions of :class:`~rnnmeta.data.ImageFolder`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import torch
from torch import Tensor

from rnnmeta.data.archive import ChecksumError, download_url, md5sum
from rnnmeta.data.base import FewShotDataset, check_split_name
from rnnmeta.data.image_folder import assign_class_splits, check_split_fractions, check_split_list_keys
from rnnmeta.data.sampling import ClassIndexSource
from rnnmeta.data.vocab import PAD_ID, Vocabulary, check_subword_settings
from rnnmeta.episode import CLASSIFICATION, Episode

log = logging.getLogger(__name__)

# CLINC150's parsed files by (path, size, mtime, inode) of each: see CLINC150._verified_contents.
_VERIFIED_CLINC150: dict[tuple, tuple[dict[str, list[str]], dict[str, list[str]], dict[str, list[str]]]] = {}

__all__ = ["CLINC150", "TextDataset", "TextFile", "TextSource", "drop_words", "read_text_file", "text_class_splits"]


# ---------------------------------------------------------------------------------------------- sampling
class TextSource(ClassIndexSource):
    """One split of a text dataset: token ids ``[n_texts, L]`` or ``[n_texts, L, 1 + G]`` (int64, rows grouped by class).

    Sampling is :class:`~rnnmeta.data.sampling.ClassIndexSource`'s (one vectorised draw, one
    ``index_select``); episodes keep the ids as int64 instead of converting to float.

    Args:
        ids: ``[n_texts, L]`` int64 token ids, right-padded with 0 (``[n_texts, L, 1 + G]`` with subwords).
        counts: ``[n_classes]`` texts per class (class ``c`` occupies the rows after classes ``0..c-1``).
        class_names: one label per class (named in errors).
        name: the split's name.
        word_dropout: the probability that a token of a sampled text is deleted (:func:`drop_words`;
            0: none). The examples are chosen as without it; then one seed is drawn from the
            episode's generator for the deletions, so an episode stays a function of that generator.
    """

    def __init__(self, ids: Tensor, counts: Tensor, class_names: Optional[Sequence[str]] = None, name: str = "",
                 word_dropout: float = 0.0) -> None:
        if ids.dim() not in (2, 3) or ids.dtype != torch.int64:
            raise ValueError(
                f"TextSource ids must be a [n_texts, L] (or [n_texts, L, 1 + max_ngrams]) int64 tensor, got "
                f"{list(ids.shape)} {ids.dtype}"
            )
        super().__init__(ids, counts, class_names, name)
        self._smallest = int(self.counts.min())
        self.word_dropout = check_word_dropout(word_dropout, "TextSource")

    def _gather(self, cls: Tensor, slot: Tensor) -> Tensor:
        rows = (self.offsets[cls] + slot).reshape(-1)
        return self.images.index_select(0, rows).view(*cls.shape, *self.images.shape[1:])

    def sample(self, generator: torch.Generator, batch_size: int, n_way: int, k_shot: int, q_queries: int) -> Episode:
        """Draw ``batch_size`` tasks; refuses, naming every one, labels with fewer than ``k_shot + q_queries`` texts."""
        per_task = k_shot + q_queries if isinstance(k_shot, int) and isinstance(q_queries, int) else 0
        if per_task > self._smallest and isinstance(n_way, int) and n_way <= self.n_classes:
            short = (self.counts < per_task).nonzero().flatten().tolist()
            names = self.class_names or [str(i) for i in range(self.n_classes)]
            listed = ", ".join(f"{names[i]!r} ({int(self.counts[i])})" for i in short[:20])
            more = f" and {len(short) - 20} more" if len(short) > 20 else ""
            where = f" of split {self.name!r}" if self.name else ""
            raise ValueError(
                f"k_shot + q_queries = {k_shot} + {q_queries} = {per_task} exceeds the texts of {len(short)} label(s)"
                f"{where}: {listed}{more}; give those labels more examples, drop them, or ask for fewer shots/queries"
            )
        episode = super().sample(generator, batch_size, n_way, k_shot, q_queries)
        if not self.word_dropout:
            return episode
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
        deletions = torch.Generator().manual_seed(seed)
        subwords = self.images.dim() == 3
        return Episode(
            support_x=drop_words(episode.support_x, self.word_dropout, deletions, subwords),
            support_y=episode.support_y,
            query_x=drop_words(episode.query_x, self.word_dropout, deletions, subwords),
            query_y=episode.query_y,
            kind=CLASSIFICATION,
            n_way=n_way,
        )


def check_word_dropout(value: Any, owner: str) -> float:
    """``value`` as a float in ``[0, 1)``, or a ValueError naming ``owner`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{owner} word_dropout must be a probability in [0, 1), got {value!r}")
    return float(value)


def drop_words(ids: Tensor, p: float, generator: torch.Generator, subwords: bool = False) -> Tensor:
    """Delete each real token of each text with probability ``p`` (word deletion as augmentation).

    The kept tokens move left in their order and the text is padded with 0 again, so nothing
    downstream sees a gap (a convolution reads the kept neighbours as neighbours). A text keeps at
    least one token: where every token of it was drawn for deletion, it stays whole. Padding stays
    padding.

    Shapes:
        ``ids [..., L]`` int64, or ``[..., L, 1 + G]`` with ``subwords`` (a token goes with its
        n-grams; channel 0 holds the word ids) -> the same shape.
    """
    words = ids[..., 0] if subwords else ids  # [..., L]
    real = words != PAD_ID
    kept = real & (torch.rand(words.shape, generator=generator) >= p)
    kept = torch.where(kept.any(-1, keepdim=True), kept, real)  # a text never loses every token
    # kept tokens first, in their order (a stable sort of the 0/1 key), then the rest, zeroed
    order = torch.argsort((~kept).to(torch.uint8), dim=-1, stable=True)
    kept = kept.gather(-1, order)
    if subwords:
        order = order.unsqueeze(-1).expand_as(ids)
        kept = kept.unsqueeze(-1)
    return ids.gather(words.dim() - 1, order) * kept


# ------------------------------------------------------------------------------------------------ splits
def _read_label_list(split: str, path_str: str, root: Path, known: dict[str, Any], owner: str) -> list[str]:
    path = Path(path_str).expanduser()
    if not path.is_absolute() and not path.exists():
        path = root / path
    if not path.is_file():
        raise FileNotFoundError(f"{owner}: split list for {split!r} not found: {path_str} (also tried {path})")
    names = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line not in known:
            raise ValueError(f"{owner}: label {line!r} on line {number} of {path} is not a label of the data")
        names.append(line)
    return names


def text_class_splits(
    classes: Sequence[str],
    split_fractions: Sequence[float],
    split_lists: Optional[dict[str, str]],
    seed: int,
    root: Path,
    owner: str,
) -> dict[str, list[str]]:
    """Class-level train/val/test split with :func:`~rnnmeta.data.image_folder.assign_class_splits` (ImageFolder's).

    ``split_lists`` maps a split to a file with one label a line (blank lines, ``#`` comments
    ignored; a relative path is tried as given, then relative to ``root``); the files are read here
    and the lists checked by the shared function. Without lists, ``split_fractions`` of the sorted
    labels, shuffled with ``seed``.

    Raises:
        FileNotFoundError: a list file is missing.
        ValueError: bad fractions, an unknown split key, a listed label not in the data (named with
            its line), a label in two lists.
    """
    fractions = check_split_fractions(split_fractions, owner)
    known = {c: True for c in classes}
    lists = None
    if split_lists is not None:
        check_split_list_keys(split_lists, owner)
        lists = {split: _read_label_list(split, p, root, known, owner) for split, p in split_lists.items()}
    return assign_class_splits(sorted(classes), fractions, seed, lists, owner)


# ------------------------------------------------------------------------------------------------- base
class TextDataset(FewShotDataset):
    """Base of the text datasets: class -> texts, a class split, a vocabulary, token-id tensors.

    A subclass fills :attr:`texts` (label -> list of texts) and :attr:`class_splits` (split ->
    labels) in its constructor. The vocabulary is built lazily, on first use, from the texts of
    ``class_splits["train"]`` only.

    Args:
        max_length: ``L``, tokens kept per text (longer texts are cut, shorter ones padded with 0).
        min_freq: training words seen fewer times map to ``<unk>`` (1, the default, keeps every
            training word: measured better on CLINC150 than 2, see docs/TEXT.md).
        max_vocab: at most this many ids (with ``<pad>`` and ``<unk>``); give the text encoder a
            ``vocab_size`` at least this large.
        subword_buckets: hash buckets of each token's character 3..5-grams (fastText's subwords,
            :mod:`rnnmeta.data.vocab`); 0 (the default): off, ids ``[L]`` per text. With it, ids are
            ``[L, 1 + max_ngrams]`` (``x_shape``) and the text encoder needs the same ``subword_buckets``.
        max_ngrams: n-grams kept per token when subwords are on.
        word_dropout: the probability that a token of a meta-training text is deleted each time an
            episode draws it (:func:`drop_words`; validation and test texts stay whole). 0, the
            default: none. A regulariser for learners that fit the training labels (docs/TEXT.md).
    """

    kind = CLASSIFICATION

    def __init__(
        self,
        max_length: int = 32,
        min_freq: int = 1,
        max_vocab: Optional[int] = 8192,
        subword_buckets: int = 0,
        max_ngrams: int = 16,
        word_dropout: float = 0.0,
    ) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"{type(self).__name__} max_length must be an integer >= 1, got {max_length!r}")
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"{type(self).__name__} min_freq must be an integer >= 1, got {min_freq!r}")
        if max_vocab is not None and (isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab < 3):
            raise ValueError(f"{type(self).__name__} max_vocab must be an integer >= 3 or None, got {max_vocab!r}")
        self.subword_buckets, self.max_ngrams = check_subword_settings(subword_buckets, max_ngrams, type(self).__name__)
        self.max_length = max_length
        self.min_freq = min_freq
        self.max_vocab = max_vocab
        self.word_dropout = check_word_dropout(word_dropout, type(self).__name__)
        self.texts: dict[str, list[str]] = {}
        self.class_splits: dict[str, list[str]] = {}
        self._vocabulary: Optional[Vocabulary] = None
        self._sources: dict[str, TextSource] = {}

    @property
    def x_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """``(max_length,)``, or ``(max_length, 1 + max_ngrams)`` with subwords."""
        return (self.max_length, 1 + self.max_ngrams) if self.subword_buckets else (self.max_length,)

    # -------------------------------------------------------------- vocabulary
    @property
    def vocabulary(self) -> Vocabulary:
        """The vocabulary of the meta-training classes (built on first use, or restored from a checkpoint)."""
        if self._vocabulary is None:
            train = self.class_splits.get("train", [])
            if not train:
                raise ValueError(f"{type(self).__name__}: the train split has no classes to build a vocabulary from")
            self._vocabulary = Vocabulary.build(
                (t for label in train for t in self.texts[label]),
                min_freq=self.min_freq,
                max_size=self.max_vocab,
                subword_buckets=self.subword_buckets,
                max_ngrams=self.max_ngrams,
            )
        return self._vocabulary

    def encode(self, texts: Sequence[str]) -> Tensor:
        """``[len(texts), *x_shape]`` int64 ids of any texts, with this dataset's vocabulary."""
        return self.vocabulary.encode_batch(texts, self.max_length)

    def prepare(self) -> None:
        """Build the vocabulary (cheap: no disk cache is needed)."""
        _ = self.vocabulary

    def split(self, name: str) -> TextSource:
        """The :class:`TextSource` of split ``name``.

        Raises:
            ValueError: unknown split name, or the split has no classes.
        """
        check_split_name(name)
        if name in self._sources:
            return self._sources[name]
        labels = self.class_splits.get(name, [])
        if not labels:
            raise ValueError(
                f"{type(self).__name__} split {name!r} has no classes (no list for it, or its fraction rounds to 0 "
                f"of {len(self.texts)} labels)"
            )
        texts = [t for label in labels for t in self.texts[label]]
        counts = torch.tensor([len(self.texts[label]) for label in labels], dtype=torch.int64)
        source = TextSource(self.encode(texts), counts, labels, name=name,
                            word_dropout=self.word_dropout if name == "train" else 0.0)
        self._sources[name] = source
        return source

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the vocabulary (with its subword settings) and the tokenisation settings."""
        return {"vocabulary": self.vocabulary.state_dict(), "max_length": self.max_length}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Adopt a checkpoint's vocabulary, so that text maps to the ids the learner was trained on.

        If it differs from the one these files would build (the data changed since), a warning
        says so and the checkpoint's wins; the split tensors are re-tokenised.
        """
        saved = Vocabulary.from_state_dict(state["vocabulary"])
        if self._vocabulary is not None and saved != self._vocabulary:
            log.warning(
                "%s: the checkpoint's vocabulary (%s) differs from the one built from the data (%s); using the "
                "checkpoint's", type(self).__name__, saved, self._vocabulary,
            )
        self._vocabulary = saved
        self.subword_buckets, self.max_ngrams = saved.subword_buckets, saved.max_ngrams
        self.max_length = int(state.get("max_length", self.max_length))
        self._sources.clear()

    def __repr__(self) -> str:
        sizes = {k: len(v) for k, v in self.class_splits.items()}
        subwords = f", subword_buckets={self.subword_buckets}, max_ngrams={self.max_ngrams}" if self.subword_buckets else ""
        dropout = f", word_dropout={self.word_dropout:g}" if self.word_dropout else ""
        return f"{type(self).__name__}(labels={len(self.texts)}, splits={sizes}, max_length={self.max_length}{subwords}{dropout})"


# ---------------------------------------------------------------------------------------------- TextFile
def _decode_utf8(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{path}: line {line} is not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None


def _check_example(text: Any, label: Any, path: Path, line: int) -> tuple[str, str]:
    if not isinstance(text, str):
        raise ValueError(f"{path}: line {line}: text must be a string, got {text!r}")
    if not text.strip():
        raise ValueError(f"{path}: line {line}: the text is empty")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise ValueError(f"{path}: line {line}: label must be a string or an integer, got {label!r}")
    label = str(label).strip()
    if not label:
        raise ValueError(f"{path}: line {line}: the label is empty")
    return text, label


def read_text_file(
    path: Path, fmt: Literal["auto", "jsonl", "csv"] = "auto", text_field: str = "text", label_field: str = "label"
) -> list[tuple[str, str, int]]:
    """``(text, label, line)`` triples of a JSON Lines or CSV file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: non-UTF-8 bytes, malformed JSON, a missing field or column, an empty text or
            label -- each naming the file and the line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"TextFile: {path} does not exist or is not a file")
    if fmt == "auto":
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson", ".json"):
            fmt = "jsonl"
        elif suffix in (".csv", ".tsv"):
            fmt = "csv"
        else:
            raise ValueError(f"TextFile: cannot tell the format of {path} from its suffix; set format: jsonl or csv")
    content = _decode_utf8(path.read_bytes(), path)
    rows: list[tuple[str, str, int]] = []
    if fmt == "jsonl":
        for line, raw in enumerate(content.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {line} is not valid JSON ({exc.msg}); expected {{\"{text_field}\": ..., \"{label_field}\": ...}}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}: line {line} is a JSON {type(obj).__name__}, expected an object with {text_field!r} and {label_field!r}")
            for key in (text_field, label_field):
                if key not in obj:
                    raise ValueError(f"{path}: line {line} has no {key!r} field (fields: {sorted(obj)})")
            rows.append((*_check_example(obj[text_field], obj[label_field], path, line), line))
    elif fmt == "csv":
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty; expected a header line with {text_field!r} and {label_field!r} columns")
        header = [h.strip() for h in header]
        for key in (text_field, label_field):
            if key not in header:
                raise ValueError(f"{path}: line 1 (the header) has no {key!r} column (columns: {header})")
        ti, li = header.index(text_field), header.index(label_field)
        for record in reader:
            line = reader.line_num
            if not record or all(not cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                raise ValueError(f"{path}: line {line} has {len(record)} fields, the header has {len(header)}")
            rows.append((*_check_example(record[ti], record[li], path, line), line))
    else:
        raise ValueError(f"TextFile format must be 'auto', 'jsonl' or 'csv', got {fmt!r}")
    return rows


class TextFile(TextDataset):
    """Few-shot classification over a user's labelled text file.

    The file is JSON Lines (``.jsonl``: one object a line, ``{"text": "...", "label": "..."}``)
    or CSV (``.csv``, or ``.tsv`` tab-separated: a header line naming a ``text`` and a ``label``
    column). Each distinct label is a class; classes are split into train / val / test either by
    fractions (shuffled with ``seed``) or by label lists (one label a line), as in
    :class:`~rnnmeta.data.ImageFolder`.

    Args:
        path: the file.
        format: ``"auto"`` (by suffix), ``"jsonl"`` or ``"csv"``.
        text_field, label_field: names of the fields / columns.
        split_fractions: fractions of labels for train, val, test.
        split_lists: per split, a file listing its labels (overrides ``split_fractions``); relative
            paths are also tried relative to the data file's folder.
        seed: seed of the label shuffle for ``split_fractions``.
        **kwargs: max_length, min_freq, max_vocab, subword_buckets, max_ngrams, word_dropout: see :class:`TextDataset`.

    Raises:
        FileNotFoundError: the file or a split list is missing.
        ValueError: bad bytes, JSON, columns, an empty text or label (naming the line), fewer than
            two labels, bad split settings.
    """

    def __init__(
        self,
        path: str,
        format: Literal["auto", "jsonl", "csv"] = "auto",
        text_field: str = "text",
        label_field: str = "label",
        split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
        split_lists: Optional[dict[str, str]] = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = Path(path).expanduser()
        rows = read_text_file(self.path, format, text_field, label_field)
        texts: dict[str, list[str]] = {}
        for text, label, _ in rows:
            texts.setdefault(label, []).append(text)
        if len(texts) < 2:
            found = f"only the label {next(iter(texts))!r}" if texts else "no examples"
            raise ValueError(f"TextFile: {self.path} has {found}; few-shot classification needs at least two labels")
        self.texts = {label: texts[label] for label in sorted(texts)}
        self.class_splits = text_class_splits(
            list(self.texts), split_fractions, split_lists, seed, self.path.parent, "TextFile"
        )

    def __repr__(self) -> str:
        return f"TextFile(path={str(self.path)!r}, " + super().__repr__().split("(", 1)[1]


# ---------------------------------------------------------------------------------------------- CLINC150
class CLINC150(TextDataset):
    """CLINC150 intents (Larson et al. 2019), split by domain for meta-learning.

    Reads ``root/data_full.json`` and ``root/domains.json`` (the files of the dataset's public
    repository, clinc/oos-eval; their md5 is checked), pools each intent's train/val/test
    utterances (150 per intent), and splits the 150 intents by domain so that no domain is shared:

    * train (75 intents): credit_cards, kitchen_and_dining, auto_and_commute, utility, small_talk
    * val (30): work, meta
    * test (45): banking, travel, home

    If ``root/splits/domain/{train,val,test}.txt`` exist (the shared copy has them) they must list
    exactly these intents. Out-of-scope utterances (``oos_train``/``oos_val``/``oos_test``: 100 /
    100 / 1,000) are never a class; :meth:`oos_ids` gives them for the "none of the above" evaluation.

    Args:
        root: folder holding ``data_full.json`` and ``domains.json``.
        split_scheme: ``"domain"`` (the only one).
        download: fetch missing files from GitHub (raw.githubusercontent.com/clinc/oos-eval) and
            verify their md5 before they are kept.
        **kwargs: max_length, min_freq, max_vocab, subword_buckets, max_ngrams, word_dropout: see :class:`TextDataset`
            (30 tokens is CLINC150's longest utterance; character n-grams: docs/TEXT.md).

    Raises:
        FileNotFoundError: a file is missing and ``download`` is false.
        ChecksumError: a file's md5 is not the official one (a tampered or truncated copy).
        ValueError: a malformed file, or a split list that differs from the domain split (naming
            the file and the intents).
    """

    BASE_URL = "https://raw.githubusercontent.com/clinc/oos-eval/master/data/"
    MD5 = {"data_full.json": "30c29dc6ab78edf3b5dfa640be204cde", "domains.json": "9beee9d0f36e07e914c1e3a626bdcb4a"}
    DOMAIN_SPLIT = {
        "train": ("credit_cards", "kitchen_and_dining", "auto_and_commute", "utility", "small_talk"),
        "val": ("work", "meta"),
        "test": ("banking", "travel", "home"),
    }
    SPLIT_SIZES = {"train": 75, "val": 30, "test": 45}
    OOS_KEYS = ("oos_train", "oos_val", "oos_test")
    #: ``opener(url, timeout=...)`` used by downloads; ``None`` means ``urllib.request.urlopen`` (tests inject one).
    opener = None

    def __init__(
        self,
        root: str,
        split_scheme: Literal["domain"] = "domain",
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if split_scheme != "domain":
            raise ValueError(f"CLINC150 split_scheme must be 'domain', got {split_scheme!r}")
        self.root = Path(root).expanduser()
        self.split_scheme = split_scheme
        self.download = bool(download)
        self._fetch_missing()
        texts, oos, domains = self._verified_contents()
        self.texts = {intent: list(utterances) for intent, utterances in texts.items()}
        self.oos = {key: list(utterances) for key, utterances in oos.items()}
        self.domains = {domain: list(intents) for domain, intents in domains.items()}
        self.class_splits = self._domain_split()

    def _verified_contents(self) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, list[str]]]:
        """The files' md5s checked, then parsed: ``(texts, oos, domains)``.

        Checked and parsed once per process for the same files (path, size, modification time and
        inode unchanged): a comparison builds one data module per learner, and decoding and checking
        the 8 MB ``data_full.json`` took about 0.3 s each time.
        """
        files = [self.root.resolve() / name for name in self.MD5]
        signature = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns, f.stat().st_ino) for f in files)
        cached = _VERIFIED_CLINC150.get(signature)
        if cached is not None:
            return cached
        for name, md5 in self.MD5.items():
            got = md5sum(self.root / name)
            if got != md5:
                raise ChecksumError(
                    f"CLINC150: {self.root / name} has md5 {got}, expected {md5} (clinc/oos-eval's data/{name}); "
                    "the file was modified or truncated: delete it and download it again (download: true)"
                )
        texts, oos = self._parse(self._read_json("data_full.json"))
        contents = (texts, oos, self._parse_domains(self._read_json("domains.json")))
        if len(_VERIFIED_CLINC150) >= 4:  # a few copies at most (tests make several roots)
            _VERIFIED_CLINC150.clear()
        _VERIFIED_CLINC150[signature] = contents
        return contents

    # ------------------------------------------------------------------ files
    def _fetch_missing(self) -> None:
        missing = [name for name in self.MD5 if not (self.root / name).is_file()]
        if not missing:
            return
        if not self.download:
            raise FileNotFoundError(
                f"CLINC150: {', '.join(str(self.root / m) for m in missing)} not found; put clinc/oos-eval's "
                f"data/{' and data/'.join(missing)} there, or set download: true"
            )
        for name in missing:
            log.info("downloading %s%s to %s", self.BASE_URL, name, self.root / name)
            download_url(self.BASE_URL + name, self.root / name, md5=self.MD5[name], opener=self.opener)

    def _read_json(self, name: str) -> Any:
        path = self.root / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"CLINC150: {path} is not valid UTF-8 JSON: {exc}") from None

    def _parse(self, data: Any) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        where = self.root / "data_full.json"
        if not isinstance(data, dict):
            raise ValueError(f"CLINC150: {where} must hold a JSON object, got {type(data).__name__}")
        texts: dict[str, list[str]] = {}
        oos: dict[str, list[str]] = {}
        for key in ("train", "val", "test", *self.OOS_KEYS):
            pairs = data.get(key)
            if not isinstance(pairs, list):
                raise ValueError(f"CLINC150: {where} has no list under {key!r}")
            for i, pair in enumerate(pairs):
                if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, str) for v in pair) and pair[0].strip()):
                    raise ValueError(f"CLINC150: {where}[{key!r}][{i}] must be [utterance, intent], got {pair!r}")
                text, intent = pair
                if key in self.OOS_KEYS:
                    oos.setdefault(key, []).append(text)
                else:
                    texts.setdefault(intent, []).append(text)
        texts.pop("oos", None)
        return {k: texts[k] for k in sorted(texts)}, oos

    def _parse_domains(self, domains: Any) -> dict[str, list[str]]:
        where = self.root / "domains.json"
        if not isinstance(domains, dict) or not all(isinstance(v, list) for v in domains.values()):
            raise ValueError(f"CLINC150: {where} must map each domain to a list of intents")
        return {d: list(v) for d, v in domains.items()}

    def _domain_split(self) -> dict[str, list[str]]:
        splits: dict[str, list[str]] = {}
        for split, names in self.DOMAIN_SPLIT.items():
            intents = sorted(i for d in names for i in self.domains[d])
            unknown = [i for i in intents if i not in self.texts]
            if unknown:
                raise ValueError(f"CLINC150: intents {unknown} of domains.json have no utterances in data_full.json")
            if len(intents) != self.SPLIT_SIZES[split]:
                raise ValueError(f"CLINC150: the {split} domains hold {len(intents)} intents, expected {self.SPLIT_SIZES[split]}")
            listed = self.root / "splits" / self.split_scheme / f"{split}.txt"
            if listed.is_file():
                names_in_file = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
                extra = sorted(set(names_in_file) - set(intents))
                missing = sorted(set(intents) - set(names_in_file))
                if extra or missing or len(names_in_file) != len(intents):
                    raise ValueError(
                        f"CLINC150: split list {listed} differs from the domain split ({', '.join(names)}): "
                        f"not in these domains {extra}, missing {missing}, {len(names_in_file)} lines for "
                        f"{len(intents)} intents; restore the file (or delete it: the split is derived from domains.json)"
                    )
            splits[split] = intents
        return splits

    # ----------------------------------------------------------- out of scope
    def oos_texts(self, key: Literal["oos_train", "oos_val", "oos_test"]) -> list[str]:
        """The out-of-scope utterances of ``key`` (100 / 100 / 1,000)."""
        if key not in self.OOS_KEYS:
            raise ValueError(f"CLINC150 out-of-scope key must be one of {self.OOS_KEYS}, got {key!r}")
        return list(self.oos[key])

    def oos_ids(self, key: Literal["oos_train", "oos_val", "oos_test"]) -> Tensor:
        """``[n, *x_shape]`` token ids of the out-of-scope utterances of ``key``."""
        return self.encode(self.oos_texts(key))

    def __repr__(self) -> str:
        return f"CLINC150(root={str(self.root)!r}, " + super().__repr__().split("(", 1)[1]
