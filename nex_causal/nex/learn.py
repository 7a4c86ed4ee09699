"""Learning neuron weights over a calibration set: every response analysed, its credit added into Eff/Red.

Responses are analysed in chunks, in this process or by forked worker processes
(``workers``), each read from the memory-mapped cache when its turn comes (memory stays at a
response and a chunk's credit, whatever the cache's size); each chunk returns its
responses' credit and a summary of what NEX saw in each (``SUMMARY``: rows, tokens,
neurons, explore share, cycles, crediting cycles, novelty decay, float16 extremes), and the
parent adds the credit into Eff/Red in response order, so the weights do not depend on the
number of workers. Eff and Red are the two halves of one float32 array, and a chunk's credit
arrives as (slot, amount) pairs, slot = key, or key + 2**22 for Red: ``np.add.at`` adds them
one after the other, in response order, as the reference adds a response at a time (a
response's keys are distinct, so each gets one float32 addition per response), at ~1 ns a
pair. The summaries are what a cache's profile is made of (``nex.profile``), so the
degeneracy check after learning costs nothing more.

As each chunk comes back the parent carries the cache's ``full`` check through the row
entries it covered (``SparseCache.advance``; the cache opened ``in_pass``): CRC-32 and
values of pages that were just read, instead of a separate pass over the whole cache.

Workers are ``nex.workers``'. Where the time goes: ``benchmarks/bench_nex.py``, and the notes
on time in each step's module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from nex_causal.cache import FLOAT16_MAX, KEY_SPACE, ResponseRows, SparseCache
from nex_causal.errors import NexError
from nex_causal.nex.config import NexConfig
from nex_causal.nex.credit import (
    ResponseTrace,
    analyze_response,
    neuron_weights,
)
from nex_causal.nex.phases import backends
from nex_causal.nex.workers import check_workers, in_chunks

CHUNK = 32  # responses per task of a worker
PROGRESS_TOLERANCE = 1e-6  # a lone cycle's progress is the float32 residue of its share (< 1e-7): it credits nothing
SUMMARY = ("rows", "tokens", "entries", "neurons", "explore_share", "cycles", "crediting_cycles", "novelty_decay",
           "saturated", "underflowed")


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
    """What NEX saw in one response, in ``SUMMARY`` order (raw rows, tokens, entries and float16 masses saturated at
    65504 or 0; the rest of usable rows)."""
    crediting = sum(1 for c in trace.cycles if c.kind != "none" and abs(c.progress) > PROGRESS_TOLERANCE)
    return np.array([len(rows), rows.tokens.sum(), len(rows.keys), trace.neurons,
                     np.mean(trace.explore) if len(trace.explore) else np.nan, len(trace.cycles), crediting,
                     novelty_decay(trace.slopes), np.count_nonzero(np.abs(rows.mass) == FLOAT16_MAX),
                     np.count_nonzero(rows.mass == 0)], np.float64)


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


Chunk = tuple[np.ndarray, np.ndarray, np.ndarray, list[ResponseTrace] | None]


def _analyze_chunk(start: int, stop: int) -> Chunk:
    """The chunk's credit as (slot, amount) pairs in response order, its summaries and, to keep, its traces."""
    cache, config, keep, chosen = _JOB
    traces, summaries = [], np.empty((stop - start, len(SUMMARY)), np.float64)
    picked = chosen[start:stop]
    in_order = picked[-1] - picked[0] == len(picked) - 1 and (np.diff(picked) == 1).all()
    each = cache.rows_of(int(picked[0]), int(picked[-1]) + 1) if in_order else map(cache.response_rows, picked)
    for i, (r, rows) in enumerate(zip(picked, each)):
        traces.append(analyze_response(rows, config, prompt_keys(cache, int(r)) if config.prompt_seen else None))
        summaries[i] = summary(rows, traces[-1])
    slots = np.concatenate([t.credit.slots() for t in traces] or [np.empty(0, np.int64)])
    amounts = np.concatenate([t.credit.amount for t in traces] or [np.empty(0, np.float32)])
    return slots, amounts, summaries, traces if keep else None


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
    workers = check_workers(workers)
    n = len(chosen)
    chunks = [(a, min(a + CHUNK, n)) for a in range(0, n, CHUNK)]
    credit = np.zeros(2 * KEY_SPACE, np.float32)  # Eff, then Red
    traces: list[ResponseTrace] | None = [] if keep_traces else None
    summaries = np.empty((n, len(SUMMARY)), np.float64)
    _JOB = (cache, config, keep_traces, chosen)
    backends()  # loaded here, so that forked workers inherit it
    done = 0
    try:
        with in_chunks(_analyze_chunk, chunks, workers) as results, \
                tqdm(total=n, desc="nex train", unit="resp", disable=not progress, mininterval=0.5) as bar:
            for slots, amounts, rows, part in results:
                # an array unpickled from a worker has a dtype object of its own, which takes ufunc.at off its
                # fast path (50x slower); a view has numpy's own float32
                np.add.at(credit, slots, amounts.view(np.float32))
                if traces is not None:
                    traces.extend(part)
                summaries[done:done + len(rows)] = rows
                done += len(rows)
                cache.advance("rows", cache.rows_end(int(chosen[done - 1])))
                bar.update(len(rows))
    finally:
        _JOB = None
    eff, red = credit[:KEY_SPACE], credit[KEY_SPACE:]
    return Calibration(neuron_weights(eff, red, config.weighting), eff, red, n, summaries, traces)


def learn_weights(cache: SparseCache, config: NexConfig = NexConfig(), *, max_responses: int = 0,
                  workers: int | None = None, progress: bool = True) -> np.ndarray:
    """Neuron weights (float32, length 2**22, indexed by packed key) learned on ``cache``."""
    return learn(cache, config, max_responses=max_responses, workers=workers, progress=progress).weights
