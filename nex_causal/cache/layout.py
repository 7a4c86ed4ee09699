"""The SparseCache layout and its reader (NEX_METHOD section 1).

A response is a sequence of rows (token windows, 32 generated tokens by default); row j
holds packed neuron keys ``(layer << 16) | unit`` with their activation mass m[j, n] and
its token count T_j. The base view holds the whole-response mass M[n]. Both views are
CSR arrays in the reference release's on-disk layout (raw little-endian, no header):

    rows/sample_row_ptr.int64   response r owns rows [p[r], p[r+1])
    rows/row_ptr.int64          row j owns entries [q[j], q[j+1]) of keys/w_sum
    rows/token_row_ptr.int64    row j covers t[j+1] - t[j] tokens
    rows/keys.uint32, rows/w_sum.float16
    base/row_ptr.int64          response r owns entries [b[r], b[r+1])
    base/keys.uint32, base/w_sum.float16

plus ``responses.parquet`` (one row of metadata per response) when there is metadata.
Arrays are memory-mapped on read and validated on open: against the integrity record the
writer leaves beside them (``cache.integrity``), then structurally (pointers, lengths,
and, at the ``full`` level, finite non-negative masses and keys in range). The writer streams
one response at a time to disk and publishes the directory atomically.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nex_causal.cache.integrity import RECORD_FILE, Level, default_level
from nex_causal.cache.integrity import verify as check_record
from nex_causal.errors import NexError

if TYPE_CHECKING:
    import pandas as pd

RESERVED_LAYER = 255  # keys of this layer may appear and are ignored
N_LAYERS = 64  # 2**22 keys: 64 layers x 65536 units
KEY_SPACE = N_LAYERS << 16
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
RESPONSES_FILE = "responses.parquet"
CAPTURE_FILE = "capture.json"  # how a capture made the cache: its config, stack, the model's MLP shape
TOKEN_ORDER = "descending score"  # how a one-token row of a capture orders its entries

# attribute -> (file inside the cache directory, little-endian dtype)
FILES = {
    "sample_row_ptr": ("rows/sample_row_ptr.int64", "<i8"),
    "row_ptr": ("rows/row_ptr.int64", "<i8"),
    "token_row_ptr": ("rows/token_row_ptr.int64", "<i8"),
    "keys": ("rows/keys.uint32", "<u4"),
    "w_sum": ("rows/w_sum.float16", "<f2"),
    "base_row_ptr": ("base/row_ptr.int64", "<i8"),
    "base_keys": ("base/keys.uint32", "<u4"),
    "base_w_sum": ("base/w_sum.float16", "<f2"),
}
_CHUNK = 1 << 24  # entries per step when scanning or copying large arrays


def pack_keys(layer: np.ndarray | int, unit: np.ndarray | int) -> np.ndarray:
    """Neuron keys ``(layer << 16) | unit`` as uint32."""
    return (np.asarray(layer, np.uint32) << 16) | np.asarray(unit, np.uint32)


def unpack_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(layer, unit) of packed keys."""
    keys = np.asarray(keys, np.uint32)
    return keys >> 16, keys & 0xFFFF


def out_of_range(keys: np.ndarray) -> np.ndarray:
    """Mask of keys outside the 2**22 key space that are not reserved layer-255 keys."""
    layer = np.asarray(keys) >> 16
    return (layer >= N_LAYERS) & (layer != RESERVED_LAYER)


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
    """A validated, memory-mapped cache directory (see the module docstring for the layout)."""

    path: Path
    sample_row_ptr: np.ndarray
    row_ptr: np.ndarray
    token_row_ptr: np.ndarray
    keys: np.ndarray
    w_sum: np.ndarray
    base_row_ptr: np.ndarray
    base_keys: np.ndarray
    base_w_sum: np.ndarray

    @classmethod
    def open(cls, path: str | Path, verify: Level | None = None) -> SparseCache:
        """Memory-map the cache at ``path`` after checking it (``verify``: full, fast or off; default
        ``default_level()``); a missing, changed or inconsistent file raises ``NexError``."""
        path = Path(path)
        if not path.is_dir():
            raise NexError(f"cache directory {path} does not exist; pass the directory a capture wrote")
        missing = [name for name, _ in FILES.values() if not (path / name).is_file()]
        if missing:
            raise NexError(f"cache {path} is missing {', '.join(missing)}; it is incomplete, re-create it")
        level = default_level() if verify is None else verify
        recorded = check_record(path, level)
        if not recorded:
            warnings.warn(f"{path} has no integrity record ({RECORD_FILE}): a cache in the reference "
                          "layout or from an older nex-causal, read unverified", stacklevel=2)
        cache = cls(path, **{attr: _map(path / name, dtype) for attr, (name, dtype) in FILES.items()})
        cache._validate()
        if recorded and level == "full":
            cache._check_values()
        return cache

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
        return ResponseRows(np.asarray(self.keys[ptr[0]:ptr[-1]]), np.asarray(self.w_sum[ptr[0]:ptr[-1]], np.float32),
                            ptr - ptr[0], np.diff(self.token_row_ptr[first:stop + 1]))

    def base(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Whole-response keys (uint32) and mass M[n] (float32) of response ``r``, raw."""
        r = self._check_index(r)
        lo, hi = self.base_row_ptr[r], self.base_row_ptr[r + 1]
        return np.asarray(self.base_keys[lo:hi]), np.asarray(self.base_w_sum[lo:hi], np.float32)

    @cached_property
    def capture_info(self) -> dict | None:
        """The ``capture.json`` a capture wrote beside the arrays, or None for a cache made elsewhere."""
        import json

        file = self.path / CAPTURE_FILE
        if not file.is_file():
            return None
        try:
            info = json.loads(file.read_text())
            int(info["n_layers"]), int(info["d_mlp"]), dict(info.get("config", {}))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise NexError(f"{file} is not a capture record (JSON with n_layers and d_mlp): it was damaged; "
                           "re-create the cache, or delete the file to use the arrays without it") from None
        return info

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

    def _validate(self) -> None:
        """Check every pointer array against the arrays it points into (one-line NexError)."""
        name = {attr: f"{self.path}/{file}" for attr, (file, _) in FILES.items()}
        sample = self.sample_row_ptr
        if len(sample) == 0:
            raise NexError(f"{name['sample_row_ptr']} is empty; it needs at least the leading 0")
        _check_pointers(name["sample_row_ptr"], sample)
        rows, responses = int(sample[-1]), len(sample) - 1
        per_row = f"{rows} rows (the end of sample_row_ptr) + 1"
        _check_pointers(name["row_ptr"], self.row_ptr, length=(rows + 1, per_row),
                        into=(name["keys"], len(self.keys)))
        _check_pointers(name["token_row_ptr"], self.token_row_ptr, length=(rows + 1, per_row))
        _check_pointers(name["base_row_ptr"], self.base_row_ptr,
                        length=(responses + 1, f"{responses} responses (as in sample_row_ptr) + 1"),
                        into=(name["base_keys"], len(self.base_keys)))
        for keys, mass in (("keys", "w_sum"), ("base_keys", "base_w_sum")):
            n_keys, n_mass = len(getattr(self, keys)), len(getattr(self, mass))
            if n_mass != n_keys:
                raise NexError(f"{name[mass]} holds {n_mass} values but {name[keys]} holds {n_keys} keys; "
                               "the cache is corrupt, re-create it")
        file = self.path / RESPONSES_FILE
        if file.is_file():
            import pyarrow.parquet as pq

            try:
                n_meta = pq.read_metadata(file).num_rows
            except Exception as err:  # pyarrow raises several kinds for a damaged file
                raise NexError(f"cannot read {file} ({type(err).__name__}): the response table is damaged; "
                               "re-create the cache") from None
            if n_meta != self.n_responses:
                raise NexError(f"{file} has {n_meta} rows but the cache holds {self.n_responses} responses; "
                               "the cache is corrupt, re-create it")


    def _check_values(self) -> None:
        """Finite, non-negative masses and keys inside the key space (or layer 255), naming the first bad entry."""
        for keys, mass in (("keys", "w_sum"), ("base_keys", "base_w_sum")):
            for attr, bad in ((mass, bad_mass), (keys, out_of_range)):
                array = getattr(self, attr)
                for start in range(0, len(array), _CHUNK):
                    found = np.flatnonzero(bad(np.asarray(array[start:start + _CHUNK])))
                    if found.size:
                        at = start + int(found[0])
                        raise NexError(f"{self.path}/{FILES[attr][0]} holds {array[at]!r} at index {at}, which no "
                                       "capture writes (masses are finite and non-negative, keys inside 64 layers "
                                       "x 65536 units): the cache is corrupt, re-create it")


def bad_mass(mass: np.ndarray) -> np.ndarray:
    """Mask of masses no capture writes: NaN, infinite or negative."""
    return ~np.isfinite(mass) | (mass < 0)


def _map(file: Path, dtype: str) -> np.ndarray:
    """Memory-map a raw little-endian array (an empty file gives an empty array)."""
    dtype = np.dtype(dtype)
    size = file.stat().st_size
    if size % dtype.itemsize:
        raise NexError(f"{file} has {size} bytes, not a multiple of {dtype.itemsize} ({dtype.name}); "
                       "the file is truncated, re-create the cache")
    return np.memmap(file, dtype=dtype, mode="r") if size else np.empty(0, dtype)


def _check_pointers(file: str, ptr: np.ndarray, *, length: tuple[int, str] | None = None,
                    into: tuple[str, int] | None = None) -> None:
    """A CSR pointer array: ``length`` = (entries, why) entries, starts at 0, never decreases,
    and ends exactly at the length of the array it points ``into`` = (name, length)."""
    if length is not None and len(ptr) != length[0]:
        raise NexError(f"{file} has {len(ptr)} entries, expected {length[0]} = {length[1]}; "
                       "the cache is corrupt, re-create it")
    if ptr[0] != 0:
        raise NexError(f"{file} starts at {ptr[0]}, expected 0; the cache is corrupt, re-create it")
    steps = np.diff(ptr)
    if (steps < 0).any():
        at = int(np.argmax(steps < 0)) + 1
        raise NexError(f"{file} is not monotone: it decreases at index {at} ({ptr[at - 1]} -> {ptr[at]}); "
                       "the cache is corrupt, re-create it")
    if into is not None and ptr[-1] > into[1]:
        raise NexError(f"{into[0]} holds {into[1]} entries, shorter than the {ptr[-1]} that {file} "
                       "points to; the cache is truncated, re-create it")
    if into is not None and ptr[-1] < into[1]:
        raise NexError(f"{into[0]} holds {into[1]} entries but {file} covers only {ptr[-1]}; "
                       "the cache is corrupt, re-create it")
