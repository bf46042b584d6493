"""Tokenisation and a word vocabulary that sees only what it is built from.

Text becomes token ids in three fixed steps (:func:`tokenize`): Unicode NFKC normalisation,
lower-casing, and a split into runs of word characters and single punctuation marks
(``"What's 2+2?" -> ["what", "'", "s", "2", "+", "2", "?"]``). A :class:`Vocabulary` maps tokens
to ids:

* id 0 is padding (``<pad>``) and is never produced by a token, so a mask is ``ids != 0``;
* id 1 is the unknown token (``<unk>``): every word not in the vocabulary;
* ids 2.. are the kept words, most frequent first (ties in code-point order), so the same texts
  always give the same vocabulary.

A few-shot text dataset builds its vocabulary from the texts of its meta-training classes only
(:class:`rnnmeta.data.text.TextDataset`): a word that occurs only in validation or test classes
maps to ``<unk>``, exactly as a word never seen at all would, so nothing of the test classes leaks
into the model. ``min_freq=2`` would also send the words seen once in training to ``<unk>`` (so
that its embedding is trained on real rare words); on CLINC150 that lost 2.4 points of TF-IDF
accuracy, 5-way 1-shot (``scripts/benchmark_text.py --vocabulary``), so the datasets keep every training word
(``min_freq=1``). 10% of the test classes' tokens are not among the training classes' words.

Character n-grams (off by default; ``subword_buckets > 0``), after fastText (Bojanowski et al. 2017,
"Enriching Word Vectors with Subword Information", TACL): a token's n-grams are the character 3- to
5-grams of ``"<" + token + ">"`` in a fixed order (all 3-grams left to right, then the 4-grams, then
the 5-grams), of which the first ``max_ngrams`` are kept; each is hashed to a bucket
``1 + zlib.crc32(utf8(ngram)) % subword_buckets`` (0 is padding). The hash is stable across
processes and machines (never Python's salted ``hash``), and only bucket numbers are computed, never
stored: the vocabulary itself still holds only training words, and a word's buckets are a pure
function of the word and the two settings (:func:`ngram_buckets`). Every token gets its buckets,
in the vocabulary or not, so the bucket embeddings are trained on the training words and an unseen
word is read through the n-grams it shares with them. :meth:`Vocabulary.encode_batch` then returns
``[n, max_length, 1 + max_ngrams]``: channel 0 the word ids, channels 1.. the buckets (docs/TEXT.md).

The vocabulary is plain data (:meth:`Vocabulary.state_dict`: a list of strings and the two subword
settings), stored in checkpoints through the data module's state, and read back with
:meth:`Vocabulary.from_checkpoint`, so a saved learner reads new text the same way.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["PAD", "PAD_ID", "UNK", "UNK_ID", "Vocabulary", "char_ngrams", "check_subword_settings", "ngram_buckets", "tokenize"]

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
_FORMAT = "rnnmeta.vocabulary/1"
_TOKEN = re.compile(r"\w+|[^\w\s]")


#: character n-gram lengths (fastText's 3..5)
NGRAM_MIN, NGRAM_MAX = 3, 5


def check_subword_settings(subword_buckets: int, max_ngrams: int, owner: str = "Vocabulary") -> tuple[int, int]:
    """``(subword_buckets, max_ngrams)`` checked: an int >= 0 (0: off) and an int >= 1.

    Raises:
        ValueError: naming the bad value.
    """
    if isinstance(subword_buckets, bool) or not isinstance(subword_buckets, int) or subword_buckets < 0:
        raise ValueError(f"{owner} subword_buckets must be an integer >= 0 (0: no subwords), got {subword_buckets!r}")
    if isinstance(max_ngrams, bool) or not isinstance(max_ngrams, int) or max_ngrams < 1:
        raise ValueError(f"{owner} max_ngrams must be an integer >= 1, got {max_ngrams!r}")
    return subword_buckets, max_ngrams


def char_ngrams(word: str, max_ngrams: int) -> list[str]:
    """The first ``max_ngrams`` character 3..5-grams of ``"<" + word + ">"``, by n, then by position.

    A 1-letter word ``"a"`` has the single n-gram ``"<a>"``.
    """
    marked = f"<{word}>"
    grams = [marked[i : i + n] for n in range(NGRAM_MIN, NGRAM_MAX + 1) for i in range(len(marked) - n + 1)]
    return grams[:max_ngrams]


@lru_cache(maxsize=1 << 16)
def ngram_buckets(word: str, subword_buckets: int, max_ngrams: int) -> tuple[int, ...]:
    """The bucket ids (``1..subword_buckets``) of :func:`char_ngrams`: ``1 + zlib.crc32(utf8(ngram)) % subword_buckets``.

    ``zlib.crc32``, not Python's salted ``hash``, so the ids are the same in every process.
    """
    return tuple(1 + zlib.crc32(g.encode("utf-8")) % subword_buckets for g in char_ngrams(word, max_ngrams))


def tokenize(text: str) -> list[str]:
    """Tokens of ``text``: NFKC-normalised, lower-cased words (``\\w+``) and single punctuation marks."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, got {type(text).__name__}")
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


class Vocabulary:
    """Token <-> id mapping with padding id 0 and unknown id 1.

    Args:
        tokens: the id -> token list; ``tokens[0]`` must be ``"<pad>"`` and ``tokens[1]`` ``"<unk>"``,
            and no token may repeat.
        subword_buckets: hash buckets of the character n-grams (module docstring); 0: no subwords
            (ids ``[n, L]``, exactly as without the option).
        max_ngrams: n-grams kept per token (the first ones, by n then position); the channels after
            the word id when subwords are on.

    Raises:
        ValueError: the special tokens are not in place, or a token repeats (named); bad subword settings.
    """

    def __init__(self, tokens: Sequence[str], subword_buckets: int = 0, max_ngrams: int = 16) -> None:
        self.subword_buckets, self.max_ngrams = check_subword_settings(subword_buckets, max_ngrams)
        tokens = list(tokens)
        if len(tokens) < 2 or tokens[PAD_ID] != PAD or tokens[UNK_ID] != UNK:
            raise ValueError(f"a Vocabulary starts with {PAD!r}, {UNK!r}; got {tokens[:2]!r}")
        index: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str):
                raise ValueError(f"vocabulary token {i} is not a str: {tok!r}")
            if tok in index:
                raise ValueError(f"vocabulary token {tok!r} appears twice (ids {index[tok]} and {i})")
            index[tok] = i
        self.tokens = tokens
        self.index = index

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        min_freq: int = 1,
        max_size: Optional[int] = None,
        subword_buckets: int = 0,
        max_ngrams: int = 16,
    ) -> "Vocabulary":
        """The vocabulary of ``texts``: words seen at least ``min_freq`` times, most frequent first.

        Args:
            texts: the training texts (only these: never a validation or test text).
            min_freq: a word seen fewer times maps to ``<unk>``.
            max_size: at most this many ids including ``<pad>`` and ``<unk>`` (``None``: no limit);
                the least frequent words are dropped first.
            subword_buckets, max_ngrams: the character n-gram settings (class docstring; 0: off).
        """
        check_subword_settings(subword_buckets, max_ngrams)
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"Vocabulary min_freq must be an integer >= 1, got {min_freq!r}")
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 3):
            raise ValueError(f"Vocabulary max_size must be an integer >= 3 (pad, unk and one word) or None, got {max_size!r}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text))
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max_size - 2]
        return cls([PAD, UNK, *words], subword_buckets=subword_buckets, max_ngrams=max_ngrams)

    # ---------------------------------------------------------------- encode
    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocabulary)
            and self.tokens == other.tokens
            and (self.subword_buckets, self.max_ngrams) == (other.subword_buckets, other.max_ngrams)
        )

    @property
    def channels(self) -> int:
        """Ids per token: 1 (the word id) without subwords, ``1 + max_ngrams`` with them."""
        return 1 + self.max_ngrams if self.subword_buckets else 1

    def encode(self, text: str) -> list[int]:
        """Ids of the tokens of ``text`` (unknown words -> 1; never 0)."""
        get = self.index.get
        return [get(tok, UNK_ID) for tok in tokenize(text)]

    def encode_batch(self, texts: Sequence[str], max_length: int) -> Tensor:
        """``[n, max_length]`` int64 ids, right-padded with 0 and cut after ``max_length`` tokens.

        With subwords (``subword_buckets > 0``): ``[n, max_length, 1 + max_ngrams]``, channel 0 the
        word ids as without them, channels 1.. each token's n-gram buckets (0-padded, all 0 at
        padding positions).

        Raises:
            ValueError: ``max_length < 1``.
        """
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an integer >= 1, got {max_length!r}")
        if not self.subword_buckets:
            out = torch.zeros(len(texts), max_length, dtype=torch.int64)
            for row, text in enumerate(texts):
                ids = self.encode(text)[:max_length]
                if ids:
                    out[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
            return out
        width, get, buckets, g = 1 + self.max_ngrams, self.index.get, self.subword_buckets, self.max_ngrams
        rows: list[int] = []
        for text in texts:
            tokens = tokenize(text)[:max_length]
            row = [0] * (max_length * width)
            for t, tok in enumerate(tokens):
                grams = ngram_buckets(tok, buckets, g)
                start = t * width
                row[start] = get(tok, UNK_ID)
                row[start + 1 : start + 1 + len(grams)] = grams
            rows.extend(row)
        return torch.tensor(rows, dtype=torch.int64).view(len(texts), max_length, width)

    def decode(self, ids: Union[Sequence[int], Tensor]) -> list[str]:
        """Tokens of ``ids``, padding dropped."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return [self.tokens[i] for i in values if i != PAD_ID]

    def fingerprint(self) -> str:
        """A short hash of the token list and subword settings (two vocabularies with the same fingerprint map text alike)."""
        text = "\n".join(self.tokens)
        if self.subword_buckets:  # without subwords: the fingerprint of earlier versions
            text += f"\n#subwords {self.subword_buckets} {self.max_ngrams}"
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Plain data (loads with ``torch.load(weights_only=True)``): the format tag, the token list, the subword settings."""
        return {
            "format": _FORMAT,
            "tokens": list(self.tokens),
            "subword_buckets": self.subword_buckets,
            "max_ngrams": self.max_ngrams,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Vocabulary":
        """Inverse of :meth:`state_dict` (a state saved before subwords existed loads with them off).

        Raises:
            ValueError: not a vocabulary state (wrong or missing format tag).
        """
        if not isinstance(state, dict) or state.get("format") != _FORMAT or not isinstance(state.get("tokens"), list):
            raise ValueError(f"not an rnnmeta vocabulary state (expected format {_FORMAT!r} and a token list)")
        return cls(state["tokens"], subword_buckets=state.get("subword_buckets", 0), max_ngrams=state.get("max_ngrams", 16))

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path]) -> "Vocabulary":
        """The vocabulary a learner was trained with, read from its Lightning checkpoint.

        The data module stores it (``checkpoint["EpisodicDataModule"]["dataset"]["vocabulary"]``).

        Raises:
            ValueError: the checkpoint holds no vocabulary (it was not trained on text).
        """
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        for key, value in checkpoint.items():
            if isinstance(value, dict) and isinstance(value.get("dataset"), dict) and "vocabulary" in value["dataset"]:
                return cls.from_state_dict(value["dataset"]["vocabulary"])
        raise ValueError(f"checkpoint {path} holds no text vocabulary (was it trained on a text dataset?)")

    def __repr__(self) -> str:
        subwords = f", subword_buckets={self.subword_buckets}, max_ngrams={self.max_ngrams}" if self.subword_buckets else ""
        return f"Vocabulary(size={len(self)}{subwords}, fingerprint={self.fingerprint()})"
