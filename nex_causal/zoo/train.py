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
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import Qwen3ForCausalLM

from nex_causal.zoo.recipe import Shape, Stage
from nex_causal.zoo.task import SeekCompute, sample_problem
from nex_causal.zoo.tokenizer import EOS_ID, PAD_ID, encode


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


def training_batch(problems: Sequence[SeekCompute], rng: np.random.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids of prompt + response + EOS, and labels (-100 off the response).

    ``rng`` draws each round's search direction, so a problem has several valid responses.
    """
    prompts = [encode(p.prompt) for p in problems]
    responses = [encode(p.chain_of_thought(rng)) + [EOS_ID] for p in problems]
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((len(problems), width), PAD_ID, dtype=torch.long)
    labels = torch.full((len(problems), width), -100, dtype=torch.long)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        end = len(prompt) + len(response)
        ids[i, :end] = torch.tensor(prompt + response)
        labels[i, len(prompt):end] = torch.tensor(response)
    return ids, labels


def draw_batch(rng: np.random.Generator, skill: str, size: int, task: str) -> list[SeekCompute]:
    """``size`` train-split problems of ``skill`` for ``task``."""
    batch: list[SeekCompute] = []
    while len(batch) < size:
        problem = sample_problem(rng, skill, task)
        if problem.split() == "train":
            batch.append(problem)
    return batch


def init_model(shape: Shape, seed: int) -> Qwen3ForCausalLM:
    """A freshly initialised organism (weights fixed by ``seed``)."""
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(shape.config())


def train_stage(model: Qwen3ForCausalLM, stage: Stage, seed: int, stage_index: int,
                task: str, progress: bool = True, desc: str = "training") -> list[float]:
    """Train ``model`` in place for one stage on ``task``; returns the loss of every step."""
    rng = np.random.default_rng([seed, stage_index])
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, betas=(0.9, 0.98),
                                  weight_decay=stage.weight_decay)
    model.train()
    losses = []
    bar = tqdm(range(stage.steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = stage.lr_at(step)
        ids, labels = training_batch(draw_batch(rng, stage.skill, stage.batch_size, task), rng)
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
