"""The SparseCache reader: a cache directory (``cache.format``) memory-mapped and checked on open.

``SparseCache.open`` checks a directory before anything reads it (``cache.checks``): its
integrity record (``cache.integrity``), which must cover every file of the cache; the
structure of its pointers and the capture's geometry; and, at the ``full`` level, the
CRC-32 and values of its entry arrays, either at once or, with ``in_pass``, in the pass
of the reader that goes through them anyway (``advance``, then ``settle`` before any
result is written). A cache without a record gets every check but the bytes', with a note.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nex_causal.cache.checks import ReadPass, capture_record, check_structure
from nex_causal.cache.format import FILES, N_LAYERS, N_UNITS, RECORDED, RESPONSES_FILE, VIEWS, cache_files
from nex_causal.cache.integrity import RECORD_FILE, Level, check, check_level, default_level, read_record
from nex_causal.errors import NexError

if TYPE_CHECKING:
    import pandas as pd

ENTRY_FILES = tuple(FILES[attr][0] for attrs in VIEWS.values() for attr in attrs)
# every float16 bit pattern as numpy converts it to float32: a lookup is twice as fast as the conversion
FLOAT32_OF_FLOAT16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def as_float32(mass: np.ndarray) -> np.ndarray:
    """float16 masses as float32, bit for bit ``mass.astype(np.float32)``."""
    return FLOAT32_OF_FLOAT16.take(np.asarray(mass).view(np.uint16))


@dataclass(frozen=True)
class ResponseRows:
    """One response's rows, raw (uncleaned), in CSR form: row j holds the entries
    ``[row_ptr[j], row_ptr[j + 1])`` of ``keys`` and ``mass`` and covers ``tokens[j]`` tokens."""

    keys: np.ndarray
    mass: np.ndarray
    row_ptr: np.ndarray
    tokens: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[Any, Any, int]]) -> ResponseRows:
        """From (keys, mass, n_tokens) triples, one per row."""
        keys = [np.ravel(np.asarray(k)) for k, _, _ in rows]
        mass = [np.ravel(np.asarray(m, np.float32)) for _, m, _ in rows]
        if [len(k) for k in keys] != [len(m) for m in mass]:
            raise NexError("every row needs as many mass values as keys")
        sizes = np.array([len(k) for k in keys], np.int64)
        return cls(np.concatenate(keys).astype(np.int64) if keys else np.empty(0, np.int64),
                   np.concatenate(mass) if mass else np.empty(0, np.float32),
                   np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                   np.array([int(n) for _, _, n in rows], np.int64))

    def __len__(self) -> int:
        return len(self.tokens)

    def row(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys and mass of row ``j``."""
        return self.keys[self.row_ptr[j]:self.row_ptr[j + 1]], self.mass[self.row_ptr[j]:self.row_ptr[j + 1]]

    def __iter__(self):
        """(keys, mass, n_tokens) of each row."""
        return ((*self.row(j), int(self.tokens[j])) for j in range(len(self)))


@dataclass(frozen=True, eq=False)
class SparseCache:
    """A checked, memory-mapped cache directory (``cache.format`` gives the layout)."""

    path: Path
    sample_row_ptr: np.ndarray
    row_ptr: np.ndarray
    token_row_ptr: np.ndarray
    keys: np.ndarray
    w_sum: np.ndarray
    base_row_ptr: np.ndarray
    base_keys: np.ndarray
    base_w_sum: np.ndarray
    capture_info: dict | None = None  # capture.json, or None for a cache made elsewhere
    pending: ReadPass | None = field(default=None, repr=False)  # the full check a reader carries (in_pass)

    @classmethod
    def open(cls, path: str | Path, verify: Level | None = None, *, in_pass: bool = False) -> SparseCache:
        """Memory-map the cache at ``path`` after checking it (``verify``: full, fast or off; default
        ``default_level()``); a missing, changed or inconsistent file raises ``NexError``.

        With ``in_pass``, the ``full`` check of the entry arrays is left to the reader, which calls
        ``advance`` as it goes through them and ``settle`` before writing any result.
        """
        path = Path(path)
        if not path.is_dir():
            raise NexError(f"cache directory {path} does not exist; pass the directory a capture wrote")
        missing = [name for name, _ in FILES.values() if not (path / name).is_file()]
        if missing:
            raise NexError(f"cache {path} is missing {', '.join(missing)}; it is incomplete, re-create it")
        level = check_level(default_level() if verify is None else verify)
        record = read_record(path, RECORDED)
        if record is None:
            checked = "structure and values are" if level == "full" else "structure is"
            warnings.warn(f"{path} has no integrity record ({RECORD_FILE}): a cache in the reference layout or from "
                          f"an older nex-causal; its {checked} checked, its bytes cannot be", stacklevel=2)
        else:
            if level != "off":
                _check_coverage(path, record.files, record.version)
            check(path, record, level, later=ENTRY_FILES)
        arrays = {attr: _map(path / name, dtype) for attr, (name, dtype) in FILES.items()}
        check_structure(path, arrays)
        info = capture_record(path)
        geometry = (int(info["n_layers"]), int(info["d_mlp"])) if info else (N_LAYERS, N_UNITS)
        pending = ReadPass(path, arrays, record, geometry) if level == "full" else None
        if pending is not None and not in_pass:
            pending.settle()
            pending = None
        return cls(path, **arrays, capture_info=info, pending=pending)

    def advance(self, view: str, stop: int) -> None:
        """A reader of ``view`` ("rows" or "base") has read its entries up to ``stop``: check them now, if
        the cache was opened ``in_pass`` (else they were checked on open)."""
        if self.pending is not None:
            self.pending.advance(view, stop)

    def settle(self, view: str | None = None) -> None:
        """Finish an ``in_pass`` check of ``view`` (default: both); the entries no reader went through are read
        now. Raises what it found: call it before writing anything computed from the cache."""
        if self.pending is not None:
            self.pending.settle(view)

    def rows_end(self, r: int) -> int:
        """The end, in row entries, of response ``r``."""
        return int(self.row_ptr[self.sample_row_ptr[r + 1]])

    @property
    def n_responses(self) -> int:
        return len(self.sample_row_ptr) - 1

    @property
    def n_rows(self) -> int:
        return len(self.row_ptr) - 1

    def _check_index(self, r: int) -> int:
        if not 0 <= r < self.n_responses:
            raise NexError(f"response {r} is out of range: cache {self.path} holds {self.n_responses} responses")
        return int(r)

    def response_rows(self, r: int) -> ResponseRows:
        """Rows of response ``r``: uint32 keys and float32 mass, raw."""
        r = self._check_index(r)
        first, stop = self.sample_row_ptr[r], self.sample_row_ptr[r + 1]
        ptr = np.asarray(self.row_ptr[first:stop + 1])
        return ResponseRows(np.asarray(self.keys[ptr[0]:ptr[-1]]), as_float32(self.w_sum[ptr[0]:ptr[-1]]),
                            ptr - ptr[0], np.diff(self.token_row_ptr[first:stop + 1]))

    def rows_of(self, first: int, stop: int) -> Iterator[ResponseRows]:
        """``response_rows`` of responses ``first`` to ``stop - 1``, read in one slice of each array."""
        sample = np.asarray(self.sample_row_ptr[self._check_index(first):self._check_index(stop - 1) + 2])
        ptr = np.asarray(self.row_ptr[sample[0]:sample[-1] + 1])
        tokens = np.diff(self.token_row_ptr[sample[0]:sample[-1] + 1])
        keys, mass = np.asarray(self.keys[ptr[0]:ptr[-1]]), as_float32(self.w_sum[ptr[0]:ptr[-1]])
        sample, ptr = sample - sample[0], ptr - ptr[0]
        for a, b in zip(sample[:-1], sample[1:]):
            yield ResponseRows(keys[ptr[a]:ptr[b]], mass[ptr[a]:ptr[b]], ptr[a:b + 1] - ptr[a], tokens[a:b])

    def base(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Whole-response keys (uint32) and mass M[n] (float32) of response ``r``, raw."""
        r = self._check_index(r)
        lo, hi = self.base_row_ptr[r], self.base_row_ptr[r + 1]
        return np.asarray(self.base_keys[lo:hi]), as_float32(self.base_w_sum[lo:hi])

    @property
    def n_neurons(self) -> int | None:
        """The capturing model's MLP neurons (n_layers * d_mlp), from ``capture.json``; None when unknown."""
        info = self.capture_info
        return int(info["n_layers"]) * int(info["d_mlp"]) if info else None

    @cached_property
    def responses(self) -> pd.DataFrame | None:
        """The per-response metadata table (``responses.parquet``), or None when the cache has none."""
        import pandas as pd

        file = self.path / RESPONSES_FILE
        if not file.is_file():
            return None
        try:
            return pd.read_parquet(file)
        except Exception as err:  # pyarrow raises several kinds for a damaged file
            raise NexError(f"cannot read {file} ({type(err).__name__}): the response table is damaged; "
                           "re-create the cache") from None


def _check_coverage(path: Path, recorded: dict, version: int) -> None:
    """Every file of the cache is in its record (a record from before capture.json was recorded: a note)."""
    uncovered = [name for name in cache_files(path) if name not in recorded]
    if not uncovered:
        return
    what = f"{path}/{RECORD_FILE} does not cover {', '.join(uncovered)}"
    if version >= 2:
        raise NexError(f"{what}, so a change to it would go unseen: the file was added or the record replaced "
                       "after the cache was written; re-create the cache, or read it anyway with --verify off")
    warnings.warn(f"{what} (a record from an older nex-causal): changes to it cannot be detected; re-create the "
                  "cache to cover it", stacklevel=3)


def _map(file: Path, dtype: str) -> np.ndarray:
    """Memory-map a raw little-endian array (an empty file gives an empty array)."""
    dtype = np.dtype(dtype)
    size = file.stat().st_size
    if size % dtype.itemsize:
        raise NexError(f"{file} has {size} bytes, not a multiple of {dtype.itemsize} ({dtype.name}); "
                       "the file is truncated, re-create the cache")
    return np.memmap(file, dtype=dtype, mode="r") if size else np.empty(0, dtype)
