"""Neuron weights on disk: the reference release's ``.npz`` (one float32 array ``weights``).

The array is indexed by the packed key ``(layer << 16) | unit``, so it has at least 2**22
entries (the reference accepts a longer array and never reads past 2**22; so does this).
Weights with a NaN or an infinity are refused: the reference would score every response
that touches one as 0 without a word.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from nex_causal.cache import KEY_SPACE
from nex_causal.errors import NexError
from nex_causal.io import atomic_path

WEIGHTS_NAME = "weights"  # the one array of a weights .npz file


def check_weights(weights: np.ndarray, name: str = "weights") -> np.ndarray:
    """The first 2**22 entries of ``weights`` as float32, after checking shape and finiteness."""
    weights = np.asarray(weights)
    if weights.ndim != 1 or weights.size < KEY_SPACE:
        raise NexError(f"{name} has shape {weights.shape}, expected one dimension of at least {KEY_SPACE} "
                       "entries: one weight per packed key (layer << 16) | unit")
    weights = weights[:KEY_SPACE]
    if not np.isfinite(weights).all():
        raise NexError(f"{name} holds non-finite values; re-learn them with `nex-causal nex train`")
    return weights.astype(np.float32, copy=False)


def save_weights(path: str | os.PathLike, weights: np.ndarray) -> None:
    """Write ``weights`` as the reference's ``.npz`` (one float32 array ``weights``), atomically.

    Deflated at level 1: the file ``np.load`` reads is the reference's, written 10x faster
    than ``np.savez_compressed`` (level 6) and barely larger, since most weights are 0.
    """
    weights = check_weights(weights)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open(f"{WEIGHTS_NAME}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, weights, allow_pickle=False)


def load_weights(path: str | os.PathLike) -> np.ndarray:
    """Read and check a weights ``.npz`` (as written here or by the reference release)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if WEIGHTS_NAME not in archive.files:
                raise NexError(f"{path} has no array named '{WEIGHTS_NAME}' (it has {archive.files}); "
                               "pass a file written by `nex-causal nex train`")
            weights = archive[WEIGHTS_NAME]
    except (OSError, ValueError) as err:
        raise NexError(f"cannot read weights {path}: {err}; pass a .npz written by `nex-causal nex train`") from None
    return check_weights(weights, str(path))
