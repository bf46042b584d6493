"""N-way K-shot sampling by tensor indexing: labels, provenance, order, seeding, errors (synthetic data)."""

from __future__ import annotations

import pytest
import torch

from rnnmeta.data.sampling import ClassIndexSource, derive_seed, make_generator, sample_episode_index


def coded_source(counts: list[int]) -> ClassIndexSource:
    """Images whose two pixels encode their row, so every sampled image can be traced to its class and slot."""
    n = sum(counts)
    rows = torch.arange(n)
    images = torch.stack([rows // 256, rows % 256], dim=1).to(torch.uint8).view(n, 1, 1, 2)
    return ClassIndexSource(images, torch.tensor(counts), [f"c{i}" for i in range(len(counts))], name="train")


def decode_rows(x: torch.Tensor) -> torch.Tensor:
    v = (x * 255).round().long().view(*x.shape[:2], 2)
    return v[..., 0] * 256 + v[..., 1]


def row_to_class(source: ClassIndexSource) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(source.n_classes), source.counts)


@pytest.mark.parametrize("counts", [[20] * 30, [5, 9, 20, 7, 12, 30, 6, 8]])
def test_label_remapping_and_provenance(counts: list[int]) -> None:
    src = coded_source(counts)
    owner = row_to_class(src)
    B, N, K, Q = 16, 5, 2, 3
    g = torch.Generator().manual_seed(1)
    idx = src.sample_index(g, B, N, K, Q)
    ep = src.episode_from_index(idx, N)
    assert ep.support_x.dtype == torch.float32 and ep.support_y.dtype == torch.int64
    assert ep.support_x.shape == (B, N * K, 1, 1, 2) and ep.query_x.shape == (B, N * Q, 1, 1, 2)
    s_rows, q_rows = decode_rows(ep.support_x), decode_rows(ep.query_x)
    mappings = set()
    for b in range(B):
        # labels 0..N-1, each exactly K times in support and Q times in queries
        assert torch.bincount(ep.support_y[b], minlength=N).tolist() == [K] * N
        assert torch.bincount(ep.query_y[b], minlength=N).tolist() == [Q] * N
        true_of_label = {}
        for rows, ys in ((s_rows[b], ep.support_y[b]), (q_rows[b], ep.query_y[b])):
            for r, y in zip(rows.tolist(), ys.tolist()):
                c = int(owner[r])
                assert true_of_label.setdefault(y, c) == c, "a label's images must come from one true class"
                assert c == int(idx.classes[b, y])
        assert len(set(true_of_label.values())) == N, "the N labels must be N distinct classes"
        # support and query examples are distinct images
        all_rows = s_rows[b].tolist() + q_rows[b].tolist()
        assert len(set(all_rows)) == len(all_rows)
        mappings.add(tuple(true_of_label[y] for y in range(N)))
    assert len(mappings) > 1, "the class -> label mapping must differ across tasks"


def test_uneven_counts_never_use_missing_slots() -> None:
    counts = [3, 40, 4, 3, 50]
    src = coded_source(counts)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = src.sample_index(g, 8, 5, 2, 1)
        assert bool((idx.support_slot < src.counts[idx.support_class]).all())
        assert bool((idx.query_slot < src.counts[idx.query_class]).all())


def test_support_order_is_shuffled() -> None:
    src = coded_source([20] * 20)
    ep = src.sample(torch.Generator().manual_seed(0), 32, 5, 5, 5)
    blocks = torch.arange(5).repeat_interleave(5)
    sorted_like = sum(bool(torch.equal(ep.support_y[b], blocks)) for b in range(32))
    assert sorted_like == 0, "support labels must not come in blocks"
    assert not all(torch.equal(ep.query_y[b], ep.query_y[0]) for b in range(32))


def test_same_generator_state_same_episode() -> None:
    src = coded_source([20] * 30)
    a = src.sample(torch.Generator().manual_seed(7), 4, 5, 1, 15)
    b = src.sample(torch.Generator().manual_seed(7), 4, 5, 1, 15)
    c = src.sample(torch.Generator().manual_seed(8), 4, 5, 1, 15)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
    assert not torch.equal(a.support_x, c.support_x)


def test_derive_seed_is_pure_and_separates_streams() -> None:
    assert derive_seed(0, "train", 0, 5) == derive_seed(0, "train", 0, 5)
    seeds = {derive_seed(s, sp, *ix) for s in (0, 1) for sp in ("train", "val", "test") for ix in ((0,), (1,), (0, 1), (1, 0))}
    assert len(seeds) == 2 * 3 * 4
    g1, g2 = make_generator(3, "val", 9), make_generator(3, "val", 9)
    assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))
    with pytest.raises(ValueError, match="-1"):
        derive_seed(-1, "train")


def test_n_way_larger_than_split() -> None:
    src = coded_source([20] * 7)
    with pytest.raises(ValueError, match=r"n_way=8 exceeds the 7 classes of split 'train'"):
        src.sample(torch.Generator(), 2, 8, 1, 1)


def test_k_plus_q_larger_than_smallest_class() -> None:
    src = coded_source([20, 20, 6, 20])
    with pytest.raises(ValueError, match=r"5 \+ 2 = 7 exceeds the 6 images of the smallest class \(c2\)"):
        src.sample(torch.Generator(), 2, 2, 5, 2)


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("n_way", -1), ("k_shot", 0)])
def test_non_positive_sizes(field: str, value: int) -> None:
    args = dict(batch_size=2, n_way=2, k_shot=1, q_queries=1)
    args[field] = value
    with pytest.raises(ValueError, match=rf"{field} must be a positive integer, got {value}"):
        sample_episode_index(torch.tensor([5, 5, 5]), torch.Generator(), **args)


def test_bad_source_construction() -> None:
    with pytest.raises(ValueError, match="counts sum to 5 but images has 4 rows"):
        ClassIndexSource(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="class 1 has 0"):
        ClassIndexSource(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([4, 0]))


def test_zero_queries_allowed() -> None:
    ep = coded_source([4] * 5).sample(torch.Generator().manual_seed(0), 3, 5, 4, 0)
    assert ep.query_x.shape[:2] == (3, 0) and ep.support_x.shape[:2] == (3, 20)
