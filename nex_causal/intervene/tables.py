"""The tables of a transfer or ablation grid, from its cells' per-prompt outcomes.

``outcome_table``: one row per (cell, outcome) with the mean, its change against the
untouched model on the same prompts (paired), percentile-bootstrap intervals over prompts,
and the set's per-layer composition.

``gap_summary``: one row per (intervention, k, outcome). The null is the distribution of
the mean change over the layer-matched random sets. ``p_value`` tests "effective beats
random": the effective set's mean change against that null, ``(1 + #{null >= effective}) /
(1 + n_random)``, exact when the effective set is exchangeable with random ones and never
below ``1 / (1 + n_random)``; ``p_value_matched`` is the same test against the sets matched
also on activation mass and weight difference (the null that a transplant's size cannot
explain), with ``smd_*`` saying how well each null matches; ``p_value_redundant`` tests
"effective beats redundant" by flipping the signs of the per-prompt differences. The gaps
carry paired bootstrap intervals (effective minus the per-prompt mean over random sets).
``mde`` is the smallest true gap the random-set test detects with 80% power at size
``1 - level``: ``(z + z_0.8)`` times the spread of the null (which holds both the prompts'
noise and the sets' own variation).

What the test can see: ``supervised_delta`` is the change the supervised positive control
makes at the same k. When its interval holds 0, ``verdict`` says the test cannot see at this
k and the NEX cells are uninformative; ``ceiling_delta`` (every unit of the differing layers)
gives the most a transplant can do, and ``effective_share_of_ceiling`` reads the effective
set's change as a share of it.
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

from nex_causal.intervene.cells import RANDOM_KINDS

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
    """Per-prompt ``outcome`` of one (intervention, k): ``effective`` and ``redundant`` (and ``supervised``,
    ``ceiling`` where the grid has them) [n_prompts], ``random`` and ``matched`` [n_sets, n_prompts] (the sets
    that measured it)."""
    def single(kind: str, kk: int | None = k) -> list:
        return [c for c in cells if c.intervention == intervention and c.kind == kind and (kk is None or c.k == kk)]

    n = len(results["baseline"][outcome])
    effective, redundant = single("effective")[0], single("redundant")[0]
    out = {"effective": results[effective.name][outcome], "redundant": results[redundant.name][outcome],
           "sizes": np.array([len(effective.neurons), len(redundant.neurons)]),
           "random_ties": np.array([effective.neurons.random_ties, redundant.neurons.random_ties])}
    for kind in RANDOM_KINDS:
        out[kind] = np.array([results[c.name][outcome] for c in single(kind) if outcome in results[c.name]]
                             ).reshape(-1, n)
    for kind, kk in (("supervised", k), ("ceiling", None)):
        if (found := single(kind, kk)) and outcome in results[found[0].name]:
            out[kind] = results[found[0].name][outcome]
    return out


def pair_gaps(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-prompt gaps of one (intervention, k, outcome) from ``kind_values``: effective minus each null's mean
    (layer-matched ``random``, covariate-``matched``), and effective minus redundant."""
    gaps = {"effective_minus_redundant": values["effective"] - values["redundant"]}
    for kind in RANDOM_KINDS:
        if len(values[kind]):
            gaps[f"effective_minus_{kind}"] = values["effective"] - values[kind].mean(axis=0)
    return gaps


def gap_summary(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]], config: GridConfig,
                ks: Sequence[int], saturation: int | None = None,
                quality: Mapping[int, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """Per (intervention, k, outcome): each kind's change, the nulls' quantiles, gaps, p-values, the MDE, what the
    positive control and the ceiling did, and how well the nulls match (``quality``: per k)."""
    tail = (1 - config.level) / 2
    rows = []
    for intervention in config.interventions:
        for k in ks:
            for outcome in config.outcomes:
                base = results["baseline"][outcome]
                values = kind_values(cells, results, intervention, k, outcome)
                effective, redundant = values["effective"] - base, values["redundant"] - base
                row = {"intervention": intervention, "k": k, "dose": dose_label(k, saturation), "outcome": outcome,
                       "n_prompts": len(base), "n_random": len(values["random"]),
                       "n_matched": len(values["matched"]), "effective_size": int(values["sizes"][0]),
                       "redundant_size": int(values["sizes"][1]),
                       "effective_random_ties": int(values["random_ties"][0]),
                       "redundant_random_ties": int(values["random_ties"][1]), "baseline_value": float(base.mean()),
                       "effective_delta": float(effective.mean()), "redundant_delta": float(redundant.mean())}
                gaps = pair_gaps(values)
                gap, low, high = _interval(gaps["effective_minus_redundant"], config)
                row.update(effective_minus_redundant=gap, effective_minus_redundant_low=low,
                           effective_minus_redundant_high=high,
                           p_value_redundant=sign_flip_p_value(gaps["effective_minus_redundant"], seed=config.seed))
                for kind, suffix in (("random", ""), ("matched", "_matched")):
                    if not len(values[kind]):
                        continue
                    means = (values[kind] - base).mean(axis=1)
                    gap, low, high = _interval(gaps[f"effective_minus_{kind}"], config)
                    spread = float(means.std(ddof=1)) if len(means) > 1 else float("nan")
                    row.update({f"{kind}_delta": float(means.mean()), f"{kind}_low": float(np.quantile(means, tail)),
                                f"{kind}_high": float(np.quantile(means, 1 - tail)),
                                f"effective_minus_{kind}": gap, f"effective_minus_{kind}_low": low,
                                f"effective_minus_{kind}_high": high,
                                f"p_value{suffix}": null_p_value(float(effective.mean()), means),
                                f"p_floor{suffix}": 1 / (1 + len(means)),
                                f"mde{suffix}": minimum_detectable_effect(spread, level=config.level, power=POWER)})
                row.update((quality or {}).get(k, {}))
                row.update(_positive_control(values, base, config))
                rows.append(row)
    return pd.DataFrame(rows)


def _positive_control(values: Mapping[str, np.ndarray], base: np.ndarray, config: GridConfig) -> dict:
    """The supervised set's change and whether it moved the outcome (its interval excludes 0), the verdict on the
    NEX cells that follows, and the ceiling's change with the effective set's share of it."""
    out: dict = {}
    if "supervised" in values:
        delta, low, high = _interval(values["supervised"] - base, config)
        moved = bool(low > 0 or high < 0)
        out.update(supervised_delta=delta, supervised_low=low, supervised_high=high, supervised_moved=moved,
                   verdict="informative" if moved else "the test cannot see at this k: the supervised positive "
                   "control did not move the outcome, so the NEX cells are uninformative")
    if "ceiling" in values:
        delta, low, high = _interval(values["ceiling"] - base, config)
        share = float((values["effective"] - base).mean() / delta) if delta != 0 else float("nan")
        out.update(ceiling_delta=delta, ceiling_low=low, ceiling_high=high, effective_share_of_ceiling=share)
    return out
