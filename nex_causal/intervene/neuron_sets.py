"""Neuron sets: which MLP units an intervention touches (NEX_METHOD section 7).

A set is a sorted array of packed keys ``(layer << 16) | unit`` with a name, and, when it
came from NEX weights, the weight of each member. The sets of the causal test are the
top-k effective neurons (largest positive weight), the bottom-k redundant neurons (most
negative weight), and random sets matched to the effective set layer by layer. A user can
bring their own set as a small table with columns ``layer, unit`` (CSV or parquet).
"""

from __future__ import annotations

import os
import warnings
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


@dataclass(frozen=True, eq=False)
class NeuronSet:
    """A named set of MLP neurons; ``weights`` (aligned with ``keys``) when known."""

    name: str
    keys: np.ndarray
    weights: np.ndarray | None = None

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
        if not path.is_file():
            raise NexError(f"neuron set file {path} does not exist")
        if path.suffix not in {".csv", ".parquet"}:
            raise NexError(f"cannot read a neuron set from {path.name!r}: use a .csv or .parquet file")
        import pandas as pd

        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if not {"layer", "unit"} <= set(df.columns):
            raise NexError(f"{path} needs columns 'layer' and 'unit', found {list(df.columns)}")
        layers, units = df["layer"].to_numpy(), df["unit"].to_numpy()
        if not (np.issubdtype(layers.dtype, np.integer) and np.issubdtype(units.dtype, np.integer)):
            raise NexError(f"{path}: 'layer' and 'unit' must be whole numbers")
        if len(df) and ((layers < 0).any() or (layers >= N_LAYERS).any()
                        or (units < 0).any() or (units >= N_UNITS).any()):
            raise NexError(f"{path}: layers must lie in [0, {N_LAYERS}) and units in [0, {N_UNITS})")
        weights = df["weight"].to_numpy() if "weight" in df.columns else None
        return cls.from_units(name or path.stem, layers, units, weights)


def check_weights_fit(weights: np.ndarray, n_layers: int, d_mlp: int) -> None:
    """Raise when a neuron outside the model's geometry carries a nonzero weight (NEX weights
    learned on another model)."""
    credited = np.flatnonzero(weights)
    NeuronSet("weights", credited.astype(np.uint32)).check_fits(n_layers, d_mlp)


def _extreme(weights: np.ndarray, k: int, sign: int, name: str, seed: int) -> NeuronSet:
    """The ``k`` keys of largest ``sign * weight`` (> 0); ties at the cut in a seeded random order.

    NEX weights saturate: tanh rounds to exactly +-1 in float32 once a neuron's credit ratio
    passes ~e^9, so hundreds of neurons can tie at the top. Breaking such ties by key would
    favour the first layers; a seeded shuffle picks uniformly among the tied neurons instead.
    """
    if k < 0:
        raise NexError(f"k must be non-negative, got {k}")
    candidates = np.random.default_rng(seed).permutation(np.flatnonzero(sign * weights > 0))
    chosen = candidates[np.argsort(-sign * weights[candidates], kind="stable")[:k]]
    if len(chosen) < k:
        warnings.warn(f"{name}: only {len(chosen)} neurons have {'positive' if sign > 0 else 'negative'} "
                      f"weight, fewer than k={k}; using those", stacklevel=3)
    elif k and (tied := int((weights[candidates] == weights[chosen[-1]]).sum())) > (
            taken := int((weights[chosen] == weights[chosen[-1]]).sum())):
        warnings.warn(f"{name}: {tied} neurons tie at weight {weights[chosen[-1]]:g} at the cut; "
                      f"{taken} of them taken in a random order (seed {seed})", stacklevel=3)
    return NeuronSet(name, chosen.astype(np.uint32), weights[chosen])


def top_effective(weights: np.ndarray, k: int, name: str | None = None, *, seed: int = 0) -> NeuronSet:
    """The ``k`` neurons with the largest positive weight (fewer, with a warning, if fewer exist)."""
    return _extreme(weights, k, +1, name or f"effective-{k}", seed)


def bottom_redundant(weights: np.ndarray, k: int, name: str | None = None, *, seed: int = 0) -> NeuronSet:
    """The ``k`` neurons with the most negative weight (fewer, with a warning, if fewer exist)."""
    return _extreme(weights, k, -1, name or f"redundant-{k}", seed)


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
