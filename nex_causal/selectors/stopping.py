"""Stop rules: when to stop writing a trace, or which samples of a Best-of-N group to stop early.

A rule reads only the prefix written so far, one step (one generated token per live
sequence) at a time, through a ``Session`` over the N sequences of one prompt: each token
with its statistics (``token``), each cache row as capture closes it (``row``), a trial
answer when the rule asks for one (``wants_probe``/``probe``, ``capture.probes``), the end of
a sequence (``end``); after every step ``stops`` names the sequences to stop now, after the
token just written. The same session runs online, inside generation (``capture.online``),
and offline, replayed over captured traces (``selectors.stopped``), so the two stop at the
same token for every rule: a rule that reads only the prefix cannot tell them apart.

Trace rules compare one signal with a cutoff at each decision point; a trace stops at the
first point that crosses it:

    nex-detour       NEX: tokens of the exploit run just closed, when a new explore run is confirmed
                     (online phases, ``nex.online``), at least the cutoff: exploration reopened after
                     a long exploitation, the redundant detour
    nex-gmf          NEX: running GMF of the rows so far (after ``burn_in`` rows) below the cutoff
    deepconf-online  DeepConf online: group confidence (mean token confidence over the last
                     ``deepconf_window`` tokens) below the cutoff, the warm-up traces being the
                     calibration prompts' traces
    deer             DEER: confidence of a trial answer (the task's answer marker appended every
                     ``probe_every`` tokens, decoded greedily) at least the cutoff
    budget           a fixed token budget: tokens written at least the cutoff

A stopped trace of nex-detour, deer or budget exits with a trial answer decoded where it
stopped (DEER's exit, budget forcing); one of the others ends without an answer (DeepConf
online and NAD drop the traces they stop from the vote).

Group rules stop, once every sample has ``m`` rows (or ended), all but the ``keep`` share
that score highest: ``prune-agreement`` (NAD-style: mean Jaccard similarity of each sample's
early activated neurons to the others') and ``prune-gmf`` (NEX: GMF of the early rows), beside
``prune-random``, their control (it keeps the lowest sample indices: a random share).

Cutoffs are calibrated on calibration prompts (``cutoff``): a share q means the cutoff that
stops a share q of the calibration traces that reach a decision point.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.nex import NexConfig, analyze_response, learn
from nex_causal.nex.novelty import activated_keys
from nex_causal.nex.online import PhaseModel, fit_phase_model
from nex_causal.nex.score import good_mass_fraction
from nex_causal.nex.stream import StreamingNex
from nex_causal.registry import Registry
from nex_causal.selectors.confidence import token_confidence
from nex_causal.selectors.config import StopSettings
from nex_causal.selectors.neurons import jaccard_distances

CONFIDENCE_SUM, CONFIDENCE_COUNT = 4, 5  # their places in models.generation.TOKEN_STATS


class Trial(Protocol):
    """A trial answer (``capture.probes.Trial``): what a rule reads of it."""

    confidence: float


@dataclass
class Calibrated:
    """What a rule learned offline from the calibration prompts' cache: NEX weights and the online phases (for
    the NEX rules), with the rules' settings and the NEX config."""

    settings: StopSettings
    nex: NexConfig
    weights: np.ndarray | None = None
    phases: PhaseModel | None = None


def calibrate(cache: SparseCache, settings: StopSettings, nex: NexConfig, *, progress: bool = False) -> Calibrated:
    """Weights self-calibrated on ``cache`` and the online phases fitted to its batch segmentation."""
    weights = learn(cache, nex, progress=progress).weights
    traces = [analyze_response(cache.response_rows(r), nex) for r in range(cache.n_responses)]
    return Calibrated(settings, nex, weights, fit_phase_model([(t.slopes, t.explore) for t in traces], nex.rho))


# --- trace rules: one signal per trace, its decision points --------------------------------

class Monitor:
    """One trace's signal: each event may return a value (a decision point) or None."""

    def token(self, stats: np.ndarray) -> float | None:
        return None

    def row(self, keys: np.ndarray, mass: np.ndarray, tokens: int) -> float | None:
        return None

    def wants_probe(self, n_tokens: int) -> bool:
        return False

    def probe(self, trial: Trial) -> float | None:
        return None


class Budget(Monitor):
    def __init__(self, cal: Calibrated):
        self.n = 0

    def token(self, stats: np.ndarray) -> float:
        self.n += 1
        return float(self.n)


class GroupConfidence(Monitor):
    """DeepConf's group confidence over the last ``deepconf_window`` tokens, once that many are written."""

    def __init__(self, cal: Calibrated):
        self.recent: deque[float] = deque(maxlen=cal.settings.deepconf_window)

    def token(self, stats: np.ndarray) -> float | None:
        self.recent.append(float(token_confidence(stats[CONFIDENCE_SUM], stats[CONFIDENCE_COUNT])))
        return float(np.mean(self.recent)) if len(self.recent) == self.recent.maxlen else None


class TrialConfidence(Monitor):
    """DEER: the confidence of a trial answer every ``probe_every`` tokens."""

    def __init__(self, cal: Calibrated):
        self.every = cal.settings.probe_every

    def wants_probe(self, n_tokens: int) -> bool:
        return n_tokens % self.every == 0

    def probe(self, trial: Trial) -> float | None:
        return trial.confidence if np.isfinite(trial.confidence) else None


class Detour(Monitor):
    """NEX: when a new explore run is confirmed after a closed cycle, the tokens of that cycle's exploit run."""

    def __init__(self, cal: Calibrated):
        self.stream = StreamingNex(cal.nex, phases=_need(cal.phases, "nex-detour"))

    def row(self, keys: np.ndarray, mass: np.ndarray, tokens: int) -> float | None:
        runs = len(self.stream.runs)
        self.stream.push(keys, mass, tokens)
        if len(self.stream.runs) > runs and runs and self.stream.runs[-2].x_start >= 0:
            closed = self.stream.runs[-2]
            return float(sum(self.stream.tokens[closed.x_start:closed.x_end + 1]))
        return None


class RunningGmf(Monitor):
    """NEX: the GMF of the rows so far, once ``burn_in`` rows are usable."""

    def __init__(self, cal: Calibrated):
        self.stream = StreamingNex(cal.nex, weights=_need(cal.weights, "nex-gmf"))
        self.burn_in = cal.settings.burn_in

    def row(self, keys: np.ndarray, mass: np.ndarray, tokens: int) -> float | None:
        self.stream.push(keys, mass, tokens, explore=False)  # phases play no part in the GMF
        gmf = self.stream.gmf
        return gmf if self.stream.n_rows >= self.burn_in and np.isfinite(gmf) else None


def _need(value, rule: str):
    if value is None:
        raise NexError(f"{rule} needs NEX calibrated on calibration prompts: give a calibration cache")
    return value


# --- group rules: score early rows, keep the best -------------------------------------------

def agreement(early: Sequence[tuple[np.ndarray, np.ndarray]], cal: Calibrated) -> np.ndarray:
    """NAD-style agreement: each sample's mean Jaccard similarity of early activated neurons to the others'."""
    sets = [activated_keys(keys, mass) for keys, mass in early]
    if len(sets) < 2:
        return np.zeros(len(sets))
    similarity = 1.0 - jaccard_distances(sets)
    return (similarity.sum(axis=1) - 1.0) / (len(sets) - 1)


def early_gmf(early: Sequence[tuple[np.ndarray, np.ndarray]], cal: Calibrated) -> np.ndarray:
    """NEX: the GMF of each sample's early rows (per-key sums), NaN where it has no usable mass."""
    weights = _need(cal.weights, "prune-gmf")
    out = []
    for keys, mass in early:
        unique, inverse = np.unique(np.asarray(keys, np.int64), return_inverse=True)
        out.append(good_mass_fraction(unique, np.bincount(inverse, weights=mass).astype(np.float32), weights)
                   if len(unique) else np.nan)
    return np.array(out)


def first_samples(early: Sequence[tuple[np.ndarray, np.ndarray]], cal: Calibrated) -> np.ndarray:
    """The control of the pruning rules: the lowest sample indices score highest. A prompt's samples are drawn
    alike, so this keeps a random share of them, at the same time and the same cost as the scored rules."""
    return -np.arange(len(early), dtype=np.float64)


# --- the registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class StopRule:
    """A stop rule: a trace rule (``monitor`` and the side of the cutoff it ``fires`` on) or a group rule
    (``score`` of the early rows, higher kept). ``reads``: what it needs online (tokens, rows, probe);
    ``nex``: whether it reads NEX calibrated offline (weights, phases); ``unit``: what its cutoff counts;
    ``exits``: whether a stopped trace exits with a trial answer (the answer marker and a greedy answer decoded at
    the stop, ``capture.probes``) rather than ending where it stopped, without an answer."""

    reads: tuple[str, ...]
    unit: str
    nex: bool = False
    exits: bool = False
    monitor: Callable[[Calibrated], Monitor] | None = None
    fires: Literal["above", "below"] = "above"
    score: Callable[[Sequence[tuple[np.ndarray, np.ndarray]], Calibrated], np.ndarray] | None = None

    @property
    def group(self) -> bool:
        return self.score is not None

    def crosses(self, value: float, cutoff: float) -> bool:
        return value >= cutoff if self.fires == "above" else value < cutoff


STOP_RULES: Registry[StopRule] = Registry("stop rule")
# A rule that stops redundant work (a detour, a confident answer, a budget) exits with an answer; a rule that stops
# a trace it judges bad (DeepConf online, low GMF, pruning) ends it without one, as DeepConf and NAD do.
STOP_RULES.add("nex-detour", StopRule(("rows",), "exploit tokens before a new explore run", True, exits=True,
                                      monitor=Detour))
STOP_RULES.add("nex-gmf", StopRule(("rows",), "running GMF", True, monitor=RunningGmf, fires="below"))
STOP_RULES.add("prune-agreement", StopRule(("rows",), "rows before pruning", score=agreement))
STOP_RULES.add("prune-gmf", StopRule(("rows",), "rows before pruning", True, score=early_gmf))
STOP_RULES.add("prune-random", StopRule(("rows",), "rows before pruning", score=first_samples))
STOP_RULES.add("deepconf-online", StopRule(("tokens",), "group confidence", monitor=GroupConfidence, fires="below"))
STOP_RULES.add("deer", StopRule(("probe",), "trial-answer confidence", exits=True, monitor=TrialConfidence))
STOP_RULES.add("budget", StopRule(("tokens",), "tokens", exits=True, monitor=Budget))


def cutoff(rule: StopRule, extremes: np.ndarray, share: float) -> float:
    """The cutoff that stops a share ``share`` of the calibration traces, from each trace's most extreme value
    (its largest for a rule that fires above the cutoff, smallest below; NaN where it reached no decision point)."""
    values = np.asarray(extremes, np.float64)
    values = values[np.isfinite(values)]
    if not 0.0 < share <= 1.0 or not len(values):
        raise NexError(f"a stop share lies in (0, 1] and needs calibration traces with a decision point "
                       f"(share {share}, {len(values)} traces)")
    k = max(1, int(np.ceil(share * len(values) - 1e-9)))  # traces to stop: the k most extreme cross the cutoff
    if rule.fires == "above":
        return float(np.sort(values)[::-1][k - 1])
    return float(np.nextafter(np.sort(values)[k - 1], np.inf))  # a rule firing below fires strictly below it


# --- sessions: one prompt's N sequences -----------------------------------------------------

class Session:
    """The events of one prompt's N sequences, in the order generation makes them (see the module docstring)."""

    def __init__(self, rule: StopRule, cal: Calibrated, n: int, cutoff: float | None):
        self.rule, self.cal, self.cutoff, self.n = rule, cal, cutoff, n
        self.monitors = [rule.monitor(cal) for _ in range(n)] if rule.monitor else []
        self.points: list[list[tuple[int, float]]] = [[] for _ in range(n)]  # (tokens written, value)
        self.written = np.zeros(n, np.int64)
        self.ended = np.zeros(n, bool)
        self.stopped = np.zeros(n, bool)
        self.early: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(n)]
        self._firing: list[int] = []
        self.pruned = False

    def _value(self, i: int, value: float | None) -> None:
        if value is None:
            return
        self.points[i].append((int(self.written[i]), value))
        if self.cutoff is not None and self.rule.crosses(value, self.cutoff) and i not in self._firing:
            self._firing.append(i)

    def token(self, i: int, stats: np.ndarray) -> None:
        self.written[i] += 1
        if self.monitors:
            self._value(i, self.monitors[i].token(stats))

    def row(self, i: int, keys: np.ndarray, mass: np.ndarray, tokens: int) -> None:
        if self.monitors:
            self._value(i, self.monitors[i].row(keys, mass, tokens))
        elif len(self.early[i]) < int(self.cutoff or 0):
            self.early[i].append((np.asarray(keys), np.asarray(mass, np.float32)))

    def wants_probe(self, i: int) -> bool:
        return bool(self.monitors) and self.monitors[i].wants_probe(int(self.written[i]))

    def probe(self, i: int, trial: Trial) -> None:
        self._value(i, self.monitors[i].probe(trial))

    def end(self, i: int) -> None:
        self.ended[i] = True

    def stops(self) -> list[int]:
        """The sequences to stop after this step (each at most once; never one that has ended)."""
        out = self._firing if self.monitors else self._pruned()
        self._firing = []
        out = [i for i in out if not self.ended[i] and not self.stopped[i]]
        self.stopped[out] = True
        return out

    def _pruned(self) -> list[int]:
        """Once every sample holds ``m`` rows or has ended: all but the best-scoring ``keep`` share."""
        m = int(self.cutoff or 0)
        if self.pruned or m < 1 or not all(self.ended[i] or len(self.early[i]) >= m for i in range(self.n)):
            return []
        self.pruned = True
        early = [(np.concatenate([k for k, _ in rows]) if rows else np.empty(0, np.int64),
                  np.concatenate([w for _, w in rows]) if rows else np.empty(0, np.float32)) for rows in self.early]
        scores = np.nan_to_num(np.asarray(self.rule.score(early, self.cal), np.float64), nan=-np.inf)
        keep = max(1, int(np.ceil(self.cal.settings.keep * self.n)))
        order = np.argsort(-scores, kind="stable")  # ties: the lower sample index is kept
        return sorted(order[keep:].tolist())


@dataclass(frozen=True)
class StopPlan:
    """A rule with its cutoff and calibration, ready to run inside generation: ``session(n)`` per prompt;
    ``sparsifier`` and ``window`` are the calibration cache's, which the rows a NEX rule reads must match."""

    name: str
    cutoff: float
    calibrated: Calibrated
    sparsifier: str | None = None
    window: int | None = None
    source: dict = field(default_factory=dict)  # what the calibration was made from, for the traces' stamp

    @property
    def rule(self) -> StopRule:
        return STOP_RULES[self.name]

    def session(self, n: int) -> Session:
        return Session(self.rule, self.calibrated, n, self.cutoff)

    def content(self) -> dict:
        return {"rule": self.name, "cutoff": self.cutoff, "settings": dataclasses.asdict(self.calibrated.settings),
                "nex": dataclasses.asdict(self.calibrated.nex), **self.source}


def stop_plan(name: str, cutoff: float, settings: StopSettings, nex: NexConfig, calibration: str | None) -> StopPlan:
    """The plan of rule ``name`` at ``cutoff``; a NEX rule calibrates on ``calibration`` (a cache of the same model on
    calibration prompts), whose sparsifier and window the rows it reads online must have."""
    from nex_causal.io import file_sha256

    rule = STOP_RULES[name]
    if rule.group and (cutoff < 1 or cutoff != int(cutoff)):
        raise NexError(f"{name} prunes after a whole number of rows: give a threshold of 1 or more, not {cutoff}")
    if not (rule.nex or "rows" in rule.reads):
        return StopPlan(name, float(cutoff), Calibrated(settings, nex))
    if calibration is None:
        raise NexError(f"stop rule {name} reads NEX rows: give a calibration cache of the same model "
                       "(--stop-calibration), captured on calibration prompts")
    cache = SparseCache.open(calibration)
    config = (cache.capture_info or {}).get("config", {})
    if "sparsifier" not in config or "window" not in config:
        raise NexError(f"{calibration} records no capture settings (capture.json): capture it with nex-causal")
    cal = calibrate(cache, settings, nex) if rule.nex else Calibrated(settings, nex)
    return StopPlan(name, float(cutoff), cal, config["sparsifier"], int(config["window"]),
                    {"calibration": file_sha256(cache.path / "integrity.json")})
