"""Neuron weights on disk: the reference release's ``.npz`` (one float32 array ``weights``), and what they were
learned on.

The array is indexed by the packed key ``(layer << 16) | unit``, so it has at least 2**22
entries (the reference accepts a longer array and never reads past 2**22; so does this).
``check_weights`` is the one validator every reader goes through: real floating-point
values (not booleans, integers or complex numbers, which would score as plausible numbers)
inside [-1, 1], the range of tanh; a NaN or an infinity is refused too, since the reference
would score every response that touches one as 0 without a word.

Every array is read from the archive only after its declared size (the zip member's and the
``.npy`` header's) is checked against what such an array can hold, so a file claiming 10**12
values, or a small file that inflates to gigabytes, is refused before anything is allocated.

Weights learned here also carry their *identity* (``identity_of``): the model the cache was
captured from (its name, weights digest and lineage), its MLP shape, the capture settings and
the NEX config, as a second array ``identity`` (a JSON string) that the reference ignores.
``check_learned_on`` refuses weights applied to a cache or a model of another lineage or shape.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from nex_causal.cache import KEY_SPACE
from nex_causal.errors import NexError
from nex_causal.io import atomic_path

WEIGHTS_NAME = "weights"  # the one array of a weights .npz file the reference reads
IDENTITY_NAME = "identity"  # what they were learned on (a JSON string), beside it
MAX_ARRAY_BYTES = 2 * KEY_SPACE * 4 + 4096  # a weight or credit array: 2**22 float64 values (or 2**23 float32)
MAX_IDENTITY_BYTES = 1 << 20
FIX = "pass a .npz written by `nex-causal nex train`"


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


def read_arrays(path: str | os.PathLike, limits: Mapping[str, int], what: str = "weights", fix: str = FIX
                ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays named in ``limits`` that the ``.npz`` at ``path`` holds, and the names of all it holds; an array
    whose zip member or ``.npy`` header declares more than ``limits[name]`` bytes is refused before it is inflated."""
    if not os.path.isfile(path):
        raise NexError(f"{what} file {path} does not exist: {fix}")
    with open(path, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            raise NexError(f"{path} holds one bare array, not an .npz archive with an array '{WEIGHTS_NAME}': {fix}")
    out = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            for name in limits:
                if name not in members:
                    continue
                info, limit = members[name], limits[name]
                if info.file_size > limit:
                    raise NexError(f"{path}: array '{name}' inflates to {info.file_size} bytes, more than the "
                                   f"{limit} such an array takes: {fix}")
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(member)
                if dtype.hasobject or math.prod(shape) * dtype.itemsize > info.file_size:
                    raise NexError(f"{path}: array '{name}' declares {math.prod(shape)} {dtype} values, more than its "
                                   f"{info.file_size} bytes hold: {fix}")
                with archive.open(info) as member:
                    out[name] = np.lib.format.read_array(member, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise NexError(f"cannot read {what} {path} ({first}): {fix}") from None
    return out, sorted(members)


def save_weights(path: str | os.PathLike, weights: np.ndarray, identity: Mapping[str, Any] | None = None) -> None:
    """Write ``weights`` as the reference's ``.npz`` (one float32 array ``weights``), atomically, with their
    ``identity`` (``identity_of``) beside them when given.

    Deflated at level 1: the file ``np.load`` reads is the reference's, written 10x faster
    than ``np.savez_compressed`` (level 6) and barely larger, since most weights are 0.
    """
    weights = check_weights(weights)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open(f"{WEIGHTS_NAME}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, weights, allow_pickle=False)
        if identity is not None:
            with archive.open(f"{IDENTITY_NAME}.npy", "w") as f:
                np.lib.format.write_array(f, np.array(json.dumps(dict(identity), sort_keys=True, default=str)))


def load_weights(path: str | os.PathLike) -> np.ndarray:
    """Read and check a weights ``.npz`` (as written here or by the reference release)."""
    arrays, names = read_arrays(path, {WEIGHTS_NAME: MAX_ARRAY_BYTES})
    if WEIGHTS_NAME not in arrays:
        raise NexError(f"{path} has no array named '{WEIGHTS_NAME}' (it has {names}); {FIX}")
    return check_weights(arrays[WEIGHTS_NAME], str(path))


def load_identity(path: str | os.PathLike) -> dict[str, Any] | None:
    """What the weights at ``path`` were learned on, or None when the file does not say (the reference's format)."""
    identity = read_arrays(path, {IDENTITY_NAME: MAX_IDENTITY_BYTES})[0].get(IDENTITY_NAME)
    if identity is None:
        return None
    try:
        value = json.loads(str(identity[()]))
    except (ValueError, TypeError, IndexError):
        value = None
    if not isinstance(value, dict):
        raise NexError(f"{path}: its array '{IDENTITY_NAME}' is damaged: learn the weights again with "
                       "`nex-causal nex train`")
    return value


def identity_of(info: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """The identity of what a cache's ``capture.json`` (``info``; None for a cache made elsewhere) says it was
    captured from: model name, weights digest, lineage, MLP shape, capture settings; ``extra`` (the NEX config)
    beside it. Unknown parts are None."""
    info = info or {}
    config = info.get("config") or {}
    return {"model": config.get("model"), "model_sha256": info.get("model_sha256"), "lineage": info.get("lineage"),
            "n_layers": info.get("n_layers"), "d_mlp": info.get("d_mlp"), "capture": config, **extra}


def learned_identity(cache, config) -> dict[str, Any]:
    """What weights learned on ``cache`` with the NEX ``config`` were learned on (``identity_of``)."""
    import dataclasses

    return identity_of(cache.capture_info, nex=dataclasses.asdict(config))


def check_learned_on(identity: Mapping[str, Any] | None, target: Mapping[str, Any], *, weights: str,
                     target_name: str) -> str | None:
    """Refuse (one line) weights whose ``identity`` names another MLP shape or another lineage than ``target``
    (a cache's ``identity_of``, or a model's ``models.files.model_identity``) has; NEX weights index one model's
    neurons, and two organisms can share a shape. Returns a note when part of the check could not be made."""
    fix = "learn weights on a cache of this model (`nex-causal nex train`)"
    if identity is None:
        return (f"{weights} records no model it was learned on (the reference release's format, or an older "
                "nex-causal): the identity check is skipped")
    learned_on = identity.get("model") or "an unnamed model"
    for key, what in (("n_layers", "layers"), ("d_mlp", "MLP units per layer")):
        mine, theirs = identity.get(key), target.get(key)
        if mine is not None and theirs is not None and int(mine) != int(theirs):
            raise NexError(f"{weights} were learned on {learned_on} with {mine} {what}, but {target_name} has "
                           f"{theirs}: {fix}")
    mine, theirs = identity.get("lineage"), target.get("lineage")
    if mine is None or theirs is None:
        return (f"{weights if mine is None else target_name} records no model lineage: only the MLP shape was "
                "checked against what the weights were learned on")
    if mine != theirs:
        raise NexError(f"{weights} were learned on {learned_on} ({mine}), but {target_name} comes from "
                       f"{target.get('model') or 'another model'} ({theirs}), another model: {fix}")
    return None


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
    fix = "delete it, or re-learn the weights with the nex stage"
    arrays, _ = read_arrays(path, {"eff": MAX_ARRAY_BYTES, "red": MAX_ARRAY_BYTES}, "the credit file", fix)
    eff, red = arrays.get("eff"), arrays.get("red")
    if eff is None or red is None or eff.dtype.kind != "f" or red.dtype.kind != "f" or eff.shape != red.shape \
            or eff.ndim != 1 or not (np.isfinite(eff).all() and np.isfinite(red).all()):
        raise NexError(f"the credit file {path} is damaged: {fix}")
    return eff[:KEY_SPACE], red[:KEY_SPACE]


def load_evidence(weights_path: str | os.PathLike) -> np.ndarray | None:
    """Eff - Red behind a weights file (float64), or None when no credit file sits beside it."""
    credit = load_credit(weights_path)
    return None if credit is None else credit[0].astype(np.float64) - credit[1].astype(np.float64)
