"""Shards on Ray meet faults: a worker that dies or freezes gives its shard to a fresh one, a bounded number
of times; a local cluster listens on the loopback address only. Slow (a Ray cluster starts each time)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from pathlib import Path

import pytest

from nex_causal.capture.cluster import RayOptions
from nex_causal.capture.shards import run_shards
from nex_causal.errors import NexError

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")]


@pytest.fixture(autouse=True)
def shipped_by_value():
    """Ray's workers cannot import this test module: ship its classes by value."""
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


class Faulty:
    """Four shards; a shard named in ``die`` kills its worker, one in ``hang`` freezes it, the first
    ``times`` times it is run (counted in marker files, which the workers share)."""

    what = "faulty work"
    n_shards = 4

    def __init__(self, marks: Path, die=(), hang=(), times: int = 1):
        self.marks, self.die, self.hang, self.times = marks, set(die), set(hang), times

    def setup(self) -> None:
        pass

    def size(self, index: int) -> int:
        return 1

    def run(self, index: int, path: Path) -> None:
        marks = sorted(self.marks.glob(f"{index}-*"))
        (self.marks / f"{index}-{len(marks)}").touch()
        if len(marks) < self.times and index in self.die:
            os._exit(1)
        if len(marks) < self.times and index in self.hang:
            time.sleep(600)
        path.write_text(f"shard {index}")


def test_a_dead_and_a_frozen_worker_are_replaced(tmp_path):
    work = Faulty(tmp_path, die={1}, hang={2})
    tmp_path.joinpath("partial").mkdir()
    paths = run_shards(work, tmp_path / "partial", {"what": "faults"}, progress=False,
                       ray=RayOptions(workers=2, retries=2, timeout=10))
    assert [p.read_text() for p in paths] == [f"shard {i}" for i in range(4)]
    assert len(list(tmp_path.glob("1-*"))) == 2 and len(list(tmp_path.glob("2-*"))) == 2  # one retry each


def test_a_shard_that_keeps_failing_stops_the_run_with_one_line(tmp_path):
    work = Faulty(tmp_path, die={3}, times=10)
    with pytest.raises(NexError, match=r"shard 3 of faulty work failed 2 times on Ray \(its worker died\)") as err:
        run_shards(work, tmp_path / "partial", {"what": "faults"}, progress=False,
                   ray=RayOptions(workers=2, retries=1, timeout=30))
    assert "\n" not in str(err.value)
    done = sorted(p.name for p in (tmp_path / "partial" / "shards").iterdir())
    assert done == ["000000", "000001", "000002"]  # the shards written before are kept for a rerun


def listening() -> set[str]:
    """The local addresses of every listening TCP socket on this machine."""
    lines = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout.splitlines()
    return {line.split()[3] for line in lines}


class Listening(Faulty):
    """Each shard writes down the listening sockets it sees, while the cluster is up."""

    def run(self, index: int, path: Path) -> None:
        path.write_text("\n".join(sorted(listening())))


def test_a_local_cluster_listens_on_loopback_only(tmp_path):
    before = listening()
    paths = run_shards(Listening(tmp_path), tmp_path / "partial", {"what": "loopback"}, progress=False,
                       ray=RayOptions(workers=1))
    new = set(paths[0].read_text().splitlines()) - before  # the sockets the cluster opened
    assert new, "Ray opened no listening socket: the check did not see it"
    assert all(addr.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")) for addr in new), sorted(new)
