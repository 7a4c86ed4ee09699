"""Selectors on extracted answers: majority vote (self-consistency), and the vote every voting selector casts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nex_causal.errors import NexError
from nex_causal.selectors.base import SELECTORS, Context, Outcome, picks
from nex_causal.selectors.pool import Pool


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float]) -> int | None:
    """The first response giving the answer with the largest total weight; None when none has an answer.

    Answers are compared after stripping whitespace; an empty or missing answer votes for
    nothing; a tie between answers goes to the one that appears first (the reference
    implementations' dictionary order).
    """
    totals: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, (answer, weight) in enumerate(zip(answers, weights)):
        if isinstance(answer, str) and answer.strip():
            key = answer.strip()
            totals[key] = totals.get(key, 0.0) + float(weight)
            first.setdefault(key, i)
    if not totals:
        return None
    best = max(totals.values())
    return first[next(a for a, total in totals.items() if total == best)]


def majority_vote(answers: Sequence[str | None]) -> int | None:
    """``weighted_vote`` with one vote per response."""
    return weighted_vote(answers, [1.0] * len(answers))


def extracted_answers(pool: Pool) -> np.ndarray:
    """Each response's extracted answer (None where it gave none); NexError when the table has none at all."""
    if "answer" not in pool.responses or pool.responses["answer"].isna().all():
        raise NexError("no extracted answers in the responses table; voting needs a task with answers")
    return np.array([a if isinstance(a, str) and a.strip() else None for a in pool.responses["answer"]], dtype=object)


@SELECTORS.register("majority-vote")
def _majority(pool: Pool, context: Context) -> Outcome:
    answers = extracted_answers(pool)

    def choose(_, g: np.ndarray) -> int:
        pick = majority_vote(answers[g])
        return 0 if pick is None else pick  # no answer in the group: nothing to vote on
    return picks(pool, choose)
