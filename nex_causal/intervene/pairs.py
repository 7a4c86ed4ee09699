"""Transfer over several (donor, recipient) pairs, and its summary over pairs.

One pair in one direction is an anecdote. ``pairs_of`` reads ``donor>recipient`` entries
(both directions unless told otherwise); each pair runs its own grid, on the donor's NEX
weights, into its own directory; ``pooled_summary`` then gives, per (intervention, dose,
outcome), the mean over pairs of the effective-minus-random and effective-minus-redundant
gaps, with a two-level bootstrap interval (pairs resampled, then prompts within each), and
how many pairs pass the random-set test at the grid's level.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from nex_causal.errors import NexError
from nex_causal.intervene.cells import GridConfig
from nex_causal.intervene.grid import run_grids
from nex_causal.intervene.neuron_sets import check_weights_model

Pair = tuple[str, str]  # (donor, recipient)


def pairs_of(entries: Sequence[str], both_directions: bool = True) -> list[Pair]:
    """``donor>recipient`` entries as pairs, each also reversed when ``both_directions``; order kept, no repeats."""
    if not entries:
        raise NexError("no transfer pair given: list at least one 'donor>recipient' (transfer.pairs)")
    pairs: list[Pair] = []
    for entry in entries:
        donor, sep, recipient = str(entry).partition(">")
        donor, recipient = donor.strip(), recipient.strip()
        if not sep or not donor or not recipient or donor == recipient:
            raise NexError(f"transfer pair {entry!r} is not 'donor>recipient' with two different variants")
        for pair in ((donor, recipient), (recipient, donor)) if both_directions else ((donor, recipient),):
            if pair not in pairs:
                pairs.append(pair)
    return pairs


def two_level_interval(per_pair: Sequence[np.ndarray], *, n_boot: int, level: float,
                       seed: int) -> tuple[float, float, float]:
    """Mean over pairs of each pair's mean, with a bootstrap interval resampling pairs, then prompts in each."""
    rng = np.random.default_rng(seed)
    estimate = float(np.mean([g.mean() for g in per_pair]))
    replicates = np.empty(n_boot)
    for b in range(n_boot):
        chosen = rng.integers(0, len(per_pair), len(per_pair))
        replicates[b] = np.mean([per_pair[i][rng.integers(0, len(per_pair[i]), len(per_pair[i]))].mean()
                                 for i in chosen])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return estimate, float(low), float(high)


def pooled_summary(gaps: Mapping[Pair, Mapping[tuple, Mapping[str, np.ndarray]]], summaries: pd.DataFrame, *,
                   n_boot: int, level: float, seed: int) -> pd.DataFrame:
    """Per (intervention, dose, outcome): the gaps' mean over pairs with intervals, and the pairs that pass.

    ``gaps[pair][(intervention, dose, outcome)]`` holds ``pair_gaps``; ``summaries`` is the
    per-pair summary (``donor``, ``recipient`` and ``gap_summary``'s columns).
    """
    keys = sorted({key for per_pair in gaps.values() for key in per_pair}, key=str)
    rows = []
    for intervention, dose, outcome in keys:
        present = {pair: per_pair[(intervention, dose, outcome)] for pair, per_pair in gaps.items()
                   if (intervention, dose, outcome) in per_pair}
        row = {"intervention": intervention, "dose": dose, "outcome": outcome, "n_pairs": len(present),
               "n_prompts": int(sum(len(next(iter(g.values()))) for g in present.values()))}
        for name in ("effective_minus_random", "effective_minus_matched", "effective_minus_redundant"):
            per_pair = [g[name] for g in present.values() if name in g]
            if per_pair:
                row[name], row[f"{name}_low"], row[f"{name}_high"] = two_level_interval(
                    per_pair, n_boot=n_boot, level=level, seed=seed)
        mine = summaries[(summaries["intervention"] == intervention) & (summaries["dose"] == dose)
                         & (summaries["outcome"] == outcome)]
        if "p_value" in mine:
            row["pairs_beating_random"] = int((mine["p_value"] < 1 - level).sum())
        if "p_value_matched" in mine:
            row["pairs_beating_matched"] = int((mine["p_value_matched"] < 1 - level).sum())
        if "positive_control_moved" in mine:
            row["pairs_positive_control_moved"] = int(mine["positive_control_moved"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def run_pairs(settings: Mapping, pairs: Sequence[Pair], inputs_of: Callable[[str, str], Mapping], out: str | os.PathLike,
              *, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One transfer grid per (donor, recipient) into ``out/<donor>__<recipient>``; ``inputs_of(donor, recipient)``
    gives what each grid reads beyond ``settings`` (``weights``, the donor's NEX weights, and any of
    ``recipient_weights``, ``caches``, ``truth``). Returns the outcome tables, the per-pair summaries (with ``donor``
    and ``recipient`` columns), the pooled summary and the scorers' tables. A pair directory made by another config
    is redone."""
    configs = [(GridConfig(**{**settings, "experiment": "transfer", "donor": donor, "recipient": recipient,
                              **inputs_of(donor, recipient)}), Path(out) / f"{donor}__{recipient}")
               for donor, recipient in pairs]
    for config, _ in configs:  # weights of another model: one line before any grid runs
        for note in check_weights_model(config.weights, config.family, (config.donor, config.recipient)):
            warnings.warn(note, stacklevel=2)
    tables, summaries, scorers, gaps = [], [], [], {}
    for (donor, recipient), (pair_gaps, table, summary, by_scorer) in zip(
            pairs, run_grids(configs, root=out, progress=progress)):
        tables.append(table.assign(donor=donor, recipient=recipient))
        summaries.append(summary.assign(donor=donor, recipient=recipient))
        scorers.append(by_scorer.assign(donor=donor, recipient=recipient))
        gaps[(donor, recipient)] = pair_gaps
    config = configs[-1][0]
    summary = pd.concat(summaries, ignore_index=True)
    pooled = pooled_summary(gaps, summary, n_boot=config.n_boot, level=config.level, seed=config.seed)
    return (pd.concat(tables, ignore_index=True), summary, pooled, pd.concat(scorers, ignore_index=True))
