"""Neuron sets: which MLP units an intervention touches (NEX_METHOD section 7).

A set is a sorted array of packed keys ``(layer << 16) | unit`` with a name, and, when it
came from NEX weights, the weight of each member. The sets of the causal test are the
top-k units of each unit scorer (``top_scored``; ``intervene.scorers``: NEX's effective and
redundant neurons among them), their controls, and the sets that say what the test can see:

- random sets matched to NEX's effective set layer by layer (``matched_random``), and random
  sets matched also on what could confound a transplant (``covariate_matched``: activation
  mass in the recipient and in the donor, size of the donor-recipient weight difference);
- the ceiling (``whole_layers``): every MLP unit of the layers that differ.

A user can bring their own set as a small table with columns ``layer, unit`` (CSV or parquet); a grid
names it by its content (``user_set``), so an edited file is a new cell, and checks it before it claims
its directory (``check_user_sets``), as it checks that the weights were learned on its models
(``check_weights_model``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nex_causal.cache import N_LAYERS, pack_keys, unpack_keys
from nex_causal.errors import NexError
from nex_causal.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

N_UNITS = 1 << 16  # units a packed key can address per layer
MAX_SET_BYTES = 1 << 28  # a set file larger than this is no set (every key with a weight, as CSV, is ~60 MB)


@dataclass(frozen=True, eq=False)
class NeuronSet:
    """A named set of MLP neurons; ``weights`` (aligned with ``keys``) when known."""

    name: str
    keys: np.ndarray
    weights: np.ndarray | None = None
    random_ties: int = 0  # members drawn at random among neurons tied at the cut (weight and evidence alike)

    def __post_init__(self) -> None:
        keys = np.asarray(self.keys, dtype=np.uint32)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        if len(keys) > 1 and (np.diff(keys) == 0).any():
            layer, unit = divmod(int(keys[1:][np.diff(keys) == 0][0]), N_UNITS)
            raise NexError(f"neuron set {self.name!r} lists (layer {layer}, unit {unit}) twice; "
                           "remove the duplicate")
        object.__setattr__(self, "keys", keys)
        if self.weights is not None:
            weights = np.asarray(self.weights, dtype=np.float32)
            if weights.shape != (len(keys),):
                raise NexError(f"neuron set {self.name!r} has {len(keys)} keys but "
                               f"{weights.size} weights; give one weight per neuron")
            object.__setattr__(self, "weights", weights[order])

    @classmethod
    def from_units(cls, name: str, layers: np.ndarray, units: np.ndarray,
                   weights: np.ndarray | None = None) -> "NeuronSet":
        return cls(name, pack_keys(layers, units), weights)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def layers(self) -> np.ndarray:
        return unpack_keys(self.keys)[0].astype(np.int64)

    @property
    def units(self) -> np.ndarray:
        return unpack_keys(self.keys)[1].astype(np.int64)

    def by_layer(self) -> dict[int, np.ndarray]:
        """``{layer: sorted unit indices}`` for the layers the set touches."""
        layers, units = self.layers, self.units
        return {int(layer): units[layers == layer] for layer in np.unique(layers)}

    def per_layer_counts(self, n_layers: int) -> np.ndarray:
        """How many members each of the model's ``n_layers`` layers holds."""
        self.check_fits(n_layers, N_UNITS)
        return np.bincount(self.layers, minlength=n_layers)

    def check_fits(self, n_layers: int, d_mlp: int) -> None:
        """Raise when a member lies outside a model with ``n_layers`` x ``d_mlp`` MLP units."""
        outside = (self.layers >= n_layers) | (self.units >= d_mlp)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise NexError(
                f"neuron set {self.name!r} holds (layer {self.layers[i]}, unit {self.units[i]}), "
                f"outside this model's {n_layers} layers x {d_mlp} units: the set or its weights "
                "were made for another model")

    def union(self, other: "NeuronSet", name: str | None = None) -> "NeuronSet":
        return NeuronSet(name or f"{self.name}|{other.name}", np.union1d(self.keys, other.keys))

    def intersection(self, other: "NeuronSet", name: str | None = None) -> "NeuronSet":
        return NeuronSet(name or f"{self.name}&{other.name}", np.intersect1d(self.keys, other.keys))

    def table(self) -> pd.DataFrame:
        """Columns ``layer, unit`` (and ``weight`` when known)."""
        import pandas as pd

        df = pd.DataFrame({"layer": self.layers, "unit": self.units})
        if self.weights is not None:
            df["weight"] = self.weights
        return df

    def save(self, path: str | os.PathLike) -> None:
        """Write the set as ``.csv`` or ``.parquet`` (by the path's suffix), atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            if path.suffix == ".parquet":
                self.table().to_parquet(tmp, index=False)
            elif path.suffix == ".csv":
                self.table().to_csv(tmp, index=False)
            else:
                raise NexError(f"cannot save a neuron set as {path.name!r}: use a .csv or .parquet name")

    @classmethod
    def load(cls, path: str | os.PathLike, name: str | None = None) -> "NeuronSet":
        """Read a set saved by :meth:`save` or written by hand (columns ``layer, unit``)."""
        path = Path(path)
        return _parse(path, _read_bytes(path), name or path.stem)


def _read_bytes(path: Path) -> bytes:
    """The bytes of a set file, after checking that it is one and not beyond ``MAX_SET_BYTES``."""
    if not path.is_file():
        raise NexError(f"neuron set file {path} does not exist")
    if path.suffix not in {".csv", ".parquet"}:
        raise NexError(f"cannot read a neuron set from {path.name!r}: use a .csv or .parquet file")
    if path.stat().st_size > MAX_SET_BYTES:
        raise NexError(f"neuron set file {path} holds {path.stat().st_size} bytes, more than any set of "
                       f"{N_LAYERS} x {N_UNITS} units needs: pass the set, not another file")
    return path.read_bytes()


def _parse(path: Path, data: bytes, name: str) -> NeuronSet:
    """The set in a file's ``data``: one line naming what is wrong with it (empty, not UTF-8, no layer/unit)."""
    import io

    import pandas as pd

    fix = "write a header line 'layer,unit' and one line per neuron"
    if not data.strip():
        raise NexError(f"neuron set file {path} is empty: {fix}")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(io.BytesIO(data))
        else:
            df = pd.read_csv(io.StringIO(data.decode("utf-8")))
    except UnicodeDecodeError as err:
        raise NexError(f"neuron set file {path}: byte {err.start} is not UTF-8 text: save it as UTF-8") from None
    except Exception as err:  # pandas and pyarrow raise several kinds for a file that is not a table
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise NexError(f"cannot read neuron set file {path} as a table ({first}): {fix}") from None
    if not {"layer", "unit"} <= set(df.columns):
        raise NexError(f"{path} needs columns 'layer' and 'unit', found {list(df.columns)}")
    layers, units = df["layer"].to_numpy(), df["unit"].to_numpy()
    if not len(df):  # a header alone: the empty set
        layers, units = layers.astype(np.int64), units.astype(np.int64)
    if not (np.issubdtype(layers.dtype, np.integer) and np.issubdtype(units.dtype, np.integer)):
        raise NexError(f"{path}: 'layer' and 'unit' must be whole numbers")
    if len(df) and ((layers < 0).any() or (layers >= N_LAYERS).any()
                    or (units < 0).any() or (units >= N_UNITS).any()):
        raise NexError(f"{path}: layers must lie in [0, {N_LAYERS}) and units in [0, {N_UNITS})")
    weights = df["weight"].to_numpy() if "weight" in df.columns else None
    return NeuronSet.from_units(name, layers, units, weights)


def user_set(path: str | os.PathLike) -> NeuronSet:
    """A user's set file as a grid runs it, named ``<stem>-<first 8 hex of the file's SHA-256>``: two files of one
    stem are two cells, and an edited file is a new cell, never the old one's result."""
    path = Path(path)
    data = _read_bytes(path)
    return _parse(path, data, f"{path.stem}-{hashlib.sha256(data).hexdigest()[:8]}")


def check_user_sets(paths: Sequence[str | os.PathLike]) -> list[NeuronSet]:
    """The user's sets, each checked before a grid claims its directory: readable, not empty, none given twice."""
    sets: dict[str, Path] = {}
    out = []
    for path in map(Path, paths):
        neurons = user_set(path)
        if not len(neurons):
            raise NexError(f"neuron set file {path} lists no neuron: add 'layer,unit' lines, or drop it from --sets")
        if neurons.name in sets:
            raise NexError(f"neuron set files {sets[neurons.name]} and {path} hold the same set under one name: "
                           "give it once")
        sets[neurons.name] = path
        out.append(neurons)
    return out


def check_weights_fit(weights: np.ndarray, n_layers: int, d_mlp: int) -> None:
    """Raise when a neuron outside the model's geometry carries a nonzero weight (NEX weights
    learned on another model)."""
    credited = np.flatnonzero(weights)
    NeuronSet("weights", credited.astype(np.uint32)).check_fits(n_layers, d_mlp)


def check_weights_model(weights: str | os.PathLike, family: str | None, models: Sequence[str]) -> list[str]:
    """Refuse (one line) NEX weights learned on another model than ``models`` (the grid's recipient and donor, looked
    up in ``family``): another lineage or MLP shape (``nex.weights.check_learned_on``). Returns the notes of what
    could not be checked (weights that record no model)."""
    from nex_causal.models.files import model_identity
    from nex_causal.models.loading import resolve_model
    from nex_causal.models.variants import variant_dir
    from nex_causal.nex.weights import check_learned_on, load_identity

    identity, notes = load_identity(weights), []
    for name in models:
        target = model_identity(resolve_model(variant_dir(name, family)), with_digest=False)
        note = check_learned_on(identity, target, weights=f"weights {weights}", target_name=f"model {name}")
        if note and note not in notes:
            notes.append(note)
    return notes


def top_scored(scores: np.ndarray, k: int, name: str, *, seed: int = 0, ties: np.ndarray | None = None) -> NeuronSet:
    """The ``k`` units of largest positive score (fewer, with a warning, if fewer have one), as a set.

    ``scores`` is ``[n_layers, d_mlp]`` (a unit scorer's, ``intervene.scorers``) or a vector over the key space
    (NEX weights). Ties in score are broken by the larger ``ties`` (NEX's Eff - Red: its tanh saturates, tying
    hundreds of neurons at exactly +-1 in float32), and only the ties left after both in a seeded random order,
    counted in the set's ``random_ties``. The set's weights are the scores of its members.
    """
    if k < 0:
        raise NexError(f"k must be non-negative, got {k}")
    flat = np.asarray(scores, np.float64).ravel()
    candidates = np.random.default_rng(seed).permutation(np.flatnonzero(flat > 0))
    first = flat[candidates]
    second = np.zeros(len(candidates)) if ties is None else np.asarray(ties, np.float64).ravel()[candidates]
    picked = np.lexsort((-second, -first))[:k]  # lexsort is stable: the seeded shuffle orders what ties on both
    chosen, random_ties = candidates[picked], 0
    if len(chosen) < k:
        warnings.warn(f"{name}: only {len(chosen)} units have a positive score, fewer than k={k}; using those",
                      stacklevel=2)
    elif k:
        at_cut = (first == first[picked[-1]]) & (second == second[picked[-1]])
        tied, taken = int(at_cut.sum()), int(at_cut[picked].sum())
        if tied > taken:
            random_ties = taken
            warnings.warn(f"{name}: {tied} units tie at score {flat[chosen[-1]]:g}"
                          f"{'' if ties is None else ' and in the second key'} at the cut; {taken} of them taken "
                          f"in a random order (seed {seed})", stacklevel=2)
    d_mlp = np.shape(scores)[-1] if np.ndim(scores) == 2 else None
    keys = chosen if d_mlp is None else pack_keys(chosen // d_mlp, chosen % d_mlp)
    return NeuronSet(name, np.asarray(keys).astype(np.uint32), flat[chosen], random_ties)


def top_effective(weights: np.ndarray, k: int, name: str | None = None, *, seed: int = 0,
                  evidence: np.ndarray | None = None) -> NeuronSet:
    """The ``k`` neurons of largest positive NEX weight (a key-space vector), ties broken by ``evidence``
    (Eff - Red)."""
    return top_scored(weights, k, name or f"effective-{k}", seed=seed, ties=evidence)


def bottom_redundant(weights: np.ndarray, k: int, name: str | None = None, *, seed: int = 0,
                     evidence: np.ndarray | None = None) -> NeuronSet:
    """The ``k`` neurons of most negative NEX weight, ties broken by the more negative ``evidence``; the set keeps
    the (negative) weights."""
    chosen = top_scored(-np.asarray(weights, np.float64), k, name or f"redundant-{k}", seed=seed,
                        ties=None if evidence is None else -np.asarray(evidence, np.float64))
    return NeuronSet(chosen.name, chosen.keys, np.asarray(weights)[chosen.keys], chosen.random_ties)


def matched_random(reference: NeuronSet, d_mlp: int, seed: int, *,
                   exclude: NeuronSet | None = None, name: str | None = None) -> NeuronSet:
    """A uniform random set with ``reference``'s count in every layer, avoiding ``exclude``.

    ``exclude`` defaults to ``reference`` itself, so the random set shares no member with
    the set it is a control for.
    """
    exclude = reference if exclude is None else exclude
    rng = np.random.default_rng(seed)
    layers, units = [], []
    for layer, members in reference.by_layer().items():
        taken = exclude.units[exclude.layers == layer]
        pool = np.setdiff1d(np.arange(d_mlp), taken)
        if len(pool) < len(members):
            raise NexError(f"layer {layer} has only {len(pool)} units outside the excluded set, "
                           f"fewer than the {len(members)} a matched random set needs; lower k")
        units.append(rng.choice(pool, size=len(members), replace=False))
        layers.append(np.full(len(members), layer))
    if not layers:
        return NeuronSet(name or f"random-{seed}", np.zeros(0, dtype=np.uint32))
    return NeuronSet.from_units(name or f"random-{seed}", np.concatenate(layers), np.concatenate(units))


def covariate_matched(reference: NeuronSet, covariates: np.ndarray, seed: int, *, exclude: NeuronSet | None = None,
                      neighbours: int = 8, name: str | None = None) -> NeuronSet:
    """A random set matched to ``reference`` layer by layer and on ``covariates`` (``[n_layers, d_mlp, c]``).

    Each member is replaced by a unit drawn uniformly among the ``neighbours`` units of its layer
    nearest to it in the covariates (z-scored within the layer), outside ``exclude`` (default:
    the reference) and not drawn already. Nearest-neighbour matching, rather than quantile
    strata, keeps every member matched when the reference sits in the tail (the effective set
    is where the mass is), and the draw among neighbours keeps the sets random.
    """
    exclude = reference if exclude is None else exclude
    rng = np.random.default_rng(seed)
    covariates = np.asarray(covariates, np.float64)
    layers, units = [], []
    for layer, members in reference.by_layer().items():
        x = covariates[layer]
        z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
        free = np.ones(len(x), bool)
        free[exclude.units[exclude.layers == layer]] = False
        if free.sum() < len(members):
            raise NexError(f"layer {layer} has only {int(free.sum())} units outside the excluded set, fewer than "
                           f"the {len(members)} a matched random set needs; lower k")
        for unit in rng.permutation(members):
            pool = np.flatnonzero(free)
            near = pool[np.argsort(((z[pool] - z[unit]) ** 2).sum(1), kind="stable")[:neighbours]]
            pick = int(rng.choice(near))
            free[pick] = False
            layers.append(layer)
            units.append(pick)
    return NeuronSet.from_units(name or f"matched-{seed}", np.array(layers, np.int64), np.array(units, np.int64))


def matching_quality(reference: NeuronSet, controls: list[NeuronSet], covariates: np.ndarray) -> np.ndarray:
    """Standardised mean difference of each covariate between ``reference`` and the pooled ``controls``
    (the mean over the controls' members minus the reference's, over the spread of all units of those layers);
    0 is a perfect match, beyond 0.1 in size is conventionally a poor one."""
    covariates = np.asarray(covariates, np.float64)
    mine = covariates[reference.layers, reference.units]
    theirs = np.concatenate([covariates[c.layers, c.units] for c in controls]) if controls else mine[:0]
    spread = covariates[np.unique(reference.layers)].reshape(-1, covariates.shape[-1]).std(0)
    if not len(theirs) or not len(mine):
        return np.full(covariates.shape[-1], np.nan)
    return (theirs.mean(0) - mine.mean(0)) / np.where(spread > 0, spread, 1.0)


def whole_layers(layers: np.ndarray, d_mlp: int, name: str = "ceiling") -> NeuronSet:
    """Every unit of ``layers``: the ceiling of a transplant (the layers where donor and recipient differ)."""
    layers = np.asarray(layers, np.int64)
    return NeuronSet.from_units(name, np.repeat(layers, d_mlp), np.tile(np.arange(d_mlp), len(layers)))
