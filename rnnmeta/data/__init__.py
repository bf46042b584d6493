"""The episodic data layer: datasets -> task sources -> seeded, rank-aware Episode batches.

* :class:`FewShotDataset` / :class:`TaskSource`: the two abstractions (``rnnmeta.data.base``).
* :class:`Omniglot`, :class:`ImageFolder`, :class:`Sinusoid`, :class:`CLINC150`, :class:`TextFile`: the datasets.
* :class:`LabelledDataset`: any dataset of ``(x, label)`` pairs as few-shot tasks.
* :class:`EpisodicDataModule`: the LightningDataModule every learner trains and evaluates on.
"""

from rnnmeta.data.archive import (
    ArchiveError,
    ChecksumError,
    CorruptArchiveError,
    DownloadError,
    UnsafeArchiveError,
)
from rnnmeta.data.base import SPLITS, FewShotDataset, TaskSource
from rnnmeta.data.image_folder import ImageFolder
from rnnmeta.data.labelled import LabelledDataset
from rnnmeta.data.module import EpisodicDataModule
from rnnmeta.data.omniglot import Omniglot
from rnnmeta.data.online import NO_LABEL, OnlineDataModule, OnlineStream, instance_numbers, sample_stream, shift_labels
from rnnmeta.data.sampling import ClassIndexSource, derive_seed, make_generator
from rnnmeta.data.sinusoid import Sinusoid, SinusoidSource
from rnnmeta.data.text import CLINC150, TextDataset, TextFile, TextSource
from rnnmeta.data.vocab import Vocabulary, tokenize

__all__ = [
    "NO_LABEL",
    "OnlineDataModule",
    "OnlineStream",
    "instance_numbers",
    "sample_stream",
    "shift_labels",
    "SPLITS",
    "ArchiveError",
    "CLINC150",
    "ChecksumError",
    "ClassIndexSource",
    "CorruptArchiveError",
    "DownloadError",
    "EpisodicDataModule",
    "FewShotDataset",
    "ImageFolder",
    "LabelledDataset",
    "Omniglot",
    "Sinusoid",
    "SinusoidSource",
    "TaskSource",
    "TextDataset",
    "TextFile",
    "TextSource",
    "UnsafeArchiveError",
    "Vocabulary",
    "derive_seed",
    "make_generator",
    "tokenize",
]
