"""Speed and memory of the whole ``nex-causal nex run`` process against the reference release's ``run_nex.py run``.

On synthetic caches (by default 1,000 and 20,000 responses of ~100 rows x ~300 keys, with
planted explore bursts so the HMM finds cycles), each command runs as a process of its own,
the commands taking turns ``--repeats`` times so that background load hits them alike:

    reference      python run_nex.py run --cache-dir C --output-dir O   (the authors' release)
    workers 1      nex-causal nex run --cache-dir C --output-dir O --workers 1
    workers N      the same on every core
    learn + score  the library calls alone (learn_weights, score_responses), on every core

Every command runs with ``OMP_NUM_THREADS=1``: scikit-learn, which the reference calls per
response, opens OpenMP regions of a few microseconds, and when another job holds a core their
threads wait for it (the reference runs ~2.7x slower with one core busy, and no faster on
an idle machine with more threads); nex-causal uses no OpenMP, and its workers are processes.

For each: the median wall time (imports, opening and checking the cache, learning, scoring,
writing the outputs) and its ratio to the reference's in the same run; the kernel's peak
resident set of the largest process (``wait4``; file pages of the memory-mapped cache
count, so it grows with the cache for every command that reads all of it); and the peak
anonymous memory of the process tree, sampled every 20 ms: what the run allocates, which
stays at a chunk's worth when the cache is streamed. The last lines compare that peak
across cache sizes. The weights and every response's GMF of both nex-causal runs must
equal the reference's bit for bit (``np.array_equal``), or the benchmark fails. Without
the reference release (../shared absent) nex-causal is timed alone.

    python benchmarks/bench_nex.py [--responses 1000 20000] [--rows 100] [--keys 300] [--repeats 1]
        [--workers N (default: every core)] [--cache-root DIR (caches kept and reused there)]
        [--reference DIR (default ../shared/reference/nex_reference)]

A quick smoke run: ``--responses 200``. The 20,000-response cache takes ~4.2 GB of disk and
the reference ~7 ms per response (the whole benchmark ~10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from nex_causal.cache import KEY_SPACE, SparseCache, SparseCacheWriter
from nex_causal.nex.learn import default_workers

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "nex_reference"
SAMPLE_S = 0.02  # how often the process tree's anonymous memory is read
API = ("import sys; from nex_causal.cache import SparseCache; from nex_causal.nex import learn_weights, "
       "score_responses; c = SparseCache.open(sys.argv[1]); "
       "score_responses(c, learn_weights(c, workers=int(sys.argv[2]), progress=False), progress=False)")


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


def build_cache(path: Path, n_responses: int, n_rows: int, n_keys: int) -> None:
    """Write the synthetic cache (seeded: a smaller cache is the first responses of a larger one)."""
    rng = np.random.default_rng(0)
    with SparseCacheWriter(path) as writer:
        for _ in tqdm(range(n_responses), desc=f"synthetic cache ({n_responses} responses)", unit="resp"):
            writer.append(synthetic_rows(rng, int(rng.integers(n_rows // 2, 3 * n_rows // 2)), n_keys))


@dataclass(frozen=True)
class Measure:
    wall_s: float
    max_rss_mb: float  # the kernel's peak resident set of the largest process of the run
    anon_mb: float  # peak anonymous memory of the whole process tree, sampled


def tree_anon_kb(pid: int) -> int:
    """RssAnon of ``pid`` and its descendants, in kB (0 for a process that is gone)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon:")), 0)
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def measure(command: list[str], log: Path) -> Measure:
    """Run ``command`` to completion (it must succeed), timing it and sampling its memory."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, tree_anon_kb(proc.pid))
            time.sleep(SAMPLE_S)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return Measure(wall, usage.ru_maxrss / 1024, peak / 1024)


def outputs(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """The weights and per-response GMF a run wrote, as raw bits."""
    with np.load(directory / "weights.npz") as archive:
        weights = archive["weights"]
    return weights.view(np.uint32), np.load(directory / "response_scores.npy").view(np.uint32)


def bench_cache(cache_dir: Path, work: Path, reference: Path | None, workers: int, repeats: int) -> dict[str, Measure]:
    """Time every command on one cache, print the table and check the outputs; the medians by command."""
    cache = SparseCache.open(cache_dir, verify="off")  # the runs verify it; this only describes it
    size_mb = sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file()) / 2**20
    print(f"\ncache {cache_dir}: {cache.n_responses:,} responses, {cache.n_rows:,} rows, {len(cache.keys):,} row "
          f"entries ({cache.n_rows / cache.n_responses:.0f} rows, {len(cache.keys) / cache.n_rows:.0f} keys per row), "
          f"{len(cache.base_keys):,} base entries, {size_mb:,.0f} MB")
    ours = [sys.executable, "-m", "nex_causal.cli", "nex", "run", "--cache-dir", str(cache_dir)]
    commands = {
        "nex-causal nex run --workers 1": [*ours, "--output-dir", str(work / "w1"), "--workers", "1"],
        f"nex-causal nex run --workers {workers}": [*ours, "--output-dir", str(work / "wn"), "--workers", str(workers)],
        f"learn + score, library only ({workers} workers)": [sys.executable, "-c", API, str(cache_dir), str(workers)],
    }
    if reference is not None:
        commands = {"reference run_nex.py run": [sys.executable, str(reference / "run_nex.py"), "run", "--cache-dir",
                                                 str(cache_dir), "--output-dir", str(work / "reference")], **commands}
    runs: dict[str, list[Measure]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            runs[name].append(measure(command, work / "log.txt"))
    fields = ("wall_s", "max_rss_mb", "anon_mb")
    median = {name: Measure(*(statistics.median(getattr(m, f) for m in ms) for f in fields))
              for name, ms in runs.items()}
    base = median.get("reference run_nex.py run")
    print(f"{'':44s} {'wall s':>8s} {'resp/s':>8s} {'peak RSS MB':>12s} {'peak anon MB':>13s} {'speed-up':>9s}")
    for name, m in median.items():
        ratio = f"{base.wall_s / m.wall_s:8.2f}x" if base else f"{'-':>9s}"
        times = ", ".join(f"{r.wall_s:.2f}" for r in runs[name])
        print(f"{name:44s} {m.wall_s:8.2f} {cache.n_responses / m.wall_s:8.0f} {m.max_rss_mb:12.0f} "
              f"{m.anon_mb:13.0f} {ratio} ({times})")
    if base is None:
        print("reference release absent: nex-causal timed alone, outputs not compared")
        return median
    theirs = outputs(work / "reference")
    for run in ("w1", "wn"):
        mine = outputs(work / run)
        for name, a, b in zip(("weights.npz", "response_scores.npy"), mine, theirs):
            if not np.array_equal(a, b):
                sys.exit(f"{name} of nex-causal ({run}) differs from the reference's: the implementations disagree")
    print(f"outputs identical to the reference's, bit for bit (np.array_equal): weights.npz and response_scores.npy, "
          f"with 1 and {workers} workers")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, nargs="+", default=[1000, 20000], help="cache sizes, in responses")
    parser.add_argument("--rows", type=int, default=100, help="mean rows per response")
    parser.add_argument("--keys", type=int, default=300, help="keys per row")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each command per cache (median reported)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="workers of the every-core run")
    parser.add_argument("--cache-root", type=Path, help="keep the synthetic caches here and reuse them")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the reference release's directory")
    args = parser.parse_args()
    reference = args.reference if (args.reference / "run_nex.py").is_file() else None
    if reference is None:
        print(f"no reference release at {args.reference} (../shared absent?): timing nex-causal alone")
    work = Path(tempfile.mkdtemp(prefix="bench_nex_"))
    root = args.cache_root or work
    print(f"{os.cpu_count()} CPUs, {args.workers} workers for the every-core runs, {args.repeats} run(s) each")
    try:
        peaks = {}
        for n in args.responses:
            cache_dir = root / f"responses_{n}_rows_{args.rows}_keys_{args.keys}"
            if not cache_dir.exists():
                build_cache(cache_dir, n, args.rows, args.keys)
            median = bench_cache(cache_dir, work, reference, args.workers, args.repeats)
            peaks[n] = {name: m.anon_mb for name, m in median.items() if not name.startswith("reference")}
        if len(peaks) > 1:
            small, large = min(peaks), max(peaks)
            print(f"\npeak anonymous memory from {small:,} to {large:,} responses ({large / small:.0f}x the cache):")
            for name in peaks[small]:
                growth = peaks[large][name] / peaks[small][name]
                print(f"  {name:44s} {peaks[small][name]:7.0f} -> {peaks[large][name]:7.0f} MB ({growth:.2f}x): "
                      + ("bounded by a chunk" if growth < 1.5 else "grows with the cache"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
