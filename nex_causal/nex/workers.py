"""Worker processes for NEX's passes over a cache: forked, one BLAS thread each, dying with their parent.

Learning and scoring hand chunks of a cache to ``workers`` processes forked from this one, so
that they share the memory-mapped cache and whatever the pass set up before the fork (the
calibration set, the weights) without copying it. Results come back in chunk order, so what
the parent adds up does not depend on the number of workers. One worker, or too few chunks
to be worth a pool, runs the chunks in this process. Each worker asks the kernel for SIGKILL
when its parent ends (Linux ``PR_SET_PDEATHSIG``), so a killed command leaves no orphans.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import TypeVar

from nex_causal.errors import NexError

T = TypeVar("T")


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    """``workers`` as a count (None: every core), or a one-line NexError."""
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise NexError(f"workers must be at least 1, got {workers}")
    return workers


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_setup() -> None:
    """Worker set-up: die with the parent, leave Ctrl-C to it (which shuts the pool down), and one BLAS/OpenMP
    thread (the arrays are small)."""
    from threadpoolctl import threadpool_limits

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(limits=1)


@contextlib.contextmanager
def in_chunks(work: Callable[[int, int], T], chunks: Sequence[tuple[int, int]], workers: int) -> Iterator[Iterator[T]]:
    """``work(start, stop)`` of every chunk, in chunk order: in ``workers`` forked processes, or in this one (with
    one BLAS thread) when ``workers`` is 1 or there are fewer than two chunks a worker. ``work`` is a module-level
    function; what it reads beyond its arguments is set before entering, and inherited by the fork."""
    from threadpoolctl import threadpool_limits

    limits = pool = None
    try:
        if workers == 1 or len(chunks) < 2 * workers:
            limits = threadpool_limits(limits=1)
            yield (work(a, b) for a, b in chunks)
        else:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"), initializer=_worker_setup)
            yield pool.map(work, *zip(*chunks)) if chunks else iter(())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if limits is not None:
            limits.restore_original_limits()
