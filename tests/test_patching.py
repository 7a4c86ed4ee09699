"""Activation interventions on hook_post: exactness, composition, reversibility, lock-step donors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nex_causal.errors import NexError
from nex_causal.intervene.neuron_sets import NeuronSet
from nex_causal.intervene.patching import (
    DonorPatch,
    MeanAblation,
    Scaling,
    ZeroAblation,
    activation_means,
    intervened,
)
from nex_causal.models.generation import encode_prompts, generate_batch
from nex_causal.models.geometry import MLPGeometry
from nex_causal.models.loading import load_bridge

PROMPTS = ["p=11 a=3 b=4 c=5 d=7 e=2|x0:4", "p=7 a=2|"]
SET = NeuronSet.from_units("s", [0, 0, 1, 1, 1], [3, 64, 0, 5, 127])


@pytest.fixture(scope="module")
def recipient(tiny_qwen3_dir):
    return load_bridge(tiny_qwen3_dir)


@pytest.fixture(scope="module")
def twin(tiny_qwen3_dir):
    """A second, separately loaded copy of the recipient."""
    return load_bridge(tiny_qwen3_dir)


@pytest.fixture(scope="module")
def donor(tiny_qwen3_dir):
    """A distinct model of the same shape: the recipient with seeded noise on every weight."""
    bridge = load_bridge(tiny_qwen3_dir)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in bridge.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen))
    return bridge


def tokens(bridge, text=PROMPTS[0]) -> torch.Tensor:
    return bridge.to_tokens(text)


def run(model, text=PROMPTS[0]) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens(model, text))


def post(model, layer: int, text=PROMPTS[0]) -> torch.Tensor:
    """``hook_post`` of ``layer`` as the rest of the network sees it (after every edit)."""
    seen = {}

    def keep(act, hook):
        seen["act"] = act.detach().clone()

    with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", keep)]):
        model(tokens(model, text))
    return seen["act"][0]


def generate(model, temperature: float, prompts=PROMPTS, steps: int = 12):
    encoded = encode_prompts(model, prompts)
    return [g.tokens for g in generate_batch(model, encoded, max_new_tokens=steps, temperature=temperature,
                                             seeds=[11, 12][:len(prompts)], eos_token_id=-1)]


def test_patching_the_recipients_own_activations_is_a_no_op(recipient, twin):
    every = NeuronSet.from_units("all", np.repeat([0, 1], 128), np.tile(np.arange(128), 2))
    base = run(recipient)
    sampled = generate(recipient, temperature=1.0)
    with intervened(recipient, [DonorPatch(twin, every)]) as model:
        assert torch.equal(run(model), base)
        assert all(np.array_equal(a, b) for a, b in zip(generate(model, temperature=1.0), sampled))


def test_zero_ablation_equals_zeroing_the_down_projection_column(tiny_qwen3_dir, recipient):
    with intervened(recipient, [ZeroAblation(SET)]) as model:
        ablated = run(model)
    edited = load_bridge(tiny_qwen3_dir)
    geometry = MLPGeometry.of(edited)
    for layer, units in SET.by_layer().items():
        weights = geometry.neuron_weights(layer, units)
        weights["out"] = torch.zeros_like(weights["out"])
        geometry.set_neuron_weights(layer, units, weights)
    expected = run(edited)
    assert not torch.allclose(expected, run(recipient), atol=1e-4)  # the ablation matters
    torch.testing.assert_close(ablated, expected, rtol=0, atol=1e-6)


def test_edits_replace_exactly_the_sets_units(recipient, donor):
    """In the first layer of the set nothing upstream changed, so every other unit is bit-identical."""
    clean = post(recipient, 0)
    units = torch.tensor(SET.by_layer()[0])
    others = torch.ones(128, dtype=torch.bool)
    others[units] = False
    means = np.arange(2 * 128, dtype=np.float32).reshape(2, 128)
    donor_post = post(donor, 0)
    cases = [
        (ZeroAblation(SET), torch.zeros(len(units))),
        (Scaling(SET, 2.5), 2.5 * clean[:, units]),
        (MeanAblation(SET, means), torch.as_tensor(means[0, units.numpy()])),
        (DonorPatch(donor, SET), donor_post[:, units]),
    ]
    for intervention, expected in cases:
        with intervened(recipient, [intervention]) as model:
            edited = post(model, 0)
        torch.testing.assert_close(edited[:, units], expected.expand_as(edited[:, units]), rtol=1e-6, atol=0)
        assert torch.equal(edited[:, others], clean[:, others])


def test_scaling_by_one_is_exact_and_by_zero_is_zero_ablation(recipient):
    base = run(recipient)
    with intervened(recipient, [Scaling(SET, 1.0)]) as model:
        assert torch.equal(run(model), base)
    with intervened(recipient, [ZeroAblation(SET)]) as model:
        zero = run(model)
    with intervened(recipient, [Scaling(SET, 0.0)]) as model:
        assert torch.equal(run(model), zero)


def test_interventions_compose_in_list_order(recipient, donor):
    units = torch.tensor(SET.by_layer()[0])
    donor_post = post(donor, 0)
    with intervened(recipient, [DonorPatch(donor, SET), Scaling(SET, 0.5)]) as model:
        torch.testing.assert_close(post(model, 0)[:, units], 0.5 * donor_post[:, units], rtol=1e-6, atol=0)
    with intervened(recipient, [Scaling(SET, 0.5), DonorPatch(donor, SET)]) as model:
        torch.testing.assert_close(post(model, 0)[:, units], donor_post[:, units], rtol=1e-6, atol=0)


def test_every_intervention_is_undone_on_exit_even_after_an_error(recipient, donor):
    base, sampled = run(recipient), generate(recipient, temperature=1.0)
    means = np.ones((2, 128), dtype=np.float32)
    with pytest.raises(RuntimeError, match="boom"):
        edits = [DonorPatch(donor, SET), MeanAblation(SET, means), Scaling(SET, 3)]
        with intervened(recipient, edits) as model:
            assert not torch.allclose(run(model), base)
            raise RuntimeError("boom")
    assert torch.equal(run(recipient), base)
    assert all(np.array_equal(a, b) for a, b in zip(generate(recipient, temperature=1.0), sampled))


def test_lock_step_generation_feeds_the_donor_the_recipients_tokens(recipient, donor):
    """Each token generated under a donor patch is what the same patch predicts teacher-forced
    on the finished sequence, so at every step the donor saw exactly the recipient's tokens
    (left padding, masks and positions included: the two prompts differ in length)."""
    patch = [DonorPatch(donor, SET)]
    plain = generate(recipient, temperature=0.0)
    with intervened(recipient, patch) as model:
        patched = generate(model, temperature=0.0)
    assert any(not np.array_equal(a, b) for a, b in zip(plain, patched))  # the patch changes the output
    for prompt, generated in zip(PROMPTS, patched):
        prompt_ids = tokens(recipient, prompt)[0]
        full = torch.cat([prompt_ids, torch.as_tensor(generated)])[None]
        with torch.no_grad(), intervened(recipient, patch) as model:
            predicted = model(full)[0, len(prompt_ids) - 1:-1].argmax(-1)
        assert predicted.tolist() == generated.tolist()


def test_activation_means_match_a_direct_average_and_ignore_padding(recipient):
    texts = ["p=11 a=3 b=4 c=5 d=7 e=2|x0:4 x1:7", "p=7|", "abc"]
    acts = torch.cat([post(recipient, 1, t) for t in texts])
    expected = acts.double().mean(0).float().numpy()
    sequences = [tokens(recipient, t)[0] for t in texts]
    one_by_one = activation_means(recipient, sequences, batch_size=1)
    batched = activation_means(recipient, sequences, batch_size=3)
    assert one_by_one.shape == (2, 128)
    np.testing.assert_allclose(one_by_one[1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-6)


def test_mean_ablation_with_measured_means_keeps_the_mean_of_those_units(recipient):
    text = "p=11 a=3 b=4 c=5 d=7 e=2|x0:4 x1:7"
    means = activation_means(recipient, [tokens(recipient, text)[0]])
    with intervened(recipient, [MeanAblation(SET, means)]) as model:
        edited = post(model, 0, text)
    units = SET.by_layer()[0]
    expected = np.broadcast_to(means[0, units], (edited.shape[0], len(units)))
    np.testing.assert_allclose(edited[:, units].numpy(), expected)


def test_bad_interventions_name_the_problem(recipient, donor):
    with pytest.raises(NexError, match=r"shape \(1, 128\).*2 layers x 128 units"):
        with intervened(recipient, [MeanAblation(SET, np.zeros((1, 128)))]):
            pass
    with pytest.raises(NexError, match=r"\(layer 3, unit 0\), outside"):
        with intervened(recipient, [ZeroAblation(NeuronSet.from_units("far", [3], [0]))]):
            pass
    with pytest.raises(NexError, match="donor of a patch is the recipient bridge itself"):
        with intervened(recipient, [DonorPatch(recipient, SET)]):
            pass
    with pytest.raises(NexError, match="without the donor in lock step"):
        with intervened(recipient, [DonorPatch(donor, SET)]):
            run(recipient)  # the bridge, not the yielded model
    assert torch.equal(run(recipient), run(recipient))  # and nothing was left attached
    with pytest.raises(NexError, match="at least one reference sequence"):
        activation_means(recipient, [])
