"""Integrity records: what a directory's files held when they were written, checked when they are read.

A cache is written once and read many times, often much later and on other machines, and a
flipped byte in a mass or key file still gives a plausible NEX. So the writer records, in
``integrity.json`` beside the files, each file's size and CRC-32 (of the whole file, and of
its first and last MiB), and every open checks them at one of three levels:

    full   sizes and the CRC-32 of every byte (the default: about 2 GB/s)
    fast   sizes and the CRC-32 of each file's first and last MiB (for caches of tens of GB)
    off    sizes only

``NEX_CAUSAL_VERIFY`` sets the level for a whole session; commands take ``--verify``. A
directory without a record (the reference release's layout, or a cache made before records
existed) opens with a one-line note, since nothing says what it should hold.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from nex_causal.errors import NexError

RECORD_FILE = "integrity.json"
LEVELS = ("full", "fast", "off")
Level = Literal["full", "fast", "off"]
ENV = "NEX_CAUSAL_VERIFY"
EDGE = 1 << 20  # bytes at each end of a file that ``fast`` reads
BLOCK = 1 << 24


def default_level() -> Level:
    """``$NEX_CAUSAL_VERIFY`` when set, else ``full``."""
    level = os.environ.get(ENV) or "full"
    if level not in LEVELS:
        raise NexError(f"{ENV}={level!r} is not a verification level: use {', '.join(LEVELS)}")
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
    files appear together.
    """
    directory = Path(directory)
    files = {name: file_record(directory / name) for name in sorted(names)}
    (directory / RECORD_FILE).write_text(json.dumps({"version": 1, "files": files}, indent=1) + "\n")


def verify(directory: str | os.PathLike, level: Level | None = None) -> bool:
    """Check ``directory``'s files against its record at ``level`` (default ``default_level()``).

    Returns False when there is no record (nothing to check), True when every file matches;
    a file that is missing, resized or changed raises one line naming it.
    """
    directory = Path(directory)
    level = default_level() if level is None else level
    if level not in LEVELS:
        raise NexError(f"verification level {level!r} is unknown: use {', '.join(LEVELS)}")
    record_file = directory / RECORD_FILE
    if not record_file.is_file():
        return False
    try:
        files = json.loads(record_file.read_text())["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise NexError(f"{record_file} is not a valid integrity record: the directory was damaged; "
                       "re-create it") from None
    fix = "re-create it, or read it anyway with --verify off"
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise NexError(f"{path} is missing (its integrity record lists it): the directory is incomplete; {fix}")
        found = file_record(path, level)
        if found["bytes"] != expected["bytes"]:
            raise NexError(f"{path} has {found['bytes']} bytes but was written with {expected['bytes']}: it was "
                           f"truncated or changed; {fix}")
        for key in ("crc32", "edges_crc32"):
            if key in found and found[key] != expected.get(key):
                raise NexError(f"{path} does not hold what was written (CRC-32 differs): it was changed or "
                               f"corrupted after it was written; {fix}")
    return True
