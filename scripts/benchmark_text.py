"""What tokenising and batching cost next to a training step, for every learner of a text comparison.

Measured on the process's CPU clock (``time.process_time``) with one torch thread, so the numbers
hold on a shared machine:

* once per run: reading and checking CLINC150 (md5, JSON), building the vocabulary of the training
  intents, and tokenising every split into its id tensor;
* per training step: drawing one meta-batch of episodes (``EpisodicDataModule.train_batch``: the
  vectorised sampler and one ``index_select`` on the id tensor), against the learner's own step
  (forward, backward and the Adam update) on the same batches; medians over ``--steps`` steps.

    OMP_NUM_THREADS=1 python scripts/benchmark_text.py --config configs/compare/clinc150_5w1s.yaml [--vocabulary]

``--vocabulary`` adds the measurement behind the vocabulary's ``min_freq`` default: TF-IDF accuracy
on 1,000 fixed test episodes and the share of test-intent tokens outside the vocabulary, for
``min_freq`` 1 and 2.

``--subwords`` adds what character n-grams (``subword_buckets``, docs/TEXT.md) give the test intents:
the share of their tokens, and of their out-of-vocabulary tokens, with at least one n-gram bucket
that a training-intent token also has (so its embedding was trained), with the config's
``subword_buckets``/``max_ngrams`` (50000 / 16 if the config has none).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from rnnmeta.compare.config import build_learner, build_run  # noqa: E402


def cpu_median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def vocabulary_choice(root: str, episodes: int) -> None:
    """TF-IDF accuracy and out-of-vocabulary rates of the test intents for vocabularies with min_freq 1 and 2."""
    from rnnmeta.data import CLINC150, EpisodicDataModule, tokenize
    from rnnmeta.learners import TfidfCentroid

    print(f"\nvocabulary of the training intents: TF-IDF centroid on {episodes} fixed CLINC150 test episodes (5-way, 5 queries)")
    print("| min_freq | words | test tokens not in the vocabulary | TF-IDF 5w1s | TF-IDF 5w5s |")
    print("|---|---|---|---|---|")
    for min_freq in (1, 2):
        ds = CLINC150(root, min_freq=min_freq)
        tokens = [t for i in ds.class_splits["test"] for text in ds.texts[i] for t in tokenize(text)]
        oov = sum(t not in ds.vocabulary for t in tokens) / len(tokens)
        accs = []
        for shots in (1, 5):
            dm = EpisodicDataModule(ds, n_way=5, k_shot=shots, q_queries=5, test_episodes=episodes, eval_batch_size=50)
            learner = TfidfCentroid(n_way=5)
            values = torch.cat([learner.task_metrics(learner(b.support_x, b.support_y, b.query_x), b.query_y)
                                for b in dm.eval_set("test")])
            accs.append(f"{values.mean():.4f} +- {1.96 * values.std() / len(values) ** 0.5:.4f}")
        print(f"| {min_freq} | {len(ds.vocabulary) - 2:,} | {100 * oov:.1f}% | {accs[0]} | {accs[1]} |", flush=True)


def subword_coverage(root: str, subword_buckets: int, max_ngrams: int) -> None:
    """Share of test-intent tokens (all, and those outside the vocabulary) with >= 1 n-gram bucket seen in training."""
    from rnnmeta.data import CLINC150, tokenize
    from rnnmeta.data.vocab import char_ngrams, ngram_buckets

    ds = CLINC150(root)

    def tokens(split: str) -> list[str]:
        return [t for i in ds.class_splits[split] for text in ds.texts[i] for t in tokenize(text)]

    train = set(tokens("train"))
    seen = {b for t in train for b in ngram_buckets(t, subword_buckets, max_ngrams)}
    seen_grams = {g for t in train for g in char_ngrams(t, max_ngrams)}  # the n-grams behind the buckets
    test = tokens("test")
    oov = [t for t in test if t not in ds.vocabulary]

    def covered(toks: list[str]) -> tuple[float, float, float]:
        buckets = [ngram_buckets(t, subword_buckets, max_ngrams) for t in toks]
        hit = [sum(b in seen for b in bs) / len(bs) for bs in buckets]
        real = sum(any(g in seen_grams for g in char_ngrams(t, max_ngrams)) for t in toks)  # without hash collisions
        return 100 * sum(h > 0 for h in hit) / len(toks), 100 * sum(hit) / len(toks), 100 * real / len(toks)

    print(f"\ncharacter n-grams (subword_buckets={subword_buckets}, max_ngrams={max_ngrams}): {len(seen):,} buckets "
          "hold an n-gram of a training-intent token")
    print("| test-intent tokens | count | with >= 1 bucket seen in training | mean share of their buckets seen | "
          "with >= 1 n-gram itself seen (no collisions) |")
    print("|---|---|---|---|---|")
    for name, toks in (("all", test), ("outside the vocabulary (<unk>)", oov)):
        any_seen, mean_seen, real = covered(toks)
        print(f"| {name} | {len(toks):,} | {any_seen:.1f}% | {mean_seen:.1f}% | {real:.1f}% |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/compare/clinc150_5w1s.yaml"))
    parser.add_argument("--steps", type=int, default=10, help="training steps timed per learner (after 2 warm-up steps)")
    parser.add_argument("--batches", type=int, default=200, help="meta-batches drawn to time the sampler")
    parser.add_argument("--vocabulary", action="store_true", help="also compare vocabularies (min_freq 1 and 2) by TF-IDF accuracy")
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes of the vocabulary comparison")
    parser.add_argument("--subwords", action="store_true", help="also the share of test-intent tokens with an n-gram bucket seen in training")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = yaml.safe_load(args.config.read_text())
    print(f"{args.config}; torch threads: {torch.get_num_threads()}; load average: {os.getloadavg()}")

    # once per run: read, check, build the vocabulary, tokenise every split
    dataset_cfg = cfg["data"]["init_args"]["dataset"]
    start = time.process_time()
    datamodule, _ = build_run(next(iter(cfg["learners"].values()))["model"], cfg["data"])
    build = time.process_time() - start
    dataset = datamodule.dataset
    start = time.process_time()
    sources = {split: dataset.split(split) for split in ("train", "val", "test")}
    tokenise = time.process_time() - start
    n_texts = sum(s.n_images for s in sources.values())
    print(f"once: read + md5 + parse {dataset_cfg['class_path']} {build:.2f} CPU s; vocabulary + tokenising "
          f"{n_texts:,} texts {tokenise:.2f} CPU s ({1e6 * tokenise / n_texts:.0f} us a text)")

    print("| learner | episodes per step | sampling ms / step | training step ms | sampling share |")
    print("|---|---|---|---|---|")
    for name, spec in cfg["learners"].items():
        dm, learner = build_learner(cfg["data"], spec)
        counter = iter(range(10**9))
        sample_ms = 1e3 * cpu_median(lambda: dm.train_batch(next(counter)), args.batches)
        if learner.num_parameters() == 0:
            print(f"| {name} | - | {sample_ms:.2f} | (no training) | - |")
            continue
        else:
            optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
            learner.train()

            def step() -> None:
                batch = dm.train_batch(next(counter))
                loss, _ = learner.episode_step(batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            step(), step()
            step_ms = 1e3 * cpu_median(step, args.steps)
        batch = dm.train_batch(0)
        print(f"| {name} | {batch.batch_size} x ({batch.n_support} + {batch.n_query}) | {sample_ms:.2f} | "
              f"{step_ms:.1f} | {100 * sample_ms / step_ms:.1f}% |", flush=True)
    if args.vocabulary:
        vocabulary_choice(dataset_cfg["init_args"]["root"], args.episodes)
    if args.subwords:
        subword_coverage(dataset_cfg["init_args"]["root"], dataset_cfg["init_args"].get("subword_buckets") or 50000,
                         dataset_cfg["init_args"].get("max_ngrams", 16))


if __name__ == "__main__":
    main()
