"""Where the neuron weights that score a cache come from: four calibration protocols over a family's caches.

    self    each cache learns its own weights and is scored with them (the authors' protocol)
    pooled  Eff and Red summed over every cache: one weight vector scores them all
    cross   each cache scored with weights it did not make: those given (learned elsewhere), else
            every other cache's own, its GMF the mean over them (leave-self-out); the full matrix
            is ``cross_matrix``
    split   each cache learns on one half of its prompts and is scored on the other half, both ways,
            so every response is scored by weights that never saw its prompt

A cache that is alone has no "others": cross then needs weights given from elsewhere
(``given``). Everything runs under one ``NexConfig``, the run's, and learns each
cache once; weights the nex stage already learned with that config can be handed in
(``weights``) instead of learned again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.nex.config import NexConfig
from nex_causal.nex.credit import neuron_weights
from nex_causal.nex.learn import Calibration, learn
from nex_causal.nex.score import nex_score, score_responses

CALIBRATIONS = ("self", "pooled", "cross", "split")


def prompt_split(prompt_ids, seed: int = 0) -> np.ndarray:
    """1 or 2 for each prompt id, by a seeded hash of the id (the same prompts split alike in every cache)."""
    digest = [hashlib.blake2b(f"{seed}:{p}".encode(), digest_size=8).digest() for p in prompt_ids]
    return np.array([1 + (int.from_bytes(d, "little") & 1) for d in digest])


def check_modes(modes) -> list[str]:
    """``modes`` as a list, each one of ``CALIBRATIONS`` (one line naming any other)."""
    modes = list(modes)
    if unknown := [m for m in modes if m not in CALIBRATIONS]:
        raise NexError(f"unknown calibration {unknown[0]!r}: use any of {', '.join(CALIBRATIONS)}")
    if not modes:
        raise NexError(f"name at least one calibration: {', '.join(CALIBRATIONS)}")
    return modes


class Calibrations:
    """The caches of a family (name -> cache) and the weights each protocol gives them, computed once each."""

    def __init__(self, caches: Mapping[str, SparseCache], config: NexConfig = NexConfig(), *,
                 weights: Mapping[str, np.ndarray] | None = None, given: np.ndarray | None = None,
                 progress: bool = False, seed: int = 0):
        self.caches, self.config, self.progress, self.seed = dict(caches), config, progress, seed
        self.given = given
        self._weights = dict(weights or {})
        self._learned: dict[str, Calibration] = {}
        self._gmf: dict[tuple, np.ndarray] = {}

    def learned(self, name: str) -> Calibration:
        """What learning on cache ``name`` gives (weights, Eff/Red, each response's summary)."""
        if name not in self._learned:
            self._learned[name] = learn(self.caches[name], self.config, progress=self.progress)
        return self._learned[name]

    def own_weights(self, name: str) -> np.ndarray:
        """Cache ``name``'s self-calibrated weights (handed in, or learned here)."""
        if name not in self._weights:
            self._weights[name] = self.learned(name).weights
        return self._weights[name]

    def pooled_weights(self) -> np.ndarray:
        """The weights of Eff and Red summed over every cache."""
        if "pooled" not in self._weights:
            cals = [self.learned(name) for name in self.caches]
            self._weights["pooled"] = neuron_weights(np.sum([c.eff for c in cals], axis=0),
                                                     np.sum([c.red for c in cals], axis=0), self.config.weighting)
        return self._weights["pooled"]

    def _scored(self, name: str, source: str, weights) -> np.ndarray:
        key = (name, source)
        if key not in self._gmf:
            self._gmf[key] = score_responses(self.caches[name], weights(), progress=False)
        return self._gmf[key]

    def gmf(self, name: str, mode: str) -> np.ndarray:
        """Per-response GMF of cache ``name`` under calibration ``mode`` (float64, NaN where unscorable)."""
        check_modes([mode])
        if mode == "self":
            return self._scored(name, name, lambda: self.own_weights(name)).astype(np.float64)
        if mode == "pooled":
            return self._scored(name, "pooled", self.pooled_weights).astype(np.float64)
        if mode == "cross":
            if self.given is not None:
                return self._scored(name, "given", lambda: self.given).astype(np.float64)
            others = [o for o in self.caches if o != name]
            if not others:
                raise NexError("cross calibration needs the caches of other variants, or weights learned "
                               "elsewhere (--weights)")
            rows = np.stack([self._scored(name, o, lambda o=o: self.own_weights(o)) for o in others])
            with np.errstate(invalid="ignore"):
                return np.nanmean(np.where(np.isfinite(rows), rows, np.nan), axis=0).astype(np.float64)
        return self._split(name)

    def _split(self, name: str) -> np.ndarray:
        if (name, "split") in self._gmf:
            return self._gmf[(name, "split")]
        cache = self.caches[name]
        if cache.responses is None or "prompt_id" not in cache.responses:
            raise NexError(f"split calibration needs each response's prompt_id ({cache.path} has no "
                           "responses.parquet): capture with nex-causal")
        half = prompt_split(cache.responses["prompt_id"].astype(str), self.seed)
        out = np.full(cache.n_responses, np.nan)
        for learn_half, score_half in ((1, 2), (2, 1)):
            weights = learn(cache, self.config, responses=np.flatnonzero(half == learn_half), progress=False).weights
            scored = np.flatnonzero(half == score_half)
            out[scored] = score_responses(cache, weights, progress=False)[scored]
        self._gmf[(name, "split")] = out
        return out

    def cross_matrix(self) -> dict[tuple[str, str], float]:
        """NEX (mean GMF) of every cache (``scored``) under every cache's own weights (``weights``)."""
        return {(source, name): nex_score(self._scored(name, source, lambda s=source: self.own_weights(s)))
                for source in self.caches for name in self.caches}
