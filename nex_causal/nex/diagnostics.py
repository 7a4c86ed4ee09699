"""Where NEX's credit comes from: what a researcher needs to read a GMF before trusting it.

A GMF near 1 can be a finding or a consequence of the cache's structure. These diagnostics,
per response and summarised by medians with quartiles, say which:

    opening_eff_share    share of the response's Eff credit given by its first cycle
    ends_in_explore      whether the response ends in an E run no X run follows (its neurons are never credited)
    mass_effective       share of the response's mass on neurons with w > 0 (GMF's numerator side)
    mass_redundant       share on neurons with w < 0
    mass_uncredited      share on neurons with w = 0
    lexical_novelty_e    share of E rows holding a token seen for the first time in the response
    lexical_novelty_x    the same share among X rows (E rows far above X rows: "explore" means "new token")
    loop_rate            share of rows whose last LOOP_NGRAM tokens repeat an earlier row's

and for the cache: the reuse share of each cycle by its index (how fast credit falls after
the opening cycle) and how many neurons tie at |w| = 1 in float32 (a top-k among them is a
draw, not a ranking). ``nex-causal inspect`` prints them; the profile stage writes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nex_causal.cache import SparseCache
from nex_causal.nex.config import NexConfig
from nex_causal.nex.credit import MIN_ROWS, credit, cycles
from nex_causal.nex.novelty import clean_rows, novelty
from nex_causal.nex.phases import segment

LOOP_NGRAM = 8  # tokens: a row whose last 8 tokens occurred before, ending an earlier row, repeats it
MAX_CYCLE_INDEX = 5  # reuse shares are reported for the first 5 cycles by index
COLUMNS = ("opening_eff_share", "ends_in_explore", "mass_effective", "mass_redundant", "mass_uncredited",
           "lexical_novelty_e", "lexical_novelty_x", "loop_rate")


@dataclass(frozen=True)
class CreditDiagnostics:
    """Per-response diagnostics (``responses``: a row each, ``COLUMNS``), the reuse share of each cycle by index
    (``reuse_by_cycle``: median, quartiles and count per index) and the neurons tied at |w| = 1."""

    responses: pd.DataFrame
    reuse_by_cycle: pd.DataFrame
    tied_at_one: int

    def summary(self) -> dict[str, float | int]:
        """Medians by name (``ends_in_explore`` as a share), the per-index median reuse, and the tie count."""
        out: dict[str, float | int] = {}
        for name in COLUMNS:
            values = self.responses[name].to_numpy(float)
            values = values[np.isfinite(values)]
            if name == "ends_in_explore":
                out[name] = float(values.mean()) if values.size else float("nan")
            else:
                out[name] = float(np.median(values)) if values.size else float("nan")
        for row in self.reuse_by_cycle.itertuples():
            out[f"reuse_cycle_{row.cycle}"] = float(row.median)
        out["tied_at_one"] = self.tied_at_one
        return out

    def quartiles(self) -> dict[str, tuple[float, float]]:
        out = {}
        for name in COLUMNS:
            values = self.responses[name].to_numpy(float)
            values = values[np.isfinite(values)]
            out[name] = tuple(float(q) for q in np.quantile(values, [0.25, 0.75])) if values.size else (
                float("nan"), float("nan"))
        return out


def _token_rows(token_ids: np.ndarray | None, bounds: np.ndarray) -> list[np.ndarray] | None:
    if token_ids is None or len(token_ids) < bounds[-1]:
        return None  # a cache without token ids (or from replayed text of another length) has no lexical view
    return [np.asarray(token_ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def lexical(tokens: list[np.ndarray], explore_rows: np.ndarray, exploit_rows: np.ndarray, ngram: int = LOOP_NGRAM
            ) -> tuple[float, float, float]:
    """(lexical novelty of E rows, of X rows, loop rate) of one response from each raw row's tokens."""
    seen: set[int] = set()
    first = np.zeros(len(tokens), bool)
    for j, row in enumerate(tokens):
        fresh = {int(t) for t in row} - seen
        first[j] = bool(fresh)
        seen |= fresh
    flat = np.concatenate(tokens) if tokens else np.empty(0, np.int64)
    ends = np.cumsum([len(row) for row in tokens])
    grams: set[tuple[int, ...]] = set()
    loops = np.zeros(len(tokens), bool)
    for j, end in enumerate(ends):
        if end < ngram:
            continue
        gram = tuple(int(t) for t in flat[end - ngram:end])
        loops[j] = gram in grams
        grams.add(gram)

    def share(rows: np.ndarray) -> float:
        return float(first[rows].mean()) if len(rows) else float("nan")

    return share(explore_rows), share(exploit_rows), float(loops.mean()) if len(loops) else float("nan")


def diagnose_credit(cache: SparseCache, weights: np.ndarray, config: NexConfig = NexConfig()) -> CreditDiagnostics:
    """The credit diagnostics of ``cache`` under ``config``, with ``weights`` (learned on it or elsewhere)."""
    from nex_causal.nex.annotate import window_bounds

    weights = np.asarray(weights, np.float32)
    table = cache.responses
    token_ids = table["token_ids"] if table is not None and "token_ids" in table else None
    rows_out, reuse = [], [[] for _ in range(MAX_CYCLE_INDEX)]
    for r in range(cache.n_responses):
        raw = cache.response_rows(r)
        nov = novelty(clean_rows(raw, positive_only=config.positive_only))
        out = dict.fromkeys(COLUMNS, float("nan"))
        mass = np.asarray(nov.rows.mass, np.float64)  # the usable rows' cleaned mass, as GMF reads it
        total = float(mass.sum())
        if total > 0:
            w = weights[nov.rows.keys]
            out.update(mass_effective=mass[w > 0].sum() / total, mass_redundant=mass[w < 0].sum() / total,
                       mass_uncredited=mass[w == 0].sum() / total)
        if nov.rows.n_rows >= MIN_ROWS:
            explore = segment(nov.slopes, config.rho, config.min_run, mad_rounding=config.mad_rounding).explore
            found = cycles(nov, explore)
            out["ends_in_explore"] = float(bool(explore[-1]))
            for i, c in enumerate(found[:MAX_CYCLE_INDEX]):
                if np.isfinite(c.reuse):
                    reuse[i].append(c.reuse)
            eff = [float(credit(nov, [c]).amount.sum()) if c.kind == "effective" else 0.0 for c in found]
            if sum(eff) > 0:
                out["opening_eff_share"] = eff[0] / sum(eff)
            bounds = window_bounds(cache, r)
            tokens = _token_rows(None if token_ids is None else token_ids.iloc[r], bounds)
            if tokens is not None:
                source = nov.rows.source
                out["lexical_novelty_e"], out["lexical_novelty_x"], out["loop_rate"] = lexical(
                    tokens, source[explore], source[~explore])
        rows_out.append(out)
    by_cycle = pd.DataFrame([{"cycle": i, "median": np.median(v) if v else np.nan,
                              "q25": np.quantile(v, 0.25) if v else np.nan,
                              "q75": np.quantile(v, 0.75) if v else np.nan, "n": len(v)}
                             for i, v in enumerate(reuse)])
    credited = weights[weights != 0]
    return CreditDiagnostics(pd.DataFrame(rows_out, columns=list(COLUMNS)), by_cycle,
                             int((np.abs(credited) == np.float32(1.0)).sum()))


def credit_frame(diagnostics: dict[str, CreditDiagnostics]) -> pd.DataFrame:
    """Several caches' credit diagnostics side by side, one column each: medians with quartiles."""
    out = {}
    for label, d in diagnostics.items():
        summary, quartiles = d.summary(), d.quartiles()
        column = {name: f"{summary[name]:.3g}" if name == "ends_in_explore" else
                  f"{summary[name]:.3g} [{quartiles[name][0]:.3g}, {quartiles[name][1]:.3g}]" for name in COLUMNS}
        column.update({f"reuse_cycle_{row.cycle}": f"{row.median:.3g} [{row.q25:.3g}, {row.q75:.3g}] n={row.n}"
                       for row in d.reuse_by_cycle.itertuples()})
        column["tied_at_one"] = str(d.tied_at_one)
        out[label] = column
    return pd.DataFrame(out)
