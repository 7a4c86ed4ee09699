"""Learning neuron weights over a calibration set: every response analysed, its credit added into Eff/Red.

Responses are analysed in chunks, in this process or by forked worker processes
(``workers``), each read from the memory-mapped cache when its turn comes (memory stays at a
response and a chunk's credit, whatever the cache's size); each chunk returns its
responses' credit and a summary of what NEX saw in each (``SUMMARY``: rows, tokens,
neurons, explore share, cycles, crediting cycles, novelty decay), and the parent adds the
credit into Eff/Red in response order, so the weights do not depend on the number of
workers. It adds one response at a time with fancy indexing (its keys are distinct): a
chunk at once with ``np.add.at`` would be exact too, but ten times slower while workers
share the caches, which made the parent the bottleneck of two workers on two cores. The
summaries are what a cache's profile is made of (``nex.profile``), so the degeneracy check
after learning costs nothing more.

Where the time of ``nex-causal nex run`` goes, for 1,000 responses of ~100 rows x ~290 keys
on 2 cores (the reference release's ``run_nex.py run`` takes ~9 s): learning ~1.9 ms per
response (segmentation a third, cycles and novelty a fifth each, credit and cleaning a
seventh, the rest reading rows and adding credit; see each module), which workers divide;
scoring ~0.2 s; and ~1.6 s outside learning and scoring that no worker count changes:
importing nex_causal (~0.3 s), verifying the cache's checksums and values on open (~0.5 s;
~9 s for 20,000 responses), the profile after learning (~0.5 s with pandas' import; ~6 s and
a copy of every mass in the cache for 20,000 responses) and writing the weights (~0.3 s,
zlib). ``benchmarks/bench_nex.py`` measures it.

Workers die with their parent: each asks the kernel for SIGKILL when the parent process
ends (Linux ``PR_SET_PDEATHSIG``), so a killed ``nex train`` leaves no orphans behind.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
from tqdm.auto import tqdm

from nex_causal.cache import KEY_SPACE, ResponseRows, SparseCache
from nex_causal.errors import NexError
from nex_causal.nex.config import NexConfig
from nex_causal.nex.credit import (
    Credit,
    ResponseTrace,
    analyze_response,
    neuron_weights,
)
from nex_causal.nex.phases import backends

CHUNK = 32  # responses per task of a worker
PROGRESS_TOLERANCE = 1e-6  # a lone cycle's progress is the float32 residue of its share (< 1e-7): it credits nothing
SUMMARY = ("rows", "tokens", "entries", "neurons", "explore_share", "cycles", "crediting_cycles", "novelty_decay")


def novelty_decay(slopes: np.ndarray) -> float:
    """Mean novelty slope of the last quarter of rows over that of the first quarter (NaN when undefined).

    0.18 on the reference example: a real trace still recruits new neurons at the end, at a
    fifth of its opening rate.
    """
    n = len(slopes) // 4
    if n < 1:
        return float("nan")
    first, last = float(np.mean(slopes[:n])), float(np.mean(slopes[-n:]))
    return last / first if first > 0 else float("nan")


def summary(rows: ResponseRows, trace: ResponseTrace) -> np.ndarray:
    """What NEX saw in one response, in ``SUMMARY`` order (raw rows, tokens and entries; the rest of usable rows)."""
    crediting = sum(1 for c in trace.cycles if c.kind != "none" and abs(c.progress) > PROGRESS_TOLERANCE)
    return np.array([len(rows), rows.tokens.sum(), len(rows.keys), trace.neurons,
                     np.mean(trace.explore) if len(trace.explore) else np.nan, len(trace.cycles), crediting,
                     novelty_decay(trace.slopes)], np.float64)


@dataclass(frozen=True)
class Calibration:
    """Learned weights, the Eff/Red mass they came from, each response's summary (``SUMMARY`` columns) and,
    on request, every response's trace."""

    weights: np.ndarray
    eff: np.ndarray
    red: np.ndarray
    n_responses: int
    summaries: np.ndarray
    traces: list[ResponseTrace] | None = None


def prompt_keys(cache: SparseCache, r: int) -> np.ndarray:
    """The keys response ``r``'s prompt selected (``responses.parquet`` ``prompt_keys``, from ``--record-prompt``)."""
    return np.asarray(cache.responses["prompt_keys"].iloc[r], np.int64)


_JOB: tuple[SparseCache, NexConfig, bool, np.ndarray] | None = None  # what forked workers analyse


def _analyze_chunk(start: int, stop: int) -> tuple[list[Credit] | list[ResponseTrace], np.ndarray]:
    """Each response's credit (or, to keep, its trace) and the chunk's summaries."""
    cache, config, keep, chosen = _JOB
    traces, summaries = [], np.empty((stop - start, len(SUMMARY)), np.float64)
    for i, r in enumerate(chosen[start:stop]):
        rows = cache.response_rows(int(r))
        traces.append(analyze_response(rows, config, prompt_keys(cache, int(r)) if config.prompt_seen else None))
        summaries[i] = summary(rows, traces[-1])
    return (traces if keep else [t.credit for t in traces]), summaries


def _worker_setup() -> None:
    """Worker set-up: die with the parent, leave Ctrl-C to it (which shuts the pool down), and one BLAS/OpenMP
    thread (the mixture fits are tiny)."""
    from threadpoolctl import threadpool_limits

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(limits=1)


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def learn(cache: SparseCache, config: NexConfig = NexConfig(), *, max_responses: int = 0,
          responses: Sequence[int] | None = None, workers: int | None = None, progress: bool = True,
          keep_traces: bool = False) -> Calibration:
    """Accumulate Eff/Red over the calibration responses and derive the weights.

    The calibration set is ``responses`` (indices, in order) when given, else the first
    ``max_responses`` responses (0: all). ``workers`` processes (default: every core) analyse
    chunks of responses; one worker, or a set too small to be worth a pool, runs in this
    process. The result is the same.
    """
    global _JOB
    if config.prompt_seen and (cache.responses is None or "prompt_keys" not in cache.responses):
        raise NexError(f"{cache.path} records no prompt neurons, which prompt_seen needs: capture it again with "
                       "--record-prompt (replay)")
    if int(max_responses) != max_responses or max_responses < 0:
        raise NexError(f"max_responses must be a non-negative integer (0 = all), got {max_responses}")
    if responses is None:
        n = cache.n_responses if max_responses == 0 else min(int(max_responses), cache.n_responses)
        chosen = np.arange(n)
    else:
        chosen = np.asarray(responses, np.int64)
        if chosen.size and (chosen.min() < 0 or chosen.max() >= cache.n_responses):
            raise NexError(f"calibration responses must lie in 0..{cache.n_responses - 1}")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise NexError(f"workers must be at least 1, got {workers}")
    n = len(chosen)
    chunks = [(a, min(a + CHUNK, n)) for a in range(0, n, CHUNK)]
    eff, red = np.zeros(KEY_SPACE, np.float32), np.zeros(KEY_SPACE, np.float32)
    traces: list[ResponseTrace] | None = [] if keep_traces else None
    summaries = np.empty((n, len(SUMMARY)), np.float64)
    _JOB, limits, pool = (cache, config, keep_traces, chosen), None, None
    backends()  # loaded here, so that forked workers inherit it
    bar = tqdm(total=n, desc="nex train", unit="resp", disable=not progress, mininterval=0.5)
    try:
        if workers == 1 or len(chunks) < 2 * workers:
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(limits=1)
            results = (_analyze_chunk(a, b) for a, b in chunks)
        else:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"),
                                       initializer=_worker_setup)
            results = pool.map(_analyze_chunk, *zip(*chunks))
        done = 0
        for part, rows in results:
            for item in part:  # one response at a time: its keys are distinct, so fancy indexing adds them all
                (item.credit if keep_traces else item).add_to(eff, red)
            if traces is not None:
                traces.extend(part)
            summaries[done:done + len(rows)] = rows
            done += len(rows)
            bar.update(len(rows))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if limits is not None:
            limits.restore_original_limits()
        _JOB = None
        bar.close()
    return Calibration(neuron_weights(eff, red, config.weighting), eff, red, n, summaries, traces)


def learn_weights(cache: SparseCache, config: NexConfig = NexConfig(), *, max_responses: int = 0,
                  workers: int | None = None, progress: bool = True) -> np.ndarray:
    """Neuron weights (float32, length 2**22, indexed by packed key) learned on ``cache``."""
    return learn(cache, config, max_responses=max_responses, workers=workers, progress=progress).weights
