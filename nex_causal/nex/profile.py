"""Can NEX see anything in this cache? The cache's profile, response by response.

NEX credits neurons only through explore-to-exploit cycles whose reuse share differs from
the median of the same response, so a response with one cycle credits nothing but float32
rounding, and a cache whose responses touch most of the model within a few rows has no
novelty left to segment. The profile measures what decides this, per response, and
summarises it by medians with quartiles:

    rows_per_response, tokens_per_response, keys_per_row
    distinct_neurons_per_response, neuron_coverage   (distinct neurons / the model's neurons)
    explore_share                                    (share of usable rows labelled E)
    cycles_per_response, crediting_cycles_per_response (|progress| beyond float32 rounding)
    crediting_response_share                         (responses with a crediting cycle)
    novelty_decay                                    (mean slope of the last quarter of rows / the first)

plus counts of float16 mass saturated at 65504 or underflowed to 0. ``diagnose`` names the
properties that make NEX degenerate on a profile; ``nex-causal inspect`` prints both beside
the reference example's. Everything comes from the summaries learning keeps of each
response (``nex.learn.SUMMARY``), so a profile reads nothing more from the cache, and its
medians need no pandas (``nex train`` warns from them without importing it); the table of
every response is built when asked for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.nex.config import NexConfig
from nex_causal.nex.credit import ResponseTrace
from nex_causal.nex.learn import SUMMARY, Calibration, learn

if TYPE_CHECKING:
    import pandas as pd

PROFILE = ("rows_per_response", "tokens_per_response", "keys_per_row", "distinct_neurons_per_response",
           "neuron_coverage", "explore_share", "cycles_per_response", "crediting_cycles_per_response",
           "crediting_response_share", "novelty_decay")


def response_table(summaries: np.ndarray, n_neurons: int | None) -> pd.DataFrame:
    """One row per response: every per-response quantity of the profile, from learning's summaries
    (``nex.learn.SUMMARY``); distinct neurons are those of the usable rows."""
    import pandas as pd

    s = pd.DataFrame(summaries, columns=list(SUMMARY))
    with np.errstate(invalid="ignore", divide="ignore"):
        keys_per_row = s["entries"] / s["rows"]
    return pd.DataFrame({
        "response": np.arange(len(s)), "rows": s["rows"].astype(int), "tokens": s["tokens"].astype(int),
        "keys_per_row": keys_per_row, "distinct_neurons": s["neurons"].astype(int),
        "neuron_coverage": s["neurons"] / n_neurons if n_neurons else np.nan, "explore_share": s["explore_share"],
        "cycles": s["cycles"].astype(int), "crediting_cycles": s["crediting_cycles"].astype(int),
        "novelty_decay": s["novelty_decay"],
    })


@dataclass(frozen=True)
class Profile:
    """A cache's profile: learning's ``summaries`` (one row each), ``medians`` with ``quartiles``, float16 counts
    (of the calibration responses' row masses); ``responses`` is the per-response table."""

    path: str
    n_responses: int
    n_neurons: int | None
    summaries: np.ndarray
    medians: dict[str, float]
    quartiles: dict[str, tuple[float, float]]
    saturated: int
    underflowed: int

    @cached_property
    def responses(self) -> pd.DataFrame:
        table = response_table(self.summaries, self.n_neurons)
        table["credits"] = table["crediting_cycles"] > 0
        return table

    def summary(self) -> dict[str, float | int | str | None]:
        """The JSON object ``inspect --json`` prints: the profile's medians by name, and its size."""
        return {**self.medians, "n_responses": self.n_responses, "n_neurons": self.n_neurons,
                "float16_saturated": self.saturated, "float16_underflowed": self.underflowed, "cache": self.path}


def per_response(summaries: np.ndarray, n_neurons: int | None) -> dict[str, np.ndarray]:
    """Each profile quantity (but the crediting share) per response, from learning's summaries."""
    s = dict(zip(SUMMARY, summaries.T))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"rows_per_response": s["rows"], "tokens_per_response": s["tokens"],
                "keys_per_row": s["entries"] / s["rows"], "distinct_neurons_per_response": s["neurons"],
                "neuron_coverage": s["neurons"] / n_neurons if n_neurons else np.full(len(summaries), np.nan),
                "explore_share": s["explore_share"], "cycles_per_response": s["cycles"],
                "crediting_cycles_per_response": s["crediting_cycles"], "novelty_decay": s["novelty_decay"]}


def profile(cache: SparseCache, *, n_neurons: int | None = None, config: NexConfig = NexConfig(),
            progress: bool = False) -> Profile:
    """The profile of ``cache`` under NEX's ``config``; ``n_neurons`` defaults to the capture's."""
    if cache.n_responses == 0:
        raise NexError(f"cache {cache.path} holds no response: nothing to profile")
    return profile_of(cache, learn(cache, config, progress=progress), n_neurons)


def profile_of(cache: SparseCache, calibration: Calibration, n_neurons: int | None = None) -> Profile:
    """The profile of ``cache`` from what learning on it saw (``learn``'s summaries: no second pass)."""
    n_neurons = n_neurons or cache.n_neurons
    summaries = calibration.summaries
    medians, quartiles = {}, {}
    for name, values in per_response(summaries, n_neurons).items():
        values = values[np.isfinite(values)]
        medians[name] = float(np.median(values)) if values.size else float("nan")
        quartiles[name] = (tuple(float(q) for q in np.quantile(values, [0.25, 0.75])) if values.size
                           else (float("nan"), float("nan")))
    column = dict(zip(SUMMARY, summaries.T))
    medians["crediting_response_share"] = float(np.mean(column["crediting_cycles"] > 0))
    quartiles["crediting_response_share"] = (medians["crediting_response_share"],) * 2
    return Profile(str(cache.path), cache.n_responses, n_neurons, summaries, medians, quartiles,
                   int(column["saturated"].sum()), int(column["underflowed"].sum()))


def slope_curve(traces: list[ResponseTrace], n_bins: int = 10) -> pd.DataFrame:
    """Quartiles over responses of the novelty slope in each tenth (``n_bins``) of a response's rows.

    Each response's rows are binned by relative position (row / rows); its slope in a bin is
    the mean of its rows' slopes there. Columns: ``bin``, ``position`` (the bin's centre),
    ``q25``, ``median``, ``q75``, ``n``.
    """
    import pandas as pd

    per_bin: list[list[float]] = [[] for _ in range(n_bins)]
    for trace in traces:
        n = len(trace.slopes)
        if n < n_bins:
            continue
        where = np.minimum((np.arange(n) * n_bins) // n, n_bins - 1)
        for b in range(n_bins):
            per_bin[b].append(float(np.mean(trace.slopes[where == b])))
    rows = [{"bin": b, "position": (b + 0.5) / n_bins, "q25": np.quantile(v, 0.25) if v else np.nan,
             "median": np.median(v) if v else np.nan, "q75": np.quantile(v, 0.75) if v else np.nan, "n": len(v)}
            for b, v in enumerate(per_bin)]
    return pd.DataFrame(rows)


def diagnose(p: Profile) -> list[str]:
    """The properties of a profile that make NEX degenerate, one line each (empty: none)."""
    m, found = p.medians, []
    if m["cycles_per_response"] < 2:
        found.append(f"median {m['cycles_per_response']:g} cycle per response: a response with one cycle "
                     "credits nothing (its progress is its share minus itself)")
    if m["crediting_response_share"] < 0.5:
        found.append(f"{100 * (1 - m['crediting_response_share']):.0f}% of responses credit nothing")
    if m["rows_per_response"] < 20:
        found.append(f"median {m['rows_per_response']:g} rows per response: too few for a two-state HMM to "
                     "find phases; use smaller windows or longer traces")
    if np.isfinite(m["neuron_coverage"]) and m["neuron_coverage"] > 0.3:
        found.append(f"a response touches {100 * m['neuron_coverage']:.0f}% of the model's neurons: novelty "
                     "is spent within a few rows; use a sparser selection (a smaller top-k)")
    if np.isfinite(m["novelty_decay"]) and m["novelty_decay"] < 0.05:
        found.append(f"novelty decays to {m['novelty_decay']:.2f} of its start: later rows recruit almost "
                     "nothing new")
    if p.saturated:
        found.append(f"{p.saturated} row masses saturated float16 at 65504: use a smaller window or scale")
    return found


def degeneracy_warning(p: Profile) -> str | None:
    """One line saying why NEX is degenerate on the profiled cache, or None when it is not."""
    problems = diagnose(p)
    return f"{p.path}: NEX is degenerate on this cache: {'; '.join(problems)}" if problems else None


def profile_frame(profiles: dict[str, Profile]) -> pd.DataFrame:
    """Medians (with quartiles) of several profiles side by side, one column each."""
    import pandas as pd

    rows = {}
    for label, p in profiles.items():
        rows[label] = {name: f"{p.medians[name]:.3g} [{p.quartiles[name][0]:.3g}, {p.quartiles[name][1]:.3g}]"
                       if name != "crediting_response_share" else f"{p.medians[name]:.2f}" for name in PROFILE}
        rows[label]["n_responses"] = str(p.n_responses)
    return pd.DataFrame(rows)


def reference_cache(shared: Path) -> SparseCache | None:
    """The authors' example cache (one Qwen3-4B response), when ``shared`` holds it."""
    path = shared / "reference" / "nex_example_cache"
    if not path.is_dir():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference layout has no integrity record; it is the reference
        return SparseCache.open(path)
