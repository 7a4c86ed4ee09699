"""The gradient-based scorers: the relaxed transplant is the transplant at binary masks, and AtP is its gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nex_causal.intervene.attribution import Relaxed, atp, atp_transplant, outcome
from nex_causal.intervene.neuron_sets import NeuronSet
from nex_causal.intervene.transplant import transplanted
from nex_causal.models.geometry import MLPGeometry
from nex_causal.models.loading import load_bridge


@pytest.fixture(scope="module")
def pair(tiny_qwen3_dir):
    """Two tiny Qwen3s that differ in every MLP weight (the donor's perturbed by seeded noise)."""
    recipient, donor = load_bridge(tiny_qwen3_dir), load_bridge(tiny_qwen3_dir)
    geometry = MLPGeometry.of(donor)
    generator = torch.Generator().manual_seed(0)
    units = np.arange(geometry.d_mlp)
    for layer in range(geometry.n_layers):
        weights = geometry.neuron_weights(layer, units)
        geometry.set_neuron_weights(layer, units, {k: v + 0.5 * torch.randn(v.shape, generator=generator)
                                                   for k, v in weights.items()})
    return recipient, donor


def pairs_of(bridge, n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(1)
    alphabet = list("0123456789abcdef=+ ")
    text = lambda size: "".join(rng.choice(alphabet, size=size))  # noqa: E731
    tok = lambda t: torch.tensor(bridge.tokenizer(t, add_special_tokens=False).input_ids)  # noqa: E731
    return [(tok(text(6)), tok(text(9))) for _ in range(n)]


def test_the_relaxed_transplant_is_the_transplant_at_binary_masks(pair):
    """For a random binary mask over both layers, mixing the donor's units into the MLP outputs gives the logits of
    transplanting exactly those units' weights (to float32 rounding); the empty mask is the recipient itself."""
    recipient, donor = pair
    relaxed = Relaxed(recipient, donor)
    ids = pairs_of(recipient, 1)[0][0][None]
    rng = np.random.default_rng(0)
    chosen = rng.random((2, 128)) < 0.3
    layers, units = np.nonzero(chosen)
    with torch.no_grad():
        plain = recipient(ids, return_type="logits")
        with relaxed.mixed(torch.zeros(2, 128)):
            empty = recipient(ids, return_type="logits")
        with relaxed.mixed(torch.as_tensor(chosen, dtype=torch.float32)):
            mixed = recipient(ids, return_type="logits")
        with transplanted(recipient, donor, NeuronSet.from_units("s", layers, units)):
            moved = recipient(ids, return_type="logits")
    assert torch.allclose(empty, plain, atol=1e-6)
    assert torch.allclose(mixed, moved, atol=1e-4) and not torch.allclose(moved, plain, atol=1e-2)


def test_atp_transplant_is_the_first_order_change_of_the_outcome(pair):
    """Summed over a few units, d outcome / d m predicts the change a small step of the relaxed mask makes."""
    recipient, donor = pair
    data = pairs_of(recipient)
    relaxed = Relaxed(recipient, donor)
    gradient = atp_transplant(recipient, donor, data, batch_size=2)
    step = np.zeros((2, 128), np.float32)
    step[0, :5] = 1e-3
    moved = relaxed.objective(lambda: torch.as_tensor(step), data, 2)
    assert moved - outcome(recipient, data, 2) == pytest.approx(float((gradient * step).sum()), rel=0.05, abs=1e-7)


def test_atp_of_an_identical_donor_is_zero_and_of_an_ablation_is_the_loss_of_zeroing(pair, tiny_qwen3_dir):
    recipient, _ = pair
    data = pairs_of(recipient)
    twin = load_bridge(tiny_qwen3_dir)
    assert np.abs(atp(recipient, twin, data, batch_size=2)).max() == 0.0  # same activations: nothing to patch
    lost = atp(recipient, None, data, batch_size=2)  # sum_t g * a: first order of what zeroing a unit costs
    assert lost.shape == (2, 128) and np.abs(lost).max() > 0
