"""Stop rules inside generation: a rule's sessions fed after every decoding step, the stopped sequences ended there.

``OnlineStop.step`` is the decoding loop's step callback (``models.generation``: the bridge's
token-by-token loop, or Hugging Face ``generate`` through a stopping criterion): it hands
each prompt's session (``selectors.stopping.Session``, given here as the plan that makes
them) the tokens just sampled with their statistics, the cache rows they close (the rows a
``RowRecorder`` builds from the bridge's hooks, their mass rounded to float16 as a cache
stores it, so that a rule reads what it would read offline), each sequence's end, and the
trial answers it asks for (``capture.probes``); the sequences it stops end after this token.
A stopped response's ``finish_reason`` is "stop"; the exit of a rule that exits with an answer (``StopRule.exits``)
appends the answer marker and the trial answer (DEER's from the checkpoint where it stopped, the others' decoded there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from nex_causal.capture.probes import Trial, trial_answers
from nex_causal.capture.rows import RowRecorder
from nex_causal.errors import NexError
from nex_causal.models.generation import TOKEN_STATS, Generation


class Plan(Protocol):
    """A stop rule ready to run (``selectors.stopping.StopPlan``): what it reads and a session per prompt."""

    name: str
    sparsifier: str | None
    window: int | None

    @property
    def rule(self) -> Any: ...

    def session(self, n: int) -> Any: ...

    def content(self) -> dict: ...


class OnlineStop:
    """One batch's sessions: ``prompts[i]`` is sequence i's prompt ids, ``groups`` its prompt's position among the
    batch's prompts; ``recorder`` records rows (rules that read them), ``answer_prefix`` closes a prefix for a trial
    answer and ``extract`` reads it (rules that read those), ``bridge`` and ``model`` decode it."""

    def __init__(self, plan: Plan, prompts: Sequence[torch.Tensor], groups: Sequence[int], *, eos: int | None,
                 recorder: RowRecorder | None = None, answer_prefix: Callable[[str], str] | None = None,
                 extract: Callable[[str], str | None] | None = None, bridge=None, model=None, max_tokens: int = 8):
        reads = plan.rule.reads
        if "rows" in reads and recorder is None:
            raise NexError(f"stop rule {plan.name} reads activations: sample with --backend bridge")
        if ("probe" in reads or plan.rule.exits) and (answer_prefix is None or extract is None or model is None):
            raise NexError(f"stop rule {plan.name} needs the task's answer marker and the model for trial answers")
        self.plan, self.prompts, self.eos, self.recorder = plan, list(prompts), eos, recorder
        self.answer_prefix, self.extract, self.max_tokens = answer_prefix, extract, max_tokens
        self.bridge, self.model = bridge, model
        members: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(int(g), []).append(i)
        self.sessions = [(plan.session(len(seqs)), seqs) for seqs in members.values()]
        self.where = {i: (s, local) for s, (_, seqs) in enumerate(self.sessions) for local, i in enumerate(seqs)}
        self.written: list[list[int]] = [[] for _ in self.prompts]
        self.rows_read = [0] * len(self.prompts)
        self.exits: dict[int, Trial] = {}
        self.stopped = np.zeros(len(self.prompts), bool)

    def step(self, step: int, sampled: torch.Tensor, stats: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Feed this step's events; returns which sequences stop after it."""
        sampled, stats, active = sampled.cpu().numpy(), stats.cpu().numpy(), active.cpu().numpy()
        ended = [i for i in np.flatnonzero(active) if self.eos is not None and sampled[i] == self.eos]
        for i in np.flatnonzero(active):
            session, local = self._session(i)
            self.written[i].append(int(sampled[i]))
            session.token(local, stats[i].astype(np.float64))
            if self.recorder is not None:
                if i in ended:
                    self.recorder.close(i)  # the last, partial row closes with the sequence
                rows = self.recorder.sequences[i].new_rows(self.rows_read[i])
                for keys, mass, tokens in rows:
                    session.row(local, keys, mass.astype(np.float16).astype(np.float32), tokens)
                self.rows_read[i] += len(rows)
            if i in ended:
                session.end(local)
        self._probe([i for i in np.flatnonzero(active) if i not in ended and self._asks(i)])
        stop = np.zeros(len(self.prompts), bool)
        for session, seqs in self.sessions:
            for local in session.stops():
                stop[seqs[local]] = True
        self.stopped |= stop
        if self.plan.rule.exits and "probe" not in self.plan.rule.reads:
            self._probe(np.flatnonzero(stop).tolist())  # the answer it exits with, decoded where it stops
        return torch.as_tensor(stop)

    def _session(self, i: int):
        s, local = self.where[int(i)]
        return self.sessions[s][0], local

    def _asks(self, i: int) -> bool:
        session, local = self._session(i)
        return session.wants_probe(local)

    def _probe(self, asking: list[int]) -> None:
        if not asking:
            return
        trials = trial_answers(self.bridge, self.model, [self.prompts[i] for i in asking],
                               [np.array(self.written[i], np.int64) for i in asking], self.answer_prefix,
                               self.extract, max_tokens=self.max_tokens)
        for i, trial in zip(asking, trials):
            if trial is not None:
                session, local = self._session(i)
                self.exits[i] = trial
                if "probe" in self.plan.rule.reads:
                    session.probe(local, trial)

    def finish(self, generations: list[Generation]) -> list[Generation]:
        """The generations, each stopped one marked ``finish_reason`` "stop" and a DEER exit's answer appended (its
        tokens carry no sampling statistics: NaN)."""
        out = []
        for i, gen in enumerate(generations):
            if not self.stopped[i]:
                out.append(gen)
                continue
            trial = self.exits.get(i) if self.plan.rule.exits else None
            if trial is None:
                out.append(Generation(gen.tokens, gen.text, "stop", gen.stats))
                continue
            pad = np.full(len(trial.tokens), np.nan, np.float32)
            out.append(Generation(np.concatenate([gen.tokens, trial.tokens]), trial.text, "stop",
                                  {name: np.concatenate([gen.stats[name], pad]) for name in TOKEN_STATS}))
        return out
