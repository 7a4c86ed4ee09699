"""Accuracy of a model on a task set with verifiable answers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nex_causal.errors import NexError
from nex_causal.sampling import generate
from nex_causal.tasks import TaskSet


@dataclass
class EvalResult:
    """Per-prompt correctness, extracted answers and response texts."""

    correct: np.ndarray  # bool, one per problem
    answers: list[str | None]
    texts: list[str]

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else float("nan")


def evaluate(bridge, taskset: TaskSet, *, max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, batch_size: int = 32, chat: bool = False,
             progress: bool = False, hooks: bool = True) -> EvalResult:
    """Generate one response per problem (greedy by default) and check each answer.

    ``hooks=False`` generates through plain Hugging Face (faster; no activation edit applies).
    """
    if len(taskset) == 0:
        raise NexError(f"task set {taskset.name!r} is empty: ask for at least one prompt")
    gens = generate(bridge, taskset.prompts(), max_new_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size,
                    chat=chat, progress=progress, desc=f"evaluating {taskset.name}", hooks=hooks)
    texts = [g.text for g in gens]
    return EvalResult(
        correct=np.array([taskset.check(p, t) for p, t in zip(taskset.problems, texts)], dtype=bool),
        answers=[taskset.extract(t) for t in texts],
        texts=texts,
    )
