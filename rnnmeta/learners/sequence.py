"""Pieces the learners share: the label slot of sequence steps, batched embedding, input checks,
and the initialisation of the recurrent learners' first LSTM layer (LSTMLearner's LSTM, MANN's controller).

The sequence learners (SNAIL, LSTMLearner, MANN) feed each step as ``[embed(x), label slot]``;
every learner's predictor (what :meth:`~rnnmeta.learners.MetaLearner.adapt` returns) checks its
queries against the adapted support set with :func:`check_query`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnmeta.episode import CLASSIFICATION

__all__ = ["check_positive", "check_query", "embed", "encode_labels", "key_value_init_", "label_readout_init_", "label_width",
           "matching_init_"]


def label_width(kind: str, n_way: int, target_dim: int) -> int:
    """Width of the label slot of a step: ``n_way`` one-hot, or ``target_dim`` targets plus a given-flag."""
    return n_way if kind == CLASSIFICATION else target_dim + 1


def encode_labels(y: Tensor, kind: str, n_way: int) -> Tensor:
    """Label slot of support steps.

    Args:
        y: ``[B, S]`` int64 labels (classification) or ``[B, S, d_y]`` float targets.

    Returns:
        ``[B, S, n_way]`` one-hot, or ``[B, S, d_y + 1]`` targets with a trailing ``1`` flag.
    """
    if kind == CLASSIFICATION:
        return F.one_hot(y, n_way).float()
    return torch.cat([y, torch.ones_like(y[..., :1])], dim=-1)


def embed(backbone: nn.Module, x: Tensor, n_lead: int = 2) -> Tensor:
    """Embed ``x [*lead, *x_shape]`` (``n_lead`` leading dims) to ``[*lead, E]`` in one backbone call."""
    lead = x.shape[:n_lead]
    e = backbone(x.reshape(-1, *x.shape[n_lead:]))
    return e.reshape(*lead, e.shape[-1])


def check_query(support_x: Tensor, query_x: Tensor) -> None:
    """Refuse ``query_x`` unless it is ``[B, M, *x_shape]`` matching ``support_x [B, S, *x_shape]``.

    ``support_x`` may be an empty slice ``support_x[:, :0]`` kept by a predictor as a shape reference.

    Raises:
        TypeError: ``query_x`` is not a tensor.
        ValueError: names both shapes.
    """
    if not isinstance(query_x, Tensor):
        raise TypeError(f"query_x must be a torch.Tensor, got {type(query_x).__name__}")
    if query_x.dim() != support_x.dim() or query_x.shape[0] != support_x.shape[0] or query_x.shape[2:] != support_x.shape[2:]:
        raise ValueError(
            f"query_x must be [B={support_x.shape[0]}, M, *{list(support_x.shape[2:])}] like the adapted support set, "
            f"got {list(query_x.shape)}"
        )


def check_positive(**values: int) -> None:
    """Raise ``ValueError`` naming every argument that is not a positive integer."""
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def check_metric_loss_weight(weight: float, kind: str) -> float:
    """Validate a sequence learner's ``metric_loss_weight``: a float ``>= 0``, above 0 for classification only."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise ValueError(f"metric_loss_weight must be a float >= 0 (0 turns the auxiliary loss off), got {weight!r}")
    if weight > 0 and kind != CLASSIFICATION:
        raise ValueError(
            f"metric_loss_weight={weight} adds ProtoNet's loss over class prototypes, defined for classification; "
            f"this learner's kind is {kind!r} (set metric_loss_weight: 0)"
        )
    return float(weight)


def check_read_init(applies: bool, output_bias: float | None, zero_recurrent: bool) -> None:
    """Refuse ``output_bias`` or ``zero_recurrent`` where the key-value initialisation they belong to does not run."""
    if not applies and (output_bias is not None or zero_recurrent):
        raise ValueError(
            f"output_bias={output_bias!r} and zero_recurrent={zero_recurrent!r} are options of the key-value "
            "initialisation, which this learner does not run (it needs key_value_init=True and classification); "
            "leave them at None and False"
        )


#: the head's scale of :func:`label_readout_init_` where a learner's ``readout_init`` is ``None``
LABEL_READOUT_SCALE = 0.3


def given(**values: float | None) -> dict[str, float]:
    """The keyword arguments that are not ``None``: an initialisation's own defaults stand for the rest."""
    return {name: value for name, value in values.items() if value is not None}


def check_matching_init(kind: str, num_layers: int, label_slots: bool, input_bias: float | None,
                        output_bias: float | None, zero_recurrent: bool) -> None:
    """Refuse ``matching_init`` outside classification with one layer, or beside the key-value options it replaces."""
    if kind != CLASSIFICATION or num_layers != 1:
        raise ValueError(
            f"matching_init starts one LSTM layer as a matcher of a query with each class's examples; it needs "
            f"classification and num_layers=1, got kind={kind!r}, num_layers={num_layers}"
        )
    if label_slots or input_bias is not None or output_bias is not None or zero_recurrent:
        raise ValueError(
            f"matching_init sets every gate of the first layer itself; leave the key-value initialisation's "
            f"label_slots, input_bias, output_bias and zero_recurrent at False, None, None and False (got "
            f"{label_slots!r}, {input_bias!r}, {output_bias!r}, {zero_recurrent!r})"
        )


# --------------------------------------------------------------------------- LSTM initialisation
def _first_layer_param(lstm: nn.LSTM | nn.LSTMCell, name: str) -> Tensor:
    """Parameter ``name`` (``weight_ih``, ``weight_hh``, ...) of the first layer of an ``nn.LSTM`` or an ``nn.LSTMCell``."""
    return getattr(lstm, f"{name}_l0" if isinstance(lstm, nn.LSTM) else name)


def _first_layer(lstm: nn.LSTM | nn.LSTMCell) -> tuple[Tensor, Tensor, Tensor]:
    """``weight_ih``, ``bias_ih``, ``bias_hh`` of the first layer of an ``nn.LSTM`` or an ``nn.LSTMCell``."""
    return tuple(_first_layer_param(lstm, name) for name in ("weight_ih", "bias_ih", "bias_hh"))


def key_value_init_(
    lstm: nn.LSTM | nn.LSTMCell,
    embed_dim: int,
    label_dim: int,
    key_std: float = 2.0,
    forget_bias: float = 3.0,
    input_bias: float | None = None,
    label_slots: bool = False,
    output_bias: float | None = None,
    zero_recurrent: bool = False,
) -> None:
    """Key-value initialisation of the first layer of ``lstm`` (in place; see :mod:`rnnmeta.learners.lstm`).

    The layer's input starts ``[embedding (embed_dim), label slot (label_dim), ...]`` (MANN's
    controller also reads its memory after the label slot; those columns keep their values). Gate rows
    of the input weights are ``[input, forget, cell, output]`` (PyTorch's order). Input and output
    gates get the same embedding weights ``N(0, key_std^2 / embed_dim)``; the cell candidate reads
    the label slot (``N(0, 1)`` weights) and not the embedding; the forget gate's bias is
    ``forget_bias``, and the input gate's is ``input_bias`` where given (negative: each support
    example writes into fewer units; ``None`` keeps PyTorch's random bias). ``output_bias`` does the same
    for the output gate, the read key (equal to ``input_bias``: a query reads as few units as an example
    writes), and ``zero_recurrent`` starts the layer's recurrent weights at 0, so that no gate reads the
    previous output at first (the gates are then functions of the current input alone).

    ``label_slots`` (classification): the units are split into ``label_dim`` blocks of
    ``W = hidden // label_dim`` units, and label ``j`` writes only into block ``j`` (cell-candidate
    weight 1 from label ``j``, 0 from the others). Every block has the same ``W`` key rows, shared by
    the input and output gates, so a query's output gate reads each block with the same features its
    support example of that label was written with: before training, the head's logit of class ``j``
    is ``0.3 tanh(1) sum_m o_m(e_q) tanh(c_jm)`` with ``c_jm = tanh(1) sum_s f^(T + 1 - t_s) i_m(e_s)``
    over the support examples ``s`` of label ``j`` at steps ``t_s`` of ``1..T``
    (``f = sigmoid(forget_bias)``, ``0.3`` is ``readout_init``): a kernel between the query and those
    examples, with no cross-talk from the other labels (with random label directions, every label's
    write adds noise to every logit). No gate reads the label, and the forget gate reads neither
    embedding nor previous state at first (those weights, and the layer's recurrent weights, start at
    0), so it is ``sigmoid(forget_bias)`` for every unit and step; the input and output gates' biases
    are the same in every block, and the cell candidate's are 0. The ``hidden - label_dim * W`` units
    left over keep their keys and write nothing. In eval mode (no batch statistics) the logit of class ``j`` then depends on the query and
    the support examples of label ``j`` only (``tests/test_lstm_learner.py``).
    """
    if not key_std > 0:
        raise ValueError(f"key_std must be > 0, got {key_std}")
    hidden = lstm.hidden_size
    if label_slots and label_dim > hidden:
        raise ValueError(f"label_slots needs at least one unit per label: {label_dim} labels for {hidden} units")
    w, b_ih, b_hh = _first_layer(lstm)
    rows = {name: slice(i * hidden, (i + 1) * hidden) for i, name in enumerate(("input", "forget", "cell", "output"))}
    with torch.no_grad():
        w[rows["input"], :embed_dim].normal_(0.0, key_std / embed_dim**0.5)
        w[rows["cell"], :embed_dim].zero_()
        if label_slots:
            width = hidden // label_dim
            unit = torch.arange(hidden)
            tiled = unit % width  # every block repeats the first block's rows
            labels = w[rows["cell"], embed_dim : embed_dim + label_dim]
            labels.copy_((unit[:, None] // width == torch.arange(label_dim)[None, :]).to(labels.dtype))  # leftovers: none
            w[rows["forget"], :embed_dim].zero_()
            for gate in ("input", "forget", "output"):  # the gates do not read the label
                w[rows[gate], embed_dim : embed_dim + label_dim].zero_()
            _first_layer_param(lstm, "weight_hh").zero_()
            w[rows["input"], :embed_dim].copy_(w[rows["input"], :embed_dim][tiled])
            for gate in ("input", "output"):  # the same biases in every block
                b_ih[rows[gate]].copy_((b_ih[rows[gate]] + b_hh[rows[gate]])[tiled])
                b_hh[rows[gate]].zero_()
            b_ih[rows["cell"]].zero_()  # an example writes nothing outside its label's block
            b_hh[rows["cell"]].zero_()
        else:
            w[rows["cell"], embed_dim : embed_dim + label_dim].normal_(0.0, 1.0)
        w[rows["output"], :embed_dim].copy_(w[rows["input"], :embed_dim])
        b_ih[rows["forget"]].fill_(forget_bias)
        b_hh[rows["forget"]].zero_()
        for gate, bias in (("input", input_bias), ("output", output_bias)):
            if bias is not None:
                b_ih[rows[gate]].fill_(bias)
                b_hh[rows[gate]].zero_()
        if zero_recurrent:
            _first_layer_param(lstm, "weight_hh").zero_()


def label_readout_init_(head: nn.Linear, lstm: nn.LSTM | nn.LSTMCell, embed_dim: int, label_dim: int,
                        scale: float = LABEL_READOUT_SCALE) -> None:
    """Initialise ``head`` to read back the cell direction each label writes (in place).

    Under :func:`key_value_init_` the support example of class ``j`` adds about
    ``i(e_s) * tanh(V[:, j])`` to the cell (``V``: the cell candidate's label weights); with
    ``head.weight[j, :H] = scale * tanh(V[:, j])`` the logit of class ``j`` reads the cell along that
    direction from the first step (measured in docs/RECURRENT.md). The head's inputs after the first
    ``H`` (MANN's memory reads) keep their values; needs one output per label-slot column.
    """
    hidden = lstm.hidden_size
    if label_dim != head.out_features or head.in_features < hidden:
        raise ValueError(
            f"label_readout_init_ needs one label-slot column per output and the LSTM's {hidden} units first among the "
            f"head's inputs, got {label_dim} label columns for a head {head.in_features} -> {head.out_features}"
        )
    label_weights = _first_layer(lstm)[0][2 * hidden : 3 * hidden, embed_dim : embed_dim + label_dim]  # [H, n_way]
    with torch.no_grad():
        head.weight[:, :hidden].copy_(scale * torch.tanh(label_weights).T)
        head.bias.zero_()


def matching_init_(
    lstm: nn.LSTM | nn.LSTMCell,
    head: nn.Linear,
    embed_dim: int,
    n_way: int,
    key_scale: float = 1.0,
    readout_scale: float = 1.0,
    forget_bias: float = 6.0,
    write_logit: float = 6.0,
) -> None:
    """Start the first layer of ``lstm`` and ``head`` as a dot-product matcher of the query with each class (in place).

    The layer's input starts ``[embedding (embed_dim), one-hot label (n_way), ...]``; the rest (MANN's
    memory reads) and the head's inputs after the first ``hidden`` (MANN's reads) start at 0. The units
    are split into ``n_way`` blocks of ``W = hidden // n_way``, and block ``j`` into ``K = W // 2`` pairs
    that share a key ``p_k`` (``K`` unit-norm rows of an orthogonal matrix over the embedding; every block
    has the same keys). In block ``j`` (gate rows in PyTorch's order ``[input, forget, cell, output]``):

    * the input gate reads label ``j`` only: ``i = sigmoid(write_logit)`` for an example of class ``j``,
      ``sigmoid(-write_logit)`` otherwise and for a query (whose label slot is 0): label ``j`` is
      written into block ``j`` alone;
    * the cell candidate reads the embedding: ``g = tanh(+-key_scale p_k . e)`` (``+`` for the first unit
      of a pair, ``-`` for the second): what is written is a projection of the example;
    * the output gate reads the embedding with the same keys: ``o = sigmoid(+-key_scale p_k . e)``: the
      query's read key;
    * the forget gate is ``sigmoid(forget_bias)`` (no weights): the writes of all support steps survive;
      the recurrent weights start at 0 and no gate reads the previous output.

    After the support set of a 1-shot task and one query step, a pair holds ``c = +-tanh(a_s)`` with
    ``a = key_scale p_k . e`` and outputs ``+-sigmoid(+-a_q) tanh(tanh(a_s))``, which sum to
    ``tanh(a_q / 2) tanh(tanh(a_s))``; the head sums block ``j`` with weight ``readout_scale``, so

    ``logit_j = readout_scale * sum_k tanh(a_qk / 2) tanh(sum_{s in j} f^(T - t_s) i tanh(a_sk))``,

    about ``readout_scale * key_scale^2 / 2 * (P e_q) . (P e_s)`` for small keys: the dot product of
    the query with the class's support example (the sum of its examples for more shots), in the ``K``
    directions of ``P``. On layer-normalised embeddings that is the cosine similarity of a matching
    network (Vinyals et al. 2016) or, with ``K >= embed_dim``, the nearest-prototype rule of ProtoNet
    for one shot. Every weight stays trainable; this is a starting point for the same LSTM.

    Raises:
        ValueError: fewer than two units per label, a head of another shape, or a scale ``<= 0``.
    """
    hidden = lstm.hidden_size
    width = hidden // n_way
    if width < 2:
        raise ValueError(f"matching_init needs at least 2 units per label: {n_way} labels for hidden_size={hidden}")
    if head.in_features < hidden or head.out_features != n_way:
        raise ValueError(
            f"matching_init needs a head reading the LSTM's {hidden} units first with one output per label, got "
            f"a head {head.in_features} -> {head.out_features} for n_way={n_way}"
        )
    if not (key_scale > 0 and readout_scale > 0):
        raise ValueError(f"key_scale and readout_scale must be > 0, got {key_scale} and {readout_scale}")
    pairs = width // 2
    keys = torch.empty(pairs, embed_dim)
    nn.init.orthogonal_(keys)
    keys = keys / keys.norm(dim=1, keepdim=True)  # unit rows also where pairs > embed_dim
    unit = torch.arange(n_way * 2 * pairs)
    block, pair, sign = unit // (2 * pairs), (unit % (2 * pairs)) // 2, 1.0 - 2.0 * (unit % 2)
    unit_keys = key_scale * sign[:, None] * keys[pair]  # [n_way * 2K, E]
    w, b_ih, b_hh = _first_layer(lstm)
    rows = {name: slice(i * hidden, i * hidden + len(unit)) for i, name in enumerate(("input", "forget", "cell", "output"))}
    with torch.no_grad():
        w.zero_()
        b_ih.zero_()
        b_hh.zero_()
        _first_layer_param(lstm, "weight_hh").zero_()
        b_ih[:hidden].fill_(-write_logit)  # every input gate closed unless its label opens it; leftovers stay closed
        w[rows["input"], embed_dim : embed_dim + n_way] = 2.0 * write_logit * F.one_hot(block, n_way).to(w.dtype)
        b_ih[hidden : 2 * hidden].fill_(forget_bias)
        w[rows["cell"], :embed_dim] = unit_keys
        w[rows["output"], :embed_dim] = unit_keys
        head.weight.zero_()
        head.weight[:, : len(unit)] = readout_scale * F.one_hot(block, n_way).T.to(head.weight.dtype)
        head.bias.zero_()
