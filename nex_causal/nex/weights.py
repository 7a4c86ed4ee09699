"""Neuron weights on disk: the reference release's ``.npz`` (one float32 array ``weights``).

The array is indexed by the packed key ``(layer << 16) | unit``, so it has at least 2**22
entries (the reference accepts a longer array and never reads past 2**22; so does this).
``check_weights`` is the one validator every reader goes through: real floating-point
values (not booleans, integers or complex numbers, which would score as plausible numbers)
inside [-1, 1], the range of tanh; a NaN or an infinity is refused too, since the reference
would score every response that touches one as 0 without a word.
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
    if weights.dtype.kind != "f":
        raise NexError(f"{name} holds {weights.dtype} values, not floating-point weights: pass the weights "
                       "`nex-causal nex train` writes")
    if weights.ndim != 1 or weights.size < KEY_SPACE:
        raise NexError(f"{name} has shape {weights.shape}, expected one dimension of at least {KEY_SPACE} "
                       "entries: one weight per packed key (layer << 16) | unit")
    weights = weights[:KEY_SPACE]
    if not np.isfinite(weights).all():
        raise NexError(f"{name} holds non-finite values; re-learn them with `nex-causal nex train`")
    if (np.abs(weights) > 1).any():
        at = int(np.argmax(np.abs(weights) > 1))
        raise NexError(f"{name} holds {weights[at]:g} at key {at}, outside [-1, 1] where tanh puts every NEX "
                       "weight: these are not NEX weights")
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
    fix = "pass a .npz written by `nex-causal nex train`"
    if not os.path.isfile(path):
        raise NexError(f"weights file {path} does not exist: {fix}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise NexError(f"{path} holds one bare array, not an .npz archive with an array '{WEIGHTS_NAME}': {fix}")
        with archive:
            if WEIGHTS_NAME not in archive.files:
                raise NexError(f"{path} has no array named '{WEIGHTS_NAME}' (it has {archive.files}); {fix}")
            weights = archive[WEIGHTS_NAME]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NexError(f"cannot read weights {path} ({first}): {fix}") from None
    return check_weights(weights, str(path))


def credit_path(weights_path: str | os.PathLike) -> str:
    """Where the Eff/Red mass behind a weights file is kept: beside it, ``<name>.credit.npz``."""
    path = os.fspath(weights_path)
    return (path[:-4] if path.endswith(".npz") else path) + ".credit.npz"


def save_credit(weights_path: str | os.PathLike, eff: np.ndarray, red: np.ndarray) -> None:
    """Keep the Eff/Red mass the weights came from beside them (the weights file stays the reference's format).

    The causal test orders neurons tied in weight by this evidence (``intervene.neuron_sets``).
    """
    with atomic_path(credit_path(weights_path)) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, eff=np.asarray(eff, np.float32), red=np.asarray(red, np.float32))


def load_credit(weights_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """The Eff and Red mass (float32) behind a weights file, or None when no credit file sits beside it."""
    path = credit_path(weights_path)
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            eff, red = archive["eff"], archive["red"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise NexError(f"cannot read the credit file {path} ({type(err).__name__}): delete it, or re-learn the "
                       "weights with the nex stage") from None
    if eff.shape != red.shape or eff.ndim != 1 or not (np.isfinite(eff).all() and np.isfinite(red).all()):
        raise NexError(f"the credit file {path} is damaged: delete it, or re-learn the weights with the nex stage")
    return eff[:KEY_SPACE], red[:KEY_SPACE]


def load_evidence(weights_path: str | os.PathLike) -> np.ndarray | None:
    """Eff - Red behind a weights file (float64), or None when no credit file sits beside it."""
    credit = load_credit(weights_path)
    return None if credit is None else credit[0].astype(np.float64) - credit[1].astype(np.float64)
