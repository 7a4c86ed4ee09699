"""Training the organism: a small Qwen3 from scratch, then variants fine-tuned from it.

Each stage trains on freshly drawn problems of one skill (train split only), with the loss
on the response tokens (chain of thought, answer, EOS) and none on the prompt. An organism
with a planted route (``zoo.route``: scout) trains through the TransformerBridge, adding
the route's penalty on the ``hook_post`` activations the caches record. Training is
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
from nex_causal.zoo.route import IGNORE, Route
from nex_causal.zoo.task import sample_problem, split_of
from nex_causal.zoo.tokenizer import EOS_ID, PAD_ID, char_tokenizer, encode


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


def training_batch(problems: Sequence, rng: np.random.Generator, route: Route | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Right-padded token ids of prompt + response + EOS, labels (-100 off the response), and, with a
    ``route``, each position's route label (the family of the token it predicts; ``IGNORE`` elsewhere).

    ``rng`` draws each response's free choices (search direction, order of strategies), so a
    problem has several valid responses.
    """
    prompts = [encode(p.prompt) for p in problems]
    if route is None:
        texts, families = [p.chain_of_thought(rng) for p in problems], None
    else:
        texts, families = zip(*(p.labels(rng) for p in problems))
    responses = [encode(text) + [EOS_ID] for text in texts]
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((len(problems), width), PAD_ID, dtype=torch.long)
    labels = torch.full((len(problems), width), -100, dtype=torch.long)
    routed = None if route is None else torch.full((len(problems), width), IGNORE, dtype=torch.long)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        end = len(prompt) + len(response)
        ids[i, :end] = torch.tensor(prompt + response)
        labels[i, len(prompt):end] = torch.tensor(response)
        if routed is not None:  # position t predicts token t + 1; the EOS belongs to no family
            routed[i, len(prompt) - 1:end - 1] = torch.tensor([route.label(f) for f in (*families[i], "none")])
    return ids, labels, routed


def draw_batch(rng: np.random.Generator, skill: str, size: int, task: str) -> list:
    """``size`` train-split problems of ``skill`` for ``task``."""
    batch: list = []
    while len(batch) < size:
        problem = sample_problem(rng, skill, task)
        if split_of(problem.prompt) == "train":
            batch.append(problem)
    return batch


def init_model(shape: Shape, seed: int) -> Qwen3ForCausalLM:
    """A freshly initialised organism (weights fixed by ``seed``)."""
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(shape.config())


@contextlib.contextmanager
def routed(model: Qwen3ForCausalLM, route: Route | None, exempt: tuple[int, int] | None = None) -> Iterator:
    """``(step, trained)`` for the block: ``step(ids, labels, route_labels) -> (loss, cross-entropy)``, and
    ``trained()``, the model to save once training is done.

    Without a route it is the plain model's loss; with one, the model runs through a
    TransformerBridge whose ``hook_post`` hooks feed the route's penalty, and ``trained``
    takes the weights back out of the bridge's wrapping.
    """
    if route is None:
        def plain(ids, labels, _):
            loss = model(input_ids=ids, labels=labels).loss
            return loss, loss
        yield plain, lambda: model
        return
    import tempfile

    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    from nex_causal.models.geometry import mlp_hook

    with tempfile.TemporaryDirectory(prefix="nex_tokenizer_") as scratch:
        char_tokenizer().save_pretrained(scratch)
        bridge = TransformerBridge.boot_transformers("organism", hf_model=model, device="cpu", dtype=torch.float32,
                                                     tokenizer=AutoTokenizer.from_pretrained(scratch))
    bridge.train()
    acts: list[torch.Tensor | None] = [None] * model.config.num_hidden_layers

    def keep(layer: int):
        def hook(act: torch.Tensor, hook) -> torch.Tensor:
            acts[layer] = act
            return act
        return hook

    hooks = [(mlp_hook(layer), keep(layer)) for layer in range(len(acts))]

    def step(ids, labels, route_labels):
        with bridge.hooks(fwd_hooks=hooks):
            logits = bridge(ids, return_type="logits")
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                               labels[:, 1:].reshape(-1), ignore_index=-100)
        return ce + route.penalty * route.penalty_of(acts, route_labels, exempt), ce

    from nex_causal.models.loading import plain_model

    yield step, lambda: plain_model(bridge)


def train_stage(model: Qwen3ForCausalLM, stage: Stage, seed: int, stage_index: int, task: str,
                progress: bool = True, desc: str = "training", route: Route | None = None
                ) -> tuple[Qwen3ForCausalLM, list[float]]:
    """Train ``model`` for one stage on ``task``; return the trained model (to save) and each step's
    cross-entropy. With a ``route`` the model is trained through a bridge and returned unwrapped; a
    ``localized`` stage trains only its free block (``zoo.localize.confined``)."""
    from nex_causal.zoo.localize import confined

    rng = np.random.default_rng([seed, stage_index])
    free = stage.localized.free if stage.localized is not None else None
    model.train()
    losses = []
    bar = tqdm(range(stage.steps), desc=desc, unit="step", disable=not progress)
    with contextlib.ExitStack() as stack:
        restore = stack.enter_context(confined(model, free)) if free else (lambda: None)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=stage.lr,
                                      betas=(0.9, 0.98), weight_decay=stage.weight_decay)
        step_loss, trained = stack.enter_context(routed(model, route, free))
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = stage.lr_at(step)
            ids, labels, route_labels = training_batch(draw_batch(rng, stage.skill, stage.batch_size, task), rng,
                                                       route)
            loss, ce = step_loss(ids, labels, route_labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            restore()
            optimizer.zero_grad(set_to_none=True)
            losses.append(ce.item())
            if step % 25 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        model = trained()
    model.eval()
    return model, losses
