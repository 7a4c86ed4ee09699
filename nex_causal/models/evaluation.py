"""How well a model does on a task set: accuracy of its answers, and log-probabilities of given continuations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nex_causal.errors import NexError
from nex_causal.models.generation import generate
from nex_causal.models.loading import plain_model
from nex_causal.models.tasks import TaskSet


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


@torch.no_grad()
def continuation_logprobs(model, contexts: Sequence[torch.Tensor], continuations: Sequence[torch.Tensor], *,
                          batch_size: int = 32, hooks: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced sum of log p of each continuation's tokens after its context, and their count.

    One right-padded forward pass per batch of ``context + continuation`` (padding masked and
    never read), through ``model``: a bridge, or what ``intervene.intervened`` yields, so an
    intervention (donor patches in lock step included) acts on the pass. ``hooks=False`` runs
    the plain Hugging Face model the bridge wraps (about 1.7x faster; for a model whose changes,
    if any, are in its weights).
    """
    if len(contexts) != len(continuations):
        raise NexError(f"{len(contexts)} contexts but {len(continuations)} continuations: give one each")
    totals, counts = np.zeros(len(contexts)), np.array([len(c) for c in continuations], np.int64)
    device = model.cfg.device
    plain = None if hooks else plain_model(model)
    lengths = np.array([len(a) + len(b) for a, b in zip(contexts, continuations)])
    order = np.argsort(-lengths, kind="stable")  # batches of similar length: little padding
    for start in range(0, len(order), batch_size):
        items = order[start:start + batch_size]
        seqs = [torch.cat([torch.as_tensor(contexts[i]), torch.as_tensor(continuations[i])]).long() for i in items]
        width = max(len(t) for t in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, t in enumerate(seqs):
            ids[row, :len(t)], mask[row, :len(t)] = t, 1
        ids_d, mask_d = ids.to(device), mask.to(device)
        with torch.inference_mode():
            logits = model(ids_d, return_type="logits", attention_mask=mask_d) if plain is None else \
                plain(input_ids=ids_d, attention_mask=mask_d).logits
        for row, i in enumerate(items):
            first, n = len(contexts[i]), len(continuations[i])
            targets = ids[row, first:first + n].to(device)
            logp = torch.log_softmax(logits[row, first - 1:first + n - 1].float(), -1)  # only the positions read
            totals[i] = float(logp.gather(-1, targets[:, None]).sum())
    return totals, counts
