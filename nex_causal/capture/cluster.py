"""Shards on Ray workers: a local cluster or one at an address, one actor per GPU (or CPU core).

Each actor sets the work up once (loads the model) and writes the shards it is given
atomically to the shared file system; the driver only tracks which are done. Ray is an
optional extra (``pip install 'nex-causal[ray]'``); the shards and what they hold are those
of a single-process run, so the gathered result is identical.
"""

from __future__ import annotations

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
    """Where shards run on Ray: ``address`` of a cluster (None: a local one), ``workers`` actors
    (default: one per GPU when there are GPUs, else one per CPU core)."""

    address: str | None = None
    workers: int | None = None


class ShardWorker:
    """A Ray actor's body: the work, set up once in the actor's process."""

    def __init__(self, work: Work):
        self.work = work
        work.setup()

    def run(self, index: int, path: str) -> int:
        self.work.run(index, Path(path))
        return index


def run_on_ray(work: Work, pending: Sequence[int], paths: Sequence[Path], options: RayOptions,
               done: Callable[[int], None]) -> None:
    """Run the ``pending`` shards of ``work`` on Ray actors, calling ``done(index)`` as each finishes."""
    try:
        import ray
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
        actors = [actor.remote(work) for _ in range(min(workers, len(pending)))]
        queue, running = list(pending), {}

        def give(a) -> None:
            if queue:
                i = queue.pop(0)
                running[a.run.remote(i, str(paths[i]))] = a

        for a in actors:
            give(a)
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            a = running.pop(ref)
            done(ray.get(ref))  # a worker's exception is raised here, with its traceback
            give(a)
        for a in actors:
            ray.kill(a)
    finally:
        if started:
            ray.shutdown()
