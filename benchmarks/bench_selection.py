"""Speed of the selection and ranking kernels against the plain way of writing them.

1. Jaccard distances of a prompt's N key sets: one sparse product (``jaccard_distances``)
   against N(N-1)/2 calls of ``np.intersect1d`` on sorted key arrays.
2. Agreement of B bootstrap resamples of V variant scores with accuracy: the row-wise
   ``ranking.agreement`` against a loop calling scipy's ``spearmanr`` and ``kendalltau``
   per resample.
3. ``select`` with every selector on a synthetic cache, per selector (seconds; no baseline).

Each kernel is checked to agree with its baseline before it is timed.

    python benchmarks/bench_selection.py [--n 16] [--keys 20000] [--boot 1000] [--variants 12]
        [--prompts 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from nex_causal.cache import SparseCacheWriter
from nex_causal.ranking.agreement import agreement
from nex_causal.selectors import SELECTORS, SelectionConfig, select
from nex_causal.selectors.neurons import jaccard_distances
from nex_causal.selectors.pool import Pool


def best_of(repeats: int, fn) -> float:
    """Fastest of ``repeats`` wall-clock timings (the machine is shared: the minimum is the signal)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def pairwise_jaccard(sets: list[np.ndarray]) -> np.ndarray:
    n = len(sets)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            inter = len(np.intersect1d(sets[i], sets[j], assume_unique=True))
            d[i, j] = d[j, i] = 1 - inter / (len(sets[i]) + len(sets[j]) - inter)
    return d


def scipy_agreement(scores: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    out = np.empty((len(scores), 4))
    for b, (s, a) in enumerate(zip(scores, accuracy)):
        picked = a[np.argmax(s)]
        out[b] = (sps.spearmanr(s, a).statistic, sps.kendalltau(s, a).statistic,
                  float(picked == a.max()), a.max() - picked)
    return out


def synthetic_cache(path: Path, n_prompts: int, n: int, rng: np.random.Generator) -> Pool:
    """Responses of 8 rows x 32 tokens, 300 keys a row from a prompt-specific pool, token stats."""
    with SparseCacheWriter(path) as writer:
        for p in range(n_prompts):
            pool = rng.choice(40_000, 3_000, replace=False).astype(np.uint32)
            for s in range(n):
                keys = [np.unique(rng.choice(pool, 300)) for _ in range(8)]
                rows = [(k, np.ones(len(k)), 32) for k in keys]
                stats = rng.uniform(0.1, 3.0, 256).astype(np.float32)
                writer.append(rows, meta={
                    "prompt_id": f"p{p}", "sample_index": s, "n_tokens": 256, "correct": bool(rng.random() < 0.5),
                    "answer": str(rng.integers(4)), "token_logprob": -stats, "token_entropy": stats,
                    "token_top20_logprob_sum": -20 * stats, "token_kl_uniform": 3 - stats})
    return Pool.from_cache(writer.close())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="responses per prompt")
    parser.add_argument("--keys", type=int, default=20_000, help="activated neurons per response")
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--variants", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=50, help="prompts of the synthetic cache for `select`")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    sets = [np.sort(rng.choice(4 * args.keys, args.keys, replace=False)).astype(np.uint32) for _ in range(args.n)]
    assert np.allclose(jaccard_distances(sets), pairwise_jaccard(sets))
    fast = best_of(args.repeats, lambda: jaccard_distances(sets))
    slow = best_of(args.repeats, lambda: pairwise_jaccard(sets))
    print(f"jaccard, {args.n} sets of {args.keys} keys: sparse {fast * 1e3:.1f} ms, pairwise intersect1d "
          f"{slow * 1e3:.1f} ms, speed-up x{slow / fast:.1f}")

    scores = rng.random((args.boot, args.variants))
    accuracy = rng.integers(0, 20, (args.boot, args.variants)) / 20  # ties, as real accuracies have
    assert np.allclose(agreement(scores, accuracy), scipy_agreement(scores, accuracy), equal_nan=True)
    fast = best_of(args.repeats, lambda: agreement(scores, accuracy))
    slow = best_of(args.repeats, lambda: scipy_agreement(scores, accuracy))
    print(f"agreement, {args.boot} resamples x {args.variants} variants: row-wise {fast * 1e3:.1f} ms, "
          f"scipy loop {slow * 1e3:.1f} ms, speed-up x{slow / fast:.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        pool = synthetic_cache(Path(tmp) / "cache", args.prompts, args.n, rng)
        rows = []
        for name in SELECTORS:
            if name == "nex-cross":
                continue  # needs weights from elsewhere
            fresh = Pool.from_cache(pool.cache)  # no features cached from the previous selector
            rows.append({"selector": name, "seconds": best_of(1, lambda: select(fresh, SelectionConfig(selectors=[name], n_boot=1000)))})
        print(f"select on {args.prompts} prompts x {args.n} responses x 8 rows x ~300 keys, 1000 resamples "
              "(each selector from a fresh pool, so shared features are counted every time):")
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
