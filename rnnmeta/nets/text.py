"""Text encoders: token ids ``[..., L]`` -> embeddings ``[..., E]``, the backbones of every learner on text.

Inputs are int64 (or int32) token ids, right-padded with 0 (:mod:`rnnmeta.data.vocab`); the mask
is ``ids != 0``, so an episode needs no lengths tensor. Padding never changes an output: padded
positions are zeroed after the embedding lookup and excluded from every pooling, and trailing
columns that are padding in every row are cut before any computation (a batch padded to 32 or to
64 tokens gives the same embeddings, bit for bit up to float reordering, and costs the same).

* :class:`TextCNN`: the convolutional encoder of Kim (2014), "Convolutional Neural Networks for
  Sentence Classification" (EMNLP), as used for few-shot text by Yu et al. (2018) and the FewRel
  baselines (Han et al. 2018): word embeddings, 1-d convolutions of several widths, ReLU, max over time.
* :class:`BagOfEmbeddings`: the mean of the word embeddings (Joulin et al. 2017, fastText without
  n-grams), optionally followed by one ReLU layer.
* :class:`TextTransformer`: a small pre-LN transformer encoder (Vaswani et al. 2017; pre-LN as
  Xiong et al. 2020) over word plus learned position embeddings, mean-pooled over the real tokens.

Two options shared by all three, measured on CLINC150 (docs/TEXT.md):

* ``ignore_unk`` (default): ``<unk>`` carries no word, so its embedding is zero and the bag leaves it
  out of its mean, as TF-IDF leaves it out of its terms. Every word outside the training
  vocabulary shares the one ``<unk>`` id, so an encoder that embeds it matches two unrelated
  test sentences on their unknown words.
* ``normalize_to``: L2-normalise each output and multiply it by one learned scale initialised to
  this value, so that squared distances are a cosine with a learned temperature (the measure that
  TF-IDF's nearest centroid uses) and every learner reads inputs of a known norm.

Character n-grams (``subword_buckets > 0``, the data's setting, :mod:`rnnmeta.data.vocab`): ids are
``[..., L, 1 + G]``, channel 0 the word id and channels 1.. the token's n-gram buckets (0-padded). A
token's embedding is then its word embedding plus the mean of its bucket embeddings (a second table
of ``subword_buckets + 1`` rows, row 0 padding), as in fastText (Bojanowski et al. 2017). A token is
real where its word id is not 0. With ``ignore_unk`` an ``<unk>`` token's *word* embedding is still
zero, but the token is no longer dropped: it is read through its n-grams (the bag counts it in its
mean, with the learned weight of the ``<unk>`` row when ``token_weights``; the CNN sees its n-gram
mean at its position).

Both record their ``init_args``, so checkpoints store them as ``class_path`` specs. Neither has
batch norm, so MAML and the learned optimizer use them as they are (no transductive query pass).
No pretrained embeddings are used: the encoders are trained from scratch by meta-learning.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnmeta.numerics import dropout

#: the padding and unknown-word ids (``rnnmeta.data.vocab.PAD_ID, UNK_ID``; kept here so that nets
#: do not import the data layer)
PAD_ID, UNK_ID = 0, 1

__all__ = ["BagOfEmbeddings", "TextCNN", "TextTransformer", "text_mask", "word_mask"]


def _traced(ids: Tensor) -> bool:
    """True inside ``torch.func.vmap`` (the learned optimizer batches tasks with it): no data-dependent checks there."""
    is_batched = getattr(getattr(torch._C, "_functorch", None), "is_batchedtensor", None)
    return bool(is_batched(ids)) if is_batched is not None else False


def _check_subword_buckets(value: int, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner} subword_buckets must be an integer >= 0 (0: word ids only), got {value!r}")
    return value


def _check_channels(ids: Tensor, subword_buckets: int, owner: str) -> None:
    """Ids with subwords ``[..., L, 1 + G]``: bucket ids in ``0..subword_buckets``, a real token has >= 1 bucket, padding none."""
    if ids.dim() < 2 or ids.shape[-1] < 2:
        raise ValueError(
            f"{owner} was built with subword_buckets={subword_buckets} and reads ids [..., L, 1 + max_ngrams] (word id, "
            f"then n-gram buckets), got {list(ids.shape)}; build the data with subword_buckets={subword_buckets} "
            "(TextDataset / CLINC150 / TextFile), or the encoder with subword_buckets=0 for word ids [..., L]"
        )
    if not ids.numel() or _traced(ids):
        return
    grams = ids[..., 1:]
    low, high = int(grams.min()), int(grams.max())
    if low < 0 or high > subword_buckets:
        bad = low if low < 0 else high
        raise ValueError(
            f"{owner}: n-gram bucket id {bad} is outside 0..{subword_buckets} (the encoder's subword_buckets={subword_buckets}); "
            "set the encoder's subword_buckets to the data's"
        )
    real = ids[..., 0] != PAD_ID
    if bool((real & (ids[..., 1] == PAD_ID)).any()) or bool((~real & (grams != PAD_ID).any(-1)).any()):
        raise ValueError(
            f"{owner} was built with subword_buckets={subword_buckets} but its input {list(ids.shape)} does not hold "
            "word ids and n-gram buckets (every token has at least one n-gram, padding none): are these word ids "
            "[B, N, L] from data with subword_buckets=0? Set the data's subword_buckets to "
            f"{subword_buckets}, or the encoder's to 0"
        )


def _check_ids(ids: Tensor, vocab_size: int, owner: str, subword_buckets: int = 0) -> None:
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(
            f"{owner} expects integer token ids [..., L] (int64, padding 0), got {ids.dtype}; tokenise text with "
            "rnnmeta.data.vocab.Vocabulary.encode_batch"
        )
    if ids.dim() < 1:
        raise ValueError(f"{owner} expects token ids [..., L], got a scalar")
    if subword_buckets:
        _check_channels(ids, subword_buckets, owner)
        ids = ids[..., 0]
    if ids.numel() and not _traced(ids):
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            hint = ""
            if not subword_buckets and ids.dim() >= 3:
                hint = (
                    f" (if the input {list(ids.shape)} is [..., L, 1 + max_ngrams] ids from data with subword_buckets > 0, "
                    f"the encoder was built with subword_buckets=0: set it to the data's subword_buckets)"
                )
            raise ValueError(
                f"{owner}: token id {bad} is outside 0..{vocab_size - 1} (vocab_size={vocab_size}); set the encoder's "
                f"vocab_size to at least the dataset's max_vocab (or len(dataset.vocabulary)){hint}"
            )


def text_mask(ids: Tensor) -> Tensor:
    """``ids != 0``: True at real tokens, False at padding (same shape as ``ids``)."""
    return ids != PAD_ID


def word_mask(ids: Tensor, ignore_unk: bool) -> Tensor:
    """True at the tokens an encoder reads: real tokens, without ``<unk>`` when ``ignore_unk``."""
    mask = text_mask(ids)
    return mask & (ids != UNK_ID) if ignore_unk else mask


class _OutputScale(nn.Module):
    """``normalize_to``: ``s * x / |x|`` with one learned ``s`` (init ``normalize_to``), or the identity."""

    def __init__(self, normalize_to: Optional[float], owner: str) -> None:
        super().__init__()
        if normalize_to is not None and (isinstance(normalize_to, bool) or not normalize_to > 0):
            raise ValueError(f"{owner} normalize_to must be a positive number (the initial output norm) or null, got {normalize_to!r}")
        self.scale = None if normalize_to is None else nn.Parameter(torch.tensor(float(normalize_to)))

    def forward(self, x: Tensor) -> Tensor:
        return x if self.scale is None else F.normalize(x, dim=-1) * self.scale


def _trim(ids: Tensor) -> Tensor:
    """``ids [N, L]`` (or ``[N, L, 1 + G]``) without the trailing columns that are padding in every row (at least one kept).

    Inside ``vmap`` the shape cannot depend on the data, so nothing is cut there (the masks alone keep padding out).
    """
    if _traced(ids):
        return ids
    words = ids[..., 0] if ids.dim() == 3 else ids
    used = (words != PAD_ID).any(0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    return ids[:, :length] if length < ids.shape[1] else ids


class _Subwords(nn.Module):
    """The mean of each token's n-gram bucket embeddings: ``[N, L, G]`` bucket ids -> ``[N, L, D]`` (0 where none)."""

    def __init__(self, subword_buckets: int, embedding_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(subword_buckets + 1, embedding_dim, padding_idx=PAD_ID)

    def forward(self, grams: Tensor) -> Tensor:
        if _traced(grams):  # under vmap: no data-dependent shapes, every position embedded
            return self._mean(grams)
        # a batch repeats its words: embed each distinct n-gram row once ([U, G, D] instead of
        # [N, L, G, D], several times less work and memory), then index the means back
        flat = grams.reshape(-1, grams.shape[-1])
        distinct, inverse = torch.unique(flat, dim=0, return_inverse=True)
        return self._mean(distinct)[inverse].reshape(*grams.shape[:-1], -1)

    def _mean(self, grams: Tensor) -> Tensor:
        mask = (grams != PAD_ID).unsqueeze(-1).to(self.embedding.weight.dtype)  # [..., G, 1]
        # masked, not only padding_idx: a learned optimiser may move row 0 although its gradient is 0
        summed = (self.embedding(grams) * mask).sum(-2)
        return summed / mask.sum(-2).clamp_min(1.0)


def _split_channels(flat: Tensor, subword_buckets: int) -> tuple[Tensor, Optional[Tensor]]:
    """``[N, L]`` word ids -> (them, None); ``[N, L, 1 + G]`` -> (word ids ``[N, L]``, buckets ``[N, L, G]``)."""
    return (flat[..., 0], flat[..., 1:]) if subword_buckets else (flat, None)


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner} {name} must be a positive integer, got {value!r}")


class TextCNN(nn.Module):
    """Kim (2014) CNN over word embeddings, with masked max-over-time pooling.

    For each width ``k`` in ``kernel_sizes``, ``filters`` convolutions read windows of ``k``
    consecutive embeddings ending at each real token (the sentence is left-padded with ``k - 1``
    zero vectors), then ReLU and the maximum over the real tokens; the widths are concatenated.

    Args:
        vocab_size: rows of the embedding table (at least the dataset's ``max_vocab``); row 0 is padding.
        embedding_dim: word-embedding width.
        filters: convolutions per width.
        kernel_sizes: window widths (Kim: 3, 4, 5).
        ignore_unk: ``<unk>`` tokens keep their position but read as a zero word embedding (with
            subwords: as the mean of their n-gram embeddings).
        normalize_to: L2-normalised output times a learned scale initialised to this value; None: raw.
        subword_buckets: the data's ``subword_buckets`` (0: word ids only); with it each token adds
            the mean of its n-gram bucket embeddings to its word embedding.

    Shapes:
        ``ids [..., L]`` int (``[..., L, 1 + max_ngrams]`` with subwords) -> ``[..., filters * len(kernel_sizes)]`` float.
    """

    def __init__(
        self,
        vocab_size: int = 8192,
        embedding_dim: int = 64,
        filters: int = 64,
        kernel_sizes: list[int] = [3, 4, 5],  # noqa: B006
        ignore_unk: bool = True,
        normalize_to: Optional[float] = None,
        subword_buckets: int = 0,
    ) -> None:
        super().__init__()
        _check_positive("TextCNN", vocab_size=vocab_size, embedding_dim=embedding_dim, filters=filters)
        self.subword_buckets = _check_subword_buckets(subword_buckets, "TextCNN")
        if not kernel_sizes:
            raise ValueError("TextCNN kernel_sizes must list at least one width")
        for k in kernel_sizes:
            _check_positive("TextCNN", kernel_size=k)
        if vocab_size < 3:
            raise ValueError(f"TextCNN vocab_size must be >= 3 (pad, unk, one word), got {vocab_size}")
        self.init_args = dict(
            vocab_size=vocab_size,
            embedding_dim=embedding_dim,
            filters=filters,
            kernel_sizes=list(kernel_sizes),
            ignore_unk=ignore_unk,
            normalize_to=normalize_to,
        )
        if subword_buckets:  # (recorded only when on: the specs of word-only encoders are as before)
            self.init_args["subword_buckets"] = subword_buckets
        self.ignore_unk = bool(ignore_unk)
        self.vocab_size = vocab_size
        self.kernel_sizes = list(kernel_sizes)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_ID)
        self.subwords: Optional[_Subwords] = _Subwords(subword_buckets, embedding_dim) if subword_buckets else None
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, filters, k) for k in self.kernel_sizes)
        self.out_features = filters * len(self.kernel_sizes)
        #: dimensions of one example (``[L]`` or ``[L, 1 + max_ngrams]``), checked by the learners
        self.example_dims = 2 if subword_buckets else 1
        self.output_scale = _OutputScale(normalize_to, "TextCNN")

    def forward(self, ids: Tensor) -> Tensor:
        _check_ids(ids, self.vocab_size, "TextCNN", self.subword_buckets)
        n_example = 2 if self.subword_buckets else 1
        lead = ids.shape[:-n_example]
        flat, grams = _split_channels(_trim(ids.reshape(-1, *ids.shape[-n_example:])), self.subword_buckets)
        mask = text_mask(flat)  # [N, L]
        words = word_mask(flat, self.ignore_unk)
        emb = self.embedding(flat) * words.unsqueeze(-1).to(self.embedding.weight.dtype)  # [N, L, D]
        if self.subwords is not None:
            emb = emb + self.subwords(grams)
        emb = emb.transpose(1, 2)  # [N, D, L]
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs):
            h = F.relu(conv(F.pad(emb, (k - 1, 0))))  # [N, F, L]: window t ends at token t
            # ReLU outputs are >= 0, so zeroing padding positions leaves the max over real tokens
            # unchanged (and gives 0 for an all-padding row)
            pooled.append(h.masked_fill(~mask.unsqueeze(1), 0.0).amax(-1))
        return self.output_scale(torch.cat(pooled, -1)).reshape(*lead, self.out_features)


class BagOfEmbeddings(nn.Module):
    """Mean of the word embeddings of the real tokens, optionally followed by ``Linear -> ReLU``.

    Args:
        vocab_size: rows of the embedding table (at least the dataset's ``max_vocab``); row 0 is padding.
        embedding_dim: word-embedding width.
        hidden: width of a ReLU layer after the mean; 0 for none (the embedding is the mean itself).
        token_weights: a weighted mean, ``sum_t exp(w[id_t]) e[id_t] / sum_t exp(w[id_t])`` with one
            learned ``w`` per word (initialised to 0, the plain mean): lets meta-learning discount
            words that carry no class (the role IDF plays for TF-IDF; cf. the word-importance
            weights of Bao et al. 2020, "Few-shot Text Classification with Distributional Signatures").
        ignore_unk: leave ``<unk>`` out of the mean (a text of unknown words only embeds to 0). With
            subwords an ``<unk>`` token stays in the mean: its word embedding is 0 and it is read as
            the mean of its n-gram embeddings (weighted by the ``<unk>`` row's learned weight).
        normalize_to: L2-normalised output times a learned scale initialised to this value; None: raw.
        subword_buckets: the data's ``subword_buckets`` (0: word ids only); with it each token is its
            word embedding plus the mean of its n-gram bucket embeddings.
        freeze_embedding: keep the word-embedding table at its random initialisation (no gradient):
            the bag is then a fixed random projection of the (weighted) bag of words, whose cosines
            approximate word overlap, and only the word weights, the scale and ``hidden`` learn.

    Shapes:
        ``ids [..., L]`` int (``[..., L, 1 + max_ngrams]`` with subwords) -> ``[..., hidden or embedding_dim]`` float.
    """

    def __init__(
        self,
        vocab_size: int = 8192,
        embedding_dim: int = 128,
        hidden: int = 0,
        token_weights: bool = False,
        ignore_unk: bool = True,
        normalize_to: Optional[float] = None,
        subword_buckets: int = 0,
        freeze_embedding: bool = False,
    ) -> None:
        super().__init__()
        _check_positive("BagOfEmbeddings", vocab_size=vocab_size, embedding_dim=embedding_dim)
        self.subword_buckets = _check_subword_buckets(subword_buckets, "BagOfEmbeddings")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
            raise ValueError(f"BagOfEmbeddings hidden must be an integer >= 0, got {hidden!r}")
        if vocab_size < 3:
            raise ValueError(f"BagOfEmbeddings vocab_size must be >= 3 (pad, unk, one word), got {vocab_size}")
        self.init_args = dict(
            vocab_size=vocab_size,
            embedding_dim=embedding_dim,
            hidden=hidden,
            token_weights=token_weights,
            ignore_unk=ignore_unk,
            normalize_to=normalize_to,
        )
        if subword_buckets:  # (recorded only when on: the specs of word-only encoders are as before)
            self.init_args["subword_buckets"] = subword_buckets
        if freeze_embedding:  # (likewise)
            self.init_args["freeze_embedding"] = True
        self.vocab_size = vocab_size
        self.ignore_unk = bool(ignore_unk)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_ID)
        self.embedding.weight.requires_grad_(not freeze_embedding)
        self.subwords: Optional[_Subwords] = _Subwords(subword_buckets, embedding_dim) if subword_buckets else None
        self.project: Optional[nn.Linear] = nn.Linear(embedding_dim, hidden) if hidden else None
        #: one learned log-weight per word (0 at init: the plain mean), so a learner can learn which words matter
        self.token_logit: Optional[nn.Embedding] = None
        if token_weights:
            self.token_logit = nn.Embedding(vocab_size, 1, padding_idx=PAD_ID)
            nn.init.zeros_(self.token_logit.weight)
        self.out_features = hidden or embedding_dim
        #: dimensions of one example (``[L]`` or ``[L, 1 + max_ngrams]``), checked by the learners
        self.example_dims = 2 if subword_buckets else 1
        self.output_scale = _OutputScale(normalize_to, "BagOfEmbeddings")

    def forward(self, ids: Tensor) -> Tensor:
        _check_ids(ids, self.vocab_size, "BagOfEmbeddings", self.subword_buckets)
        n_example = 2 if self.subword_buckets else 1
        lead = ids.shape[:-n_example]
        flat, grams = _split_channels(_trim(ids.reshape(-1, *ids.shape[-n_example:])), self.subword_buckets)
        dtype = self.embedding.weight.dtype
        words = word_mask(flat, self.ignore_unk).unsqueeze(-1).to(dtype)  # [N, L, 1]
        # which tokens the mean counts: without subwords the words read (<unk> out when ignore_unk);
        # with them every real token (an <unk> is read through its n-grams)
        mask = words if self.subwords is None else text_mask(flat).unsqueeze(-1).to(dtype)
        tokens = self.embedding(flat) * words
        if self.subwords is not None:
            tokens = tokens + self.subwords(grams)
        if self.token_logit is not None:
            mask = mask * torch.exp(self.token_logit(flat))  # weight exp(w_v) per real token, 0 at padding
        summed = (tokens * mask).sum(1)
        out = summed / mask.sum(1).clamp_min(1.0)
        if self.project is not None:
            out = F.relu(self.project(out))
        return self.output_scale(out).reshape(*lead, self.out_features)


class _PreLNEncoderLayer(nn.Module):
    """One pre-LN transformer encoder layer: ``x + Attn(LN(x))``, then ``x + FF(LN(x))`` (GELU).

    The computation of ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu")``, with the
    attention written out (``softmax(q k^T / sqrt(d)) v``): torch's layer switches to a fused kernel
    with no derivative when its weights do not require grad (how ``torch.func`` passes them to the
    learned optimizer's inner loop), and the CPU kernel of ``F.scaled_dot_product_attention`` has
    no second derivative (second-order MAML needs one).

    Shapes:
        ``x [N, L, D]``, ``keys [N, L]`` bool (True: a position others may attend to) -> ``[N, L, D]``.
    """

    def __init__(self, dim: int, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm_attention = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm_feedforward = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, feedforward)
        self.down = nn.Linear(feedforward, dim)

    def forward(self, x: Tensor, keys: Tensor) -> Tensor:
        n, length, dim = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = self.qkv(self.norm_attention(x)).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)  # [N, H, L, L]
        scores = scores.masked_fill(~keys[:, None, None, :], float("-inf"))
        # rnnmeta.numerics.dropout: torch's CPU dropout draws its mask by another generator on Intel CPUs
        attended = dropout(scores.softmax(-1), p) @ v  # [N, H, L, D / H]
        x = x + dropout(self.out(attended.transpose(1, 2).reshape(n, length, dim)), p)
        return x + dropout(self.down(dropout(F.gelu(self.up(self.norm_feedforward(x))), p)), p)


class TextTransformer(nn.Module):
    """A small transformer encoder over word embeddings, mean-pooled over the real tokens.

    Each real token is its word embedding (zero for ``<unk>`` with ``ignore_unk``; plus its n-gram
    mean with subwords) plus a learned embedding of its position; ``layers`` pre-LN encoder layers
    (self-attention with ``heads`` heads, then a GELU feed-forward layer of width ``feedforward``,
    each on a LayerNorm of its input and added back) read them with padding masked out of every
    attention; a final LayerNorm, then the mean over the real tokens. A text of padding only
    embeds to 0 (its one position attends to itself, so nothing is undefined, and the mean counts
    no token).

    Args:
        vocab_size: rows of the embedding table (at least the dataset's ``max_vocab``); row 0 is padding.
        embedding_dim: width of the embeddings and of the model (divisible by ``heads``).
        heads: attention heads per layer.
        layers: encoder layers.
        feedforward: width of each layer's feed-forward block.
        max_length: positions with a learned embedding (at least the data's ``max_length``).
        dropout: dropout inside the encoder layers (0: none; MAML's inner loop and the episodes'
            fixed answers want a deterministic encoder).
        ignore_unk, normalize_to, subword_buckets: as :class:`TextCNN`.

    Shapes:
        ``ids [..., L]`` int (``[..., L, 1 + max_ngrams]`` with subwords), ``L <= max_length`` -> ``[..., embedding_dim]`` float.
    """

    def __init__(
        self,
        vocab_size: int = 8192,
        embedding_dim: int = 64,
        heads: int = 4,
        layers: int = 2,
        feedforward: int = 128,
        max_length: int = 64,
        dropout: float = 0.0,
        ignore_unk: bool = True,
        normalize_to: Optional[float] = None,
        subword_buckets: int = 0,
    ) -> None:
        super().__init__()
        owner = "TextTransformer"
        _check_positive(owner, vocab_size=vocab_size, embedding_dim=embedding_dim, heads=heads, layers=layers,
                        feedforward=feedforward, max_length=max_length)
        self.subword_buckets = _check_subword_buckets(subword_buckets, owner)
        if vocab_size < 3:
            raise ValueError(f"{owner} vocab_size must be >= 3 (pad, unk, one word), got {vocab_size}")
        if embedding_dim % heads:
            raise ValueError(f"{owner} embedding_dim ({embedding_dim}) must be divisible by heads ({heads})")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"{owner} dropout must be a number in [0, 1), got {dropout!r}")
        self.init_args = dict(
            vocab_size=vocab_size, embedding_dim=embedding_dim, heads=heads, layers=layers, feedforward=feedforward,
            max_length=max_length, dropout=dropout, ignore_unk=ignore_unk, normalize_to=normalize_to,
        )
        if subword_buckets:
            self.init_args["subword_buckets"] = subword_buckets
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.ignore_unk = bool(ignore_unk)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_ID)
        self.subwords: Optional[_Subwords] = _Subwords(subword_buckets, embedding_dim) if subword_buckets else None
        self.position = nn.Embedding(max_length, embedding_dim)
        nn.init.normal_(self.position.weight, std=0.1)
        self.layers = nn.ModuleList(_PreLNEncoderLayer(embedding_dim, heads, feedforward, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(embedding_dim)
        self.out_features = embedding_dim
        #: dimensions of one example (``[L]`` or ``[L, 1 + max_ngrams]``), checked by the learners
        self.example_dims = 2 if subword_buckets else 1
        self.output_scale = _OutputScale(normalize_to, owner)

    def forward(self, ids: Tensor) -> Tensor:
        _check_ids(ids, self.vocab_size, "TextTransformer", self.subword_buckets)
        n_example = 2 if self.subword_buckets else 1
        lead = ids.shape[:-n_example]
        flat, grams = _split_channels(_trim(ids.reshape(-1, *ids.shape[-n_example:])), self.subword_buckets)
        length = flat.shape[1]
        if length > self.max_length:
            raise ValueError(
                f"TextTransformer: texts of {length} tokens, but max_length={self.max_length} positions have an "
                "embedding; set max_length to at least the data's max_length"
            )
        dtype = self.embedding.weight.dtype
        mask = text_mask(flat)  # [N, L]
        tokens = self.embedding(flat) * word_mask(flat, self.ignore_unk).unsqueeze(-1).to(dtype)
        if self.subwords is not None:
            tokens = tokens + self.subwords(grams)
        tokens = tokens + self.position.weight[:length]
        # a text of padding only keeps its first position as a key (an attention with no key is
        # undefined); the mean below gives that text 0 whatever the position computes
        keys = mask.clone()
        keys[:, 0] = True
        hidden = tokens
        for layer in self.layers:
            hidden = layer(hidden, keys)
        hidden = self.norm(hidden)  # [N, L, D]
        weights = mask.unsqueeze(-1).to(dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.output_scale(pooled).reshape(*lead, self.out_features)
