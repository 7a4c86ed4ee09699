import math

import numpy as np
import pytest
import torch

from nex_causal.errors import NexError
from nex_causal.models.generation import (
    encode_prompts,
    generate,
    generate_batch,
    sample_next,
    token_statistics,
)

PROMPTS = ["12+3=?", "1", "abc 99+1=", "7|"]


def test_uniform_distribution_statistics():
    vocab = 50
    stats = token_statistics(torch.zeros(1, vocab), torch.tensor([3]))[0]
    assert stats[0].item() == pytest.approx(-math.log(vocab), abs=1e-5)  # log p of any token
    assert stats[1].item() == pytest.approx(math.log(vocab), abs=1e-5)  # maximal entropy
    assert stats[2].item() == pytest.approx(-20 * math.log(vocab), abs=1e-4)  # top-20 log-prob sum
    assert stats[3].item() == pytest.approx(0.0, abs=1e-5)  # KL(U || U) = 0


def test_peaked_distribution_statistics():
    logits = torch.tensor([[math.log(3.0), 0.0, 0.0, 0.0]])  # p = (1/2, 1/6, 1/6, 1/6)
    stats = token_statistics(logits, torch.tensor([0]))[0]
    p = np.array([0.5, 1 / 6, 1 / 6, 1 / 6])
    assert stats[0].item() == pytest.approx(math.log(0.5), abs=1e-5)
    assert stats[1].item() == pytest.approx(-(p * np.log(p)).sum(), abs=1e-5)
    assert stats[2].item() == pytest.approx(np.log(p).sum(), abs=1e-5)  # V < 20: all tokens
    assert stats[3].item() == pytest.approx(-math.log(4) - np.log(p).mean(), abs=1e-5)


def test_tiny_top_p_is_greedy():
    logits = torch.randn(8, 30, generator=torch.Generator().manual_seed(1))
    gens = [torch.Generator().manual_seed(i) for i in range(8)]
    assert torch.equal(sample_next(logits, 1.0, 1e-6, gens), logits.argmax(-1))


def test_batched_greedy_equals_one_at_a_time_and_hf(tiny_qwen3_bridge):
    bridge = tiny_qwen3_bridge
    batched = generate(bridge, PROMPTS, max_new_tokens=10, batch_size=4)
    single = generate(bridge, PROMPTS, max_new_tokens=10, batch_size=1)
    for a, b, prompt in zip(batched, single, PROMPTS):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_allclose(a.stats["token_entropy"], b.stats["token_entropy"], atol=1e-4)
        ids = bridge.to_tokens(prompt)
        hf = bridge.original_model.generate(ids, max_new_tokens=10, do_sample=False,
                                            pad_token_id=0, eos_token_id=2)
        np.testing.assert_array_equal(a.tokens, hf[0, ids.shape[1]:].numpy())


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_hugging_face_generate_follows_the_bridge_draw_for_draw(tiny_qwen3_bridge, temperature):
    kw = dict(max_new_tokens=14, temperature=temperature, top_p=0.9, seed=2, batch_size=4)
    stepped = generate(tiny_qwen3_bridge, PROMPTS, **kw)
    fast = generate(tiny_qwen3_bridge, PROMPTS, hooks=False, **kw)
    for a, b in zip(stepped, fast):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        assert a.finish_reason == b.finish_reason and a.text == b.text
        for name in a.stats:
            np.testing.assert_allclose(a.stats[name], b.stats[name], atol=1e-4)


def test_sampling_is_seeded_per_sequence(tiny_qwen3_bridge):
    kw = dict(max_new_tokens=12, temperature=1.0)
    a = generate(tiny_qwen3_bridge, PROMPTS, seed=5, batch_size=4, **kw)
    b = generate(tiny_qwen3_bridge, PROMPTS, seed=5, batch_size=3, **kw)
    c = generate(tiny_qwen3_bridge, PROMPTS, seed=6, batch_size=4, **kw)
    assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a, b))
    assert not all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a, c))


def test_eos_stops_a_row_and_steps_report_active_rows(tiny_qwen3_bridge):
    bridge = tiny_qwen3_bridge
    free = generate(bridge, PROMPTS, max_new_tokens=8)
    stop = int(free[0].tokens[2])  # treat the third greedy token of prompt 0 as its EOS
    seen = []
    gens = generate_batch(bridge, encode_prompts(bridge, PROMPTS), max_new_tokens=8,
                          eos_token_id=stop, on_step=lambda s, tok, stats, act: seen.append(act.clone()))
    first = int(np.flatnonzero(free[0].tokens == stop)[0]) + 1
    assert gens[0].finish_reason == "eos" and gens[0].n_tokens == first
    assert gens[0].tokens[-1] == stop and len(gens[0].stats["token_entropy"]) == first
    assert sum(bool(a[0]) for a in seen) == first  # row 0 reported active exactly for its tokens
    for g in gens:
        assert g.finish_reason == ("eos" if stop in g.tokens else "length")


def test_bad_arguments_are_named(tiny_qwen3_bridge):
    with pytest.raises(NexError, match="max_new_tokens"):
        generate(tiny_qwen3_bridge, PROMPTS, max_new_tokens=0)
    with pytest.raises(NexError, match="top_p"):
        generate(tiny_qwen3_bridge, PROMPTS, max_new_tokens=3, top_p=0.0)
