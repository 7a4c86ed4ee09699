"""Speed of the whole ``nex-causal nex run`` process against the reference release's ``run_nex.py run``.

Both are run as separate processes on the same synthetic cache (default 1,000 responses x
~100 rows x ~300 keys, with planted explore bursts so the HMM finds cycles), taking turns
``--repeats`` times so that background load hits both alike; the wall time of each run
includes its imports, reading the cache, learning the weights, scoring and writing the
outputs. The outputs must be identical (weights and per-response GMF, bit for bit), or the
benchmark fails. The last line printed is the ratio of the medians.

    python benchmarks/bench_nex.py [--responses 1000] [--rows 100] [--keys 300] [--repeats 3]
        [--cache-dir DIR (reused when it exists)] [--reference DIR (default ../shared/reference/nex_reference)]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from nex_causal.cache import KEY_SPACE, SparseCache, SparseCacheWriter

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "nex_reference"


def synthetic_rows(rng: np.random.Generator, n_rows: int, n_keys: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Rows alternating explore bursts (60% new neurons) and exploit stretches (5% new)."""
    seen = rng.integers(0, KEY_SPACE, n_keys, dtype=np.uint32)
    rows, explore, left = [(np.unique(seen), rng.exponential(1.0, len(np.unique(seen))), 32)], True, 3
    for j in range(1, n_rows):
        n_new = int(n_keys * (0.6 if explore else 0.05))
        new = rng.integers(0, KEY_SPACE, n_new, dtype=np.uint32)
        keys = np.unique(np.concatenate([new, rng.choice(seen, n_keys - n_new)]))
        seen = np.concatenate([seen, new])
        rows.append((keys, rng.exponential(1.0, len(keys)), 32 if j < n_rows - 1 else 17))
        left -= 1
        if left == 0:
            explore, left = not explore, int(rng.integers(3, 8) if not explore else rng.integers(5, 15))
    return rows


def build_cache(path: Path, n_responses: int, n_rows: int, n_keys: int) -> SparseCache:
    rng = np.random.default_rng(0)
    with SparseCacheWriter(path) as writer:
        for _ in tqdm(range(n_responses), desc="synthetic cache", unit="resp"):
            writer.append(synthetic_rows(rng, int(rng.integers(n_rows // 2, 3 * n_rows // 2)), n_keys))
    return SparseCache.open(path)


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100, help="mean rows per response")
    parser.add_argument("--keys", type=int, default=300, help="keys per row")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, help="synthetic cache (built when missing)")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the reference release's directory")
    args = parser.parse_args()
    if not (args.reference / "run_nex.py").is_file():
        sys.exit(f"no reference release at {args.reference}: pass --reference DIR")
    work = Path(tempfile.mkdtemp(prefix="bench_nex_"))
    cache_dir = args.cache_dir or work / "cache"
    cache = SparseCache.open(cache_dir) if cache_dir.exists() else build_cache(
        cache_dir, args.responses, args.rows, args.keys)
    print(f"cache: {cache.n_responses} responses, {cache.n_rows} rows, {len(cache.keys)} row entries "
          f"({cache.n_rows / cache.n_responses:.0f} rows and {len(cache.keys) / cache.n_rows:.0f} keys per row)")
    runs = {
        "reference run_nex.py run": [sys.executable, str(args.reference / "run_nex.py"), "run",
                                     "--cache-dir", str(cache_dir), "--output-dir", str(work / "reference")],
        "nex-causal nex run": [sys.executable, "-m", "nex_causal.cli", "nex", "run", "--cache-dir",
                               str(cache_dir), "--output-dir", str(work / "nex_causal")],
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, command in runs.items():
            seconds[name].append(timed(command))
    for name in ("weights.npz", "response_scores.npy"):
        mine, theirs = np.load(work / "nex_causal" / name), np.load(work / "reference" / name)
        mine, theirs = (mine["weights"], theirs["weights"]) if name.endswith(".npz") else (mine, theirs)
        if not np.array_equal(mine, theirs, equal_nan=True):
            sys.exit(f"{name} differs from the reference's: the implementations disagree")
    print("outputs identical to the reference: weights.npz and response_scores.npy")
    median = {name: statistics.median(times) for name, times in seconds.items()}
    for name, times in seconds.items():
        print(f"{name}: median {median[name]:.2f} s over {len(times)} runs "
              f"({', '.join(f'{t:.2f}' for t in times)}); {cache.n_responses / median[name]:.0f} responses/s")
    ratio = median["reference run_nex.py run"] / median["nex-causal nex run"]
    print(f"nex-causal nex run is {ratio:.2f}x faster than the reference")


if __name__ == "__main__":
    main()
