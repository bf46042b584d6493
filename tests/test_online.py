"""The online protocol: label shift, stream composition, determinism, per-instance accuracy, stream learners."""

from __future__ import annotations

from functools import partial
import math

import pytest
import pytorch_lightning as pl
import torch

from rnnmeta.data.base import FewShotDataset
from rnnmeta.data.online import NO_LABEL, OnlineDataModule, OnlineStream, instance_numbers, sample_stream, shift_labels
from rnnmeta.data.sampling import ClassIndexSource, make_generator
from rnnmeta.learners.lstm import LSTMLearner
from rnnmeta.learners.mann import MANN
from rnnmeta.learners.online import (
    OnlineMetaLearner,
    encode_previous_labels,
    format_table,
    per_instance_accuracy,
)
from rnnmeta.nets import MLP


def coded_source(n_classes: int = 12, per_class: int = 20, d: int = 3) -> ClassIndexSource:
    """Images whose first feature encodes (class, slot) as class * 1000 + slot, so a stream can be decoded."""
    codes = torch.arange(n_classes)[:, None] * 1000 + torch.arange(per_class)[None, :]
    images = torch.randn(n_classes, per_class, d, generator=torch.Generator().manual_seed(0))
    images[..., 0] = codes.float()
    return ClassIndexSource.from_grouped(images, name="train")


class TinyDataset(FewShotDataset):
    """Three splits of random 4-d vectors: enough for a Lightning smoke run."""

    kind = "classification"
    x_shape = (4,)

    def split(self, name: str) -> ClassIndexSource:
        g = torch.Generator().manual_seed({"train": 0, "val": 1, "test": 2}[name])
        return ClassIndexSource.from_grouped(torch.randn(8, 12, 4, generator=g), name=name)


# ------------------------------------------------------------------ data side
def test_shift_labels_never_gives_a_step_its_own_label():
    y = torch.tensor([[3, 1, 4, 1, 0], [2, 2, 0, 1, 3]])
    before = y.clone()
    prev = shift_labels(y)
    assert torch.equal(prev[:, 0], torch.full((2,), NO_LABEL))
    assert torch.equal(prev[:, 1:], y[:, :-1])
    assert torch.equal(y, before), "the caller's labels must not be modified"
    with pytest.raises(ValueError, match="int64"):
        shift_labels(y.int())


def test_instance_numbers_by_hand():
    y = torch.tensor([[2, 0, 2, 2, 1, 0], [1, 1, 1, 0, 0, 2]])
    assert instance_numbers(y, 3).tolist() == [[1, 1, 2, 3, 1, 2], [1, 2, 3, 1, 2, 1]]
    with pytest.raises(ValueError, match="0..2"):
        instance_numbers(y + 1, 3)


def test_stream_holds_n_classes_times_10_distinct_instances_in_random_order():
    source = coded_source()
    stream = sample_stream(source, make_generator(0, "train", 0, 0), batch_size=6, n_way=5, instances=10)
    assert stream.x.shape == (6, 50, 3) and stream.y.shape == (6, 50) and stream.length == 50
    codes = stream.x[..., 0].round().long()
    classes, slots = codes // 1000, codes % 1000
    in_blocks = 0
    for b in range(6):
        assert sorted(torch.bincount(stream.y[b], minlength=5).tolist()) == [10] * 5
        # one class per label, five distinct classes, ten distinct examples of each
        label_class = {}
        for t in range(50):
            label_class.setdefault(int(stream.y[b, t]), set()).add(int(classes[b, t]))
        assert all(len(c) == 1 for c in label_class.values()) and len({next(iter(c)) for c in label_class.values()}) == 5
        assert len(set(zip(classes[b].tolist(), slots[b].tolist()))) == 50
        in_blocks += int(torch.equal(stream.y[b], stream.y[b].sort().values))
        assert torch.equal(stream.prev_y[b], shift_labels(stream.y[b : b + 1])[0])
        assert torch.equal(stream.instance[b], instance_numbers(stream.y[b : b + 1], 5)[0])
    assert in_blocks == 0, "the order must be random, not grouped by class"
    assert int(stream.instance.max()) == 10 and int(stream.instance.min()) == 1


def test_streams_are_deterministic_given_the_seed():
    source = coded_source()
    a = sample_stream(source, make_generator(3, "train", 0, 7), 4)
    b = sample_stream(source, make_generator(3, "train", 0, 7), 4)
    c = sample_stream(source, make_generator(3, "train", 0, 8), 4)
    for field in ("x", "y", "prev_y", "instance"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.x, c.x)
    moved = a.to("cpu")
    assert all(torch.equal(getattr(moved, f), getattr(a, f)) for f in ("x", "y", "prev_y", "instance"))
    dm1 = OnlineDataModule(TinyDataset(), n_way=3, instances=4, seed=5)
    dm2 = OnlineDataModule(TinyDataset(), n_way=3, instances=4, seed=5)
    assert torch.equal(dm1.train_batch(2).x, dm2.train_batch(2).x)
    assert torch.equal(dm1.eval_stream("test", 9).y, dm2.eval_stream("test", 9).y)
    assert not torch.equal(dm1.train_batch(2).x, dm1.train_batch(3).x)


def test_bad_arguments_get_clear_errors():
    source = coded_source(n_classes=4)
    with pytest.raises(ValueError, match="n_way=5"):
        sample_stream(source, torch.Generator().manual_seed(0), 1, n_way=5)
    with pytest.raises(ValueError, match="exceeds the 20 images"):
        sample_stream(coded_source(), torch.Generator().manual_seed(0), 1, instances=21)
    with pytest.raises(TypeError, match="ClassIndexSource"):
        sample_stream(object(), torch.Generator(), 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="instances"):
        OnlineDataModule(TinyDataset(), instances=0)
    with pytest.raises(ValueError, match="OnlineStream.x"):
        OnlineStream(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long),
                     torch.ones(2, 4, dtype=torch.long), 3)


# ------------------------------------------------------------------ accuracy by instance
def test_per_instance_accuracy_against_a_hand_built_example():
    y = torch.tensor([[0, 1, 0, 0, 1], [1, 1, 0, 1, 0]])
    inst = instance_numbers(y, 2)  # [[1,1,2,3,2], [1,2,1,3,2]]
    preds = torch.tensor([[1, 1, 0, 1, 1], [0, 1, 0, 1, 0]])
    # instance 1: steps (0,0) wrong, (0,1) right, (1,0) wrong, (1,2) right -> 2/4
    # instance 2: (0,2) right, (0,4) right, (1,1) right, (1,4) right -> 4/4
    # instance 3: (0,3) wrong, (1,3) right -> 1/2; instance 4: none
    acc, count = per_instance_accuracy(preds, y, inst, max_instance=4)
    assert count.tolist() == [4, 4, 2, 0]
    assert acc[:3].tolist() == [0.5, 1.0, 0.5] and math.isnan(float(acc[3]))
    logits = torch.nn.functional.one_hot(preds, 2).float()
    acc_l, _ = per_instance_accuracy(logits, y, inst, max_instance=4)
    torch.testing.assert_close(acc_l[:3], acc[:3])
    with pytest.raises(ValueError, match="agree"):
        per_instance_accuracy(preds[:, :4], y, inst)


def test_encode_previous_labels_gives_no_label_an_empty_slot():
    prev = torch.tensor([[NO_LABEL, 2, 0]])
    assert encode_previous_labels(prev, 3).tolist() == [[[0, 0, 0], [0, 0, 1], [1, 0, 0]]]


# ------------------------------------------------------------------ stream learners
def learners():
    torch.manual_seed(0)
    return [
        LSTMLearner(backbone=MLP(3, [8]), hidden_size=12, num_layers=2, n_way=5).eval(),
        MANN(backbone=MLP(3, [8]), controller_size=12, memory_slots=8, memory_width=4, read_heads=2, n_way=5).eval(),
    ]


@pytest.mark.parametrize("learner", learners(), ids=["lstm", "mann"])
def test_step_t_never_sees_its_own_label_and_is_causal(learner):
    stream = sample_stream(coded_source(), make_generator(0, "train", 0, 1), 2, n_way=5, instances=4)
    x = stream.x / 1000.0
    with torch.no_grad():
        base = learner.predict_stream(x, stream.prev_y)
        assert base.shape == (2, 20, 5)
        t = 7
        y2 = stream.y.clone()
        y2[:, t] = (y2[:, t] + 1) % 5  # change the label of step t ...
        moved_label = learner.predict_stream(x, shift_labels(y2))
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])  # ... or the inputs after it
        moved_future = learner.predict_stream(x2, stream.prev_y)
    # steps 0..t are unchanged: step t's prediction never sees y_t, and no step sees the future
    torch.testing.assert_close(moved_label[:, : t + 1], base[:, : t + 1], rtol=0, atol=0)
    torch.testing.assert_close(moved_future[:, : t + 1], base[:, : t + 1], rtol=0, atol=0)
    # but step t + 1 reads y_t
    assert not torch.allclose(moved_label[:, t + 1], base[:, t + 1])
    # streams of a batch do not see each other
    with torch.no_grad():
        alone = learner.predict_stream(x[1:], stream.prev_y[1:])
    torch.testing.assert_close(alone, base[1:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("learner", learners(), ids=["lstm", "mann"])
def test_predict_stream_rejects_bad_labels(learner):
    x = torch.randn(2, 6, 3)
    with pytest.raises(ValueError, match="NO_LABEL"):
        learner.predict_stream(x, torch.full((2, 6), 5))
    with pytest.raises(TypeError, match="int64"):
        learner.predict_stream(x, torch.zeros(2, 6, dtype=torch.int32))
    with pytest.raises(ValueError, match="x must be"):
        learner.predict_stream(x[:, :5], torch.zeros(2, 6, dtype=torch.long))


def test_regression_learners_refuse_streams():
    reg = LSTMLearner(kind="regression", hidden_size=4)
    with pytest.raises(ValueError, match="classification"):
        reg.predict_stream(torch.randn(1, 3, 1), torch.zeros(1, 3, dtype=torch.long))


def test_online_meta_learner_trains_and_reports_per_instance_accuracy(tmp_path):
    torch.manual_seed(0)
    learner = LSTMLearner(backbone=MLP(4, [8]), hidden_size=12, num_layers=1, n_way=3, readout_init=0.0)
    module = OnlineMetaLearner(learner, optimizer=partial(torch.optim.Adam, lr=1e-2))
    dm = OnlineDataModule(TinyDataset(), n_way=3, instances=4, batch_size=4, eval_batch_size=3,
                          train_batches_per_epoch=3, val_streams=3, test_streams=7)
    before = [p.detach().clone() for p in learner.parameters()]
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         accelerator="cpu", devices=1, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.parameters()))
    (result,) = trainer.test(module, datamodule=dm, verbose=False)
    mean, ci = module.summary("test")
    assert mean.shape == (10,) and torch.all(torch.isfinite(mean[:4])) and torch.all(torch.isnan(mean[4:]))
    assert torch.all((mean[:4] >= 0) & (mean[:4] <= 1)) and torch.all(ci[:4] >= 0)
    assert result["test/acc_inst1"] == pytest.approx(float(mean[0]))
    assert sum(r.shape[0] for r in module.results["test"]) == 7
    table = format_table([("LSTM", mean, ci)])
    assert "inst 2" in table and "82.8" in table and "94.9" in table
    with pytest.raises(ValueError, match="5-way"):
        OnlineMetaLearner(LSTMLearner(backbone=MLP(4, [8]), hidden_size=4, n_way=5, readout_init=0.0)).training_step(
            dm.train_batch(0), 0)
    with pytest.raises(TypeError, match="predict_stream"):
        OnlineMetaLearner(torch.nn.Linear(2, 2))


def test_snail_stream_predictions_are_causal_in_inputs_and_labels():
    from rnnmeta.learners.snail import SNAIL
    from rnnmeta.nets import MLP

    torch.manual_seed(0)
    learner = SNAIL(backbone=MLP(4, [8]), max_shots=4, n_way=3, key_sizes=[8, 8], value_sizes=[4, 4], tc_filters=[4]).eval()
    x = torch.randn(2, 12, 4)
    prev_y = torch.randint(0, 3, (2, 12))
    prev_y[:, 0] = -1
    out = learner.predict_stream(x, prev_y)
    assert out.shape == (2, 12, 3)
    t = 6
    x2, y2 = x.clone(), prev_y.clone()
    x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:])
    y2[:, t + 1:] = (y2[:, t + 1:] + 1) % 3
    out2 = learner.predict_stream(x2, y2)
    torch.testing.assert_close(out2[:, : t + 1], out[:, : t + 1])
    assert not torch.allclose(out2[:, t + 1:], out[:, t + 1:])
    with pytest.raises(ValueError, match="max_shots"):
        learner.predict_stream(torch.randn(2, 14, 4), torch.zeros(2, 14, dtype=torch.int64))


def test_eval_summary_gathers_every_rank_in_stream_order(monkeypatch):
    """Under DDP, rank r holds the streams i % W == r; the summary must be over all of them, in order."""
    from types import SimpleNamespace

    learner = OnlineMetaLearner(LSTMLearner(n_way=3, backbone=MLP(4, [8]), hidden_size=8), max_instance=2)
    streams = torch.tensor([[0.1, 0.2], [0.3, float("nan")], [0.5, 0.6], [0.7, 0.8], [0.9, 1.0]], dtype=torch.float64)
    rank_rows = [streams[0::2], streams[1::2]]  # rank 0: streams 0, 2, 4; rank 1: streams 1, 3

    def all_gather(t):  # what both ranks receive: rank 0's tensor stacked with rank 1's (same shape)
        if t.dtype == torch.int64:
            return torch.tensor([[len(rank_rows[0])], [len(rank_rows[1])]])
        other = torch.zeros_like(t)
        other[: len(rank_rows[1])] = rank_rows[1]
        return torch.stack([t, other])

    learner._trainer = SimpleNamespace(world_size=2)
    monkeypatch.setattr(learner, "all_gather", all_gather)
    monkeypatch.setattr(learner, "log", lambda *a, **k: None)
    learner.results["test"] = [rank_rows[0][:2], rank_rows[0][2:]]  # two eval batches on rank 0
    learner.on_test_epoch_end()
    assert torch.equal(torch.cat(learner.results["test"]).nan_to_num(-1), streams.nan_to_num(-1))
    mean, _ = learner.summary("test")
    assert torch.allclose(mean, torch.tensor([0.5, 0.65], dtype=torch.float64))


def test_a_learner_with_the_label_readout_gets_a_warning_naming_the_fix():
    import warnings

    with pytest.warns(UserWarning, match=r"readout_init=0\.3.*previous step's label.*readout_init=0"):
        OnlineMetaLearner(LSTMLearner(backbone=MLP(4, [8]), hidden_size=4, n_way=3))
    with pytest.warns(UserWarning, match="MANN was built with readout_init"):
        OnlineMetaLearner(MANN(backbone=MLP(4, [8]), controller_size=4, memory_slots=4, memory_width=3, read_heads=1, n_way=3))
    with pytest.warns(UserWarning, match="LSTMLearner was built with matching_init=True.*without matching_init"):
        OnlineMetaLearner(LSTMLearner(backbone=MLP(4, [8]), hidden_size=6, num_layers=1, n_way=3, matching_init=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnlineMetaLearner(LSTMLearner(backbone=MLP(4, [8]), hidden_size=4, n_way=3, readout_init=0.0))
        OnlineMetaLearner(MANN(backbone=MLP(4, [8]), controller_size=4, memory_slots=4, memory_width=3, read_heads=1, n_way=3,
                               key_value_init=False))


def test_the_online_script_turns_the_episodic_initialisations_off_unless_asked():
    import argparse
    import sys

    from helpers import REPO

    sys.path.insert(0, str(REPO / "scripts"))
    import online_protocol

    args = argparse.Namespace(filters=8, n_way=5, hidden=16, memory_slots=8, instances=10, episodic_init=False)
    assert online_protocol.learner_spec("lstm", args)["init_args"]["readout_init"] == 0.0
    assert online_protocol.learner_spec("mann", args)["init_args"]["key_value_init"] is False
    args.episodic_init = True
    assert "readout_init" not in online_protocol.learner_spec("lstm", args)["init_args"]
    assert "key_value_init" not in online_protocol.learner_spec("mann16", args)["init_args"]
