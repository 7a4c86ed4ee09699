"""The on-disk format of a SparseCache (NEX_METHOD section 1): its files, packed keys and masses.

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

plus, from a capture, ``responses.parquet`` (one row of metadata per response) and
``capture.json`` (how it was captured and the model's MLP shape), and ``integrity.json``,
the record of every other file (``cache.integrity``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RESERVED_LAYER = 255  # keys of this layer may appear and are ignored
N_LAYERS = 64  # 2**22 keys: 64 layers x 65536 units
N_UNITS = 1 << 16
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
ARRAY_FILES = frozenset(name for name, _ in FILES.values())
VIEWS = {"rows": ("keys", "w_sum"), "base": ("base_keys", "base_w_sum")}  # the entry arrays of each view
CHUNK = 1 << 24  # entries per step when scanning or copying large arrays


RECORDED = (*(name for name, _ in FILES.values()), RESPONSES_FILE, CAPTURE_FILE)  # what an integrity record covers


def cache_files(path: Path) -> list[str]:
    """The files of the cache at ``path`` its integrity record covers: the arrays, and the response table and
    capture record when present."""
    return [name for name in RECORDED if name in ARRAY_FILES or (path / name).is_file()]


def pack_keys(layer: np.ndarray | int, unit: np.ndarray | int) -> np.ndarray:
    """Neuron keys ``(layer << 16) | unit`` as uint32."""
    return (np.asarray(layer, np.uint32) << 16) | np.asarray(unit, np.uint32)


def unpack_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(layer, unit) of packed keys."""
    keys = np.asarray(keys, np.uint32)
    return keys >> 16, keys & 0xFFFF


def out_of_range(keys: np.ndarray, n_layers: int = N_LAYERS, d_mlp: int = N_UNITS) -> np.ndarray:
    """Mask of keys that are not reserved layer-255 keys and lie outside ``n_layers`` x ``d_mlp`` (default:
    the 2**22 key space)."""
    keys = np.asarray(keys)
    layer = keys >> 16
    outside = layer >= n_layers
    if d_mlp < N_UNITS:
        outside |= (keys & 0xFFFF) >= d_mlp
    return outside & (layer != RESERVED_LAYER)


def bad_mass(mass: np.ndarray) -> np.ndarray:
    """Mask of masses no capture writes: NaN, infinite or negative."""
    return ~np.isfinite(mass) | (mass < 0)
