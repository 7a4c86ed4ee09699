"""Shards on Ray workers: a local cluster or one at an address, one actor per GPU (or CPU core).

Each actor sets the work up once (loads the model) and writes the shards it is given
atomically to the shared file system; the driver only tracks which are done. Ray is an
optional extra (``pip install 'nex-causal[ray]'``); the shards and what they hold are those
of a single-process run, so the gathered result is identical.

Faults: a shard whose worker dies, or runs past ``timeout`` seconds (a frozen process), is
given to a fresh worker, at most ``retries`` more times, then the run fails with one line
naming the shard (the shards already written stay, so a rerun resumes). An error raised
by the work itself (bad input) is not retried. A local cluster binds to the loopback
address: Ray has no authentication, so nothing on the network may reach it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nex_causal.errors import NexError


class Work(Protocol):
    """Work split into ``n_shards`` shards; ``setup`` once per process, then ``run`` per shard."""

    what: str
    n_shards: int

    def setup(self) -> None: ...

    def run(self, index: int, path: Path) -> None: ...

    def size(self, index: int) -> int: ...  # the shard's items, for progress


@dataclass(frozen=True)
class RayOptions:
    """Where shards run on Ray: ``address`` of a cluster (None: a local one on 127.0.0.1), ``workers`` actors
    (default: one per GPU when there are GPUs, else one per CPU core), and how faults are met: a shard is
    retried ``retries`` times when its worker dies or runs past ``timeout`` seconds."""

    address: str | None = None
    workers: int | None = None
    retries: int = 2
    timeout: float = 3600.0


class ShardWorker:
    """A Ray actor's body: the work, set up once in the actor's process."""

    def __init__(self, work: Work):
        self.work = work
        work.setup()

    def run(self, index: int, path: str) -> int:
        self.work.run(index, Path(path))
        return index


POLL = 1.0  # seconds between checks of the running shards' clocks
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is the loopback one, as on a laptop


def loopback_only() -> None:
    """Make the Ray cluster this process starts listen on 127.0.0.1 only (every server of it, its workers too).

    Ray reads the switch when it is imported; when it was imported already, its constant is set
    to the same effect.
    """
    import os
    import sys

    os.environ[LOOPBACK_ONLY] = "0"
    if (constants := sys.modules.get("ray._private.ray_constants")) is not None:
        constants.ENABLE_RAY_CLUSTER = False


def run_on_ray(work: Work, pending: Sequence[int], paths: Sequence[Path], options: RayOptions,
               done: Callable[[int], None]) -> None:
    """Run the ``pending`` shards of ``work`` on Ray actors, calling ``done(index)`` as each finishes."""
    if not options.address:
        loopback_only()
    try:
        import ray
        from ray.exceptions import RayActorError
    except ImportError:
        raise NexError("--ray needs Ray: pip install -c constraints.txt 'nex-causal[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if options.address:
            ray.init(address=options.address, log_to_driver=False)
        else:
            ray.init(num_cpus=options.workers, include_dashboard=False, log_to_driver=False)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        workers = options.workers or gpus or int(resources.get("CPU", 1))
        actor = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0)(ShardWorker)
        idle = [actor.remote(work) for _ in range(min(workers, len(pending)))]
        queue, running, attempts = deque(pending), {}, Counter()

        def fail(index: int, actor_handle, why: str) -> None:
            """Give the shard to a fresh worker, or stop once it has had its retries."""
            ray.kill(actor_handle)
            if attempts[index] > options.retries:
                raise NexError(f"shard {index} of {work.what} failed {attempts[index]} times on Ray ({why}): the "
                               "shards written so far are kept, so a rerun resumes; look at the Ray worker logs, "
                               "or raise --ray-timeout")
            queue.appendleft(index)
            idle.append(actor.remote(work))

        while queue or running:
            while idle and queue:
                index, worker = queue.popleft(), idle.pop()
                attempts[index] += 1
                running[worker.run.remote(index, str(paths[index]))] = (worker, index, time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL)
            for ref in ready:
                worker, index, _ = running.pop(ref)
                try:
                    done(ray.get(ref))  # an error of the work itself is raised here, not retried
                    idle.append(worker)
                except RayActorError:
                    fail(index, worker, "its worker died")
            for ref, (worker, index, began) in list(running.items()):
                if time.monotonic() - began > options.timeout:
                    del running[ref]
                    fail(index, worker, f"it ran past {options.timeout:g} s")
        for worker in idle:
            ray.kill(worker)
    finally:
        if started:
            ray.shutdown()
