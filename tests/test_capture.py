import json
from collections import defaultdict

import numpy as np
import pytest
import torch

from nex_causal.capture import CaptureConfig, capture
from nex_causal.capture.sparsify import Sparsifier
from nex_causal.errors import NexError
from nex_causal.models.tasks import Problem, TaskSet

PROMPTS = ["12+3=?", "7*8=", "abc|", "99-1=", "x"]


def toy_tasks(n: int = len(PROMPTS)) -> TaskSet:
    problems = [Problem(id=f"p{i}", prompt=PROMPTS[i], target="1") for i in range(n)]
    return TaskSet("toy", problems, extract=lambda t: t[-1:] or None,
                   check=lambda p, t: t.endswith(p.target))


def run(tmp_path, bridge, name="cache", **overrides):
    config = CaptureConfig(model="tiny", tasks="toy", **{
        "n_samples": 3, "max_new_tokens": 20, "temperature": 1.0, "top_p": 1.0, "seed": 7,
        "batch_size": 6, "sparsifier": "topk:40", "window": 8, **overrides})
    return capture(config, tmp_path / name, bridge=bridge, taskset=toy_tasks(), progress=False), config


def offline_rows(bridge, prompt, generated, sparsifier, window):
    """Reference: one run_with_cache over the finished sequence, sparsified token by token."""
    prompt_ids = bridge.to_tokens(prompt)[0]
    full = torch.cat([prompt_ids, torch.as_tensor(generated)])[None]
    _, cache = bridge.run_with_cache(full, names_filter=lambda n: n.endswith("mlp.hook_post"))
    start, n_gen = len(prompt_ids) - 1, len(generated)
    acts = torch.stack([cache[f"blocks.{l}.mlp.hook_post"][0, start:start + n_gen]
                        for l in range(bridge.cfg.n_layers)], dim=1)  # [G, L, D]
    contribution = None
    if sparsifier.needs_contributions:
        direction = torch.stack([bridge.W_out[l] @ bridge.W_U[:, torch.as_tensor(generated)]
                                 for l in range(bridge.cfg.n_layers)], dim=0)  # [L, D, G]
        contribution = acts * direction.permute(2, 0, 1)
    rows_idx, flat, score = sparsifier.select(acts, contribution)
    d = bridge.cfg.d_mlp
    rows = []
    for w0 in range(0, n_gen, window):
        mass = defaultdict(float)
        for r, f, s in zip(rows_idx.tolist(), flat.tolist(), score.tolist()):
            if w0 <= r < w0 + window:
                mass[(f // d) << 16 | (f % d)] += s
        keys = np.array(sorted(mass), dtype=np.uint32)
        rows.append((keys, np.array([mass[k] for k in keys], dtype=np.float32), min(window, n_gen - w0)))
    return rows


@pytest.mark.parametrize("method", ["replay", "stepwise"])
@pytest.mark.parametrize("spec", ["topk:40", "layer-topk:5", "threshold:0.05", "mui:30"])
def test_captured_rows_equal_offline_run_with_cache(tmp_path, tiny_qwen3_bridge, spec, method):
    bridge = tiny_qwen3_bridge
    cache, config = run(tmp_path, bridge, sparsifier=spec, method=method)
    table = cache.responses
    for r in range(cache.n_responses):
        rec = table.iloc[r]
        generated = [int(t) for t in rec["token_ids"]]
        assert len(generated) == rec["n_tokens"]
        assert bridge.tokenizer.decode(generated, skip_special_tokens=True) == rec["response"]
        expected = offline_rows(bridge, rec["prompt"], generated, Sparsifier.parse(spec), config.window)
        got = cache.response_rows(r)
        assert len(got) == len(expected)
        for (keys, mass, tokens), (e_keys, e_mass, e_tokens) in zip(got, expected):
            np.testing.assert_array_equal(np.sort(keys), e_keys)
            order = np.argsort(keys)
            np.testing.assert_allclose(np.asarray(mass, np.float32)[order],
                                       e_mass.astype(np.float16).astype(np.float32), rtol=2e-3, atol=1e-4)
            assert tokens == e_tokens


def test_layer_topk_keeps_exactly_k_per_layer(tmp_path, tiny_qwen3_bridge):
    cache, _ = run(tmp_path, tiny_qwen3_bridge, sparsifier="layer-topk:5", window=1)
    for r in range(cache.n_responses):
        for keys, _, _ in cache.response_rows(r):
            assert np.bincount(np.asarray(keys) >> 16, minlength=2).tolist() == [5, 5]


def test_windows_partition_the_generated_tokens(tmp_path, tiny_qwen3_bridge):
    cache, config = run(tmp_path, tiny_qwen3_bridge)
    table = cache.responses
    for r in range(cache.n_responses):
        tokens = np.asarray(cache.response_rows(r).tokens)
        assert tokens.sum() == table.iloc[r]["n_tokens"]
        assert (tokens[:-1] == config.window).all() and 0 < tokens[-1] <= config.window
        base_keys, base_mass = cache.base(r)
        row_keys = np.unique(cache.response_rows(r).keys)
        np.testing.assert_array_equal(np.sort(base_keys), row_keys)
    assert table.groupby("prompt_id").size().eq(config.n_samples).all()
    assert len(table.iloc[0]["token_entropy"]) == table.iloc[0]["n_tokens"]


def cache_bytes(path):
    """Every file of a cache but how it was made (capture.json, and the record, which covers it)."""
    return {p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name not in ("capture.json", "integrity.json")}


@pytest.mark.parametrize("method", ["replay", "stepwise"])
def test_same_seed_same_bytes_and_resume_equals_uninterrupted(tmp_path, tiny_qwen3_bridge, monkeypatch, method):
    from nex_causal.capture.record import CaptureWork

    full, _ = run(tmp_path, tiny_qwen3_bridge, name="full", method=method)
    again, _ = run(tmp_path, tiny_qwen3_bridge, name="again", method=method)
    assert cache_bytes(full.path) == cache_bytes(again.path)

    real, calls = CaptureWork.run, []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(CaptureWork, "run", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny_qwen3_bridge, name="resumed", method=method)
    assert not (tmp_path / "resumed").exists()  # never mistaken for a finished cache
    monkeypatch.setattr(CaptureWork, "run", real)
    resumed, _ = run(tmp_path, tiny_qwen3_bridge, name="resumed", method=method)
    assert cache_bytes(resumed.path) == cache_bytes(full.path)
    assert not (tmp_path / "resumed.partial").exists()
    meta = json.loads((resumed.path / "capture.json").read_text())
    assert meta["n_layers"] == 2 and meta["d_mlp"] == 128


def test_finished_capture_is_reused_and_other_configs_refused(tmp_path, tiny_qwen3_bridge):
    run(tmp_path, tiny_qwen3_bridge)
    run(tmp_path, tiny_qwen3_bridge)  # same config: returns the finished cache
    with pytest.raises(NexError, match="another config"):
        run(tmp_path, tiny_qwen3_bridge, seed=8)


@pytest.mark.parametrize("spec", ["topk", "top:5", "topk:x", "topk:0", "layer-topk:2.5", "threshold:-1"])
def test_bad_sparsifier_specs_are_named(spec):
    with pytest.raises(NexError, match="sparsifier"):
        Sparsifier.parse(spec)


def test_sparsifier_selections_by_hand():
    acts = torch.tensor([[[0.1, -3.0, 0.5], [2.0, 0.0, -0.2]]])  # [B=1, L=2, D=3]
    rows, flat, score = Sparsifier.parse("topk:2").select(acts)
    assert sorted(flat.tolist()) == [1, 3] and sorted(score.tolist()) == [2.0, 3.0]
    _, flat, _ = Sparsifier.parse("layer-topk:1").select(acts)
    assert flat.tolist() == [1, 3]
    _, flat, _ = Sparsifier.parse("threshold:0.3").select(acts)
    assert flat.tolist() == [1, 2, 3]
    contribution = torch.tensor([[[1.0, -5.0, 0.2], [0.0, 0.7, 3.0]]])
    _, flat, score = Sparsifier.parse("mui:3").select(acts, contribution)
    assert flat.tolist() == [5, 0, 4] and score.tolist() == pytest.approx([3.0, 1.0, 0.7])


def test_empty_task_set_is_an_error(tmp_path, tiny_qwen3_bridge):
    config = CaptureConfig(model="tiny", tasks="toy")
    with pytest.raises(NexError, match="empty"):
        capture(config, tmp_path / "c", bridge=tiny_qwen3_bridge, taskset=toy_tasks(0), progress=False)


def token_by_token(selections: list[list[tuple[np.ndarray, np.ndarray]]], window: int) -> list[list[tuple]]:
    """The rows of each sequence from its tokens' (keys, scores), one token at a time: the recorder's definition."""
    out = []
    for tokens in selections:
        rows = []
        for start in range(0, len(tokens), window):
            part = tokens[start:start + window]
            if window == 1:
                keys, mass = part[0]
                order = np.argsort(-mass, kind="stable")
                rows.append((keys[order], mass[order], 1))
            else:
                keys, inverse = np.unique(np.concatenate([k for k, _ in part]), return_inverse=True)
                mass = np.bincount(inverse, weights=np.concatenate([m for _, m in part]), minlength=len(keys))
                rows.append((keys.astype(np.uint32), mass.astype(np.float32), len(part)))
        out.append(rows)
    return out


@pytest.mark.parametrize("window", [1, 3, 4])
@pytest.mark.parametrize("spec", ["topk:5", "threshold:1.2"])
def test_the_recorder_closes_windows_as_token_by_token_accumulation_does(window, spec):
    from types import SimpleNamespace

    from nex_causal.capture.rows import RowRecorder

    rng = np.random.default_rng(window)
    sparsifier, n_sequences, d_mlp = Sparsifier.parse(spec), 5, 7
    recorder = RowRecorder(SimpleNamespace(cfg=SimpleNamespace(d_mlp=d_mlp)), sparsifier, window, n_sequences)
    selections: list[list] = [[] for _ in range(n_sequences)]
    for _ in range(6):  # calls of varying shape: some sequences absent, tokens of several sequences interleaved
        owners = rng.choice(n_sequences, int(rng.integers(1, 12)))
        acts = torch.from_numpy(np.round(rng.normal(size=(len(owners), 3, d_mlp)), 1).astype(np.float32))
        recorder.add(acts, torch.zeros(len(owners), dtype=torch.long), owners)
        rows, flat, score = sparsifier.select(acts.float())
        for i, owner in enumerate(owners):
            mine = (rows == i).numpy()
            selections[owner].append(((flat[mine] // d_mlp << 16 | flat[mine] % d_mlp).numpy().astype(np.uint32),
                                      score[mine].numpy().astype(np.float32)))
    for got, expected in zip(recorder.finish(), token_by_token(selections, window)):
        assert len(got) == len(expected)
        for (keys, mass, tokens), (k, m, t) in zip(got, expected):
            assert keys.dtype == np.uint32 and mass.dtype == np.float32 and tokens == t
            np.testing.assert_array_equal(keys, k)
            np.testing.assert_array_equal(mass.view(np.uint32), m.view(np.uint32))
