"""Integrity records: what a directory's files held when they were written, checked when they are read.

A cache is written once and read many times, often much later and on other machines, and a
flipped byte in a mass or key file still gives a plausible NEX. So the writer records, in
``integrity.json`` beside the files, every file's size and CRC-32 (of the whole file, and of
its first and last MiB), and every open checks them at one of three levels:

    full   sizes and the CRC-32 of every byte (the default: about 2 GB/s)
    fast   sizes and the CRC-32 of each file's first and last MiB (for caches of tens of GB)
    off    sizes only

``NEX_CAUSAL_VERIFY`` sets the level for a whole session; commands take ``--verify``. A
record names every file it covers; one that lists no file, is not a record, or names a file
that is not the directory's is refused, since it would check nothing and say nothing. A
directory without a record (the reference release's layout) has nothing to check its bytes
against. The CRC of a large file may also be taken as a reader passes through it
(``RunningCrc``, ``cache.checks.ReadPass``): the same check, without reading the file twice.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nex_causal.errors import NexError

RECORD_FILE = "integrity.json"
VERSION = 2  # version 1 (before capture.json was recorded) is read too
LEVELS = ("full", "fast", "off")
Level = Literal["full", "fast", "off"]
ENV = "NEX_CAUSAL_VERIFY"
EDGE = 1 << 20  # bytes at each end of a file that ``fast`` reads
BLOCK = 1 << 24
FIX = "re-create it, or read it anyway with --verify off"


def default_level() -> Level:
    """``$NEX_CAUSAL_VERIFY`` when set, else ``full``."""
    level = os.environ.get(ENV) or "full"
    if level not in LEVELS:
        raise NexError(f"{ENV}={level!r} is not a verification level: use {', '.join(LEVELS)}")
    return level  # type: ignore[return-value]


def check_level(level: str) -> Level:
    if level not in LEVELS:
        raise NexError(f"verification level {level!r} is unknown: use {', '.join(LEVELS)}")
    return level  # type: ignore[return-value]


def _crc(handle, start: int, stop: int) -> int:
    handle.seek(start)
    crc, left = 0, stop - start
    while left > 0:
        chunk = handle.read(min(BLOCK, left))
        if not chunk:
            break
        crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    return crc


def file_record(path: Path, level: Level = "full") -> dict[str, int]:
    """The size of ``path`` and, by ``level``, the CRC-32 of its ends (``fast``) and of all of it (``full``)."""
    size = path.stat().st_size
    record = {"bytes": size}
    if level == "off":
        return record
    with open(path, "rb") as handle:
        record["edges_crc32"] = zlib.crc32(_crc(handle, 0, min(EDGE, size)).to_bytes(4, "little")
                                           + _crc(handle, max(0, size - EDGE), size).to_bytes(4, "little"))
        if level == "full":
            record["crc32"] = _crc(handle, 0, size)
    return record


def write_record(directory: str | os.PathLike, names: Iterable[str]) -> None:
    """Record every file ``names`` (relative to ``directory``) in ``directory/integrity.json``.

    Called inside a directory that is published atomically afterwards, so the record and the
    files appear together; called again when a file is added (``capture.json``), it covers that too.
    """
    directory = Path(directory)
    files = {name: file_record(directory / name) for name in sorted(names)}
    (directory / RECORD_FILE).write_text(json.dumps({"version": VERSION, "files": files}, indent=1) + "\n")


@dataclass(frozen=True)
class Record:
    """A parsed integrity record: its file, version, and per file ``bytes``, ``crc32`` and ``edges_crc32``."""

    path: Path
    version: int
    files: dict[str, dict[str, int]]


def _entry_problem(name: str, entry: object, known: Collection[str]) -> str | None:
    if name not in known:
        return f"it names {name!r}, which is not a file of this directory"
    if not isinstance(entry, dict) or set(entry) != {"bytes", "crc32", "edges_crc32"}:
        return f"the entry of {name} is not bytes, crc32 and edges_crc32"
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < (1 << 63) for v in entry.values()):
        return f"the entry of {name} holds a value that is not a size or a CRC-32"
    return None


def read_record(directory: str | os.PathLike, known: Collection[str]) -> Record | None:
    """The integrity record of ``directory`` (None when it has none), whose files must be among ``known``.

    An empty record, one that is not JSON of the written form, or one naming another file is
    refused in one line: it would check nothing, or something else than the directory.
    """
    file = Path(directory) / RECORD_FILE
    if not file.is_file():
        return None
    try:
        content = json.loads(file.read_text())
        files, version = content["files"], content["version"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        content, files, version = None, None, None
    if not isinstance(files, dict) or version not in (1, VERSION):
        why = "it is not the JSON a writer leaves (version and files)"
    elif not files:
        why = 'it lists no file ("files": {}), so it would check nothing'
    else:
        why = next((p for name, entry in files.items() if (p := _entry_problem(name, entry, known))), None)
    if why is not None:
        raise NexError(f"{file} is not a valid integrity record: {why}; re-create the directory, or delete "
                       f"{RECORD_FILE} to read it as one without a record")
    return Record(file, version, files)


def mismatch(path: Path) -> NexError:
    """The error for a file whose bytes differ from its record."""
    return NexError(f"{path} does not hold what was written (CRC-32 differs): it was changed or corrupted after "
                    f"it was written; {FIX}")


def check(directory: str | os.PathLike, record: Record, level: Level, later: Collection[str] = ()) -> None:
    """Check ``directory``'s recorded files at ``level``; at ``full``, files in ``later`` get only their size and
    ends checked here, their CRC being taken as they are read (``RunningCrc``)."""
    directory = Path(directory)
    for name, expected in record.files.items():
        path = directory / name
        if not path.is_file():
            raise NexError(f"{path} is missing (its integrity record lists it): the directory is incomplete; {FIX}")
        found = file_record(path, "fast" if level == "full" and name in later else level)
        if found["bytes"] != expected["bytes"]:
            raise NexError(f"{path} has {found['bytes']} bytes but was written with {expected['bytes']}: it was "
                           f"truncated or changed; {FIX}")
        if any(key in found and found[key] != expected[key] for key in ("crc32", "edges_crc32")):
            raise mismatch(path)


class RunningCrc:
    """The CRC-32 of one file taken front to back as a reader passes through it, compared with its record
    when the reader is done (``settle``): the full check, with every byte read once."""

    def __init__(self, path: Path, expected: int):
        self.path, self.expected, self.crc = path, expected, 0

    def add(self, data) -> None:
        """Add the file's next bytes (``data``, any buffer), in order."""
        self.crc = zlib.crc32(data, self.crc)

    def settle(self) -> None:
        if self.crc != self.expected:
            raise mismatch(self.path)
