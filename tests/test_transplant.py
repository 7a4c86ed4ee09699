"""Weight transplant: exact coverage of a neuron's weights, exact restore, HF directory output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import CHARS, save_char_tokenizer

from nex_causal.errors import NexError
from nex_causal.intervene.neuron_sets import NeuronSet
from nex_causal.intervene.transplant import (
    Transplant,
    transplant,
    transplanted,
    write_transplant,
)
from nex_causal.models.geometry import MLPGeometry
from nex_causal.models.loading import load_bridge

PROMPTS = ["p=11 a=3 b=4 c=5 d=7 e=2|x0:4", "p=7 a=2 b=1|"]


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    """A random 2-layer GPT-2 (biases everywhere, Conv1D weights) with the char tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("tiny_gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(CHARS) + 3, n_embd=32, n_layer=2, n_head=2,
                               n_positions=128, bos_token_id=1, eos_token_id=2)).save_pretrained(path)
    save_char_tokenizer(path)
    return path


@pytest.fixture(params=["qwen3", "gpt2"])
def model_dir(request, tiny_qwen3_dir, tiny_gpt2_dir):
    return {"qwen3": tiny_qwen3_dir, "gpt2": tiny_gpt2_dir}[request.param]


def perturbed(path, seed: int):
    """The model in ``path`` with every parameter moved by seeded noise: a distinct donor."""
    bridge = load_bridge(path)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in bridge.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return bridge


def logits(bridge) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([bridge(bridge.to_tokens(p))[0] for p in PROMPTS])


def snapshot(bridge) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in bridge.state_dict().items()}


def all_neurons(geometry: MLPGeometry) -> NeuronSet:
    layers, units = np.divmod(np.arange(geometry.n_layers * geometry.d_mlp), geometry.d_mlp)
    return NeuronSet.from_units("all", layers, units)


def neuron_owned(key: str, geometry: MLPGeometry) -> bool:
    """Whether a state-dict key is one the neuron geometry covers (the rest is 'everything else')."""
    owned = {f"mlp.{part.replace('_bias', '.bias')}" for part in geometry.keys}
    owned = {o if o.endswith(".bias") else o + ".weight" for o in owned}
    return any(key.endswith(o) for o in owned)


def test_transplanting_every_neuron_plus_everything_else_gives_the_donors_logits(model_dir):
    recipient, donor = load_bridge(model_dir), perturbed(model_dir, seed=1)
    geometry = MLPGeometry.of(recipient)
    rest = {k: v for k, v in donor.state_dict().items() if not neuron_owned(k, geometry)}
    assert len(rest) < len(donor.state_dict())  # the neuron weights really were held back
    recipient.load_state_dict(rest, strict=False)
    assert not torch.allclose(logits(recipient), logits(donor))  # MLP weights still differ
    transplant(recipient, donor, all_neurons(geometry))
    assert torch.equal(logits(recipient), logits(donor))
    for key, value in donor.state_dict().items():
        assert torch.equal(recipient.state_dict()[key], value), key


def test_one_neuron_moves_exactly_its_rows_and_column(tiny_qwen3_dir):
    recipient, donor = load_bridge(tiny_qwen3_dir), perturbed(tiny_qwen3_dir, seed=2)
    before = snapshot(recipient)
    others = torch.arange(128) != 7
    with transplanted(recipient, donor, NeuronSet.from_units("one", [1], [7])):
        after, theirs = recipient.state_dict(), donor.state_dict()
        for key, value in after.items():
            if key in ("blocks.1.mlp.gate.weight", "blocks.1.mlp.in.weight"):  # HF [d_mlp, d_model]
                assert torch.equal(value[7], theirs[key][7])  # the unit's row
                assert torch.equal(value[others], before[key][others])
            elif key == "blocks.1.mlp.out.weight":  # [d_model, d_mlp]
                assert torch.equal(value[:, 7], theirs[key][:, 7])  # the unit's column
                assert torch.equal(value[:, others], before[key][:, others])
            else:
                assert torch.equal(value, before[key]), key


def test_the_empty_set_changes_nothing(model_dir):
    recipient, donor = load_bridge(model_dir), perturbed(model_dir, seed=3)
    before, base = snapshot(recipient), logits(recipient)
    with transplanted(recipient, donor, NeuronSet("empty", np.zeros(0, dtype=np.uint32))):
        assert torch.equal(logits(recipient), base)
        assert all(torch.equal(v, before[k]) for k, v in recipient.state_dict().items())


def test_the_context_restores_bit_exact_weights_even_when_the_body_raises(model_dir):
    recipient, donor = load_bridge(model_dir), perturbed(model_dir, seed=4)
    geometry = MLPGeometry.of(recipient)
    before, base = snapshot(recipient), logits(recipient)
    with pytest.raises(RuntimeError, match="boom"):
        with transplanted(recipient, donor, all_neurons(geometry)):
            assert not torch.equal(logits(recipient), base)
            raise RuntimeError("boom")
    for key, value in recipient.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(logits(recipient), base)


def test_transplant_is_an_intervention(tiny_qwen3_dir):
    from nex_causal.intervene.patching import intervened

    recipient, donor = load_bridge(tiny_qwen3_dir), perturbed(tiny_qwen3_dir, seed=5)
    neurons = NeuronSet.from_units("s", [0, 1, 1], [3, 5, 60])
    with transplanted(recipient, donor, neurons):
        expected = logits(recipient)
    with intervened(recipient, [Transplant(donor, neurons)]) as model:
        assert torch.equal(logits(model), expected)


def test_mismatched_models_are_refused_naming_the_difference(tiny_qwen3_dir, tiny_gpt2_dir, tmp_path):
    from transformers import AutoConfig, Qwen3ForCausalLM

    config = AutoConfig.from_pretrained(tiny_qwen3_dir)
    config.intermediate_size = 96
    Qwen3ForCausalLM(config).save_pretrained(tmp_path / "narrow")
    save_char_tokenizer(tmp_path / "narrow")
    recipient = load_bridge(tiny_qwen3_dir)
    one = NeuronSet.from_units("one", [0], [1])
    with pytest.raises(NexError, match=r"differ in d_mlp \(128 vs 96\)"):
        transplant(recipient, load_bridge(tmp_path / "narrow"), one)
    with pytest.raises(NexError, match="differ in architecture"):
        transplant(recipient, load_bridge(tiny_gpt2_dir), one)
    with pytest.raises(NexError, match=r"\(layer 2, unit 0\), outside this model's 2 layers"):
        transplant(recipient, perturbed(tiny_qwen3_dir, 6), NeuronSet.from_units("far", [2], [0]))


def test_write_transplant_makes_a_loadable_directory(tiny_qwen3_dir, tmp_path):
    from transformers import Qwen3ForCausalLM

    donor_model = Qwen3ForCausalLM.from_pretrained(tiny_qwen3_dir)
    torch.manual_seed(7)
    with torch.no_grad():
        for param in donor_model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    donor_model.save_pretrained(tmp_path / "donor")
    save_char_tokenizer(tmp_path / "donor")

    neurons = NeuronSet.from_units("s", [0, 1], [10, 20])
    out = write_transplant(tiny_qwen3_dir, tmp_path / "donor", neurons, tmp_path / "child")
    recipient, donor = load_bridge(tiny_qwen3_dir), load_bridge(tmp_path / "donor")
    child = load_bridge(out)
    with transplanted(recipient, donor, neurons):
        assert torch.equal(logits(child), logits(recipient))
        for key, value in recipient.state_dict().items():
            assert torch.equal(child.state_dict()[key], value), key
    assert not torch.equal(logits(child), logits(recipient))
    assert NeuronSet.load(out / "neurons.csv").keys.tolist() == neurons.keys.tolist()
    assert json.loads((out / "nex_transplant.json").read_text())["n_neurons"] == 2
    with pytest.raises(NexError, match="already exists"):
        write_transplant(tiny_qwen3_dir, tmp_path / "donor", neurons, out)
