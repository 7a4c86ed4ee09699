"""The tables of a transfer or ablation grid, from its cells' per-prompt outcomes.

``outcome_table``: one row per (cell, outcome) with the mean, its change against the
untouched model on the same prompts (paired), percentile-bootstrap intervals over prompts,
and the set's per-layer composition.

``gap_summary``: one row per (intervention, k, outcome). The null is the distribution of
the mean change over the layer-matched random sets. ``p_value`` tests "effective beats
random": the effective set's mean change against that null, ``(1 + #{null >= effective}) /
(1 + n_random)``, exact when the effective set is exchangeable with random ones and never
below ``1 / (1 + n_random)``; ``p_value_redundant`` tests "effective beats redundant" by
flipping the signs of the per-prompt differences. The gaps carry paired bootstrap intervals
(effective minus the per-prompt mean over random sets). ``mde`` is the smallest true gap the
random-set test detects with 80% power at size ``1 - level``: ``(z + z_0.8)`` times the
spread of the null (which holds both the prompts' noise and the sets' own variation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nex_causal.stats import (
    bootstrap,
    minimum_detectable_effect,
    null_p_value,
    sign_flip_p_value,
    weighted_mean,
)

if TYPE_CHECKING:
    from nex_causal.intervene.cells import Cell, GridConfig

POWER = 0.8  # of the minimum detectable effect


def _interval(values: np.ndarray, config: GridConfig) -> tuple[float, float, float]:
    ci = bootstrap(weighted_mean(values), len(values), n_boot=config.n_boot, level=config.level, seed=config.seed)
    return float(ci.estimate), float(ci.low), float(ci.high)


def dose_label(k: int, saturation: int | None) -> str:
    """How a dose reads in tables: its k, or ``all`` for every neuron of positive weight."""
    return "all" if saturation is not None and k == saturation else str(k)


def composition(cell: Cell) -> str:
    """The set's neurons per layer, ``layer:count`` separated by spaces."""
    return " ".join(f"{layer}:{len(units)}" for layer, units in cell.neurons.by_layer().items())


def outcome_table(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]], config: GridConfig,
                  saturation: int | None = None) -> pd.DataFrame:
    """One row per (cell, outcome): the mean and its paired change against the baseline, with intervals."""
    rows = []
    for cell in cells:
        for outcome in (o for o in config.outcomes if o in results[cell.name]):
            values, base = results[cell.name][outcome], results["baseline"][outcome]
            value, value_low, value_high = _interval(values, config)
            delta, low, high = _interval(values - base, config)
            rows.append({
                "experiment": config.experiment, "intervention": cell.intervention, "set_kind": cell.kind,
                "k": cell.k, "dose": dose_label(cell.k, saturation), "seed": cell.seed,
                "set_size": len(cell.neurons), "composition": composition(cell), "outcome": outcome,
                "n_prompts": len(values), "value": value, "value_low": value_low, "value_high": value_high,
                "baseline_value": float(base.mean()), "delta": delta, "delta_low": low, "delta_high": high,
            })
    return pd.DataFrame(rows)


def kind_values(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]], intervention: str, k: int,
                outcome: str) -> dict[str, np.ndarray]:
    """Per-prompt ``outcome`` of one (intervention, k): ``effective`` and ``redundant`` [n_prompts], ``random``
    [n_random, n_prompts] (the random sets that measured it)."""
    mine = {kind: [c for c in cells if (c.intervention, c.k, c.kind) == (intervention, k, kind)]
            for kind in ("effective", "redundant", "random")}
    n = len(results["baseline"][outcome])
    return {"effective": results[mine["effective"][0].name][outcome],
            "redundant": results[mine["redundant"][0].name][outcome],
            "random": np.array([results[c.name][outcome] for c in mine["random"] if outcome in results[c.name]]
                               ).reshape(-1, n),
            "sizes": np.array([len(mine["effective"][0].neurons), len(mine["redundant"][0].neurons)])}


def pair_gaps(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-prompt gaps of one (intervention, k, outcome) from ``kind_values``: effective minus the
    random sets' mean, and effective minus redundant."""
    gaps = {"effective_minus_redundant": values["effective"] - values["redundant"]}
    if len(values["random"]):
        gaps["effective_minus_random"] = values["effective"] - values["random"].mean(axis=0)
    return gaps


def gap_summary(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]], config: GridConfig,
                ks: Sequence[int], saturation: int | None = None) -> pd.DataFrame:
    """Per (intervention, k, outcome): each kind's change, the null's quantiles, gaps, p-values and the MDE."""
    tail = (1 - config.level) / 2
    rows = []
    for intervention in config.interventions:
        for k in ks:
            for outcome in config.outcomes:
                base = results["baseline"][outcome]
                values = kind_values(cells, results, intervention, k, outcome)
                effective, redundant, null = values["effective"] - base, values["redundant"] - base, \
                    values["random"] - base
                row = {"intervention": intervention, "k": k, "dose": dose_label(k, saturation), "outcome": outcome,
                       "n_prompts": len(base), "n_random": len(null), "effective_size": int(values["sizes"][0]),
                       "redundant_size": int(values["sizes"][1]), "baseline_value": float(base.mean()),
                       "effective_delta": float(effective.mean()), "redundant_delta": float(redundant.mean())}
                gaps = pair_gaps(values)
                gap, low, high = _interval(gaps["effective_minus_redundant"], config)
                row.update(effective_minus_redundant=gap, effective_minus_redundant_low=low,
                           effective_minus_redundant_high=high,
                           p_value_redundant=sign_flip_p_value(gaps["effective_minus_redundant"], seed=config.seed))
                if len(null):
                    means = null.mean(axis=1)
                    gap, low, high = _interval(gaps["effective_minus_random"], config)
                    spread = float(means.std(ddof=1)) if len(null) > 1 else float("nan")
                    row.update(random_delta=float(means.mean()), random_low=float(np.quantile(means, tail)),
                               random_high=float(np.quantile(means, 1 - tail)), effective_minus_random=gap,
                               effective_minus_random_low=low, effective_minus_random_high=high,
                               p_value=null_p_value(float(effective.mean()), means), p_floor=1 / (1 + len(null)),
                               mde=minimum_detectable_effect(spread, level=config.level, power=POWER))
                rows.append(row)
    return pd.DataFrame(rows)
