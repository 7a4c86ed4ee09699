"""What a cache must satisfy before anything is computed from it, and when each check runs.

    structure  every pointer array against the arrays it points into (lengths, 0 start, monotone,
               exact end), and the response table's length: on every open, at any level
    geometry   ``capture.json`` is a capture record whose model shape fits the key space (1-64 layers,
               1-65536 units): on every open, before anything is sized from it
    values     finite non-negative masses, and keys inside the key space and the capture's
               geometry (layer 255 excepted): at ``full``, with or without an integrity record
    bytes      each file's size and CRC-32 against the integrity record (``cache.integrity``)

At ``full`` the entry arrays (``keys`` and ``w_sum`` of both views, nearly all of a cache's
bytes) are checked in one pass per chunk, CRC and values together (``ReadPass``). A reader
that goes through them front to back anyway (learning, scoring) can carry that pass: it
calls ``advance`` as it reads and ``settle`` before it writes anything, and every byte is
read once instead of twice. Masses are scanned as float16 bit patterns: a chunk whose
largest pattern is below 0x7C00 (the first infinity) holds no NaN, infinity or negative
number, which a max over uint16 shows at ~14 GB/s; only a chunk that fails it is scanned
value by value, to name the first bad entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nex_causal.cache.format import (
    CAPTURE_FILE,
    CHUNK,
    FILES,
    N_LAYERS,
    N_UNITS,
    RESPONSES_FILE,
    VIEWS,
    bad_mass,
    out_of_range,
)
from nex_causal.cache.integrity import Record, RunningCrc
from nex_causal.errors import NexError

FLOAT16_INF = 0x7C00  # the bit pattern of +inf: every finite non-negative float16 lies below it
Geometry = tuple[int, int]  # (n_layers, d_mlp)
CORRUPT = "the cache is corrupt, re-create it"


def check_structure(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Check every pointer array against the arrays it points into, and the response table's length."""
    name = {attr: f"{path}/{file}" for attr, (file, _) in FILES.items()}
    sample = arrays["sample_row_ptr"]
    if len(sample) == 0:
        raise NexError(f"{name['sample_row_ptr']} is empty; it needs at least the leading 0")
    check_pointers(name["sample_row_ptr"], sample)
    rows, responses = int(sample[-1]), len(sample) - 1
    per_row = f"{rows} rows (the end of sample_row_ptr) + 1"
    check_pointers(name["row_ptr"], arrays["row_ptr"], length=(rows + 1, per_row),
                   into=(name["keys"], len(arrays["keys"])))
    check_pointers(name["token_row_ptr"], arrays["token_row_ptr"], length=(rows + 1, per_row))
    check_pointers(name["base_row_ptr"], arrays["base_row_ptr"],
                   length=(responses + 1, f"{responses} responses (as in sample_row_ptr) + 1"),
                   into=(name["base_keys"], len(arrays["base_keys"])))
    for keys, mass in VIEWS.values():
        n_keys, n_mass = len(arrays[keys]), len(arrays[mass])
        if n_mass != n_keys:
            raise NexError(f"{name[mass]} holds {n_mass} values but {name[keys]} holds {n_keys} keys; {CORRUPT}")
    file = path / RESPONSES_FILE
    if file.is_file():
        import pyarrow.parquet as pq

        try:
            n_meta = pq.read_metadata(file).num_rows
        except Exception as err:  # pyarrow raises several kinds for a damaged file
            raise NexError(f"cannot read {file} ({type(err).__name__}): the response table is damaged; "
                           "re-create the cache") from None
        if n_meta != responses:
            raise NexError(f"{file} has {n_meta} rows but the cache holds {responses} responses; {CORRUPT}")


def check_pointers(file: str, ptr: np.ndarray, *, length: tuple[int, str] | None = None,
                   into: tuple[str, int] | None = None) -> None:
    """A CSR pointer array: ``length`` = (entries, why) entries, starts at 0, never decreases,
    and ends exactly at the length of the array it points ``into`` = (name, length)."""
    if length is not None and len(ptr) != length[0]:
        raise NexError(f"{file} has {len(ptr)} entries, expected {length[0]} = {length[1]}; {CORRUPT}")
    if ptr[0] != 0:
        raise NexError(f"{file} starts at {ptr[0]}, expected 0; {CORRUPT}")
    steps = np.diff(ptr)
    if (steps < 0).any():
        at = int(np.argmax(steps < 0)) + 1
        raise NexError(f"{file} is not monotone: it decreases at index {at} ({ptr[at - 1]} -> {ptr[at]}); {CORRUPT}")
    if into is not None and ptr[-1] > into[1]:
        raise NexError(f"{into[0]} holds {into[1]} entries, shorter than the {ptr[-1]} that {file} "
                       "points to; the cache is truncated, re-create it")
    if into is not None and ptr[-1] < into[1]:
        raise NexError(f"{into[0]} holds {into[1]} entries but {file} covers only {ptr[-1]}; {CORRUPT}")


def capture_record(path: Path) -> dict | None:
    """The cache's ``capture.json`` (None when absent), refused in one line unless it is a JSON object whose
    ``n_layers`` and ``d_mlp`` are a model's MLP shape inside the key space (so nothing is sized from a wrong one)."""
    file = path / CAPTURE_FILE
    if not file.is_file():
        return None
    fix = "re-create the cache, or delete the file to use the arrays without it"
    try:
        info = json.loads(file.read_text())
        shape, config = (info["n_layers"], info["d_mlp"]), info.get("config", {})
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise NexError(f"{file} is not a capture record (JSON with n_layers and d_mlp): it was damaged; "
                       f"{fix}") from None
    if not isinstance(config, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape) \
            or not (1 <= shape[0] <= N_LAYERS and 1 <= shape[1] <= N_UNITS):
        raise NexError(f"{file} declares n_layers {shape[0]!r} and d_mlp {shape[1]!r}, not an MLP shape the cache's "
                       f"keys can hold (1-{N_LAYERS} layers, 1-{N_UNITS} units): it was damaged; {fix}")
    return info


def first_bad(attr: str, values: np.ndarray, geometry: Geometry) -> int | None:
    """Index of the first entry of ``values`` (a slice of array ``attr``) that no capture writes, or None."""
    if not values.size:
        return None
    if attr.endswith("w_sum"):
        if int(values.view(np.uint16).max()) < FLOAT16_INF:
            return None
        found = np.flatnonzero(bad_mass(values))
    else:
        n_layers, d_mlp = geometry
        if int(values.max()) < n_layers << 16 and (d_mlp == N_UNITS or int((values & 0xFFFF).max()) < d_mlp):
            return None
        found = np.flatnonzero(out_of_range(values, n_layers, d_mlp))
    return int(found[0]) if found.size else None


def value_error(path: Path, attr: str, value: object, at: int, geometry: Geometry) -> NexError:
    n_layers, d_mlp = geometry
    shape = "64 layers x 65536 units" if geometry == (N_LAYERS, N_UNITS) else \
        f"the capture's {n_layers} layers x {d_mlp} units"
    return NexError(f"{path}/{FILES[attr][0]} holds {value!r} at index {at}, which no capture writes (masses are "
                    f"finite and non-negative, keys inside {shape}, or layer 255): the cache is corrupt, "
                    "re-create it, or read it anyway with --verify off")


class ReadPass:
    """The ``full`` check of the entry arrays, one chunk at a time, front to back: the CRC-32 of their
    bytes (when ``record`` holds them) and their values.

    ``advance(view, stop)`` checks the entries of ``view`` ("rows" or "base") up to ``stop`` that
    are not yet checked; ``settle(view)`` checks the rest of ``view`` (default: both) and raises
    the first problem: a CRC that differs (named before any value it may have changed), then a
    value no capture writes.
    """

    def __init__(self, path: Path, arrays: Mapping[str, np.ndarray], record: Record | None, geometry: Geometry):
        self.path, self.arrays, self.geometry = path, arrays, geometry
        entry = [attr for attrs in VIEWS.values() for attr in attrs]
        recorded = record.files if record is not None else {}
        self.crc = {attr: RunningCrc(path / FILES[attr][0], recorded[FILES[attr][0]]["crc32"])
                    for attr in entry if FILES[attr][0] in recorded}
        self.done = dict.fromkeys(entry, 0)
        self.bad: dict[str, int] = {}

    def advance(self, view: str, stop: int) -> None:
        for attr in VIEWS[view]:
            array = self.arrays[attr]
            for start in range(self.done[attr], min(int(stop), len(array)), CHUNK):
                part = array[start:min(int(stop), start + CHUNK)]
                if attr in self.crc:
                    self.crc[attr].add(part)
                if attr not in self.bad and (at := first_bad(attr, part, self.geometry)) is not None:
                    self.bad[attr] = start + at
                self.done[attr] = start + len(part)

    def settle(self, view: str | None = None) -> None:
        attrs = VIEWS[view] if view else [attr for attrs in VIEWS.values() for attr in attrs]
        for name in ([view] if view else VIEWS):
            self.advance(name, len(self.arrays[VIEWS[name][0]]))
        for attr in attrs:
            if attr in self.crc:
                self.crc[attr].settle()
        for attr in attrs:
            if attr in self.bad:
                raise value_error(self.path, attr, self.arrays[attr][self.bad[attr]].item(), self.bad[attr],
                                  self.geometry)
