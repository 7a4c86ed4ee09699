"""Speed of NEX weight learning and scoring against a plain row-by-row loop implementation.

Generates a synthetic cache (default 1,000 responses x 100 rows x 400 keys, with planted
explore bursts so the HMM finds cycles), then prints rows/s and responses/s of
``learn_weights`` and ``score_cache`` on the whole cache, and on the first
``--baseline-responses`` responses the same rates of the baseline below, with the ratio.
The baseline walks rows and entries in Python (dicts and sets, as one would write the method
from its definitions) but segments with the same HMM code, so the ratio measures what
vectorisation changes; the time of that shared segmentation is printed apart. It also
checks that both give the same weights and scores.

    python benchmarks/bench_nex.py [--responses 1000] [--rows 100] [--keys 400]
        [--baseline-responses 50] [--cache-dir DIR (reused when it exists)]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from nex_causal.cache import KEY_SPACE, RESERVED_LAYER, SparseCache, SparseCacheWriter
from nex_causal.nex import gmf_per_response, learn, learn_weights, score_cache, segment

# --- synthetic cache ----------------------------------------------------------------------


def synthetic_rows(rng: np.random.Generator, n_rows: int, n_keys: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Rows alternating explore bursts (60% new neurons) and exploit stretches (5% new)."""
    seen = np.empty(0, np.uint32)
    rows, explore, left = [], True, int(rng.integers(3, 8))
    for j in range(n_rows):
        n_new = int(n_keys * (0.6 if explore else 0.05)) if j else n_keys
        new = rng.integers(0, KEY_SPACE, n_new, dtype=np.uint32)
        old = rng.choice(seen, n_keys - n_new) if len(seen) else np.empty(0, np.uint32)
        keys = np.unique(np.concatenate([new, old]))
        seen = np.union1d(seen, new)
        rows.append((keys, rng.exponential(1.0, len(keys)), 32 if j < n_rows - 1 else 17))
        left -= 1
        if left == 0:
            explore, left = not explore, int(rng.integers(3, 8) if not explore else rng.integers(5, 15))
    return rows


def build_cache(path: Path, n_responses: int, n_rows: int, n_keys: int) -> SparseCache:
    rng = np.random.default_rng(0)
    with SparseCacheWriter(path) as writer:
        for _ in tqdm(range(n_responses), desc="synthetic cache", unit="resp"):
            writer.append(synthetic_rows(rng, n_rows, n_keys))
    return SparseCache.open(path)


# --- baseline: row-by-row loops -------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values)


def baseline_response(cache: SparseCache, r: int, eff: dict, red: dict) -> None:
    """Sections 1-4 for one response with Python loops over rows and entries."""
    raw = cache.response_rows(r)
    rows, tokens = [], []
    for keys, mass, n_tok in zip(raw.keys, raw.mass, raw.tokens):
        row = {}
        for k, m in zip(keys.tolist(), mass.tolist()):
            if k >> 16 != RESERVED_LAYER and math.isfinite(m) and m > 0:
                row[k] = row.get(k, 0.0) + m
        if row and n_tok > 0:
            rows.append(row)
            tokens.append(int(n_tok))
    first: dict[int, int] = {}
    introduced: list[set] = []
    for j, row in enumerate(rows):
        new = {k for k in row if k not in first}
        for k in new:
            first[k] = j
        introduced.append(new)
    slopes = [len(introduced[j]) / tokens[j] for j in range(len(rows))]
    explore = segment(np.array(slopes)).tolist()
    runs, j = [], 0
    while j < len(explore):
        start = j
        while j < len(explore) and explore[j] == explore[start]:
            j += 1
        runs.append((explore[start], start, j - 1))
    overall = _median(slopes) if slopes else 0.0
    found = []
    for (is_e, e0, e1), (_, x0, x1) in zip(runs, runs[1:]):
        if not is_e:
            continue
        s_e, s_x = _median(slopes[e0:e1 + 1]), _median(slopes[x0:x1 + 1])
        strength = s_e - overall
        kappa = min(max(1 - s_x / (s_e + 1e-6), 0.0), 1.0) if s_e > 0 else 0.0
        i_e = set().union(*introduced[e0:e1 + 1])
        total = reused = 0.0
        for row in rows[x0:x1 + 1]:
            for k, m in row.items():
                total += m
                if k in i_e:
                    reused += m
        share = reused / (total + 1e-6) if strength > 0 and i_e and total > 0 else None
        found.append((e0, e1, kappa, share))
    defined = [f[3] for f in found if f[3] is not None]
    for e0, e1, kappa, share in found:
        if share is None or share - _median(defined) == 0:
            continue
        delta = share - _median(defined)
        target, scale = (eff, delta * kappa) if delta > 0 and kappa > 0 else (red, abs(delta))
        for j in range(e0, e1 + 1):
            for k in introduced[j]:
                target[k] = target.get(k, 0.0) + rows[j][k] * scale


def baseline_learn(cache: SparseCache, n: int) -> np.ndarray:
    eff: dict[int, float] = {}
    red: dict[int, float] = {}
    for r in range(n):
        baseline_response(cache, r, eff, red)
    weights = np.zeros(KEY_SPACE, np.float32)
    for k in set(eff) | set(red):
        weights[k] = math.tanh(math.log((eff.get(k, 0.0) + 1e-6) / (red.get(k, 0.0) + 1e-6)))
    return weights


def baseline_score(cache: SparseCache, weights: np.ndarray, n: int) -> np.ndarray:
    w = weights.tolist()
    out = np.empty(n)
    for r in range(n):
        keys, mass = cache.base(r)
        total = good = weighted = 0.0
        for k, m in zip(keys.tolist(), mass.tolist()):
            if k >> 16 == RESERVED_LAYER or not math.isfinite(m) or m <= 0:
                continue
            total += m
            good += m * max(w[k], 0.0)
            weighted += m * abs(w[k])
        out[r] = math.nan if total == 0 else (good / weighted if weighted > 0 else 0.0)
    return out


# --- measurement ----------------------------------------------------------------------------


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--keys", type=int, default=400)
    parser.add_argument("--baseline-responses", type=int, default=50)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.cache_dir or Path(tmp) / "cache"
        if path.exists():
            cache = SparseCache.open(path)
        else:
            cache, seconds = timed(lambda: build_cache(path, args.responses, args.rows, args.keys))
            print(f"built {path}: {cache.n_responses} responses, {cache.n_rows} rows, "
                  f"{len(cache.keys)} entries in {seconds:.1f}s")
        n, nb = cache.n_responses, min(args.baseline_responses, cache.n_responses)
        rows_b = int(cache.sample_row_ptr[nb])

        weights, t_train = timed(lambda: learn_weights(cache, progress=False))
        gmf, t_score = timed(lambda: score_cache(cache, weights, progress=False))
        print(f"vectorised, {n} responses x {cache.n_rows / max(n, 1):.0f} rows:")
        print(f"  train {t_train:7.2f}s  {cache.n_rows / t_train:10.0f} rows/s  {n / t_train:9.1f} responses/s")
        print(f"  score {t_score:7.2f}s  {cache.n_rows / t_score:10.0f} rows/s  {n / t_score:9.1f} responses/s")

        w_vec, t_train_v = timed(lambda: learn_weights(cache, max_responses=nb, progress=False))
        with threadpool_limits(limits=1):  # the same thread setting learn_weights uses
            w_base, t_train_b = timed(lambda: baseline_learn(cache, nb))
        ptr = cache.base_row_ptr[:nb + 1]
        g_vec, t_score_v = timed(lambda: gmf_per_response(cache.base_keys[:ptr[-1]], cache.base_w_sum[:ptr[-1]],
                                                          ptr, w_vec))
        g_base, t_score_b = timed(lambda: baseline_score(cache, w_vec, nb))
        print(f"first {nb} responses ({rows_b} rows), vectorised vs row-by-row baseline:")
        for name, tv, tb in (("train", t_train_v, t_train_b), ("score", t_score_v, t_score_b)):
            print(f"  {name} vectorised {rows_b / tv:10.0f} rows/s {nb / tv:9.1f} resp/s | baseline "
                  f"{rows_b / tb:10.0f} rows/s {nb / tb:9.1f} resp/s | speed-up x{tb / tv:.1f}")
        slopes = [t.slopes for t in learn(cache, max_responses=nb, progress=False, keep_traces=True).traces]
        with threadpool_limits(limits=1):
            _, t_seg = timed(lambda: [segment(s) for s in slopes])
        print(f"  of train, the per-response HMM segmentation both share takes {t_seg:.2f}s; the rest: "
              f"vectorised {t_train_v - t_seg:.2f}s vs baseline {t_train_b - t_seg:.2f}s, "
              f"speed-up x{(t_train_b - t_seg) / max(t_train_v - t_seg, 1e-9):.1f}")
        print(f"  agreement: max |w_vec - w_base| = {np.abs(w_vec - w_base).max():.2e}, "
              f"max |gmf_vec - gmf_base| = {np.nanmax(np.abs(g_vec - g_base)):.2e}")


if __name__ == "__main__":
    main()
