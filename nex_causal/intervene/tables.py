"""The tables of a transfer or ablation grid, from its cells' per-prompt outcomes.

One row per cell and decoding with the accuracy, its change against the untouched model on
the same prompts (paired), and percentile-bootstrap intervals over prompts; and a summary
per (intervention, k, decoding) with the effective-minus-random and
effective-minus-redundant gaps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nex_causal.stats import bootstrap, weighted_mean

if TYPE_CHECKING:
    from nex_causal.intervene.grid import Cell, GridConfig


def _interval(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    ci = bootstrap(weighted_mean(values), len(values), n_boot=n_boot, seed=seed)
    return float(ci.estimate), float(ci.low), float(ci.high)


def outcome_table(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]],
                  config: GridConfig) -> pd.DataFrame:
    """One row per (cell, decoding): accuracy and its paired change against the baseline, with CIs."""
    rows = []
    for cell in cells:
        for decoding, correct in results[cell.name].items():
            base = results["baseline"][decoding]
            acc, acc_low, acc_high = _interval(correct.astype(float), config.n_boot, config.seed)
            delta, low, high = _interval(correct.astype(float) - base, config.n_boot, config.seed)
            rows.append({
                "experiment": config.experiment, "intervention": cell.intervention, "set_kind": cell.kind,
                "k": cell.k, "seed": cell.seed, "set_size": len(cell.neurons), "decoding": decoding,
                "n_prompts": len(correct), "accuracy": acc, "accuracy_low": acc_low,
                "accuracy_high": acc_high, "baseline_accuracy": float(base.mean()),
                "delta": delta, "delta_low": low, "delta_high": high,
            })
    return pd.DataFrame(rows)


def gap_summary(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]],
                config: GridConfig) -> pd.DataFrame:
    """Per (intervention, k, decoding): the deltas of each kind and the paired gaps with CIs.

    The random control of a prompt is its mean correctness over the random seeds, so the
    effective-minus-random gap compares the effective set with the average matched set.
    """
    rows = []
    for intervention in config.interventions:
        for k in config.k:
            mine = {kind: [c for c in cells if (c.intervention, c.k, c.kind) == (intervention, k, kind)]
                    for kind in ("effective", "redundant", "random")}
            for decoding in config.decodings:
                base = results["baseline"][decoding].astype(float)

                def outcome(kind: str) -> np.ndarray:
                    return np.mean([results[c.name][decoding] for c in mine[kind]], axis=0)

                effective, redundant = outcome("effective"), outcome("redundant")
                row = {"intervention": intervention, "k": k, "decoding": decoding,
                       "effective_size": len(mine["effective"][0].neurons),
                       "redundant_size": len(mine["redundant"][0].neurons),
                       "baseline_accuracy": base.mean(),
                       "effective_delta": effective.mean() - base.mean(),
                       "redundant_delta": redundant.mean() - base.mean()}
                gaps = {"effective_minus_redundant": effective - redundant}
                if mine["random"]:
                    random = outcome("random")
                    row["random_delta"] = random.mean() - base.mean()
                    gaps["effective_minus_random"] = effective - random
                for name, values in gaps.items():
                    row[name], row[f"{name}_low"], row[f"{name}_high"] = _interval(
                        values, config.n_boot, config.seed)
                rows.append(row)
    return pd.DataFrame(rows)
