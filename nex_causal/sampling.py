"""Batched, seeded generation through a TransformerBridge with a KV cache.

Every forward pass goes through the bridge, so hooks on ``blocks.{l}.mlp.hook_post`` see
each generated token. Alignment convention, used by capture and the output-based scores:
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from nex_causal.errors import NexError
from nex_causal.models import forward_step

TOP_K_CONFIDENCE = 20  # DeepConf's k (NEX_METHOD section 8)

# on_step(step, sampled, active): after the forward pass of ``step`` and its sampling;
# ``sampled`` [B] are the tokens just generated, ``active`` [B] marks the rows for which
# this step produced a real token (rows that already finished are False).
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass
class Generation:
    """One generated response and the per-token quantities of its next-token distributions."""

    tokens: np.ndarray  # generated token ids (the EOS token included when it ended the response)
    text: str  # decoded without special tokens
    finish_reason: str  # "eos" or "length"
    token_logprob: np.ndarray  # log p(generated token), under the model's own distribution
    token_entropy: np.ndarray  # entropy of the next-token distribution (nats)
    token_top20_logprob_sum: np.ndarray  # sum of the 20 largest log-probs (DeepConf)
    token_kl_uniform: np.ndarray  # KL(U || p) = -log V - mean_j log p_j (self-certainty)

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
    """
    tokenizer = bridge.tokenizer
    if not chat:
        return [bridge.to_tokens(p, padding_side="left")[0].cpu() for p in prompts]
    if not getattr(tokenizer, "chat_template", None):
        raise NexError("this model's tokenizer has no chat template: run without --chat")
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]
    return [torch.tensor(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]


def token_statistics(logits: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    """Per-row [log p(sampled), entropy, top-20 log-prob sum, KL(U||p)] of float32 ``logits`` [B, V]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    vocab = logp.shape[-1]
    chosen = logp.gather(-1, sampled[:, None])[:, 0]
    entropy = -(p * logp).sum(-1)
    top = logp.topk(min(TOP_K_CONFIDENCE, vocab), dim=-1).values.sum(-1)
    kl_uniform = -math.log(vocab) - logp.mean(-1)
    return torch.stack([chosen, entropy, top, kl_uniform], dim=-1)


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
            if on_step is not None:
                on_step(step, sampled, active)
            if eos is not None:
                active = active & (sampled != eos)
            if not bool(active.any()):
                break
            step_input = sampled[:, None]
            step_position = step_position[:, -1:] + 1
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=1)

    tokens = torch.stack(out_tokens, 1).numpy()
    stats = torch.stack(out_stats, 1).numpy().astype(np.float32)
    alive = torch.stack(out_active, 1).numpy()
    results = []
    for i in range(n):
        length = int(alive[i].sum())
        seq = tokens[i, :length]
        ended = eos is not None and length > 0 and seq[-1] == eos
        results.append(Generation(
            tokens=seq.astype(np.int64),
            text=tokenizer.decode(seq.tolist(), skip_special_tokens=True),
            finish_reason="eos" if ended else "length",
            token_logprob=stats[i, :length, 0], token_entropy=stats[i, :length, 1],
            token_top20_logprob_sum=stats[i, :length, 2], token_kl_uniform=stats[i, :length, 3],
        ))
    return results


def generate(bridge, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, batch_size: int = 16, chat: bool = False,
             progress: bool = False, desc: str = "generating") -> list[Generation]:
    """Generate one response per prompt in batches; sequence ``i`` is seeded by ``(seed, i)``."""
    if max_new_tokens < 1:
        raise NexError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not 0.0 < top_p <= 1.0:
        raise NexError(f"top_p must be in (0, 1], got {top_p}")
    encoded = encode_prompts(bridge, prompts, chat=chat)
    results: list[Generation] = []
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        chunk = range(start, min(start + batch_size, len(prompts)))
        results += generate_batch(
            bridge, [encoded[i] for i in chunk], max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, seeds=[sequence_seed(seed, i) for i in chunk])
        bar.update(len(chunk))
    bar.close()
    return results
