"""Training the organism: a small Qwen3 from scratch, then experts fine-tuned from it.

Each stage trains on freshly drawn problems of one skill (train split only), with the loss
on the response tokens (chain of thought, answer, EOS) and none on the prompt. Training is
deterministic: the initial weights come from ``torch.manual_seed(seed)``, the data from a
numpy Generator seeded by ``(seed, stage)``, and the stage runs on a fixed number of CPU
threads with deterministic algorithms, because the thread count changes the order of
float summations and therefore the weights.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import Qwen3Config, Qwen3ForCausalLM

from nex_causal.zoo.task import SeekCompute, sample_problem
from nex_causal.zoo.tokenizer import EOS_ID, PAD_ID, VOCAB, encode


@dataclass(frozen=True)
class Shape:
    """The Qwen3 architecture's size; the rest of Qwen3Config keeps its defaults."""

    hidden: int = 64
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    max_positions: int = 320

    def config(self) -> Qwen3Config:
        return Qwen3Config(
            vocab_size=len(VOCAB), hidden_size=self.hidden, num_hidden_layers=self.layers,
            num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
            head_dim=self.hidden // self.heads, intermediate_size=self.intermediate,
            max_position_embeddings=self.max_positions, tie_word_embeddings=True,
            bos_token_id=None, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        )


@dataclass(frozen=True)
class Stage:
    """One training run: which skill, how long, and the AdamW + cosine schedule.

    The cosine decays to zero at ``decay_steps`` (default ``steps``); a stage that stops
    before then is an intermediate checkpoint of a longer run.
    """

    skill: str
    steps: int
    lr: float
    batch_size: int = 32
    warmup: int = 50
    weight_decay: float = 0.1
    decay_steps: int | None = None

    def lr_at(self, step: int) -> float:
        """Linear warmup, then cosine decay to zero at ``decay_steps``."""
        warm = min(1.0, (step + 1) / max(1, self.warmup))
        return self.lr * warm * 0.5 * (1 + math.cos(math.pi * step / (self.decay_steps or self.steps)))


@contextlib.contextmanager
def deterministic_cpu(threads: int) -> Iterator[None]:
    """Run the block on ``threads`` CPU threads with deterministic algorithms, then restore."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def training_batch(problems: Sequence[SeekCompute]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids of prompt + response + EOS, and labels (-100 off the response)."""
    prompts = [encode(p.prompt) for p in problems]
    responses = [encode(p.chain_of_thought()) + [EOS_ID] for p in problems]
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((len(problems), width), PAD_ID, dtype=torch.long)
    labels = torch.full((len(problems), width), -100, dtype=torch.long)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        end = len(prompt) + len(response)
        ids[i, :end] = torch.tensor(prompt + response)
        labels[i, len(prompt):end] = torch.tensor(response)
    return ids, labels


def draw_batch(rng: np.random.Generator, skill: str, size: int) -> list[SeekCompute]:
    """``size`` train-split problems of ``skill``."""
    batch: list[SeekCompute] = []
    while len(batch) < size:
        problem = sample_problem(rng, skill)
        if problem.split() == "train":
            batch.append(problem)
    return batch


def init_model(shape: Shape, seed: int) -> Qwen3ForCausalLM:
    """A freshly initialised organism (weights fixed by ``seed``)."""
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(shape.config())


def train_stage(model: Qwen3ForCausalLM, stage: Stage, seed: int, stage_index: int,
                progress: bool = True, desc: str = "training") -> list[float]:
    """Train ``model`` in place for one stage; returns the loss of every step."""
    rng = np.random.default_rng([seed, stage_index])
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, betas=(0.9, 0.98),
                                  weight_decay=stage.weight_decay)
    model.train()
    losses = []
    bar = tqdm(range(stage.steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = stage.lr_at(step)
        ids, labels = training_batch(draw_batch(rng, stage.skill, stage.batch_size))
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses
