"""Text encoders as the backbone of every learner: shapes, padding invariance, forward/backward, TF-IDF baseline."""

from __future__ import annotations

import pytest
import torch

from rnnmeta.data.vocab import PAD_ID as DATA_PAD_ID
from rnnmeta.learners import MAML, MANN, SNAIL, LearnedOptimizer, LSTMLearner, ProtoNet, TfidfCentroid
from rnnmeta.nets import BagOfEmbeddings, TextCNN, TextTransformer, backbone_spec, resolve_backbone
from rnnmeta.nets.text import PAD_ID as NETS_PAD_ID

VOCAB = 50
N, K, Q, L = 3, 2, 2, 9
SUBWORDS, NGRAMS = 40, 4  # subword_buckets and max_ngrams of the subword encoders' ids [..., L, 1 + NGRAMS]


def random_ids(generator: torch.Generator, *lead: int, length: int = L, subwords: bool = False) -> torch.Tensor:
    """Token ids ``[*lead, length]`` with random lengths 1..length, right-padded with 0.

    ``subwords``: ``[*lead, length, 1 + NGRAMS]``, each real token with 1..NGRAMS random buckets
    (right-padded with 0), padding all 0 -- the layout of ``Vocabulary.encode_batch`` with subwords.
    """
    ids = torch.randint(2, VOCAB, (*lead, length), generator=generator)
    lengths = torch.randint(1, length + 1, lead, generator=generator)
    ids = ids.masked_fill(torch.arange(length) >= lengths[..., None], 0)
    if not subwords:
        return ids
    grams = torch.randint(1, SUBWORDS + 1, (*ids.shape, NGRAMS), generator=generator)
    counts = torch.randint(1, NGRAMS + 1, ids.shape, generator=generator)
    grams = grams.masked_fill(torch.arange(NGRAMS) >= counts[..., None], 0).masked_fill((ids == 0)[..., None], 0)
    return torch.cat([ids[..., None], grams], -1)


def text_episode(batch: int = 2, seed: int = 0, subwords: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    support_x = random_ids(g, batch, N * K, subwords=subwords)
    support_y = torch.arange(N).repeat_interleave(K).repeat(batch, 1)
    query_x = random_ids(g, batch, N * Q, subwords=subwords)
    query_y = torch.arange(N).repeat_interleave(Q).repeat(batch, 1)
    return support_x, support_y, query_x, query_y


def pad_more(ids: torch.Tensor, extra: int, subwords: bool = False) -> torch.Tensor:
    """``ids`` with ``extra`` more padding positions (along ``L``: the last dim, or the one before with subwords)."""
    if subwords:
        return torch.cat([ids, ids.new_zeros(*ids.shape[:-2], extra, ids.shape[-1])], -2)
    return torch.cat([ids, ids.new_zeros(*ids.shape[:-1], extra)], -1)


ENCODERS = {
    "cnn": lambda: TextCNN(vocab_size=VOCAB, embedding_dim=8, filters=6, kernel_sizes=[2, 3]),
    "bag": lambda: BagOfEmbeddings(vocab_size=VOCAB, embedding_dim=8, hidden=10),
    "bag_weighted": lambda: BagOfEmbeddings(vocab_size=VOCAB, embedding_dim=8, token_weights=True),
    # the CLINC150 configs' encoder: weighted mean, unit norm times a learned scale
    "bag_normalized": lambda: BagOfEmbeddings(vocab_size=VOCAB, embedding_dim=8, token_weights=True, normalize_to=3.0),
    # with character n-grams (ids [..., L, 1 + NGRAMS])
    "cnn_subword": lambda: TextCNN(vocab_size=VOCAB, embedding_dim=8, filters=6, kernel_sizes=[2, 3], subword_buckets=SUBWORDS),
    "bag_subword": lambda: BagOfEmbeddings(vocab_size=VOCAB, embedding_dim=8, token_weights=True, normalize_to=3.0, subword_buckets=SUBWORDS),
    "transformer": lambda: TextTransformer(vocab_size=VOCAB, embedding_dim=8, heads=2, layers=2, feedforward=12),
    "transformer_subword": lambda: TextTransformer(vocab_size=VOCAB, embedding_dim=8, heads=2, layers=1, feedforward=12,
                                                   normalize_to=3.0, subword_buckets=SUBWORDS),
}
SUBWORD_ENCODERS = [name for name in ENCODERS if name.endswith("_subword")]

LEARNERS = {
    "snail": lambda bb: SNAIL(backbone=bb, n_way=N, max_shots=K, key_sizes=[8, 8], value_sizes=[8, 8], tc_filters=[8]),
    "lstm": lambda bb: LSTMLearner(backbone=bb, n_way=N, hidden_size=16, num_layers=1),
    "mann": lambda bb: MANN(backbone=bb, n_way=N, controller_size=16, memory_slots=8, memory_width=6, read_heads=1),
    "lstm_label_memory": lambda bb: LSTMLearner(backbone=bb, n_way=N, hidden_size=16, num_layers=1, label_memory=1.0,
                                                vote_readout=50.0),
    "mann_label_memory": lambda bb: MANN(backbone=bb, n_way=N, controller_size=16, memory_slots=8, memory_width=6,
                                         read_heads=1, label_memory=1.0, vote_readout=50.0),
    "snail_label_memory": lambda bb: SNAIL(backbone=bb, n_way=N, max_shots=K, key_sizes=[8, 8], value_sizes=[8, 8],
                                           tc_filters=[8], label_memory=1.0, label_memory_rows="classes", vote_readout=50.0),
    "maml": lambda bb: MAML(backbone=bb, n_way=N, inner_steps=2, inner_lr=0.1),
    "maml_first_order": lambda bb: MAML(backbone=bb, n_way=N, inner_steps=1, inner_lr=0.1, first_order=True),
    "learned_optimizer": lambda bb: LearnedOptimizer(backbone=bb, n_way=N, inner_steps=2, lstm_hidden=4, lstm_layers=1),
    "learned_optimizer_head": lambda bb: LearnedOptimizer(backbone=bb, n_way=N, inner_steps=2, adapted="head"),
    "protonet": lambda bb: ProtoNet(backbone=bb, n_way=N),
}


def test_padding_id_is_shared_by_data_and_nets() -> None:
    assert DATA_PAD_ID == NETS_PAD_ID == 0


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_shapes_and_spec_round_trip(name: str) -> None:
    torch.manual_seed(0)
    enc = ENCODERS[name]()
    ids = random_ids(torch.Generator().manual_seed(1), 2, 5, subwords=name in SUBWORD_ENCODERS)
    out = enc(ids)
    assert out.shape == (2, 5, enc.out_features)
    rebuilt = resolve_backbone(backbone_spec(enc), "classification")
    rebuilt.load_state_dict(enc.state_dict())
    torch.testing.assert_close(rebuilt(ids), out)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_output_does_not_depend_on_padding(name: str) -> None:
    torch.manual_seed(0)
    enc = ENCODERS[name]()
    sub = name in SUBWORD_ENCODERS
    ids = random_ids(torch.Generator().manual_seed(2), 4, 3, subwords=sub)
    short = enc(ids)
    # the same sentences padded to two other lengths, and alone in their batch
    torch.testing.assert_close(enc(pad_more(ids, 7, sub)), short, rtol=0, atol=1e-6)
    torch.testing.assert_close(enc(pad_more(ids, 40, sub)), short, rtol=0, atol=1e-6)
    torch.testing.assert_close(enc(ids[:1, :1]), short[:1, :1], rtol=0, atol=1e-6)
    # and the padding positions really are ignored: changing what sits there has no effect if it is 0
    filled = ids.clamp_min(2) if not sub else torch.cat([ids[..., :1].clamp_min(2), ids[..., 1:].clamp_min(1)], -1)
    assert not torch.allclose(enc(filled), short)  # (content in place of padding does change it)


@pytest.mark.parametrize("name", sorted(set(ENCODERS) - set(SUBWORD_ENCODERS)))
def test_encoder_refuses_bad_ids(name: str) -> None:
    enc = ENCODERS[name]()
    with pytest.raises(TypeError, match="integer token ids"):
        enc(torch.rand(2, 5))
    with pytest.raises(ValueError, match=f"token id {VOCAB} is outside 0..{VOCAB - 1}"):
        enc(torch.tensor([[2, VOCAB, 0]]))
    with pytest.raises(ValueError, match="token id -1"):
        enc(torch.tensor([[2, -1, 0]]))


def test_textcnn_all_padding_row_is_zero_and_finite() -> None:
    enc = ENCODERS["cnn"]()
    out = enc(torch.zeros(2, 6, dtype=torch.int64))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.parametrize("learner_name", sorted(LEARNERS))
def test_every_learner_runs_on_text_and_ignores_padding(learner_name: str, encoder: str) -> None:
    torch.manual_seed(0)
    learner = LEARNERS[learner_name](ENCODERS[encoder]())
    sub = encoder in SUBWORD_ENCODERS
    support_x, support_y, query_x, query_y = text_episode(subwords=sub)
    learner.train()
    preds = learner(support_x, support_y, query_x)
    assert preds.shape == (2, N * Q, N)
    loss = learner.task_losses(preds, query_y).mean()
    loss.backward()
    grads = [p.grad for p in learner.backbone.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads), "no gradient reached the text encoder"
    emb_grad = learner.backbone.embedding.weight.grad
    assert emb_grad is not None and float(emb_grad[0].abs().sum()) == 0.0, "the padding row received a gradient"
    if sub:  # the n-gram table is trained too, but never its padding row
        gram_grad = learner.backbone.subwords.embedding.weight.grad
        assert gram_grad is not None and float(gram_grad[1:].abs().sum()) > 0 and float(gram_grad[0].abs().sum()) == 0.0
    # the same episode padded to two lengths gives the same predictions (evaluation mode)
    learner.eval()
    with torch.enable_grad():  # MAML / the learned optimizer adapt with autograd at evaluation too
        a = learner(support_x, support_y, query_x).detach()
        b = learner(pad_more(support_x, 11, sub), support_y, pad_more(query_x, 11, sub)).detach()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_tfidf_centroid_hand_computed_case() -> None:
    # 2-way 1-shot: class 0 = "2 3 3", class 1 = "4 5"; query "3 9" shares only term 3 with class 0
    support_x = torch.tensor([[[2, 3, 3, 0], [4, 5, 0, 0]]])
    support_y = torch.tensor([[0, 1]])
    query_x = torch.tensor([[[3, 9, 0, 0], [5, 5, 4, 1], [9, 9, 0, 0]]])
    learner = TfidfCentroid(n_way=2, scale=1.0)
    logits = learner(support_x, support_y, query_x)
    # idf of every support term = log(3/2) + 1 (each occurs in one of two texts): all weights equal
    w = torch.log(torch.tensor(1.5)) + 1
    s0 = torch.tensor([w, 2 * w]) / torch.tensor([w, 2 * w]).norm()  # terms 2, 3
    assert logits[0, 0, 1] == 0 and torch.isclose(logits[0, 0, 0], s0[1], atol=1e-6)
    # "5 5 4 <unk>": unk ignored, tf (4: 1, 5: 2), cosine with (4: 1, 5: 1)/sqrt(2)
    expected = (1 + 2) / (5**0.5 * 2**0.5)
    assert torch.isclose(logits[0, 1, 1], torch.tensor(expected), atol=1e-6) and logits[0, 1, 0] == 0
    assert torch.equal(logits[0, 2], torch.zeros(2))  # no term in common: no evidence
    assert learner.num_parameters() == 0


def test_tfidf_centroid_is_query_independent_and_ignores_padding() -> None:
    support_x, support_y, query_x, _ = text_episode(batch=3)
    learner = TfidfCentroid(n_way=N)
    full = learner(support_x, support_y, query_x)
    torch.testing.assert_close(learner(support_x, support_y, query_x[:, :1]), full[:, :1])
    torch.testing.assert_close(learner(pad_more(support_x, 9), support_y, pad_more(query_x, 9)), full)
    with pytest.raises(ValueError, match="scale"):
        TfidfCentroid(scale=0.0)


def test_token_weights_start_as_the_plain_mean_and_are_learned() -> None:
    torch.manual_seed(0)
    plain = BagOfEmbeddings(vocab_size=VOCAB, embedding_dim=8)
    weighted = BagOfEmbeddings(vocab_size=VOCAB, embedding_dim=8, token_weights=True)
    weighted.embedding.load_state_dict(plain.embedding.state_dict())
    ids = random_ids(torch.Generator().manual_seed(4), 3, 2)
    torch.testing.assert_close(weighted(ids), plain(ids))
    weighted(ids).sum().backward()
    grad = weighted.token_logit.weight.grad
    assert float(grad[ids[ids != 0]].abs().sum()) > 0 and float(grad[0].abs().sum()) == 0


@pytest.mark.parametrize("learner_name", sorted(LEARNERS))
def test_a_frozen_embedding_table_is_neither_adapted_nor_trained(learner_name: str) -> None:
    torch.manual_seed(0)
    encoder = BagOfEmbeddings(vocab_size=VOCAB, embedding_dim=8, token_weights=True, normalize_to=3.0, freeze_embedding=True)
    table = encoder.embedding.weight.detach().clone()
    learner = LEARNERS[learner_name](encoder)
    support_x, support_y, query_x, query_y = text_episode()
    learner.train()
    learner.task_losses(learner(support_x, support_y, query_x), query_y).mean().backward()
    assert encoder.embedding.weight.grad is None, "the frozen table received a gradient"
    assert float(encoder.token_logit.weight.grad.abs().sum()) > 0, "the word weights must still learn"
    if isinstance(learner, MAML):  # the inner loop adapts the other weights and leaves the table as it is
        adapted = learner.adapt_weights(support_x, support_y)
        torch.testing.assert_close(adapted["backbone.embedding.weight"][0], table, rtol=0, atol=0)
        assert not torch.equal(adapted["backbone.token_logit.weight"][0], encoder.token_logit.weight)
    if isinstance(learner, LearnedOptimizer):
        assert "backbone.embedding.weight" not in dict(learner.base_parameters())
    rebuilt = resolve_backbone(backbone_spec(encoder), "classification")  # the option survives a checkpoint spec
    assert not rebuilt.embedding.weight.requires_grad and rebuilt.token_logit.weight.requires_grad


def with_unknown_words(ids: torch.Tensor, every: int = 3) -> torch.Tensor:
    """``ids`` with every ``every``-th real token replaced by ``<unk>`` (id 1)."""
    position = torch.arange(ids.shape[-1]).expand_as(ids)
    return ids.masked_fill((position % every == 1) & (ids != 0), 1)


@pytest.mark.parametrize("name", ["cnn", "bag", "bag_weighted"])
def test_unknown_words_carry_no_identity_unless_asked(name: str) -> None:
    torch.manual_seed(0)
    encoder = ENCODERS[name]()
    ids = with_unknown_words(random_ids(torch.Generator().manual_seed(5), 6))
    assert bool((ids == 1).any()), "the test needs <unk> tokens"
    before = encoder(ids)
    with torch.no_grad():
        encoder.embedding.weight[1].normal_()  # another <unk> embedding: nothing may change
    torch.testing.assert_close(encoder(ids), before)
    if name.startswith("bag"):  # the bag leaves <unk> out of its mean: dropping the tokens changes nothing
        dropped = torch.stack([torch.cat([row[(row != 1) & (row != 0)], row.new_zeros(int(((row == 1) | (row == 0)).sum()))]) for row in ids])
        torch.testing.assert_close(encoder(dropped), before)
    encoder.ignore_unk = False  # the embedded <unk> is read again
    assert not torch.allclose(encoder(ids), before)


def test_a_text_of_unknown_words_only_embeds_to_zero_in_the_bag() -> None:
    bag = BagOfEmbeddings(vocab_size=VOCAB, embedding_dim=8, normalize_to=2.0)
    out = bag(torch.tensor([[1, 1, 0], [5, 1, 0]]))
    assert torch.equal(out[0], torch.zeros(8)) and torch.isfinite(out).all()
    torch.testing.assert_close(out[1].norm(), torch.tensor(2.0))


@pytest.mark.parametrize("name", ["cnn", "bag"])
def test_normalize_to_gives_outputs_of_one_learned_norm(name: str) -> None:
    torch.manual_seed(0)
    cls, kwargs = (TextCNN, dict(filters=6, kernel_sizes=[2, 3])) if name == "cnn" else (BagOfEmbeddings, dict(hidden=10))
    encoder = cls(vocab_size=VOCAB, embedding_dim=8, normalize_to=3.0, **kwargs)
    raw = cls(vocab_size=VOCAB, embedding_dim=8, **kwargs)
    raw.load_state_dict(encoder.state_dict(), strict=False)
    ids = random_ids(torch.Generator().manual_seed(6), 4)
    out = encoder(ids)
    torch.testing.assert_close(out.norm(dim=-1), torch.full((4,), 3.0))
    torch.testing.assert_close(out, 3.0 * torch.nn.functional.normalize(raw(ids), dim=-1))  # the direction is the raw one
    out.pow(2).sum().backward()  # the norm is a learned parameter: d|out|^2/ds = 2 s per row
    torch.testing.assert_close(encoder.output_scale.scale.grad, torch.tensor(4 * 2 * 3.0))
    assert resolve_backbone(backbone_spec(encoder), "classification").output_scale.scale is not None  # the option survives a checkpoint spec
    for bad in (0.0, -1.0, True):
        with pytest.raises(ValueError, match=rf"normalize_to must be a positive number.*{bad!r}"):
            cls(vocab_size=VOCAB, embedding_dim=8, normalize_to=bad)


# ----------------------------------------------------------------------------- character n-grams
@pytest.mark.parametrize("name", SUBWORD_ENCODERS)
def test_an_unknown_word_is_read_through_its_ngrams(name: str) -> None:
    torch.manual_seed(0)
    encoder = ENCODERS[name]()
    assert encoder.ignore_unk
    unknown = torch.tensor([[[1, 3, 7, 0, 0]]])  # one <unk> token with two n-gram buckets
    out = encoder(unknown).detach()
    assert float(out.abs().sum()) > 0  # without subwords the same text embeds to 0 in the bag (test above)
    with torch.no_grad():
        encoder.embedding.weight[1].normal_()  # the <unk> word embedding still carries nothing
    torch.testing.assert_close(encoder(unknown), out)
    with torch.no_grad():
        encoder.subwords.embedding.weight[3].normal_()  # its n-grams do
    assert not torch.allclose(encoder(unknown), out)


def test_the_bag_with_subwords_is_word_plus_ngram_mean() -> None:
    torch.manual_seed(0)
    bag = BagOfEmbeddings(vocab_size=VOCAB, embedding_dim=8, subword_buckets=SUBWORDS)
    ids = torch.tensor([[[5, 2, 4, 0, 0], [1, 9, 0, 0, 0], [0, 0, 0, 0, 0]]])
    word, gram = bag.embedding.weight, bag.subwords.embedding.weight
    first = word[5] + (gram[2] + gram[4]) / 2
    second = gram[9]  # <unk>: no word embedding (ignore_unk), in the mean through its n-gram
    torch.testing.assert_close(bag(ids), ((first + second) / 2)[None])


def test_encoder_and_data_subword_mismatch_is_named() -> None:
    plain = ProtoNet(backbone=ENCODERS["bag_normalized"](), n_way=N)
    sub = ProtoNet(backbone=ENCODERS["bag_subword"](), n_way=N)
    s_sub, y, q_sub, _ = text_episode(subwords=True)
    s_plain, _, q_plain, _ = text_episode()
    with pytest.raises(ValueError, match=r"subword_buckets=0\).*\[9, 5\].*set the backbone's subword_buckets"):
        plain(s_sub, y, q_sub)
    with pytest.raises(ValueError, match=rf"subword_buckets={SUBWORDS}\).*word ids \[L\].*set the backbone's subword_buckets"):
        sub(s_plain, y, q_plain)
    encoder = ENCODERS["cnn_subword"]()
    with pytest.raises(ValueError, match=rf"n-gram bucket id {SUBWORDS + 1} is outside 0..{SUBWORDS}.*subword_buckets={SUBWORDS}"):
        encoder(torch.tensor([[[2, SUBWORDS + 1, 0]]]))
    with pytest.raises(ValueError, match=rf"token id {VOCAB} is outside 0..{VOCAB - 1}"):
        encoder(torch.tensor([[[VOCAB, 3, 0]]]))
    with pytest.raises(ValueError, match=rf"built with subword_buckets={SUBWORDS} and reads ids \[..., L, 1 \+ max_ngrams\]"):
        encoder(torch.tensor([2, 3, 0]))
    with pytest.raises(ValueError, match=r"does not hold word ids and n-gram buckets.*subword_buckets=0"):
        # word ids [B, S, L] read as [B][S tokens][L channels]: a one-word text gives a token without n-grams
        encoder(torch.tensor([[[5, 0, 0], [6, 7, 0]]]))
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match=rf"subword_buckets must be an integer >= 0.*{bad!r}"):
            BagOfEmbeddings(vocab_size=VOCAB, subword_buckets=bad)
        with pytest.raises(ValueError, match=rf"subword_buckets must be an integer >= 0.*{bad!r}"):
            TextCNN(vocab_size=VOCAB, subword_buckets=bad)
    assert "subword_buckets" not in ENCODERS["bag"]().init_args  # word-only specs are as before
    assert ENCODERS["bag_subword"]().init_args["subword_buckets"] == SUBWORDS


def test_tfidf_reads_the_word_ids_of_subword_episodes() -> None:
    from rnnmeta.data import Vocabulary

    texts = ["book a flight to paris", "flights to rome please", "what is my balance", "balance of my account",
             "turn on the lights", "lights off in the kitchen"]
    queries = ["a flight to berlin", "show my account balance", "kitchen lights on", "unknown words entirely"]
    plain = Vocabulary.build(texts[::2])
    sub = Vocabulary.build(texts[::2], subword_buckets=97, max_ngrams=6)
    support_y = torch.tensor([[0, 0, 1, 1, 2, 2]])
    learner = TfidfCentroid(n_way=3)
    a = learner(plain.encode_batch(texts, 8)[None], support_y, plain.encode_batch(queries, 8)[None])
    b = learner(sub.encode_batch(texts, 8)[None], support_y, sub.encode_batch(queries, 8)[None])
    assert sub.encode_batch(texts, 8).dim() == 3 and float(a.abs().sum()) > 0
    assert torch.equal(a, b)


def test_transformer_layer_computes_torchs_pre_ln_encoder_layer() -> None:
    from rnnmeta.nets.text import _PreLNEncoderLayer

    torch.manual_seed(0)
    ours = _PreLNEncoderLayer(dim=8, heads=2, feedforward=12, dropout=0.0).double()
    reference = torch.nn.TransformerEncoderLayer(8, 2, 12, 0.0, activation="gelu", batch_first=True, norm_first=True).double()
    with torch.no_grad():
        reference.self_attn.in_proj_weight.copy_(ours.qkv.weight)
        reference.self_attn.in_proj_bias.copy_(ours.qkv.bias)
        reference.self_attn.out_proj.weight.copy_(ours.out.weight)
        reference.self_attn.out_proj.bias.copy_(ours.out.bias)
        for mine, theirs in ((ours.up, reference.linear1), (ours.down, reference.linear2),
                             (ours.norm_attention, reference.norm1), (ours.norm_feedforward, reference.norm2)):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    keys = torch.tensor([[True] * 5, [True, True, True, False, False], [True, False, False, False, False]])
    expected = reference.train()(x, src_key_padding_mask=~keys)
    torch.testing.assert_close(ours(x, keys), expected, rtol=1e-12, atol=1e-12)


def test_transformer_all_padding_row_is_zero_and_bad_settings_are_refused() -> None:
    enc = ENCODERS["transformer"]()
    out = enc(torch.tensor([[0, 0, 0], [5, 6, 0]]))
    assert torch.equal(out[0], torch.zeros(8)) and bool(torch.isfinite(out).all()) and out[1].abs().sum() > 0
    with pytest.raises(ValueError, match=r"texts of 5 tokens, but max_length=4"):
        TextTransformer(vocab_size=VOCAB, embedding_dim=8, heads=2, max_length=4)(torch.tensor([[2, 3, 4, 5, 6]]))
    with pytest.raises(ValueError, match=r"embedding_dim \(10\) must be divisible by heads \(4\)"):
        TextTransformer(vocab_size=VOCAB, embedding_dim=10, heads=4)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), got 1\.0"):
        TextTransformer(vocab_size=VOCAB, dropout=1.0)
