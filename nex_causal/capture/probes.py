"""Trial answers (DEER, Yang et al. 2025): what the model would answer if its chain of thought stopped here.

At a checkpoint the prefix written so far is closed with the task's answer marker (the text
``TaskSet.answer_prefix`` puts before an answer: scout's ``#``, ``Answer:``), and the model
decodes greedily for at most ``max_tokens`` tokens, up to its end of sequence or a new line.
The trial answer is the shortest run of those tokens from which the task extracts what it
extracts from them all (scout's digits, an ``Answer:`` line's number); its confidence is the
mean probability of its tokens (each the most probable: DEER's mean maximum probability),
and the response it exits with is the prefix, the marker and the trial answer. A prefix that
already holds its answer marker before an answer gets no trial.

The same function serves a stop rule inside generation (``capture.online``) and the
offline evaluation of captured traces (``probe_traces``), so both read the same trials.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from nex_causal.models.generation import hf_generate_batch


@dataclass(frozen=True)
class Trial:
    """A trial answer: its ``confidence``, the token ids an exit appends (marker, then the trial), and the text of
    the response after such an exit."""

    confidence: float
    tokens: np.ndarray
    text: str


def marker_suffix(prefix: str, answer_prefix: Callable[[str], str]) -> str | None:
    """What closes ``prefix`` before an answer: ``answer_prefix(prefix)`` less the prefix (whitespace it ends with
    counted once); None when the prefix already holds its marker and more (no trial there)."""
    closed, kept = answer_prefix(prefix), prefix.rstrip()
    if not closed.startswith(kept):
        return None
    suffix, trailing = closed[len(kept):], prefix[len(kept):]
    return suffix[len(trailing):] if suffix.startswith(trailing) else suffix


def trial_answers(bridge, model, prompts: Sequence[torch.Tensor], prefixes: Sequence[np.ndarray],
                  answer_prefix: Callable[[str], str], extract: Callable[[str], str | None], *, max_tokens: int,
                  batch_size: int = 128) -> list[Trial | None]:
    """The trial answer after each prompt + generated ``prefixes[i]`` (None where no trial applies), greedy on the
    plain Hugging Face ``model`` (no hooks of the bridge fire), in batches of similar lengths."""
    tokenizer = bridge.tokenizer
    out: list[Trial | None] = [None] * len(prefixes)
    texts = [tokenizer.decode(np.asarray(p).tolist(), skip_special_tokens=True) for p in prefixes]
    suffixes = [marker_suffix(t, answer_prefix) for t in texts]
    marks = {i: np.asarray(tokenizer(s, add_special_tokens=False).input_ids, np.int64)
             for i, s in enumerate(suffixes) if s is not None}
    todo = sorted(marks, key=lambda i: len(prompts[i]) + len(prefixes[i]))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        inputs = [torch.tensor(np.concatenate([np.asarray(prompts[i]), np.asarray(prefixes[i]), marks[i]]),
                               dtype=torch.long) for i in chunk]
        for i, gen in zip(chunk, hf_generate_batch(bridge, inputs, max_new_tokens=max_tokens, temperature=0.0,
                                                   model=model)):
            head = texts[i] + suffixes[i]
            n = _answer_length(tokenizer, gen.tokens, lambda k: extract(head + tokenizer.decode(
                gen.tokens[:k].tolist(), skip_special_tokens=True)))
            confidence = float(np.mean(np.exp(gen.stats["token_logprob"][:n]))) if n else float("nan")
            out[i] = Trial(confidence, np.concatenate([marks[i], gen.tokens[:n]]),
                           head + tokenizer.decode(gen.tokens[:n].tolist(), skip_special_tokens=True))
    return out


def _answer_length(tokenizer, tokens: np.ndarray, extracted: Callable[[int], str | None]) -> int:
    """How many of the trial's tokens make its answer: of those before its end of sequence or first new line, the
    fewest from which the task extracts what it extracts from them all (0 when that is no answer)."""
    whole = next((n for n, token in enumerate(tokens.tolist())
                  if token == tokenizer.eos_token_id or "\n" in tokenizer.decode([token])), len(tokens))
    answer = extracted(whole)
    if answer is None:
        return 0
    return next(k for k in range(whole + 1) if extracted(k) == answer)


def checkpoints(n_tokens: int, finish_reason: str, every: int) -> list[int]:
    """The steps at which a trace that generation left at ``n_tokens`` was still being written with a multiple of
    ``every`` tokens (the step that wrote its end of sequence no longer counts)."""
    last = n_tokens - 1 if finish_reason == "eos" else n_tokens
    return list(range(every, last + 1, every))


def probe_traces(bridge, responses: pd.DataFrame, answer_prefix: Callable[[str], str],
                 extract: Callable[[str], str | None], *, every: int, max_tokens: int, batch_size: int = 128
                 ) -> pd.DataFrame:
    """Every checkpoint's trial of every response of a traces table or a cache's responses (``response``: its
    row, ``tokens``: the step, ``confidence``, ``text``, ``added``: the token ids an exit appends)."""
    from nex_causal.models.loading import plain_model

    model = plain_model(bridge)
    rows = [(r, t) for r, (n, why) in enumerate(zip(responses["n_tokens"], responses["finish_reason"]))
            for t in checkpoints(int(n), str(why), every)]
    prompts = [np.asarray(responses["prompt_token_ids"].iloc[r]) for r, _ in rows]
    prefixes = [np.asarray(responses["token_ids"].iloc[r])[:t] for r, t in rows]
    trials = trial_answers(bridge, model, prompts, prefixes, answer_prefix, extract, max_tokens=max_tokens,
                           batch_size=batch_size)
    return pd.DataFrame([{"response": r, "tokens": t, "confidence": trial.confidence, "text": trial.text,
                          "added": trial.tokens} for (r, t), trial in zip(rows, trials) if trial is not None])
