"""Capture by replay equals stepwise capture; traces from any engine; sampling; shards on Ray."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
from test_capture import cache_bytes, toy_tasks

from nex_causal.capture import (
    CaptureConfig,
    ReplayConfig,
    SampleConfig,
    capture,
    capture_traces,
    sample,
)
from nex_causal.capture.record import CaptureWork
from nex_causal.capture.replay import groups
from nex_causal.capture.traces import traces_meta
from nex_causal.errors import NexError
from nex_causal.zoo.build import checkpoints_of

RECORD = dict(sparsifier="topk:24", window=4)


def stepwise(tmp_path, bridge, name="stepwise", taskset=None, **overrides):
    config = CaptureConfig(model="tiny", tasks="toy", **{
        "n_samples": 2, "max_new_tokens": 24, "temperature": 1.0, "top_p": 1.0, "seed": 3, "batch_size": 6,
        "method": "stepwise", **RECORD, **overrides})
    return capture(config, tmp_path / name, bridge=bridge, taskset=taskset or toy_tasks(), progress=False)


def replayed(tmp_path, bridge, traces, name="replayed", **overrides):
    config = ReplayConfig(traces=str(traces), model="tiny", batch_size=4, **{**RECORD, **overrides})
    return capture_traces(config, tmp_path / name, bridge=bridge, progress=False)


def assert_same_rows(a, b):
    """Same keys in the same rows; mass equal to float16 rounding.

    Within a row the order of keys carries no meaning, and two activations equal to within
    float rounding may swap places between a one-position and a whole-sequence forward pass
    (seen on some CPUs), so each row is compared sorted by key.
    """
    assert a.n_responses == b.n_responses
    np.testing.assert_array_equal(a.row_ptr, b.row_ptr)
    np.testing.assert_array_equal(a.token_row_ptr, b.token_row_ptr)
    row = np.repeat(np.arange(len(a.row_ptr) - 1), np.diff(np.asarray(a.row_ptr)))
    order_a, order_b = np.lexsort((np.asarray(a.keys), row)), np.lexsort((np.asarray(b.keys), row))
    np.testing.assert_array_equal(np.asarray(a.keys)[order_a], np.asarray(b.keys)[order_b])
    np.testing.assert_allclose(np.asarray(a.w_sum, np.float32)[order_a], np.asarray(b.w_sum, np.float32)[order_b],
                               rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("spec", ["topk:24", "layer-topk:6", "mui:16"])
def test_replay_of_a_stepwise_capture_equals_it(tmp_path, tiny_qwen3_bridge, spec):
    step = stepwise(tmp_path, tiny_qwen3_bridge, sparsifier=spec)
    again = replayed(tmp_path, tiny_qwen3_bridge, step.path / "responses.parquet", sparsifier=spec)
    assert_same_rows(step, again)
    for column in ("token_logprob", "token_entropy", "token_kl_uniform", "token_confidence_sum"):
        for x, y in zip(step.responses[column], again.responses[column]):
            np.testing.assert_allclose(x, y, atol=1e-4)
    kept = ["prompt_id", "sample_index", "prompt", "response", "n_tokens", "answer", "correct"]
    pd.testing.assert_frame_equal(step.responses[kept], again.responses[kept])


def test_capture_by_replay_samples_what_stepwise_samples(tmp_path, tiny_qwen3_bridge):
    step = stepwise(tmp_path, tiny_qwen3_bridge)
    fast = stepwise(tmp_path, tiny_qwen3_bridge, name="fast", method="replay")
    assert [list(t) for t in step.responses["token_ids"]] == [list(t) for t in fast.responses["token_ids"]]
    assert_same_rows(step, fast)


def test_chunked_replay_equals_one_pass(tmp_path, tiny_qwen3_bridge):
    step = stepwise(tmp_path, tiny_qwen3_bridge, max_new_tokens=40, window=1)
    traces = step.path / "responses.parquet"
    whole = replayed(tmp_path, tiny_qwen3_bridge, traces, window=1)
    chunked = replayed(tmp_path, tiny_qwen3_bridge, traces, name="chunked", window=1, replay_tokens=7)
    assert_same_rows(whole, chunked)
    assert_same_rows(step, chunked)


def test_token_blocks_and_the_plain_model_change_no_byte(tmp_path, tiny_qwen3_bridge, monkeypatch):
    from nex_causal.capture import replay as replay_module

    step = stepwise(tmp_path, tiny_qwen3_bridge, max_new_tokens=24, window=2)
    traces = step.path / "responses.parquet"
    assert replay_module.plain_recorder(tiny_qwen3_bridge) is not None  # the tiny Qwen3 records alike through both
    whole = replayed(tmp_path, tiny_qwen3_bridge, traces, window=2)
    monkeypatch.setattr(replay_module, "BLOCK", 300)  # blocks of one or two tokens
    blocked = replayed(tmp_path, tiny_qwen3_bridge, traces, name="blocked", window=2)
    monkeypatch.setitem(replay_module._PLAIN, tiny_qwen3_bridge, None)  # through the bridge and its hooks
    bridged = replayed(tmp_path, tiny_qwen3_bridge, traces, name="bridged", window=2)
    assert cache_bytes(whole.path) == cache_bytes(blocked.path) == cache_bytes(bridged.path)


def test_groups_fit_the_token_budget():
    assert groups([5, 30, 10, 10, 2], 20) == [[1], [2, 3], [0, 4]]
    assert groups([100], 8) == [[0]]  # longer than the budget: alone, fed in chunks


def test_replay_equals_stepwise_on_the_organism(tmp_path):
    from nex_causal.models.loading import load_bridge
    from nex_causal.zoo.task import organism_tasks

    bridge = load_bridge(checkpoints_of("seek") / "expert-search")
    tasks = organism_tasks(4, seed=3, task="seek")
    config = dict(n_samples=2, max_new_tokens=160, temperature=0.7, top_p=0.95, batch_size=8, sparsifier="topk:64")
    for window in (16, 1):
        step = stepwise(tmp_path, bridge, name=f"step{window}", taskset=tasks, **config, window=window)
        again = replayed(tmp_path, bridge, step.path / "responses.parquet", name=f"again{window}",
                         sparsifier="topk:64", window=window)
        assert step.n_rows > 8 * 4
        assert_same_rows(step, again)


# --- traces from other engines -------------------------------------------------------------------

def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_traces_by_text_or_ids(tmp_path, tiny_qwen3_bridge):
    step = stepwise(tmp_path, tiny_qwen3_bridge, n_samples=1)
    table = step.responses
    records, expected = [], []
    for i, row in table.iterrows():
        record = {"prompt": row["prompt"], "target": "1"}
        if i % 2:
            record["response_token_ids"] = [int(t) for t in row["token_ids"]]
            record["response"] = "ignored: the ids take precedence"
            expected.append(record["response_token_ids"])
        else:
            record["response"] = f"{i} + 1 = {i + 1}. answer: {i + 1}"  # text: tokenised by the model's tokenizer
            expected.append(tiny_qwen3_bridge.tokenizer(record["response"], add_special_tokens=False).input_ids)
        records.append(record)
    got = replayed(tmp_path, tiny_qwen3_bridge, write_jsonl(tmp_path / "engine.jsonl", records))
    assert [list(t) for t in got.responses["token_ids"]] == expected
    assert got.responses["prompt_id"].tolist() == [f"engine-{i}" for i in range(len(table))]
    assert got.responses["correct"].tolist() == [i == 0 for i in range(len(table))]  # only "answer: 1" is right
    for i in range(1, len(table), 2):  # the same tokens after the same prompt: the same rows
        np.testing.assert_array_equal(got.response_rows(i).keys, step.response_rows(i).keys)


def test_jsonl_groups_repeated_prompts(tmp_path, tiny_qwen3_bridge):
    jsonl = write_jsonl(tmp_path / "t.jsonl", [{"prompt": p, "response_token_ids": [5, 6, 7]} for p in "abab"])
    with pytest.warns(UserWarning, match="4 of 4 traces have no target"):
        got = replayed(tmp_path, tiny_qwen3_bridge, jsonl)
    assert got.responses["prompt_id"].tolist() == ["t-0", "t-1", "t-0", "t-1"]
    assert got.responses["sample_index"].tolist() == [0, 0, 1, 1]
    assert got.responses["correct"].isna().all()


@pytest.mark.parametrize("record, message", [
    ({"prompt": "a", "response_token_ids": [3, 999999]}, r"t\.jsonl, line 2: response token id 999999 is outside"),
    ({"prompt": "a", "response": "caf\u00e9 \U0001F600"}, r"t\.jsonl, line 2: the response text does not round-trip"),
    ({"prompt": "a"}, r"t\.jsonl, line 2: give the response"),
    ({"prompt": "a", "response_token_ids": "12"}, r"line 2: 'response_token_ids' must be a list"),
    ({"prompt": "a", "response_token_ids": []}, r"line 2: the response has no tokens"),
    ({"response": "x"}, r"line 2: expected an object with a text field 'prompt'"),
])
def test_bad_traces_are_named_by_line(tmp_path, tiny_qwen3_bridge, record, message):
    jsonl = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "a", "response": "12"}, record])
    with pytest.raises(NexError, match=message):
        replayed(tmp_path, tiny_qwen3_bridge, jsonl)


# --- sampling, resume, and the CLI ---------------------------------------------------------------

def test_sample_then_replay_equals_capture(tmp_path, tiny_qwen3_bridge):
    kw = dict(model="tiny", tasks="toy", n_samples=2, max_new_tokens=16, temperature=1.0, seed=4, batch_size=4)
    traces = sample(SampleConfig(**kw), tmp_path / "traces.parquet", bridge=tiny_qwen3_bridge,
                    taskset=toy_tasks(), progress=False)
    made = traces_meta(traces)
    assert made["stamp"]["config"]["backend"] == "hf" and "torch" in made["versions"]
    direct = capture(CaptureConfig(**kw, **RECORD), tmp_path / "direct", bridge=tiny_qwen3_bridge,
                     taskset=toy_tasks(), progress=False)
    again = replayed(tmp_path, tiny_qwen3_bridge, traces)
    assert cache_bytes(direct.path) == cache_bytes(again.path)
    with pytest.raises(NexError, match="another config"):
        sample(SampleConfig(**{**kw, "seed": 5}), traces, bridge=tiny_qwen3_bridge, taskset=toy_tasks())


def test_interrupted_capture_resumes_to_the_same_bytes(tmp_path, tiny_qwen3_bridge, monkeypatch):
    full = stepwise(tmp_path, tiny_qwen3_bridge, name="full", method="replay", batch_size=2)
    real, calls = CaptureWork.run, []

    def crash_on_second(self, index, path):
        calls.append(index)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, index, path)

    monkeypatch.setattr(CaptureWork, "run", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        stepwise(tmp_path, tiny_qwen3_bridge, name="resumed", method="replay", batch_size=2)
    assert not (tmp_path / "resumed").exists()
    monkeypatch.setattr(CaptureWork, "run", real)
    resumed = stepwise(tmp_path, tiny_qwen3_bridge, name="resumed", method="replay", batch_size=2)
    assert cache_bytes(resumed.path) == cache_bytes(full.path)


def test_cli_sample_and_capture_from_traces(tmp_path, tiny_qwen3_dir, capsys):
    from nex_causal.cli import main

    common = ["--model", str(tiny_qwen3_dir), "--sparsifier", "topk:16", "--window", "4"]
    assert main(["sample", "--model", str(tiny_qwen3_dir), "--tasks", "organism:3", "--n-samples", "2",
                 "--max-new-tokens", "12", "--out", str(tmp_path / "t.parquet")]) == 0
    assert "6 responses" in capsys.readouterr().out
    assert main(["capture", *common, "--from-traces", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "c")]) == 0
    assert "6 responses" in capsys.readouterr().out
    assert main(["capture", *common, "--from-traces", str(tmp_path / "t.parquet"), "--n-samples", "3",
                 "--out", str(tmp_path / "d")]) == 2
    assert "--n-samples does not apply to --from-traces" in capsys.readouterr().err
    assert main(["capture", *common, "--out", str(tmp_path / "e")]) == 2
    assert "needs --tasks" in capsys.readouterr().err


# --- Ray -------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")
def test_ray_shards_equal_one_process_byte_for_byte(tmp_path, tiny_qwen3_dir):
    from nex_causal.capture.cluster import RayOptions

    kw = dict(model=str(tiny_qwen3_dir), tasks="organism:6", n_samples=2, max_new_tokens=20, batch_size=4, **RECORD)
    single = capture(CaptureConfig(**kw), tmp_path / "single", progress=False)
    on_ray = capture(CaptureConfig(**kw), tmp_path / "ray", progress=False, ray=RayOptions(workers=2))
    assert cache_bytes(single.path) == cache_bytes(on_ray.path)
    s = sample(SampleConfig(**{k: v for k, v in kw.items() if k not in RECORD}), tmp_path / "s.parquet",
               progress=False)
    r = sample(SampleConfig(**{k: v for k, v in kw.items() if k not in RECORD}), tmp_path / "r.parquet",
               progress=False, ray=RayOptions(workers=2))
    assert s.read_bytes() == r.read_bytes()


def test_recorded_prompt_keys_are_what_the_prompt_positions_select(tmp_path, tiny_qwen3_bridge):
    """``record_prompt`` keeps, per response, the keys the sparsifier selects at the prompt's positions; they
    equal the rows of the same positions replayed as a response after the prompt's first token, and recording
    them changes no row of the response."""
    traces = stepwise(tmp_path, tiny_qwen3_bridge, window=1).path / "responses.parquet"
    mine = replayed(tmp_path, tiny_qwen3_bridge, traces, name="with-prompt", window=1, record_prompt=True)
    assert_same_rows(mine, replayed(tmp_path, tiny_qwen3_bridge, traces, name="without", window=1))
    ids = np.asarray(mine.responses["prompt_token_ids"][0])
    line = {"prompt": tiny_qwen3_bridge.tokenizer.decode(ids[:1]), "response_token_ids": ids[1:].tolist()}
    (tmp_path / "prompt.jsonl").write_text(json.dumps(line) + "\n")
    as_response = replayed(tmp_path, tiny_qwen3_bridge, tmp_path / "prompt.jsonl", name="prompt", window=1)
    assert np.asarray(as_response.responses["prompt_token_ids"][0]).tolist() == ids[:1].tolist()
    expected = np.unique(np.asarray(as_response.keys))
    got = np.asarray(mine.responses["prompt_keys"][0])
    assert len(got) and np.array_equal(got, expected)
    assert "prompt_keys" not in replayed(tmp_path, tiny_qwen3_bridge, traces, name="plain", window=1).responses
    with pytest.raises(NexError, match="record_prompt needs the replay method"):
        stepwise(tmp_path, tiny_qwen3_bridge, name="refused", record_prompt=True)
