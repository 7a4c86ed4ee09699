"""What a grid cell measures on the held-out prompts, one value per prompt.

Each outcome is one registered ``OutcomeKind`` (``OUTCOMES``):

    greedy            1 when the greedy response is correct, else 0
    sampled           the same for one seeded sample (temperature and top-p of the grid)
    answer-logprob    log p of the gold answer's tokens, teacher-forced after the untouched
                      recipient's own greedy chain of thought cut at its answer marker
                      (``TaskSet.answer_prefix``)
    solution-logprob  mean log p per token of the task's reference solution after the prompt
                      (tasks with ``TaskSet.solution``: the organisms')

Accuracy outcomes generate (minutes per cell); the continuous ones cost one teacher-forced
forward pass per prompt, so a grid affords many more prompts and random sets for them. The
contexts of the continuous outcomes are fixed once per grid (``Inputs``), so every cell is
measured on identical token sequences and their differences are paired.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from nex_causal.errors import NexError
from nex_causal.intervene.base import OUTCOMES, OutcomeKind
from nex_causal.io import atomic_path
from nex_causal.models.evaluation import continuation_logprobs, evaluate
from nex_causal.models.generation import encode_prompts, generate
from nex_causal.models.tasks import TaskSet

if TYPE_CHECKING:
    from nex_causal.intervene.cells import GridConfig

COT_FILE = "recipient_cot.json"  # the untouched recipient's greedy responses, read by answer-logprob


class Inputs:
    """What the outcomes of one grid read: its prompts and settings, and the token sequences the
    continuous outcomes score (made once from the untouched recipient, kept under ``out``)."""

    def __init__(self, recipient, taskset: TaskSet, config: GridConfig, out: Path):
        self.recipient, self.taskset, self.config, self.out = recipient, taskset, config, out

    @cached_property
    def prompts(self) -> list[torch.Tensor]:
        return encode_prompts(self.recipient, self.taskset.prompts(), chat=self.config.chat)

    def ids(self, text: str) -> torch.Tensor:
        """``text``'s token ids under the recipient's tokenizer, without special tokens."""
        return torch.tensor(self.recipient.tokenizer(text, add_special_tokens=False).input_ids, dtype=torch.long)

    @cached_property
    def recipient_texts(self) -> list[str]:
        """The untouched recipient's greedy responses (generated once per grid, kept on disk)."""
        path = self.out / COT_FILE
        if not path.is_file():
            c = self.config
            texts = [g.text for g in generate(self.recipient, self.taskset.prompts(), max_new_tokens=c.max_new_tokens,
                                              batch_size=c.batch_size, chat=c.chat, hooks=False)]
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(texts))
        return json.loads(path.read_text())

    def untouched_greedy(self) -> np.ndarray:
        """The ``greedy`` outcome of the untouched recipient, read off its greedy responses."""
        return np.array([self.taskset.check(p, t) for p, t in zip(self.taskset.problems, self.recipient_texts)],
                        dtype=np.float64)

    @cached_property
    def answer_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(prompt + the recipient's greedy chain of thought up to its answer marker, the gold answer)."""
        contexts = [torch.cat([p, self.ids(self.taskset.answer_prefix(t))])
                    for p, t in zip(self.prompts, self.recipient_texts)]
        return contexts, [self.ids(p.target) for p in self.taskset.problems]

    @cached_property
    def solution_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(prompt, the task's reference solution)."""
        if self.taskset.solution is None:
            raise NexError(f"task set {self.taskset.name!r} has no reference solutions: use the answer-logprob "
                           "outcome instead of solution-logprob")
        return self.prompts, [self.ids(self.taskset.solution(p)) for p in self.taskset.problems]


def _accuracy(temperature: Callable[[GridConfig], float]) -> Callable[[Inputs, object, bool], np.ndarray]:
    def measure(inputs: Inputs, model, hooks: bool) -> np.ndarray:
        c = inputs.config
        return evaluate(model, inputs.taskset, max_new_tokens=c.max_new_tokens, temperature=temperature(c),
                        top_p=c.top_p, seed=c.seed, batch_size=c.batch_size, chat=c.chat,
                        hooks=hooks).correct.astype(np.float64)
    return measure


def _answer_logprob(inputs: Inputs, model, hooks: bool) -> np.ndarray:
    contexts, answers = inputs.answer_pairs
    return continuation_logprobs(model, contexts, answers, batch_size=inputs.config.batch_size, hooks=hooks)[0]


def _solution_logprob(inputs: Inputs, model, hooks: bool) -> np.ndarray:
    prompts, solutions = inputs.solution_pairs
    total, count = continuation_logprobs(model, prompts, solutions, batch_size=inputs.config.batch_size, hooks=hooks)
    return total / np.maximum(count, 1)


OUTCOMES.add("greedy", OutcomeKind(_accuracy(lambda c: 0.0), continuous=False))
OUTCOMES.add("sampled", OutcomeKind(_accuracy(lambda c: c.temperature), continuous=False))
OUTCOMES.add("answer-logprob", OutcomeKind(_answer_logprob, continuous=True))
OUTCOMES.add("solution-logprob", OutcomeKind(_solution_logprob, continuous=True))
