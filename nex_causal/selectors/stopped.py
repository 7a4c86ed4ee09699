"""Stop rules evaluated offline on captured full traces: where each would have stopped, and what that leaves.

A rule reads only the prefix written so far, so stopping a trace while it is generated and
cutting the captured full trace where the rule fires give the same tokens (the sampling of
each sequence is seeded on its own, ``models.generation``): ``replay`` feeds a rule's session
the events generation would have fed it, step by step in lock step over a prompt's samples
(``tests/test_stopping.py`` holds the two equal against real stopped generation). A cut
trace is scored the way its task scores any response: its text up to the cut (for a rule
that exits with an answer, that text, the answer marker and the trial answer) through the task's checker, so a
trace cut before its answer is wrong. A prompt's answer is the majority vote of its samples'
answers (``selectors.answers``); samples pruned by a group rule rarely hold an answer, so the
others decide.

A trace rule's signal does not depend on its cutoff, so one replay records every decision
point (``points``) and each cutoff's cuts follow from them (``first_crossing``); a group rule
is replayed once per number of rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nex_causal.cache import SparseCache
from nex_causal.capture.probes import Trial
from nex_causal.errors import NexError
from nex_causal.models.generation import TOKEN_STATS
from nex_causal.models.tasks import TaskSet
from nex_causal.selectors.answers import majority_vote
from nex_causal.selectors.pool import Pool
from nex_causal.selectors.stopping import Calibrated, Session, StopRule

Cut = tuple[int, Trial | None]  # tokens kept, and the trial answer an exit appends


@dataclass
class Traces:
    """One cache's traces as the stop rules read them offline, with the task that scores them and ``probes``:
    each response's trial answers by step (``capture.probes.probe_traces``), for the rules that read them."""

    cache: SparseCache
    taskset: TaskSet
    decode: Callable[[Sequence[int]], str]
    probes: pd.DataFrame | None = None
    bridge: object | None = None  # decodes the trial answers a stop exits with (``fill_trials``)
    probe_tokens: int = 8  # a trial answer's tokens at most (the stop settings' ``probe_tokens``)

    def __post_init__(self) -> None:
        self.pool = Pool.from_cache(self.cache)
        self.responses = self.pool.responses
        self.n_tokens = self.responses["n_tokens"].to_numpy(np.int64)
        self.problems = {p.id: p for p in self.taskset.problems}
        if missing := set(self.responses["prompt_id"]) - set(self.problems):
            raise NexError(f"{len(missing)} prompts of {self.cache.path} are not in the task set "
                           f"{self.taskset.name}: score with the task the cache was captured on")
        self.trials: dict[int, dict[int, Trial]] = {}
        if self.probes is not None:
            for row in self.probes.itertuples():
                self.trials.setdefault(int(row.response), {})[int(row.tokens)] = Trial(
                    float(row.confidence), np.asarray(row.added), str(row.text))
        self._scored: dict[tuple[int, int, str | None], tuple[str | None, bool]] = {}

    def fill_trials(self, wanted: Sequence[tuple[int, int]]) -> None:
        """Decode, in batches, the trial answers of responses ``r`` after ``t`` tokens not yet known (``wanted``:
        (r, t) pairs), as generation decodes them where a rule stops (``capture.probes.trial_answers``)."""
        todo = sorted({(int(r), int(t)) for r, t in wanted if int(t) not in self.trials.get(int(r), {})})
        if not todo:
            return
        if self.bridge is None:
            raise NexError("trial answers need the model: give Traces the bridge of the cache's model")
        from nex_causal.capture.probes import trial_answers
        from nex_causal.models.loading import plain_model

        prompts = [np.asarray(self.responses["prompt_token_ids"].iloc[r]) for r, _ in todo]
        prefixes = [np.asarray(self.responses["token_ids"].iloc[r])[:t] for r, t in todo]
        found = trial_answers(self.bridge, plain_model(self.bridge), prompts, prefixes, self.taskset.answer_prefix,
                              self.taskset.extract, max_tokens=self.probe_tokens)
        for (r, t), trial in zip(todo, found):
            self.trials.setdefault(r, {})[t] = trial

    def stats(self, r: int) -> np.ndarray:
        return np.stack([np.asarray(self.responses[name].iloc[r], np.float64) for name in TOKEN_STATS], axis=1)

    def scored(self, r: int, cut: Cut | None) -> tuple[str | None, bool]:
        """The answer and correctness of response ``r`` as cut (uncut: as captured)."""
        if cut is None:
            return (self.responses["answer"].iloc[r] or None), bool(self.responses["correct"].iloc[r])
        kept, trial = cut
        key = (r, kept, None if trial is None else trial.text)
        if key not in self._scored:
            text = trial.text if trial is not None else self.decode(
                np.asarray(self.responses["token_ids"].iloc[r])[:kept].tolist())
            problem = self.problems[self.responses["prompt_id"].iloc[r]]
            self._scored[key] = (self.taskset.extract(text), bool(self.taskset.check(problem, text)))
        return self._scored[key]


def replay(traces: Traces, group: np.ndarray, session: Session) -> tuple[dict[int, Cut], list[list]]:
    """Run ``session`` over the responses ``group`` of one prompt as generation would have: each step, every live
    sequence's token, the row that token closes, its end, its trial answer when asked; then the stops. Returns
    each stopped response's cut and every sequence's decision points."""
    rule = session.rule
    n = [int(traces.n_tokens[r]) for r in group]
    eos = [traces.responses["finish_reason"].iloc[r] == "eos" for r in group]
    stats = [traces.stats(r) if "tokens" in rule.reads else None for r in group]
    rows = [traces.cache.response_rows(r) if "rows" in rule.reads or rule.group else None for r in group]
    ends = [np.cumsum(rr.tokens) if rr is not None else np.empty(0, np.int64) for rr in rows]
    next_row = [0] * len(group)
    blank = np.zeros(len(TOKEN_STATS))
    cuts: dict[int, Cut] = {}
    last_trial: dict[int, Trial] = {}
    for t in range(1, max(n, default=0) + 1):
        live = [i for i in range(len(group)) if t <= n[i] and group[i] not in cuts]
        if not live:
            break
        for i in live:
            session.token(i, stats[i][t - 1] if stats[i] is not None else blank)
            while next_row[i] < len(ends[i]) and ends[i][next_row[i]] == t:
                keys, mass = rows[i].row(next_row[i])
                session.row(i, keys, mass, int(rows[i].tokens[next_row[i]]))
                next_row[i] += 1
            if t == n[i] and eos[i]:
                session.end(i)
                continue
            if session.wants_probe(i) and (trial := traces.trials.get(int(group[i]), {}).get(t)) is not None:
                last_trial[i] = trial
                session.probe(i, trial)
            if t == n[i]:
                session.end(i)
        for i in session.stops():
            cuts[int(group[i])] = (t, last_trial.get(i) if rule.exits else None)
    return cuts, session.points


def points(traces: Traces, rule: StopRule, cal: Calibrated) -> list[list[tuple[int, float]]]:
    """Every decision point (tokens written, value) of every response of a trace rule, in cache order."""
    out: list[list[tuple[int, float]]] = [[] for _ in range(len(traces.n_tokens))]
    for group in traces.pool.groups:
        _, found = replay(traces, group, Session(rule, cal, len(group), None))
        for r, p in zip(group, found):
            out[int(r)] = p
    return out


def extremes(rule: StopRule, found: Sequence[Sequence[tuple[int, float]]]) -> np.ndarray:
    """Each trace's most extreme value on the side its rule fires (NaN without a decision point)."""
    pick = np.max if rule.fires == "above" else np.min
    return np.array([pick([v for _, v in p]) if p else np.nan for p in found])


def first_crossing(traces: Traces, rule: StopRule, found: Sequence[Sequence[tuple[int, float]]],
                   cutoff: float) -> dict[int, Cut]:
    """The cuts of a trace rule at ``cutoff``: each trace stops at its first decision point that crosses it. A point
    at the token that ended a trace cuts nothing (generation ended it first); one at the last token a length limit
    allowed cuts nothing either, unless the rule exits with an answer, which it appends there."""
    hits = {}
    for r, p in enumerate(found):
        hit = next((t for t, v in p if rule.crosses(v, cutoff)), None)
        if hit is None:
            continue
        last = hit == traces.n_tokens[r]
        if not last or (rule.exits and traces.responses["finish_reason"].iloc[r] != "eos"):
            hits[r] = hit
    if rule.exits:
        traces.fill_trials(hits.items())
    return {r: (hit, traces.trials.get(r, {}).get(hit) if rule.exits else None) for r, hit in hits.items()}


def group_cuts(traces: Traces, rule: StopRule, cal: Calibrated, rows: int) -> dict[int, Cut]:
    """The cuts of a group rule that prunes after ``rows`` rows."""
    cuts: dict[int, Cut] = {}
    for group in traces.pool.groups:
        found, _ = replay(traces, group, Session(rule, cal, len(group), float(rows)))
        cuts.update({r: c for r, c in found.items() if c[0] < traces.n_tokens[r]})
    return cuts


def detour_spans(traces: Traces) -> list[list[tuple[int, int]]] | None:
    """Each response's planted detour spans in token offsets (scout: characters are tokens), or None when the
    task records no ground truth."""
    column = traces.responses.get("ground_truth")
    if column is None or column.isna().all():
        return None
    return [[(s["start"], s["end"]) for s in json.loads(text) if s["role"] == "detour"] if isinstance(text, str)
            else [] for text in column]


def outcome(traces: Traces, cuts: dict[int, Cut]) -> pd.DataFrame:
    """Per prompt: the voted answer's correctness, the mean correctness of its samples, the tokens generated, and
    (with ground truth) the planted detour tokens and the other tokens, in total and cut."""
    spans = detour_spans(traces)
    rows = []
    for group in traces.pool.groups:
        scored = [traces.scored(int(r), cuts.get(int(r))) for r in group]
        vote = majority_vote([a for a, _ in scored])
        row = {"prompt_id": traces.responses["prompt_id"].iloc[group[0]],
               "accuracy": float(vote is not None and scored[vote][1]),
               "sample_accuracy": float(np.mean([c for _, c in scored])), "tokens": 0.0, "stopped": 0.0,
               "detour": 0.0, "detour_cut": 0.0, "useful": 0.0, "useful_cut": 0.0}
        for r in map(int, group):
            n, cut = int(traces.n_tokens[r]), cuts.get(r)
            kept = n if cut is None else cut[0]
            row["tokens"] += kept + (len(cut[1].tokens) if cut is not None and cut[1] is not None else 0)
            row["stopped"] += cut is not None
            inside = np.zeros(n, bool)
            for a, b in (spans[r] if spans is not None else []):
                inside[a:min(b, n)] = True
            row["detour"] += inside.sum()
            row["detour_cut"] += inside[kept:].sum()
            row["useful"] += n - inside.sum()
            row["useful_cut"] += (n - kept) - inside[kept:].sum()
        rows.append(row)
    return pd.DataFrame(rows)
