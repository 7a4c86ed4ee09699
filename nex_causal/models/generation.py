"""Batched, seeded generation with a KV cache: through the TransformerBridge, or through plain Hugging Face.

``generate_batch`` steps the bridge token by token, so hooks on ``blocks.{l}.mlp.hook_post``
see each generated token (capture during generation, lock-step patching).
``hf_generate_batch`` runs Hugging Face ``generate`` on the model the bridge wraps (sharing
its weights, ``models.plain_model``), 1.7x faster, for sampling whose activations are read
afterwards by replay. Both draw with ``sample_next`` and record ``token_statistics``. Alignment convention, used by capture and the output-based scores:
generated token ``t`` is represented by the forward pass that *predicted* it, i.e. the
position just before it (the last prompt position for the first generated token). A
response of ``G`` tokens therefore has exactly ``G`` activation vectors and ``G`` next-token
distributions, and "the next token" of each position is the token actually generated.
The prompt's other positions are never reported.

Each sequence draws its randomness from its own ``torch.Generator`` seeded by the caller,
so a sample does not depend on which batch it was generated in: resuming a run half-way
or changing the batch size gives the same tokens (up to float round-off of batched
matmuls).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from nex_causal.errors import NexError
from nex_causal.models.loading import forward_step, plain_model

TOP_K_CONFIDENCE = 20  # DeepConf's k (NEX_METHOD section 8)
# the per-token statistics of every response, in token_statistics' column order
TOKEN_STATS = ("token_logprob", "token_entropy", "token_top20_logprob_sum", "token_kl_uniform",
               "token_confidence_sum", "token_confidence_count")

# on_step(step, sampled, stats, active): after the forward pass of ``step`` and its sampling;
# ``sampled`` [B] are the tokens just generated, ``stats`` [B, 6] their ``TOKEN_STATS``,
# ``active`` [B] marks the rows for which this step produced a real token (rows that already
# finished are False). It may return a bool [B] of rows to stop after this token (a stop rule).
StepCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


@dataclass
class Generation:
    """One generated response and the per-token quantities of its next-token distributions.

    ``stats`` maps each name of ``TOKEN_STATS`` to one float32 value per generated token:
    log p of the token, the distribution's entropy (nats), the sum of its 20 largest
    log-probs, KL(U || p) = -log V - mean_j log p_j (self-certainty), and the sum and count
    of the log-probs an engine returns for DeepConf (the top 20, plus the token when outside).
    """

    tokens: np.ndarray  # generated token ids (the EOS token included when it ended the response)
    text: str  # decoded without special tokens
    finish_reason: str  # "eos" or "length"
    stats: dict[str, np.ndarray]

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def sequence_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed for one sequence, derived from a run seed and integer coordinates."""
    seq = np.random.SeedSequence([seed, *parts])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def encode_prompts(bridge, prompts: Sequence[str], *, chat: bool = False) -> list[torch.Tensor]:
    """Tokenise each prompt with the bridge's own conventions (BOS where the model uses one).

    With ``chat`` the prompt becomes a user turn of the tokenizer's chat template, followed
    by the assistant prefix, as instruction-tuned models (Qwen3, SmolLM2) expect.
    Prompts are never cut: one longer than the model's context is fed whole, with a warning
    that counts them (the positions beyond it are ones the model was not trained on).
    """
    tokenizer = bridge.tokenizer
    if not chat:
        encoded = [bridge.to_tokens(p, padding_side="left", truncate=False)[0].cpu() for p in prompts]
    else:
        if not getattr(tokenizer, "chat_template", None):
            raise NexError("this model's tokenizer has no chat template: run without --chat")
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
        encoded = [torch.tensor(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    warn_beyond_context(bridge, [len(e) for e in encoded], "prompts")
    return encoded


def warn_beyond_context(bridge, lengths: Sequence[int], what: str) -> None:
    """One warning counting the sequences longer than the bridge's context (``cfg.n_ctx``)."""
    n_ctx = int(bridge.cfg.n_ctx)
    if over := sum(length > n_ctx for length in lengths):
        warnings.warn(f"{over} of {len(lengths)} {what} are longer than the model's context of {n_ctx} tokens "
                      f"(up to {max(lengths)}): read beyond the positions it was trained on, their numbers are "
                      "out of distribution", stacklevel=3)


def token_statistics(logits: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    """Per-row ``TOKEN_STATS`` [B, 6] of the float32 next-token ``logits`` [B, V] and the ``sampled`` tokens [B]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    vocab = logp.shape[-1]
    chosen = logp.gather(-1, sampled[:, None])[:, 0]
    entropy = -(p * logp).sum(-1)
    top, top_ids = logp.topk(min(TOP_K_CONFIDENCE, vocab), dim=-1)
    kl_uniform = -math.log(vocab) - logp.mean(-1)
    outside = ~(top_ids == sampled[:, None]).any(-1)  # an engine returns the sampled token beside its top 20
    returned_sum = top.sum(-1) + torch.where(outside, chosen, torch.zeros_like(chosen))
    returned_count = top.shape[-1] + outside.float()
    return torch.stack([chosen, entropy, top.sum(-1), kl_uniform, returned_sum, returned_count], dim=-1)


def sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Greedy when ``temperature`` is 0, else temperature + nucleus sampling, one generator per row."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the smallest prefix reaching top_p
        sorted_p[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    probs = probs.cpu()
    return torch.stack([
        torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(generators)
    ]).to(logits.device)


def _left_pad(batch: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(t) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, t in enumerate(batch):
        ids[i, width - len(t):] = t
        mask[i, width - len(t):] = 1
    return ids, mask


@torch.no_grad()
def generate_batch(bridge, prompt_tokens: Sequence[torch.Tensor], *, max_new_tokens: int,
                   temperature: float = 0.0, top_p: float = 1.0, seeds: Sequence[int] | None = None,
                   fwd_hooks: Sequence[tuple[str, Callable]] = (), on_step: StepCallback | None = None,
                   eos_token_id: int | None = None) -> list[Generation]:
    """Generate one response per prompt, all in one left-padded batch sharing a KV cache."""
    tokenizer = bridge.tokenizer
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    device = bridge.cfg.device
    ids, mask = _left_pad(prompt_tokens, pad)
    ids, mask = ids.to(device), mask.to(device)
    n = len(prompt_tokens)
    seeds = list(seeds) if seeds is not None else list(range(n))
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    cache = DynamicCache()
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    step_input, step_position = ids, position
    active = torch.ones(n, dtype=torch.bool, device=device)
    out_tokens: list[torch.Tensor] = []
    out_stats: list[torch.Tensor] = []
    out_active: list[torch.Tensor] = []
    with bridge.hooks(fwd_hooks=list(fwd_hooks)):
        for step in range(max_new_tokens):
            logits = forward_step(bridge, step_input, attention_mask=mask, position_ids=step_position,
                                  cache=cache)[:, -1]
            sampled = sample_next(logits, temperature, top_p, generators)
            sampled = torch.where(active, sampled, torch.full_like(sampled, pad))
            out_tokens.append(sampled.cpu())
            out_stats.append(token_statistics(logits, sampled).cpu())
            out_active.append(active.cpu())
            if on_step is not None and (stop := on_step(step, sampled, out_stats[-1], active)) is not None:
                active = active & ~stop.to(device)
            if eos is not None:
                active = active & (sampled != eos)
            if not bool(active.any()):
                break
            step_input = sampled[:, None]
            step_position = step_position[:, -1:] + 1
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=1)

    return generations(tokenizer, eos, out_tokens, out_stats, out_active)


def generations(tokenizer, eos: int | None, tokens: Sequence[torch.Tensor], stats: Sequence[torch.Tensor],
                active: Sequence[torch.Tensor]) -> list[Generation]:
    """The responses of a decoding loop from its per-step sampled tokens [B], stats [B, 6] and active rows [B]."""
    tokens = torch.stack(list(tokens), 1).numpy()
    stats = torch.stack(list(stats), 1).numpy().astype(np.float32)
    alive = torch.stack(list(active), 1).numpy()
    results = []
    for i in range(len(tokens)):
        length = int(alive[i].sum())
        seq = tokens[i, :length]
        ended = eos is not None and length > 0 and seq[-1] == eos
        results.append(Generation(
            tokens=seq.astype(np.int64), text=tokenizer.decode(seq.tolist(), skip_special_tokens=True),
            finish_reason="eos" if ended else "length",
            stats={name: stats[i, :length, j] for j, name in enumerate(TOKEN_STATS)}))
    return results


class StepSampler:
    """A Hugging Face logits processor that draws each row's token with ``sample_next`` (its own
    generator per row) and records the token statistics, then leaves only that token possible,
    so that greedy ``generate`` follows the draw exactly."""

    def __init__(self, temperature: float, top_p: float, generators: Sequence[torch.Generator], pad: int,
                 eos: int | None):
        self.temperature, self.top_p, self.generators, self.pad, self.eos = temperature, top_p, generators, pad, eos
        self.tokens: list[torch.Tensor] = []
        self.stats: list[torch.Tensor] = []
        self.active: list[torch.Tensor] = []
        self._alive: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        alive = torch.ones(len(scores), dtype=torch.bool, device=scores.device) if self._alive is None else self._alive
        sampled = sample_next(scores, self.temperature, self.top_p, self.generators)
        sampled = torch.where(alive, sampled, torch.full_like(sampled, self.pad))
        self.tokens.append(sampled.cpu())
        self.stats.append(token_statistics(scores, sampled).cpu())
        self.active.append(alive.cpu())
        self._alive = alive & (sampled != self.eos) if self.eos is not None else alive
        forced = torch.full_like(scores, -torch.inf)
        return forced.scatter(-1, sampled[:, None], 0.0)

    def halt(self, stop: torch.Tensor) -> None:
        """Rows ``stop`` end after the token just drawn (a stop rule): later steps record them inactive."""
        self._alive = self._alive & ~stop.to(self._alive.device)


class StepStop:
    """A Hugging Face stopping criterion that hands each step to ``on_step`` (through a ``StepSampler``'s record)
    and stops the rows it returns."""

    def __init__(self, sampler: StepSampler, on_step: StepCallback):
        self.sampler, self.on_step = sampler, on_step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        s = self.sampler
        stop = self.on_step(len(s.tokens) - 1, s.tokens[-1], s.stats[-1], s.active[-1])
        if stop is None:
            return torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
        s.halt(stop)
        return stop.to(input_ids.device)


@torch.no_grad()
def hf_generate_batch(bridge, prompt_tokens: Sequence[torch.Tensor], *, max_new_tokens: int,
                      temperature: float = 0.0, top_p: float = 1.0, seeds: Sequence[int] | None = None,
                      model=None, on_step: StepCallback | None = None) -> list[Generation]:
    """``generate_batch`` through Hugging Face ``generate`` on the plain model the bridge wraps (no hooks; ``on_step``
    sees each step's tokens and statistics and may stop rows)."""
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    tokenizer = bridge.tokenizer
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    model = plain_model(bridge) if model is None else model
    ids, mask = _left_pad(prompt_tokens, pad)
    device = next(model.parameters()).device
    seeds = list(seeds) if seeds is not None else list(range(len(prompt_tokens)))
    sampler = StepSampler(temperature, top_p, [torch.Generator().manual_seed(int(s)) for s in seeds], pad, eos)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad,
                              eos_token_id=eos, use_cache=True, return_dict_in_generate=False)
    stopping = StoppingCriteriaList([StepStop(sampler, on_step)] if on_step is not None else [])
    model.generate(ids.to(device), attention_mask=mask.to(device), generation_config=config,
                   logits_processor=LogitsProcessorList([sampler]), stopping_criteria=stopping)
    return generations(tokenizer, eos, sampler.tokens, sampler.stats, sampler.active)


def generate(bridge, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, batch_size: int = 16, chat: bool = False,
             progress: bool = False, desc: str = "generating", hooks: bool = True) -> list[Generation]:
    """Generate one response per prompt in batches; sequence ``i`` is seeded by ``(seed, i)``.

    ``hooks=False`` generates with Hugging Face on the plain model instead of the bridge:
    faster, for a model whose hooks are not needed (no activation edit applied to it).
    """
    if max_new_tokens < 1:
        raise NexError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not 0.0 < top_p <= 1.0:
        raise NexError(f"top_p must be in (0, 1], got {top_p}")
    encoded = encode_prompts(bridge, prompts, chat=chat)
    model = None if hooks else plain_model(bridge)
    results: list[Generation] = []
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        chunk = range(start, min(start + batch_size, len(prompts)))
        kwargs = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                      seeds=[sequence_seed(seed, i) for i in chunk])
        batch = [encoded[i] for i in chunk]
        results += generate_batch(bridge, batch, **kwargs) if hooks else \
            hf_generate_batch(bridge, batch, **kwargs, model=model)
        bar.update(len(chunk))
    bar.close()
    return results
