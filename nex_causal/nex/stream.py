"""NEX while the trace is written: one row at a time, in bounded memory (sections 1-6 online).

``StreamingNex.push`` takes each raw row as capture closes it (keys, mass, tokens) and
updates, for the prefix written so far:

- novelty: the row is cleaned as the batch cleans it (``novelty.clean_rows``), its entries
  whose neuron was never seen are introduced, s_j = |I_j| / T_j;
- the phase posterior P(E | rows so far) by forward filtering (``online.PhaseFilter``, with a
  ``PhaseModel`` calibrated offline), or raw labels given from outside (``explore=``), and
  the minimum run online (``online.MinRun``): a label is final ``min_run - 1`` rows later;
- cycles, as the final labels arrive: each closed E run and X run with its median slopes,
  consolidation and reuse share, and at ``finish`` the batch's strength, progress, kind,
  scale and credit (``credit.Credit``);
- the running GMF with fixed weights: sum M max(w, 0) / sum M |w| over the rows so far.

Memory: the neurons seen (with their first row), the neurons each E run introduced with
their mass (what the credit is made of), a few numbers per row, and the entries of at most
``min_run`` rows whose labels are not final yet; no row's entries are kept beyond that.

On a finished trace the stream equals the batch wherever the two are defined alike: the
usable rows, slopes and neuron counts equal ``novelty.novelty``; with the batch's labels
given (``explore=``) the labels, cycles and credit equal ``credit.analyze_response``'s bit for
bit; the GMF equals ``score.good_mass_fraction`` over the rows' per-key sums (to float32
rounding: the sums are added in another order). The online phases are the one part that
cannot equal Viterbi; ``tests/test_nex_stream.py`` holds the equalities, and how far the
filtered labels lie from Viterbi's is measured (``label_agreement``; docs/nex.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nex_causal.cache import KEY_SPACE, RESERVED_LAYER, ResponseRows
from nex_causal.errors import NexError
from nex_causal.nex.config import NexConfig
from nex_causal.nex.credit import EPS, MIN_ROWS, Credit, Cycle, classify, run_medians
from nex_causal.nex.novelty import clean_rows
from nex_causal.nex.online import MinRun, PhaseFilter, PhaseModel
from nex_causal.nex.score import mass_sums
from nex_causal.nex.weights import check_weights


@dataclass
class _Run:
    """A closed or open E run [e_start, e_end] and the X run after it (x_start = -1 while none)."""

    e_start: int
    e_end: int
    x_start: int = -1
    x_end: int = -1
    introduced: dict[int, float] = field(default_factory=dict)  # key -> mass of its last copy in its row
    n_new: int = 0
    reused: list[float] = field(default_factory=list)  # per X row: float32 sum of its mass on I_E, as float64


class StreamingNex:
    """The NEX state of one response being written (see the module docstring).

    ``phases`` (a calibrated ``PhaseModel``) labels rows by forward filtering; without it every
    ``push`` must give the row's raw label (``explore``). ``weights`` (2**22 float32) make the
    running GMF; ``seen`` are keys never introduced (``NexConfig.prompt_seen``).
    """

    def __init__(self, config: NexConfig = NexConfig(), phases: PhaseModel | None = None,
                 weights: np.ndarray | None = None, seen: np.ndarray | None = None):
        if phases is not None and phases.rho != config.rho:
            raise NexError(f"the phase model was calibrated with rho {phases.rho}, the config says {config.rho}: "
                           "calibrate it with the config's rho")
        self.config = config
        self.filter = PhaseFilter(phases) if phases is not None else None
        self.phases = phases
        self.weights = None if weights is None else check_weights(weights)
        self.first_row: dict[int, int] = {int(k): -1 for k in (seen if seen is not None else ())}
        self.min_run = MinRun(config.min_run)
        self.n_raw = 0  # raw rows pushed (usable or not)
        self.source: list[int] = []  # per usable row: its raw row index
        self.tokens: list[int] = []
        self.slopes: list[np.float32] = []
        self.n_new: list[int] = []
        self.totals: list[float] = []
        self.posterior: list[float] = []  # P(E | rows so far) after each row (NaN with labels from outside)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (keys, mass, first rows) per row
        self._processed = 0  # usable rows whose final label has been read into the runs
        self._labels: list[bool] = []  # final labels read so far
        self.runs: list[_Run] = []
        self._good = self._weighted = 0.0
        self._scorable, self._unscorable = False, False
        self.finished = False

    # --- rows in -----------------------------------------------------------------------------

    def push(self, keys: np.ndarray, mass: np.ndarray, tokens: int, explore: bool | None = None) -> bool:
        """Add the next raw row; returns whether it was usable (an unusable row is skipped, as the batch
        skips it, though its mass still counts in the GMF as the base view's does)."""
        if self.finished:
            raise NexError("this response is finished: start a new StreamingNex for the next one")
        if (explore is None) == (self.filter is None):
            raise NexError("give each row's label (explore=) exactly when the stream has no phase model")
        self.n_raw += 1
        keys, mass = np.asarray(keys), np.asarray(mass, np.float32)
        self._add_mass(keys, mass)
        rows = clean_rows(ResponseRows.from_rows([(keys, mass, int(tokens))]), positive_only=self.config.positive_only)
        if rows.n_rows == 0:
            return False
        j, keys, mass = len(self.tokens), rows.keys, rows.mass
        first = np.empty(len(keys), np.int64)
        for e, key in enumerate(keys.tolist()):
            first[e] = self.first_row.setdefault(key, j)
        n_new = int(np.count_nonzero(first == j))
        self.source.append(self.n_raw - 1)
        self.tokens.append(int(rows.tokens[0]))
        self.slopes.append(np.float32(n_new / int(rows.tokens[0])))
        self.n_new.append(n_new)
        self.totals.append(float(rows.totals[0]))
        if self.filter is not None:
            p = self.filter.update(self.phases.z(float(self.slopes[-1]), j))
            self.posterior.append(p)
            explore = p > 0.5
        else:
            self.posterior.append(float("nan"))
        self.min_run.push(bool(explore))
        self._pending.append((keys, mass, first))
        self._advance(self.min_run.final)
        return True

    def _add_mass(self, keys: np.ndarray, mass: np.ndarray) -> None:
        """Add a raw row's mass into the GMF's two sums (a key beyond the key space leaves the response unscored)."""
        if self.weights is None or not len(keys):
            return
        keys = keys.astype(np.int64)
        self._unscorable |= bool((((keys >> 16) != RESERVED_LAYER) & (keys >= KEY_SPACE)).any())
        good, weighted, scorable = mass_sums(keys, mass, np.array([len(keys)]), self.weights)
        self._good += float(good[0])
        self._weighted += float(weighted[0])
        self._scorable |= bool(scorable[0])

    def finish(self) -> StreamingNex:
        """The response has ended: the last labels become final (a short last run takes the label before it)
        and the last cycle closes."""
        if not self.finished:
            self.finished = True
            self._advance(len(self.tokens))
        return self

    # --- labels and cycles -------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        return len(self.tokens)

    @property
    def labels(self) -> np.ndarray:
        """The E labels of the usable rows as they stand now (the last ``min_run - 1`` may still change)."""
        return np.array(self.min_run.labels, bool)

    def _advance(self, final: int) -> None:
        """Read the labels that became final into the runs, row by row, in order."""
        labels = self.min_run.labels
        while self._processed < final:
            j = self._processed
            keys, mass, first = self._pending.pop(0)
            self._labels.append(labels[j])
            self._row_into_runs(j, labels[j], keys, mass, first)
            self._processed += 1

    def _row_into_runs(self, j: int, explore: bool, keys: np.ndarray, mass: np.ndarray, first: np.ndarray) -> None:
        run = self.runs[-1] if self.runs else None
        if explore:
            if run is None or run.x_start >= 0:  # a new E run (a closed cycle before it, if any)
                run = _Run(j, j)
                self.runs.append(run)
            run.e_end = j
            new = first == j
            run.n_new += int(np.count_nonzero(new))
            for key, m in zip(keys[new].tolist(), mass[new].tolist()):
                run.introduced[key] = m  # a key repeated in its row keeps its last copy's mass
        elif run is not None:  # an X row after an E run (leading X rows belong to no cycle)
            if run.x_start < 0:
                run.x_start = j
            run.x_end = j
            reused = (first >= run.e_start) & (first <= run.e_end)
            run.reused.append(float(np.sum(mass[reused])))

    def cycles(self) -> list[Cycle]:
        """The cycles whose X run has begun, judged as the batch judges them against the rows so far (after
        ``finish``: exactly the batch's cycles, given the same labels)."""
        closed = [r for r in self.runs if r.x_start >= 0]
        if not closed or self.n_rows < MIN_ROWS:
            return []
        slopes = np.array(self.slopes, np.float32)
        bounds = np.array([(r.e_start, r.e_end, r.x_start, r.x_end) for r in closed])  # runs tiling rows first..last
        first = bounds[0, 0]
        medians = run_medians(slopes[first:bounds[-1, 3] + 1], bounds[:, 0::2].ravel() - first,
                              bounds[:, 1::2].ravel() + 1 - first)
        s_e, s_x = medians[0::2].astype(np.float64), medians[1::2].astype(np.float64)
        strength = s_e - float(np.median(slopes))
        consolidation = np.where(s_e > 0.0, np.clip(1.0 - s_x / (s_e + EPS), 0.0, 1.0), 0.0)
        totals = np.array(self.totals)
        share = np.full(len(closed), np.nan)
        for c, r in enumerate(closed):
            total = float(np.add.reduce(totals[r.x_start:r.x_end + 1]))
            if strength[c] > 0.0 and r.n_new > 0 and total > 0.0:
                share[c] = np.cumsum(r.reused)[-1] / (total + EPS)
        defined = share[np.isfinite(share)].astype(np.float32)
        centre = float(np.median(defined)) if defined.size else float("nan")
        out = []
        for c, r in enumerate(closed):
            progress = float(share[c]) - centre
            out.append(Cycle(r.e_start, r.e_end, r.x_start, r.x_end, float(strength[c]), float(consolidation[c]),
                             float(share[c]), progress, *classify(progress, float(consolidation[c]))))
        return out

    def credit(self) -> Credit:
        """What the response adds to Eff and Red, from its cycles as they stand (the batch's after ``finish``)."""
        keys, amount, effective = [], [], []
        closed = [r for r in self.runs if r.x_start >= 0]
        for i, (run, cycle) in enumerate(zip(closed, self.cycles())):
            if cycle.kind == "none" or (self.config.skip_opening and i == 0):
                continue
            keys += list(run.introduced)
            amount.append(np.array(list(run.introduced.values()), np.float32) * np.float32(cycle.scale))
            effective += [cycle.kind == "effective"] * len(run.introduced)
        if not keys:
            return Credit.empty()
        return Credit(np.array(keys, np.int64), np.concatenate(amount), np.array(effective, bool))

    @property
    def gmf(self) -> float:
        """The running Good-Mass Fraction of the rows so far (NaN without weights or usable mass)."""
        if self.weights is None or not self._scorable or self._unscorable:
            return float("nan")
        return self._good / self._weighted if self._weighted > 0.0 else 0.0

    @property
    def n_neurons(self) -> int:
        """Distinct neurons of the usable rows (those the prompt already held left out)."""
        return sum(1 for row in self.first_row.values() if row >= 0)


def label_agreement(online: np.ndarray, batch: np.ndarray) -> dict[str, float]:
    """How far online labels lie from the batch's on the same rows: the share of rows that agree, Cohen's kappa,
    and the share of the batch's E rows (and X rows) the online labels call E (X)."""
    from nex_causal.nex.annotate import agreement

    online, batch = np.asarray(online, bool), np.asarray(batch, bool)
    if online.shape != batch.shape or not len(online):
        raise NexError("label agreement needs two label sequences of one positive length")
    both = agreement(batch, online)
    return {"rows": float(len(online)), "agreement": both.accuracy, "kappa": both.kappa,
            "explore_recall": float(online[batch].mean()) if batch.any() else float("nan"),
            "exploit_recall": float((~online[~batch]).mean()) if (~batch).any() else float("nan")}
