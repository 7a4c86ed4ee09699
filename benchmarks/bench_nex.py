"""Speed and memory of whole NEX processes: ``nex-causal nex run`` against the reference release's ``run_nex.py run``.

On synthetic caches (by default 1,000 and 20,000 responses of ~100 rows x ~300 keys, with
planted explore bursts so the HMM finds cycles), each command runs as a process of its own,
the commands taking turns ``--repeats`` times so that background load hits them alike, under
two thread settings:

    OMP_NUM_THREADS=1   one OpenMP/BLAS thread per process
    default threads     OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS unset: each library
                        picks its own (scikit-learn, which the reference calls per response, then opens
                        an OpenMP region on every core for each fit)

and these commands:

    reference            python run_nex.py run --cache-dir C --output-dir O   (the authors' release)
    nex-causal           nex-causal nex run --cache-dir C --output-dir O --verify full   (every core)
    nex-causal, 1 worker the same with --workers 1 (under OMP_NUM_THREADS=1 only)

``--verify full`` checks every byte's CRC-32 and every value of the cache before anything is
written, as in the pass that reads them (``nex_causal.cache.checks``); the reference checks
nothing. For each: the median wall time (imports, opening and checking the cache, learning,
scoring, writing the outputs), its speed-up over the reference in the same setting, the
kernel's peak resident set of the largest process (``wait4``; pages of the memory-mapped cache
count), the peak anonymous memory of the process tree (what the run allocates; proportional, so
a page forked workers share counts once; sampled every 20 ms), and the cache's bytes over the
wall time, against a plain sequential read of the cache's files (warm page cache, 16 MiB
blocks): the most any reader reaches on this machine.
The weights and every response's GMF of each nex-causal run must equal the reference's bit for
bit (``np.array_equal``), or the benchmark fails. The last line is the smallest speed-up of
nex-causal (every core) over the reference across cache sizes and thread settings.

    python benchmarks/bench_nex.py [--quick] [--responses 1000 20000] [--rows 100] [--keys 300] [--repeats 1]
        [--workers N (default: every core)] [--cache-root DIR] [--reference DIR]

Caches are built once and kept under ``--cache-root`` (default ``$NEX_CAUSAL_HOME/bench_nex``):
the 20,000-response cache takes ~4.1 GB and a few minutes to build. ``--quick``: 200 and 2,000
responses. The full run takes ~8 minutes on 2 idle cores once the caches exist (the reference
~7 ms per response, under each thread setting).
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
from nex_causal.io import nex_home
from nex_causal.nex.workers import default_workers

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "nex_reference"
SAMPLE_S = 0.02  # how often the process tree's anonymous memory is read
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
SETTINGS = {"OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"}, "default threads": {}}
REFERENCE_NAME, OURS = "reference run_nex.py run", "nex-causal nex run"


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
    """Anonymous memory of ``pid`` and its descendants, in kB, pages shared by forked workers counted once
    (``Pss_Anon``: each shared page split among its sharers); 0 for a process that is gone."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss_Anon:")), 0)
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def environment(setting: dict[str, str]) -> dict[str, str]:
    """This process's environment with the thread variables of ``setting`` (none: every library's default)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    return {**env, **setting}


def measure(command: list[str], env: dict[str, str], log: Path) -> Measure:
    """Run ``command`` to completion (it must succeed), timing it and sampling its memory."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
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


def sequential_read(directory: Path, repeats: int = 3) -> float:
    """Bytes per second of reading every file of ``directory`` front to back in 16 MiB blocks (best of ``repeats``)."""
    files, buffer = [f for f in sorted(directory.rglob("*")) if f.is_file()], bytearray(1 << 24)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for file in files:
            with open(file, "rb", buffering=0) as handle:
                while handle.readinto(buffer):
                    pass
        best = min(best, time.perf_counter() - start)
    return sum(f.stat().st_size for f in files) / best


def outputs(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """The weights and per-response GMF a run wrote, as raw bits."""
    with np.load(directory / "weights.npz") as archive:
        weights = archive["weights"]
    return weights.view(np.uint32), np.load(directory / "response_scores.npy").view(np.uint32)


def commands(cache_dir: Path, work: Path, reference: Path | None, workers: int, single: bool) -> dict[str, list[str]]:
    ours = [sys.executable, "-m", "nex_causal.cli", "nex", "run", "--cache-dir", str(cache_dir), "--verify", "full"]
    found = {f"{OURS} ({workers} workers)": [*ours, "--output-dir", str(work / "wn"), "--workers", str(workers)]}
    if single:
        found[f"{OURS} (1 worker)"] = [*ours, "--output-dir", str(work / "w1"), "--workers", "1"]
    if reference is not None:
        found = {REFERENCE_NAME: [sys.executable, str(reference / "run_nex.py"), "run", "--cache-dir", str(cache_dir),
                                  "--output-dir", str(work / "reference")], **found}
    return found


def bench_setting(cache_dir: Path, size: int, work: Path, reference: Path | None, workers: int, repeats: int,
                  setting: str, limit: float) -> dict[str, Measure]:
    """Time every command on one cache under one thread setting, print its table, check the outputs."""
    runs = commands(cache_dir, work, reference, workers, single=setting == "OMP_NUM_THREADS=1")
    env = environment(SETTINGS[setting])
    measured: dict[str, list[Measure]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, command in runs.items():
            measured[name].append(measure(command, env, work / "log.txt"))
    fields = ("wall_s", "max_rss_mb", "anon_mb")
    median = {name: Measure(*(statistics.median(getattr(m, f) for m in ms) for f in fields))
              for name, ms in measured.items()}
    base = median.get(REFERENCE_NAME)
    print(f"\n{setting}:")
    print(f"  {'':34s} {'wall s':>8s} {'speed-up':>9s} {'peak RSS MB':>12s} {'peak anon MB':>13s} {'MB/s':>8s} "
          f"{'of read':>8s}")
    for name, m in median.items():
        ratio = f"{base.wall_s / m.wall_s:8.2f}x" if base else f"{'-':>9s}"
        times = ", ".join(f"{r.wall_s:.2f}" for r in measured[name])
        print(f"  {name:34s} {m.wall_s:8.2f} {ratio} {m.max_rss_mb:12.0f} {m.anon_mb:13.0f} "
              f"{size / m.wall_s / 1e6:8.0f} {size / m.wall_s / limit:8.1%} ({times})")
    if base is not None:
        theirs = outputs(work / "reference")
        for name in median:
            if name == REFERENCE_NAME:
                continue
            mine = outputs(work / ("w1" if "(1 worker)" in name else "wn"))
            for file, a, b in zip(("weights.npz", "response_scores.npy"), mine, theirs):
                if not np.array_equal(a, b):
                    sys.exit(f"{file} of {name} differs from the reference's: the implementations disagree")
        print("  outputs identical to the reference's, bit for bit (np.array_equal): weights.npz and "
              "response_scores.npy of every nex-causal run")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, nargs="+", help="cache sizes, in responses (default 1000 20000)")
    parser.add_argument("--quick", action="store_true", help="200 and 2,000 responses")
    parser.add_argument("--rows", type=int, default=100, help="mean rows per response")
    parser.add_argument("--keys", type=int, default=300, help="keys per row")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each command per cache (median reported)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="workers of the every-core run")
    parser.add_argument("--cache-root", type=Path, default=nex_home() / "bench_nex", help="where caches are kept")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the reference release's directory")
    args = parser.parse_args()
    sizes = args.responses or ([200, 2000] if args.quick else [1000, 20000])
    reference = args.reference if (args.reference / "run_nex.py").is_file() else None
    if reference is None:
        print(f"no reference release at {args.reference} (../shared absent?): timing nex-causal alone")
    print(f"{os.cpu_count()} CPUs, {args.workers} workers for the every-core runs, {args.repeats} run(s) each")
    work = Path(tempfile.mkdtemp(prefix="bench_nex_"))
    speedups = {}
    try:
        for n in sizes:
            cache_dir = args.cache_root / f"responses_{n}_rows_{args.rows}_keys_{args.keys}"
            if not (cache_dir / "integrity.json").is_file():
                build_cache(cache_dir, n, args.rows, args.keys)
            cache = SparseCache.open(cache_dir, verify="off")  # the runs check it; this only describes it
            size = sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file())
            limit = sequential_read(cache_dir)
            print(f"\ncache {cache_dir}: {cache.n_responses:,} responses, {cache.n_rows:,} rows, {len(cache.keys):,} "
                  f"row entries ({cache.n_rows / cache.n_responses:.0f} rows, {len(cache.keys) / cache.n_rows:.0f} "
                  f"keys per row), {len(cache.base_keys):,} base entries, {size / 1e6:,.0f} MB; a sequential read "
                  f"of its files: {limit / 1e6:,.0f} MB/s")
            for setting in SETTINGS:
                median = bench_setting(cache_dir, size, work, reference, args.workers, args.repeats, setting, limit)
                if REFERENCE_NAME in median:
                    ours = median[f"{OURS} ({args.workers} workers)"]
                    speedups[(n, setting)] = median[REFERENCE_NAME].wall_s / ours.wall_s
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if speedups:
        print("\nnex-causal over the reference: " + "; ".join(f"{n:,} responses, {s}: {r:.2f}x"
                                                            for (n, s), r in speedups.items()))
        print(f"smallest speed-up: {min(speedups.values()):.2f}x")


if __name__ == "__main__":
    main()
