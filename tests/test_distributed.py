"""Distributed training and evaluation under Lightning's DDP strategy (2 CPU processes over gloo).

* Test metrics and their 95% CI over a fixed set of episodes are the same with 1 and 2 processes:
  every episode is evaluated exactly once, and the statistics come from all episodes (not from
  per-rank averages), also when the ranks hold different numbers of episodes and batches.
* Ranks train on distinct tasks (batch ``b`` of rank ``r`` is the data module's pure function of
  ``(seed, r, b)``), and DDP keeps their weights identical.
* Two processes building the Omniglot cache into the same empty folder at once both end with a
  complete cache equal to one built alone, and leave no temporary files.

``ddp`` re-runs the launching script once per extra rank, so the runs happen in
``tests/ddp_worker.py`` started as a subprocess (see its docstring for what each rank records).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, omniglot_root_or_skip

# slow; and under pytest-xdist all on one worker, so the module fixture trains on two processes once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]

WORKER = REPO / "tests" / "ddp_worker.py"
TASKS = ("omniglot", "sinusoid")
WORLD = 2
TIMEOUT_S = 240


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PL_TRAINER_DEVICES"):
        env.pop(var, None)  # a run of its own, whatever the calling environment
    return env


def _run(args: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a command in a process group of its own; on a timeout kill that group (DDP's ranks included)."""
    proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(args)} did not finish in {timeout} s (a hang in a collective?):\n{out[-4000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited with {proc.returncode}:\n{out[-4000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out)


def _worker(phase: str, devices: int, out: Path, cache_dir: Path) -> None:
    _run([sys.executable, str(WORKER), "--phase", phase, "--devices", str(devices), "--out", str(out),
          "--omniglot-root", str(omniglot_root_or_skip()), "--cache-dir", str(cache_dir)])


def _records(out: Path, phase: str, task: str, world: int) -> list[dict]:
    return [json.loads((out / f"{phase}_{task}_rank{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, omniglot, session_cache_dir: Path) -> Path:
    """Train on 2 processes and test the checkpoint there, then test the same checkpoint on 1 process."""
    omniglot.prepare()  # the cache exists before the ranks start
    out = tmp_path_factory.mktemp("ddp")
    _worker("fit", WORLD, out, session_cache_dir)
    _worker("test", 1, out, session_cache_dir)
    return out


# ------------------------------------------------------------------------------------ evaluation
@pytest.mark.parametrize("task", TASKS)
def test_test_metrics_are_identical_with_one_and_two_processes(runs: Path, task: str) -> None:
    ranks = _records(runs, "fit", task, WORLD)
    (single,) = _records(runs, "test", task, 1)
    assert [r["world_size"] for r in ranks] == [WORLD, WORLD] and single["world_size"] == 1
    # the same weights were tested
    assert ranks[0]["params_tested"] == ranks[1]["params_tested"] == single["params_tested"]

    # every episode exactly once: the ranks' shards are disjoint, uneven, and together the whole set
    shards = [r["test_episodes"] for r in ranks]
    assert [len(s) for s in shards] == [26, 25]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(single["test_episodes"])
    assert len(set(single["test_episodes"])) == 51
    # and in the same order: rank r holds episodes r, r + 2, ...
    interleaved = [e for pair in zip(shards[0], shards[1] + [None]) for e in pair if e is not None]
    assert interleaved == single["test_episodes"]

    # per-episode values gathered from both ranks, in episode order
    for r in ranks:
        values, ref = torch.tensor(r["test_values"]), torch.tensor(single["test_values"])
        assert values.shape == (51,)
        if task == "omniglot":
            assert torch.equal(values, ref)  # accuracies: exact
        else:
            torch.testing.assert_close(values, ref, rtol=1e-6, atol=0)  # MSE: float32 batch composition

    metric = "acc" if task == "omniglot" else "mse"
    keys = {"test/loss", f"test/{metric}", f"test/{metric}_ci95", "test/episodes"}
    for r in ranks:
        assert set(r["test"]) == keys
        assert r["test"]["test/episodes"] == 51
        for key in keys:
            # loss and CI from all 51 episodes, not averages of per-rank numbers
            assert r["test"][key] == pytest.approx(single["test"][key], rel=1e-6, abs=1e-7), key
    # the CI is the one of all episodes: recompute it from the single-process values
    from rnnmeta.evaluation import mean_ci95

    stats = mean_ci95(torch.tensor(single["test_values"], dtype=torch.float64))
    assert ranks[0]["test"][f"test/{metric}"] == pytest.approx(stats.mean, rel=1e-6)
    assert ranks[0]["test"][f"test/{metric}_ci95"] == pytest.approx(stats.ci95, rel=1e-6)


@pytest.mark.parametrize("task", TASKS)
def test_validation_during_ddp_fit_counts_every_episode(runs: Path, task: str) -> None:
    ranks = _records(runs, "fit", task, WORLD)
    assert ranks[0]["val"] == ranks[1]["val"]
    assert ranks[0]["val"]["val/episodes"] == 11  # 6 on rank 0, 5 on rank 1


# -------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("task", TASKS)
def test_ranks_train_on_distinct_tasks_and_keep_identical_weights(runs: Path, task: str, session_cache_dir: Path) -> None:
    from tests.ddp_worker import TRAIN_STEPS, batch_digest, datamodule

    ranks = _records(runs, "fit", task, WORLD)
    seen = [r["train_batches"] for r in ranks]
    assert [len(s) for s in seen] == [TRAIN_STEPS, TRAIN_STEPS]
    assert not set(seen[0]) & set(seen[1]), "two ranks trained on the same batch"
    # batch b on rank r is the data module's pure function of (seed, r, b)
    dm = datamodule(task, str(omniglot_root_or_skip()), str(session_cache_dir))
    for rank, digests in enumerate(seen):
        assert digests == [batch_digest(dm.train_batch(b, rank=rank)) for b in range(TRAIN_STEPS)]
    # DDP averaged the gradients: after training on different data the weights are still identical
    assert ranks[0]["params_init"] == ranks[1]["params_init"]
    assert ranks[0]["params_trained"] == ranks[1]["params_trained"]
    assert ranks[0]["params_trained"] != ranks[0]["params_init"]


# ----------------------------------------------------------------------------------------- cache
_BUILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from rnnmeta.data import Omniglot
    from tests.ddp_worker import digest

    root, cache, me, other = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    ds = Omniglot(root, cache_dir=str(cache))
    (cache.parent / me).touch()
    deadline = time.monotonic() + 60
    while not (cache.parent / other).exists():  # start building together
        if time.monotonic() > deadline:
            sys.exit("the other builder never started")
        time.sleep(0.01)
    existed = ds.cache_path().is_file()
    data = ds._load()
    print(json.dumps({"existed": existed, "images": digest(data["images"]), "names": data["names"]}))
    """
)


def test_two_processes_building_the_omniglot_cache_at_once(tmp_path: Path, omniglot, monkeypatch) -> None:
    from rnnmeta.data import Omniglot

    root = str(omniglot_root_or_skip())
    cache = tmp_path / "cache"
    args = [[sys.executable, "-c", _BUILD, root, str(cache), f"ready{i}", f"ready{1 - i}"] for i in range(2)]
    procs = [subprocess.Popen(a, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for a in args]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT_S)
            assert p.returncode == 0, err[-4000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert not any(r["existed"] for r in results), "the builders did not overlap"

    # one complete cache, no temporary files left behind
    ds = Omniglot(root, cache_dir=str(cache))
    assert sorted(p.name for p in cache.iterdir()) == [ds.cache_path().name]

    # it loads, and equals a cache built alone (the session's), as do both builders' in-memory copies
    alone = omniglot._load()
    built = torch.load(ds.cache_path(), weights_only=True)
    assert torch.equal(built["images"], alone["images"])
    assert built["names"] == alone["names"]
    assert torch.equal(built["counts"], alone["counts"]) and torch.equal(built["archive"], alone["archive"])
    from tests.ddp_worker import digest

    for r in results:
        assert r["images"] == digest(alone["images"]) and r["names"] == alone["names"]
    # and a fresh reader uses it without decoding again
    monkeypatch.setattr(Omniglot, "_build", lambda self, files: pytest.fail("the cache was decoded again"))
    assert Omniglot(root, cache_dir=str(cache)).split("test").n_classes == 1692
