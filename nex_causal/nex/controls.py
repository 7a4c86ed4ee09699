"""Negative controls of NEX's credit: what is left of its signal when part of the order it reads is taken away.

NEX credits a neuron for *when* it appears (introduced in an explore run) and for *what follows*
(its reuse by the next exploit run). Each control takes one part away, and is drawn many times so
that it is a distribution, not one draw:

    shuffled   each response's rows in a random order, its phases fitted again: first appearance
               and phases both gone
    reordered  the rows' contents in a random order under the HMM's own E/X labels, left where the
               method put them: first appearance gone, phases kept
    permuted   the E/X runs of each response in a random order (each keeps its label and length),
               the rows untouched: first appearance kept, which rows explore randomised

A signal that survives ``permuted`` but not ``reordered`` is carried by when units first appear,
not by where the phases are; one that falls under both needs both. ``Prepared`` does each
response's cleaning, novelty and segmentation once; a draw then redoes only what its control
changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from nex_causal.cache import KEY_SPACE, SparseCache
from nex_causal.nex.config import NexConfig
from nex_causal.nex.credit import MIN_ROWS, credit, cycles
from nex_causal.nex.novelty import Rows, clean_rows, novelty
from nex_causal.nex.phases import segment
from nex_causal.nex.runlength import runs

CONTROLS = ("shuffled", "reordered", "permuted")


def permute_rows(rows: Rows, order: np.ndarray) -> Rows:
    """``rows`` with its rows in ``order`` (each row's entries kept together and in their order)."""
    sizes = np.diff(rows.row_ptr)
    entries = np.concatenate([np.arange(rows.row_ptr[j], rows.row_ptr[j + 1]) for j in order]) if len(order) \
        else np.zeros(0, np.int64)
    return Rows(rows.keys[entries], rows.mass[entries], np.concatenate([[0], np.cumsum(sizes[order])]),
                rows.tokens[order], rows.source[order])


def permuted_runs(explore: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``explore`` with its maximal runs in a random order: each run keeps its label and length (neighbours of
    one label may join), so as many rows explore, in runs as long, but not where the method put them."""
    found = runs(explore)
    order = rng.permutation(len(found))
    return np.concatenate([np.full(found[i][2] - found[i][1] + 1, found[i][0]) for i in order]) if found \
        else np.asarray(explore, bool)


@dataclass(frozen=True)
class Prepared:
    """The usable rows and HMM phases of every response of some caches, under one NEX config."""

    rows: list[Rows]
    explore: list[np.ndarray]
    config: NexConfig

    @classmethod
    def of(cls, caches: Iterable[SparseCache], config: NexConfig) -> Prepared:
        rows, explore = [], []
        for cache in caches:
            for r in range(cache.n_responses):
                clean = clean_rows(cache.response_rows(r), positive_only=config.positive_only)
                if clean.n_rows < MIN_ROWS:
                    continue
                rows.append(clean)
                explore.append(segment(novelty(clean).slopes, config.rho, config.min_run,
                                       mad_rounding=config.mad_rounding).explore)
        return cls(rows, explore, config)

    def credit(self, control: str | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Eff and Red over the key space under ``control`` (None: NEX itself), each response drawn from ``rng``."""
        eff, red = np.zeros(KEY_SPACE, np.float32), np.zeros(KEY_SPACE, np.float32)
        c = self.config
        for rows, explore in zip(self.rows, self.explore):
            if control in ("shuffled", "reordered"):
                rows = permute_rows(rows, rng.permutation(rows.n_rows))
            nov = novelty(rows)
            if control == "shuffled":
                explore = segment(nov.slopes, c.rho, c.min_run, mad_rounding=c.mad_rounding).explore
            elif control == "permuted":
                explore = permuted_runs(explore, rng)
            credit(nov, cycles(nov, explore), c.skip_opening).add_to(eff, red)
        return eff, red


def draws(prepared: Prepared, control: str, n: int, seed: int, *, progress: bool = False
          ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` draws of ``control``'s (Eff, Red); draw ``i`` is seeded by ``(seed, i)`` alone."""
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}: use one of {', '.join(CONTROLS)}")
    return [prepared.credit(control, np.random.default_rng([seed, i]))
            for i in tqdm(range(n), desc=f"{control} control", unit="draw", disable=not progress)]


def rank_against(observed: float, null: Sequence[float]) -> tuple[float, int]:
    """The one-sided p of ``observed`` against a control's draws, ``(1 + #{draw >= observed}) / (1 + n)``, and how
    many draws reach it."""
    null = np.asarray(null, np.float64)
    at_least = int(np.sum(null >= observed))
    return (1 + at_least) / (1 + len(null)), at_least
