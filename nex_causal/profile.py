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
the reference example's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.nex import NexConfig, learn
from nex_causal.nex.credit import ResponseTrace

FLOAT16_MAX = 65504.0
PROGRESS_TOLERANCE = 1e-6  # a lone cycle's progress is the float32 residue of its share (< 1e-7)
PROFILE = ("rows_per_response", "tokens_per_response", "keys_per_row", "distinct_neurons_per_response",
           "neuron_coverage", "explore_share", "cycles_per_response", "crediting_cycles_per_response",
           "crediting_response_share", "novelty_decay")


def novelty_decay(slopes: np.ndarray) -> float:
    """Mean novelty slope of the last quarter of rows over that of the first quarter (NaN when undefined).

    0.18 on the reference example: a real trace still recruits new neurons at the end, at a
    fifth of its opening rate.
    """
    n = len(slopes) // 4
    if n < 1:
        return float("nan")
    first, last = float(np.mean(slopes[:n])), float(np.mean(slopes[-n:]))
    return last / first if first > 0 else float("nan")


def response_table(cache: SparseCache, traces: list[ResponseTrace], n_neurons: int | None) -> pd.DataFrame:
    """One row per response: every per-response quantity of the profile."""
    rows_of = np.diff(np.asarray(cache.sample_row_ptr))
    tokens = np.diff(np.asarray(cache.token_row_ptr))
    entries = np.diff(np.asarray(cache.row_ptr))
    sample_ptr, base_ptr = np.asarray(cache.sample_row_ptr), np.asarray(cache.base_row_ptr)
    out = []
    for r, trace in enumerate(traces):
        first, stop = sample_ptr[r], sample_ptr[r + 1]
        keys, mass = cache.base(r)
        distinct = int(np.unique(keys[(mass > 0) & ((keys >> 16) != 255)]).size)
        crediting = sum(1 for c in trace.cycles if c.kind != "none" and abs(c.progress) > PROGRESS_TOLERANCE)
        out.append({
            "response": r, "rows": int(rows_of[r]), "tokens": int(tokens[first:stop].sum()),
            "keys_per_row": float(entries[first:stop].mean()) if stop > first else float("nan"),
            "distinct_neurons": distinct,
            "neuron_coverage": distinct / n_neurons if n_neurons else float("nan"),
            "explore_share": float(np.mean(trace.explore)) if len(trace.explore) else float("nan"),
            "cycles": len(trace.cycles), "crediting_cycles": crediting,
            "novelty_decay": novelty_decay(trace.slopes),
            "base_entries": int(base_ptr[r + 1] - base_ptr[r]),
        })
    return pd.DataFrame(out)


@dataclass(frozen=True)
class Profile:
    """A cache's profile: ``responses`` (one row each), ``medians`` with ``quartiles``, float16 counts."""

    path: str
    n_responses: int
    n_neurons: int | None
    responses: pd.DataFrame
    medians: dict[str, float]
    quartiles: dict[str, tuple[float, float]]
    saturated: int
    underflowed: int

    def summary(self) -> dict[str, float | int | str | None]:
        """The JSON object ``inspect --json`` prints: the profile's medians by name, and its size."""
        return {**self.medians, "n_responses": self.n_responses, "n_neurons": self.n_neurons,
                "float16_saturated": self.saturated, "float16_underflowed": self.underflowed, "cache": self.path}


COLUMN = {"rows_per_response": "rows", "tokens_per_response": "tokens", "keys_per_row": "keys_per_row",
          "distinct_neurons_per_response": "distinct_neurons", "neuron_coverage": "neuron_coverage",
          "explore_share": "explore_share", "cycles_per_response": "cycles",
          "crediting_cycles_per_response": "crediting_cycles", "novelty_decay": "novelty_decay"}


def profile(cache: SparseCache, *, n_neurons: int | None = None, config: NexConfig = NexConfig(),
            progress: bool = False) -> Profile:
    """The profile of ``cache`` under NEX's ``config``; ``n_neurons`` defaults to the capture's."""
    if cache.n_responses == 0:
        raise NexError(f"cache {cache.path} holds no response: nothing to profile")
    return profile_of(cache, learn(cache, config, progress=progress, keep_traces=True).traces, n_neurons)


def profile_of(cache: SparseCache, traces: list[ResponseTrace], n_neurons: int | None = None) -> Profile:
    """The profile of ``cache`` from its responses' traces (``learn(..., keep_traces=True)``)."""
    n_neurons = n_neurons or cache.n_neurons
    table = response_table(cache, traces, n_neurons)
    table["credits"] = table["crediting_cycles"] > 0
    medians, quartiles = {}, {}
    for name, column in COLUMN.items():
        values = table[column].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        medians[name] = float(np.median(values)) if values.size else float("nan")
        quartiles[name] = (tuple(float(q) for q in np.quantile(values, [0.25, 0.75])) if values.size
                           else (float("nan"), float("nan")))
    medians["crediting_response_share"] = float(table["credits"].mean())
    quartiles["crediting_response_share"] = (medians["crediting_response_share"],) * 2
    mass = np.asarray(cache.w_sum)
    return Profile(str(cache.path), cache.n_responses, n_neurons, table, medians, quartiles,
                   int((np.abs(mass) == FLOAT16_MAX).sum()), int((mass == 0).sum()))


def slope_curve(traces: list[ResponseTrace], n_bins: int = 10) -> pd.DataFrame:
    """Quartiles over responses of the novelty slope in each tenth (``n_bins``) of a response's rows.

    Each response's rows are binned by relative position (row / rows); its slope in a bin is
    the mean of its rows' slopes there. Columns: ``bin``, ``position`` (the bin's centre),
    ``q25``, ``median``, ``q75``, ``n``.
    """
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
    rows = {}
    for label, p in profiles.items():
        rows[label] = {name: f"{p.medians[name]:.3g} [{p.quartiles[name][0]:.3g}, {p.quartiles[name][1]:.3g}]"
                       if name != "crediting_response_share" else f"{p.medians[name]:.2f}" for name in PROFILE}
        rows[label]["n_responses"] = str(p.n_responses)
    return pd.DataFrame(rows)


def reference_profile(shared: Path) -> Profile | None:
    """The profile of the authors' example response (Qwen3-4B: 36 x 9728 neurons), when it is present."""
    path = shared / "reference" / "nex_example_cache"
    return profile(SparseCache.open(path), n_neurons=36 * 9728) if path.is_dir() else None
