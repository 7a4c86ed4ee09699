"""Writing a SparseCache: one response at a time, streamed to disk, published atomically with its record.

The writer refuses what no capture makes (NaN, infinite or negative mass; keys outside the
key space), saturates float16 mass with one warning, and leaves the integrity record
(``cache.integrity``) beside the arrays, so a cache written here is checked on every open;
``seal`` records again a cache to which a file was added.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from nex_causal.cache.format import (
    CHUNK,
    FILES,
    FLOAT16_MAX,
    N_LAYERS,
    RESERVED_LAYER,
    RESPONSES_FILE,
    bad_mass,
    cache_files,
    out_of_range,
)
from nex_causal.cache.integrity import write_record
from nex_causal.cache.layout import ResponseRows, SparseCache
from nex_causal.errors import NexError
from nex_causal.io import atomic_path

Row = tuple[Any, Any, int]


class SparseCacheWriter:
    """Build a cache one response at a time; the directory appears only on a clean ``close``.

    Entries stream to open files in a temporary directory beside ``path`` (only pointers and
    metadata rows stay in memory), which is renamed onto ``path`` on ``close``. An exception
    inside a ``with`` block discards it, so a half-written cache is never a valid cache.

    Mass is stored as float16: finite values beyond +-65504 saturate to +-65504 (counted per
    view in ``saturated``, with one warning on close); a NaN, infinite or negative mass is
    refused, since no capture makes one. Base mass, a sum over rows, saturates first.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.saturated = {"w_sum": 0, "base_w_sum": 0}
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path, is_dir=True))
        (self._tmp / "rows").mkdir()
        (self._tmp / "base").mkdir()
        self._files = {attr: self._stack.enter_context(open(self._tmp / FILES[attr][0], "wb"))
                       for attr in ("keys", "w_sum", "base_keys", "base_w_sum")}
        self._ptr = {"sample_row_ptr": [0], "row_ptr": [0], "token_row_ptr": [0], "base_row_ptr": [0]}
        self._meta: list[Mapping[str, Any]] = []
        self._closed = False

    @property
    def n_responses(self) -> int:
        return len(self._ptr["sample_row_ptr"]) - 1

    def append(self, rows: Sequence[Row] | ResponseRows, base: tuple[Any, Any] | None = None,
               meta: Mapping[str, Any] | None = None) -> None:
        """Add one response: ``rows`` as (keys, mass, n_tokens) triples (or a ``ResponseRows``).

        ``base`` (keys, mass) defaults to the per-key sum of the rows; ``meta`` is its row of
        ``responses.parquet`` (give it for every response or for none). A ``ResponseRows`` is
        checked as whole arrays (what a capture hands over), triples row by row.
        """
        where = f"response {self.n_responses}"
        if isinstance(rows, ResponseRows):
            keys, mass = _entries(rows.keys, rows.mass, where)
            sizes, tokens = np.diff(rows.row_ptr), np.asarray(rows.tokens)
            if len(sizes) != len(tokens) or rows.row_ptr[0] != 0 or rows.row_ptr[-1] != len(keys) or (sizes < 0).any():
                raise NexError(f"{where}: row pointers must run from 0 to the entries' count, one per row")
            if tokens.size and (not np.issubdtype(tokens.dtype, np.integer) or tokens.min() < 0):
                raise NexError(f"{where}: token counts must be non-negative integers")
        else:
            parts = [_entries(keys, mass, f"{where}, row {j}") for j, (keys, mass, _) in enumerate(rows)]
            tokens = [_count(n, f"{where}, row {j}") for j, (_, _, n) in enumerate(rows)]
            sizes = [len(k) for k, _ in parts]
            keys = np.concatenate([k for k, _ in parts]) if parts else np.empty(0, np.uint32)
            mass = np.concatenate([m for _, m in parts]) if parts else np.empty(0, np.float64)
        if base is None:
            base_keys, inverse = np.unique(keys, return_inverse=True)
            base_mass = np.bincount(inverse, weights=mass, minlength=len(base_keys))
        else:
            base_keys, base_mass = _entries(*base, f"{where}, base")
        if (meta is None) != (not self._meta) and self.n_responses > 0:
            raise NexError(f"{where}: give metadata for every response or for none")
        self._write(keys, mass, np.cumsum(sizes, dtype=np.int64), np.asarray(tokens, np.int64), base_keys, base_mass)
        if meta is not None:
            self._meta.append(dict(meta))

    def _write(self, keys: np.ndarray, mass: np.ndarray, row_ends: np.ndarray, tokens: np.ndarray,
               base_keys: np.ndarray, base_mass: np.ndarray) -> None:
        """Stream one response's arrays (``row_ends``: entry counts, cumulated) and extend the pointers."""
        ptr = self._ptr
        ptr["row_ptr"].extend((ptr["row_ptr"][-1] + row_ends).tolist())
        ptr["token_row_ptr"].extend((ptr["token_row_ptr"][-1] + np.cumsum(tokens)).tolist())
        ptr["sample_row_ptr"].append(ptr["sample_row_ptr"][-1] + len(row_ends))
        ptr["base_row_ptr"].append(ptr["base_row_ptr"][-1] + len(base_keys))
        for attr, values in (("keys", keys), ("w_sum", mass), ("base_keys", base_keys), ("base_w_sum", base_mass)):
            if attr in self.saturated:
                big = np.isfinite(values) & (np.abs(values) > FLOAT16_MAX)
                self.saturated[attr] += int(big.sum())
                values = np.where(big, np.sign(values) * FLOAT16_MAX, values)
            self._files[attr].write(np.ascontiguousarray(values, FILES[attr][1]).tobytes())

    def _extend(self, part: SparseCache) -> None:
        """Append every response of an existing cache (arrays copied in chunks, never whole)."""
        has_meta = part.responses is not None
        if self.n_responses and part.n_responses and has_meta != bool(self._meta):
            raise NexError(f"{part.path}: some parts have a {RESPONSES_FILE} and others not; "
                           "concatenate parts made the same way")
        ptr = self._ptr
        for attr, src in (("sample_row_ptr", "sample_row_ptr"), ("row_ptr", "row_ptr"),
                          ("token_row_ptr", "token_row_ptr"), ("base_row_ptr", "base_row_ptr")):
            values = np.asarray(getattr(part, src)[1:], np.int64)
            ptr[attr].extend((ptr[attr][-1] + values).tolist())
        for attr in ("keys", "w_sum", "base_keys", "base_w_sum"):
            array = getattr(part, attr)
            for start in range(0, len(array), CHUNK):
                self._files[attr].write(np.asarray(array[start:start + CHUNK]).tobytes())
        if has_meta:
            self._meta.extend(part.responses.to_dict("records"))

    def close(self) -> SparseCache:
        """Write the pointers and metadata, publish the directory atomically, and open it."""
        if self._closed:
            return SparseCache.open(self.path)
        self._closed = True
        for attr, values in self._ptr.items():
            (self._tmp / FILES[attr][0]).write_bytes(np.asarray(values, "<i8").tobytes())
        if self._meta:
            import pandas as pd

            pd.DataFrame(self._meta).to_parquet(self._tmp / RESPONSES_FILE, index=False)
        for handle in self._files.values():
            handle.flush()
        seal(self._tmp)
        self._stack.close()
        if any(self.saturated.values()):
            warnings.warn(f"{self.path}: {self.saturated['w_sum']} row and {self.saturated['base_w_sum']} base "
                          f"mass values beyond the float16 maximum {FLOAT16_MAX:g} were clipped to it",
                          stacklevel=2)
        return SparseCache.open(self.path)

    def __enter__(self) -> SparseCacheWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._stack.__exit__(exc_type, exc, tb)


def _entries(keys: Any, mass: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked (uint32 keys, float64 mass) of one row or base view."""
    keys, mass = np.asarray(keys), np.asarray(mass, np.float64)
    if keys.ndim != 1 or mass.shape != keys.shape:
        raise NexError(f"{where}: keys and mass must be 1-D arrays of one length, got shapes "
                       f"{keys.shape} and {mass.shape}")
    if keys.size and not np.issubdtype(keys.dtype, np.integer):
        raise NexError(f"{where}: keys must be integers (packed (layer << 16) | unit), got {keys.dtype}")
    if keys.size and (keys.min() < 0 or keys.max() > np.iinfo(np.uint32).max or out_of_range(keys).any()):
        raise NexError(f"{where}: keys must be packed (layer << 16) | unit with layer < {N_LAYERS} "
                       f"(or {RESERVED_LAYER}), unit < 65536")
    if mass.size and bad_mass(mass).any():
        raise NexError(f"{where}: mass {mass[bad_mass(mass)][0]!r} is not a finite non-negative number: a "
                       "row's mass sums non-negative per-token scores")
    return keys.astype(np.uint32), mass


def _count(n_tokens: Any, where: str) -> int:
    try:
        valid = float(n_tokens).is_integer() and n_tokens >= 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise NexError(f"{where}: the token count must be a non-negative integer, got {n_tokens!r}")
    return int(n_tokens)


def seal(directory: str | Path) -> None:
    """Record every file of the cache at ``directory`` in its integrity record; called again by whoever adds a
    file to a cache before publishing it (a capture's ``capture.json``), so that the record covers it too."""
    write_record(directory, cache_files(Path(directory)))


CacheLike = Union[SparseCache, str, Path]


def concatenate(parts: Sequence[CacheLike], out: str | Path) -> SparseCache:
    """Write the responses of ``parts`` (caches or their paths), in order, as one cache at ``out``."""
    with SparseCacheWriter(out) as writer:
        for part in parts:
            writer._extend(part if isinstance(part, SparseCache) else SparseCache.open(part))
    return SparseCache.open(out)
