"""The tables of a transfer or ablation grid, from its cells' per-prompt outcomes.

``outcome_table``: one row per (cell, outcome) with the mean, its change against the
untouched model on the same prompts (paired), percentile-bootstrap intervals over prompts,
and the set's per-layer composition.

``gap_summary``: one row per (intervention, k, outcome), for NEX's sets (the ``nex-effective``
and ``nex-redundant`` scorers). The null is the distribution of the mean change over the
random sets matched to the effective set layer by layer. ``p_value`` tests "effective beats
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

What the test can see: ``ceiling_delta`` (every MLP unit of the differing layers) is the most a
neuron transplant can do, ``ceiling_attention_delta``, ``ceiling_embeddings_delta``,
``ceiling_norms_delta`` and ``donor_delta`` say where the rest of the difference lives. The
positive control (``positive_control_delta``: the sets of a supervised scorer, the learned
transplant mask by default) counts as moving the outcome only in the ceiling's direction and by
at least max(MDE, 10% of the ceiling), its interval excluding 0 (``moved``); where it does not,
``verdict`` says the test cannot see at this k and the NEX cells are uninformative.

``scorer_table``: every scorer's set at every dose, its change as a share of the ceiling, and
its p-values against both nulls (the nulls are matched to NEX's effective set, so they are the
same band for every scorer).
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
    from nex_causal.intervene.neuron_sets import NeuronSet

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


EFFECTIVE, REDUNDANT = "nex-effective", "nex-redundant"  # the scorers whose sets the summary names


def kind_values(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]], intervention: str, k: int,
                outcome: str, config: GridConfig) -> dict[str, np.ndarray]:
    """Per-prompt ``outcome`` of one (intervention, k): ``effective`` and ``redundant`` (NEX's sets, where scored),
    ``positive_control`` (the configured scorer's set) and ``ceiling`` (every MLP unit of the differing layers) where
    the grid has them [n_prompts]; ``random`` and ``matched`` [n_sets, n_prompts] (the sets that measured it)."""
    def single(kind: str, kk: int | None = k) -> list:
        return [c for c in cells if c.intervention == intervention and c.kind == kind and (kk is None or c.k == kk)
                and outcome in results[c.name]]

    n = len(results["baseline"][outcome])
    out: dict[str, np.ndarray] = {}
    for name, kind in (("effective", EFFECTIVE), ("redundant", REDUNDANT), ("positive_control", control_of(config)),
                       ("ceiling", "ceiling-mlp")):
        if found := single(kind, None if kind == "ceiling-mlp" else k):
            out[name] = results[found[0].name][outcome]
            out[f"{name}_size"] = np.array(len(found[0].neurons))
            out[f"{name}_random_ties"] = np.array(found[0].neurons.random_ties)
    for kind in RANDOM_KINDS:
        out[kind] = np.array([results[c.name][outcome] for c in single(kind)]).reshape(-1, n)
    return out


def control_of(config: GridConfig) -> str:
    """The scorer whose sets are the positive control: the configured one, ``atp`` in a grid without a donor."""
    return config.positive_control if config.experiment == "transfer" or config.positive_control != "mask" else "atp"


def pair_gaps(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-prompt gaps of one (intervention, k, outcome) from ``kind_values``: NEX's effective set minus each null's
    mean (layer-matched ``random``, covariate-``matched``), and minus its redundant set."""
    gaps = {}
    if "effective" not in values:
        return gaps
    if "redundant" in values:
        gaps["effective_minus_redundant"] = values["effective"] - values["redundant"]
    for kind in RANDOM_KINDS:
        if len(values[kind]):
            gaps[f"effective_minus_{kind}"] = values["effective"] - values[kind].mean(axis=0)
    return gaps


def _single_deltas(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]], outcome: str,
                   config: GridConfig) -> dict:
    """The changes the whole donor and each ceiling outside the MLP units make (one cell each per grid)."""
    out = {}
    base = results["baseline"][outcome]
    for cell in cells:
        if (cell.kind == "donor" or cell.part) and outcome in results[cell.name]:
            name = "donor" if cell.kind == "donor" else cell.kind.replace("-", "_")
            out[f"{name}_delta"], out[f"{name}_low"], out[f"{name}_high"] = _interval(
                results[cell.name][outcome] - base, config)
    return out


def gap_summary(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]], config: GridConfig,
                ks: Sequence[int], saturation: int | None = None,
                quality: Mapping[int, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """Per (intervention, k, outcome): NEX's sets' changes, the nulls' quantiles, gaps, p-values, the MDE, what the
    positive control and the ceilings did and the verdict, and how well the nulls match (``quality``: per k)."""
    tail = (1 - config.level) / 2
    rows = []
    for intervention in config.interventions:
        for k in ks:
            for outcome in config.outcomes:
                base = results["baseline"][outcome]
                values = kind_values(cells, results, intervention, k, outcome, config)
                row = {"intervention": intervention, "k": k, "dose": dose_label(k, saturation), "outcome": outcome,
                       "n_prompts": len(base), "n_random": len(values["random"]),
                       "n_matched": len(values["matched"]), "baseline_value": float(base.mean())}
                for kind in ("effective", "redundant"):
                    if kind in values:
                        row.update({f"{kind}_size": int(values[f"{kind}_size"]),
                                    f"{kind}_random_ties": int(values[f"{kind}_random_ties"]),
                                    f"{kind}_delta": float((values[kind] - base).mean())})
                gaps = pair_gaps(values)
                if "effective_minus_redundant" in gaps:
                    gap, low, high = _interval(gaps["effective_minus_redundant"], config)
                    row.update(effective_minus_redundant=gap, effective_minus_redundant_low=low,
                               effective_minus_redundant_high=high,
                               p_value_redundant=sign_flip_p_value(gaps["effective_minus_redundant"], seed=config.seed))
                for kind, suffix in (("random", ""), ("matched", "_matched")):
                    if not len(values[kind]):
                        continue
                    means = (values[kind] - base).mean(axis=1)
                    spread = float(means.std(ddof=1)) if len(means) > 1 else float("nan")
                    row.update({f"{kind}_delta": float(means.mean()), f"{kind}_low": float(np.quantile(means, tail)),
                                f"{kind}_high": float(np.quantile(means, 1 - tail)),
                                f"p_floor{suffix}": 1 / (1 + len(means)),
                                f"mde{suffix}": minimum_detectable_effect(spread, level=config.level, power=POWER)})
                    if f"effective_minus_{kind}" in gaps:
                        gap, low, high = _interval(gaps[f"effective_minus_{kind}"], config)
                        row.update({f"effective_minus_{kind}": gap, f"effective_minus_{kind}_low": low,
                                    f"effective_minus_{kind}_high": high,
                                    f"p_value{suffix}": null_p_value(float((values["effective"] - base).mean()),
                                                                     means)})
                row.update((quality or {}).get(k, {}))
                row.update(_single_deltas(cells, results, outcome, config))
                row.update(_positive_control(values, base, config, row.get("mde", float("nan"))))
                rows.append(row)
    return pd.DataFrame(rows)


SHARE_OF_CEILING = 0.1  # the least share of the ceiling a positive control must move to count as moving


def moved(delta: float, low: float, high: float, direction: float, threshold: float) -> bool:
    """Whether a change counts as moving the outcome: its interval excludes 0 on the side of ``direction`` and its
    size in that direction reaches ``threshold``."""
    return bool((low > 0 if direction > 0 else high < 0) and direction * delta >= threshold)


def _positive_control(values: Mapping[str, np.ndarray], base: np.ndarray, config: GridConfig, mde: float) -> dict:
    """The ceiling's change and NEX's share of it; the positive control's change, whether it moved the outcome, and
    the verdict on the NEX cells that follows.

    The positive control moves the outcome only in the ceiling's direction (without a ceiling: up for a transfer,
    down for an ablation) and by at least max(MDE, 10% of the ceiling): an interval that merely excludes 0, or a
    change the other way, says the test cannot see at this dose."""
    out: dict = {}
    ceiling = float("nan")
    if "ceiling" in values:
        ceiling, low, high = _interval(values["ceiling"] - base, config)
        share = float((values["effective"] - base).mean() / ceiling) if ceiling != 0 and "effective" in values \
            else float("nan")
        out.update(ceiling_delta=ceiling, ceiling_low=low, ceiling_high=high, effective_share_of_ceiling=share)
    if "positive_control" not in values:
        return out
    delta, low, high = _interval(values["positive_control"] - base, config)
    direction = np.sign(ceiling) if np.isfinite(ceiling) and ceiling != 0 else \
        (1.0 if config.experiment == "transfer" else -1.0)
    threshold = max(np.nan_to_num(mde, nan=0.0), SHARE_OF_CEILING * abs(np.nan_to_num(ceiling, nan=0.0)))
    did = moved(delta, low, high, direction, threshold)
    name = control_of(config)
    if did:
        verdict = "informative"
    elif direction * delta < 0 and (high < 0 or low > 0):
        verdict = (f"the test cannot see at this k: the positive control ({name}) moved the outcome against the "
                   "ceiling's direction")
    else:
        verdict = (f"the test cannot see at this k: the positive control ({name}) moved the outcome by {delta:+.4g}, "
                   f"less than max(MDE, {SHARE_OF_CEILING:.0%} of the ceiling) = {threshold:.4g} or not surely")
    out.update(positive_control=name, positive_control_delta=delta, positive_control_low=low,
               positive_control_high=high, positive_control_threshold=threshold, positive_control_moved=did,
               verdict=verdict)
    return out


def scorer_table(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]], config: GridConfig,
                 ks: Sequence[int], scorers: Sequence[str], truth: NeuronSet | None = None,
                 saturation: int | None = None) -> pd.DataFrame:
    """One row per (intervention, k, outcome, set kind) for every scorer, the truth and the user's sets: the change
    with its interval, its share of the ceiling (every MLP unit of the differing layers), p-values against both
    nulls, whether the scorer is supervised, and (with ``truth``) how much of the set is the truth and how much of
    the truth it holds."""
    from nex_causal.intervene.scorers import SCORERS

    rows = []
    extra = sorted({c.kind for c in cells if c.kind == "truth" or c.kind.startswith("user-")})
    for intervention in config.interventions:
        for outcome in config.outcomes:
            base = results["baseline"][outcome]
            ceiling_cells = [c for c in cells if c.kind == "ceiling-mlp" and c.intervention == intervention
                             and outcome in results[c.name]]
            ceiling = float((results[ceiling_cells[0].name][outcome] - base).mean()) if ceiling_cells else float("nan")
            for cell in cells:
                if cell.intervention != intervention or cell.kind not in (*scorers, *extra) \
                        or outcome not in results[cell.name]:
                    continue
                nulls = kind_values(cells, results, intervention, cell.k, outcome, config)
                delta, low, high = _interval(results[cell.name][outcome] - base, config)
                share = [v / ceiling if ceiling and np.isfinite(ceiling) else float("nan") for v in (delta, low, high)]
                row = {"intervention": intervention, "outcome": outcome, "set_kind": cell.kind, "k": cell.k,
                       "dose": dose_label(cell.k, saturation), "set_size": len(cell.neurons),
                       "random_ties": cell.neurons.random_ties,
                       "supervised": SCORERS[cell.kind].supervised if cell.kind in SCORERS else None,
                       "delta": delta, "delta_low": low, "delta_high": high, "ceiling_delta": ceiling,
                       "share_of_ceiling": share[0], "share_low": min(share[1:]), "share_high": max(share[1:])}
                for kind, suffix in (("random", ""), ("matched", "_matched")):
                    if len(nulls[kind]):
                        row[f"p_value{suffix}"] = null_p_value(delta, (nulls[kind] - base).mean(axis=1))
                if truth is not None:
                    inside = np.isin(cell.neurons.keys, truth.keys)
                    row["truth_precision"] = float(inside.mean()) if len(inside) else float("nan")
                    row["truth_recall"] = float(inside.sum() / len(truth)) if len(truth) else float("nan")
                rows.append(row)
    return pd.DataFrame(rows)
