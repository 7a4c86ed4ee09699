"""Selectors on extracted answers: majority vote (self-consistency)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nex_causal.errors import NexError
from nex_causal.pool import Pool
from nex_causal.selectors.base import SELECTORS, Context, Outcome, picks


def majority_vote(answers: Sequence[str | None]) -> int | None:
    """First response giving the most frequent extracted answer; None when none was extracted.

    Answers are compared after stripping whitespace; a tie between answers goes to the one
    that appears first in sample order.
    """
    votes: dict[str, list[int]] = {}
    for i, answer in enumerate(answers):
        if isinstance(answer, str) and answer.strip():
            votes.setdefault(answer.strip(), []).append(i)
    if not votes:
        return None
    return max(votes.values(), key=len)[0]  # max keeps the first of equal counts


@SELECTORS.register("majority-vote")
def _majority(pool: Pool, context: Context) -> Outcome:
    if "answer" not in pool.responses or pool.responses["answer"].isna().all():
        raise NexError("no extracted answers in the responses table; majority vote needs a task with answers")
    answers = pool.responses["answer"].to_numpy(dtype=object)

    def choose(_, g: np.ndarray) -> int:
        pick = majority_vote(answers[g])
        return 0 if pick is None else pick  # no answer in the group: nothing to vote on
    return picks(pool, choose)
