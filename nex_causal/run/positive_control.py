"""The positive control: NEX on an organism whose exploration is planted, against predictions written beforehand.

The config names the planted levels (``levels``: a variant and its detour rate p), the
variants that differ from the efficient one by damage alone (``damage``), the
under-exploring one (``under``), and the predictions (``predictions``): each a measure
(``run.measures.MEASURES``), a bound it should meet and, in words, what it means. The stage
measures every prediction under the run's NEX settings and writes, whatever comes out:

    positive_control             each prediction: value, an interval that contains it, the
                                 permutation p of rank statistics, and whether it holds (a
                                 prediction without a bound is "reported", never "holds")
    positive_control_units       every unit scorer's AUROC of the real families' planted units
                                 against the decoys', label-free and supervised marked
    positive_control_responses   per response and family opened: used, rejected before the hit,
                                 or a detour, with NEX's credit and the label-free stories
    positive_control_nulls       every draw of every negative control (``n_controls`` each)
    positive_control_departures  the NEX-dependent predictions again under each named departure
                                 from the reference (``departures``), so a reader sees which
                                 part of the method carries the signal
    positive_control_variants    each variant's accuracy, NEX, strategies opened, phase agreement
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nex_causal.errors import NexError
from nex_causal.io import write_table
from nex_causal.run.layout import RunDir
from nex_causal.run.control import Control, Measured
from nex_causal.run.measures import MEASURES
from nex_causal.run.stages import stage

DEPARTURES = {  # the named departures from the reference NEX (nex.config), each one field changed
    "skip_opening": {"skip_opening": True},
    "eff": {"weighting": "eff"},
    "eff-red": {"weighting": "eff-red"},
    "prompt_seen": {"prompt_seen": True},
}


@dataclass(frozen=True)
class Prediction:
    """A prediction written before the run: ``measure`` should be at least ``at_least`` and/or at most ``at_most``."""

    id: str = field(metadata={"help": "a short name"})
    statement: str = field(metadata={"help": "what it means, in words"})
    measure: str = field(metadata={"help": "the measure (run.measures.MEASURES)"})
    at_least: float | None = field(default=None, metadata={"help": "lower bound the value should reach"})
    at_most: float | None = field(default=None, metadata={"help": "upper bound the value should stay under"})

    def verdict(self, m: Measured) -> str:
        """``yes`` or ``NO`` by the value against the bounds, ``reported`` when there is no bound."""
        if self.at_least is None and self.at_most is None:
            return "reported"
        meets = ((self.at_least is None or m.value >= self.at_least) and (self.at_most is None or m.value <= self.at_most)
                 and np.isfinite(m.value))
        return "yes" if meets else "NO"

    def clears(self, m: Measured) -> bool | None:
        """Whether the whole interval meets the bounds (None without a bound or an interval)."""
        if (self.at_least is None and self.at_most is None) or not np.isfinite([m.low, m.high]).all():
            return None
        return bool((self.at_least is None or m.low >= self.at_least) and (self.at_most is None or m.high <= self.at_most))

    @property
    def bound(self) -> str:
        return " and ".join(b for b in (f">= {self.at_least:g}" if self.at_least is not None else "",
                                        f"<= {self.at_most:g}" if self.at_most is not None else "") if b) or "none"


@dataclass(frozen=True)
class PositiveControlConfig:
    """The planted family and the predictions, declared before the run."""

    levels: list[str] = field(default_factory=lambda: ["efficient=0", "redundant-0.05=0.05", "redundant-0.1=0.1",
                                                       "redundant-0.15=0.15", "redundant-0.2=0.2",
                                                       "redundant-0.25=0.25", "redundant-0.35=0.35",
                                                       "redundant-0.5=0.5"],
                              metadata={"help": "the planted levels, variant=p (detour rate)"})
    damage: list[str] = field(default_factory=lambda: ["efficient", "noise-0.05", "noise-0.1", "noise-0.15",
                                                       "noise-0.2", "dare-0.5", "dare-0.3"],
                              metadata={"help": "variants that differ by damage alone (the negative control)"})
    under: str = field(default="under", metadata={"help": "the under-exploring variant"})
    predictions: list[Prediction] = field(default_factory=list, metadata={"help": "the pre-registered predictions"})
    departures: list[str] = field(default_factory=lambda: list(DEPARTURES), metadata={
        "help": "named departures from the reference NEX whose predictions are measured too (prompt_seen needs a "
                "capture with record_prompt)"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples"})
    n_controls: int = field(default=50, metadata={"help": "draws of each negative control"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and the negative controls"})
    k: int = field(default=64, metadata={"help": "size of the effective and redundant sets set against the planted "
                                                 "units"})

    def __post_init__(self) -> None:
        """Read predictions given as mappings (YAML) and check every name before anything runs."""
        read = []
        for i, p in enumerate(self.predictions):
            if isinstance(p, dict):
                known = {f.name for f in dataclasses.fields(Prediction)}
                if unknown := sorted(set(p) - known):
                    raise NexError(f"positive_control prediction {i + 1} has unknown key {unknown[0]!r}: "
                                   f"use {', '.join(sorted(known))}")
                try:
                    p = Prediction(**p)
                except TypeError:
                    raise NexError(f"positive_control prediction {i + 1} needs id, statement and measure") from None
            if p.measure not in MEASURES:
                raise NexError(f"positive_control prediction {p.id!r} names unknown measure {p.measure!r}: "
                               f"use one of {', '.join(MEASURES)}")
            read.append(p)
        object.__setattr__(self, "predictions", read)
        if unknown := [d for d in self.departures if d not in DEPARTURES]:
            raise NexError(f"unknown departure {unknown[0]!r}: use any of {', '.join(DEPARTURES)}")
        for item in self.levels:
            name, _, rate = item.partition("=")
            try:
                float(rate)
            except ValueError:
                raise NexError(f"positive_control level {item!r} is not variant=p: write e.g. redundant-0.1=0.1") \
                    from None
        if self.n_controls < 1:
            raise NexError(f"n_controls must be at least 1, got {self.n_controls}")


def prediction_rows(control: Control, predictions: list[Prediction], only_departing: bool = False) -> list[dict]:
    """Each prediction measured on ``control``: value, interval, p, verdict (``only_departing``: the NEX-dependent
    ones)."""
    rows = []
    for p in predictions:
        kind = MEASURES[p.measure]
        if only_departing and not kind.departs:
            continue
        m = kind.measure(control)
        rows.append({"id": p.id, "prediction": p.statement, "measure": p.measure, "predicted": p.bound,
                     "value": m.value, "low": m.low, "high": m.high, "p": m.p, "p_method": m.p_method,
                     "holds": p.verdict(m), "interval_clears": p.clears(m), "detail": m.detail})
    return rows


def unit_table(c: Control) -> pd.DataFrame:
    """Every unit score's AUROC of the real families' planted units against the decoys', and of its top-k, the share
    in the real blocks (its bottom-k: in the decoys')."""
    from nex_causal.run.control import LABEL_FREE

    rows = []
    for name, (scores, supervised) in c.unit_scores.items():
        m = c.unit_auroc(scores)
        rows.append({"scorer": name, "kind": "supervised" if supervised else (
            "label-free story" if name in LABEL_FREE else "label-free"), "auroc": m.value, "low": m.low,
            "high": m.high, "detail": m.detail})
    return pd.DataFrame(rows)


def null_table(c: Control) -> pd.DataFrame:
    """Every draw of every negative control that the run measured, with NEX's observed AUROC beside it."""
    from nex_causal.nex.controls import CONTROLS

    observed = c.unit_auroc(c.unit_scores["nex-effective"][0]).value
    frames = [pd.DataFrame({"control": name, "draw": np.arange(len(values)), "auroc": values, "observed": observed})
              for name in CONTROLS if (values := c.drawn.get(name)) is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["control", "draw", "auroc", "observed"])


def departure_table(reference: Control, main: list[dict]) -> pd.DataFrame:
    """The NEX-dependent predictions under the reference NEX (``main``'s rows) and each named departure
    (``DEPARTURES``); a departure the caches cannot take (prompt_seen without a record of the prompt's keys) is a
    row saying why."""
    config = reference.config
    departing = {p.id for p in config.predictions if MEASURES[p.measure].departs}
    rows = [{"departure": "reference", **row} for row in main if row["id"] in departing]
    for name in config.departures:
        nex = dataclasses.replace(reference.nex, **DEPARTURES[name])
        try:
            measured = prediction_rows(reference.departed(nex), config.predictions, only_departing=True)
        except NexError as err:
            rows.append({"departure": name, "id": "", "holds": "n/a", "detail": str(err)})
            continue
        rows += [{"departure": name, **row} for row in measured]
    return pd.DataFrame(rows)


def variant_table(c: Control) -> pd.DataFrame:
    """Per variant: accuracy, answered share (a looping response never reaches ``#``) and loop rate, NEX,
    strategies opened, HMM phase agreement with the truth, the unit AUROC of its own weights, and the opening
    cycle's share of its Eff credit (``nex.diagnostics``)."""
    from nex_causal.nex.diagnostics import diagnose_credit
    from nex_causal.zoo.groundtruth import phase_agreement, phase_pairs, strategies_opened

    rows = []
    for v, cache in c.caches.items():
        overall, (low, high) = phase_agreement(phase_pairs(cache, c.nex), n_boot=200, seed=c.config.seed)
        units = c.unit_auroc(c.weights[v])
        credit = diagnose_credit(cache, c.weights[v], c.nex).summary()
        rows.append({"variant": v, "p": c.levels.get(v, np.nan), "accuracy": c.pools[v].correct.mean(),
                     "answered": cache.responses["answer"].notna().mean(), "loop_rate": credit["loop_rate"],
                     "nex": float(np.nanmean(c.gmf[v])), "strategies_opened": strategies_opened(cache).mean(),
                     "phase_kappa": overall.kappa, "phase_kappa_low": low, "phase_kappa_high": high,
                     "unit_auroc": units.value, "unit_auroc_low": units.low, "unit_auroc_high": units.high,
                     "opening_eff_share": credit["opening_eff_share"], "damage_only": v in c.config.damage})
    return pd.DataFrame(rows)


@stage("positive_control", needs=("nex", "transfer"), section=PositiveControlConfig, default=None,
       run_level=("nex",))
def positive_control(run: RunDir) -> None:
    """The pre-registered predictions of the positive control, measured, with the unit scorers side by side, the
    responses' ground truth, the negative controls as distributions, the departures and each variant's measures."""
    config = run.config.positive_control
    if not config.predictions:
        raise NexError("positive_control has no predictions: write them in the config before the run")
    control = Control(run, config)
    section = dataclasses.asdict(config)
    main = prediction_rows(control, config.predictions)
    write_table(pd.DataFrame(main), run.tables("positive_control"), config=section)
    write_table(unit_table(control), run.tables("positive_control_units"), config=section)
    write_table(control.blocks, run.tables("positive_control_responses"), config=section)
    write_table(null_table(control), run.tables("positive_control_nulls"), config=section)
    write_table(departure_table(control, main), run.tables("positive_control_departures"), config=section)
    write_table(variant_table(control), run.tables("positive_control_variants"), config=section)
