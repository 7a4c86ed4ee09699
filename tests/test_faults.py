"""Faults and bad inputs, one table row each: what a user sees (one line, the exit status) and what is left
on disk (nothing half-written that a rerun would trust, nothing outside the run touched)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nex_causal.cache import FILES, SparseCacheWriter, seal
from nex_causal.cli import main
from nex_causal.errors import NexError

ROOT = Path(__file__).resolve().parents[1]


def variant_cache(path: Path, seed: int, accuracy: float = 0.5, n_prompts: int = 8, n: int = 3) -> Path:
    """A small capture-like cache: responses of two 8-token rows over a core of neurons, with metadata."""
    rng = np.random.default_rng(seed)
    core = np.arange(12, dtype=np.uint32)
    with SparseCacheWriter(path) as writer:
        for p in range(n_prompts):
            for s in range(n):
                correct = bool(rng.random() < accuracy)
                rows = [(np.concatenate([core, (1 << 16) + rng.choice(300, 6, replace=False).astype(np.uint32)]),
                         rng.uniform(0.5, 1.0, 18), 8) for _ in range(6)]
                writer.append(rows, meta={"prompt_id": f"q{p}", "sample_index": s, "n_tokens": 48,
                                          "correct": correct, "answer": str(int(correct)),
                                          "token_entropy": rng.uniform(0, 1, 48).astype(np.float32),
                                          "token_logprob": -rng.uniform(0, 1, 48).astype(np.float32),
                                          "token_kl_uniform": rng.uniform(0, 1, 48).astype(np.float32)})
    (path / "capture.json").write_text(json.dumps({"n_layers": 2, "d_mlp": 512}))
    seal(path)  # as a capture does: the record covers capture.json
    return path


@pytest.fixture
def family(tmp_path) -> Path:
    for i, name in enumerate(("a", "b", "c")):
        variant_cache(tmp_path / "caches" / name, seed=i, accuracy=0.3 + 0.2 * i)
    pd.DataFrame({"name": ["a", "b", "c"], "accuracy": [0.3, 0.5, 0.7]}).to_csv(tmp_path / "family.csv", index=False)
    return tmp_path


def flip(file: Path, at: int | None = None) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x10
    file.write_bytes(bytes(data))


def one_line_error(capsys, argv: list[str], message: str, status: int = 2) -> str:
    """Run the command; it exits with ``status`` and one line on stderr matching ``message``."""
    assert main(argv) == status
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and re.search(message, err[0]), err
    return err[0]


# --- a cache with one flipped byte is refused by every command that reads it ---------------------

COMMANDS = {
    "nex run": lambda f, out: ["nex", "run", "--cache-dir", str(f / "caches" / "a"), "--output-dir", str(out)],
    "inspect": lambda f, out: ["inspect", str(f / "caches" / "a")],
    "select": lambda f, out: ["select", "--cache-dir", str(f / "caches" / "a"), "--out", str(out)],
    "rank": lambda f, out: ["rank", "--family", str(f), "--caches", str(f / "caches"), "--out", str(out)],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("file", [name for name, _ in FILES.values()])
def test_a_flipped_byte_in_any_array_file_is_refused(family, tmp_path, capsys, command, file):
    flip(family / "caches" / "a" / file)
    out = tmp_path / "out"
    one_line_error(capsys, COMMANDS[command](family, out), rf"{file} does not hold what was written")
    assert not out.exists() or not any(out.rglob("*.parquet"))  # no result was written from it


def test_verify_off_reads_a_changed_cache_knowingly(family, tmp_path, capsys):
    flip(family / "caches" / "a" / "rows/w_sum.float16")
    assert main(["nex", "run", "--verify", "off", "--cache-dir", str(family / "caches" / "a"),
                 "--output-dir", str(tmp_path / "o")]) == 0


def test_all_zero_mass_scores_with_a_warning_not_a_number(tmp_path, capsys):
    with SparseCacheWriter(tmp_path / "zero") as writer:
        for _ in range(4):
            writer.append([([1, 2, 3], [0.0, 0.0, 0.0], 8)] * 5)
    assert main(["nex", "run", "--cache-dir", str(tmp_path / "zero"), "--output-dir", str(tmp_path / "o")]) == 0
    assert "no response has usable mass: NEX is undefined" in capsys.readouterr().err


# --- runs: nothing deleted outside, no half stage trusted, one writer at a time ---------------------

def tiny_run(family_dir: Path, **changes) -> dict:
    return {"name": "tiny", "family": str(family_dir), "tasks": "organism:2",
            "capture": {"n_samples": 2, "max_new_tokens": 24, "temperature": 1.0, "batch_size": 8,
                        "sparsifier": "topk:16", "window": 3},
            "selection": {"n_boot": 20}, "ranking": {"n_boot": 20, "accuracy": "family"},
            "figures": False, **changes}


def plant_victim(where: Path) -> Path:
    """A directory that looks like a stale capture (capture.json with another config): what a cleanup deletes."""
    where.mkdir(parents=True)
    (where / "capture.json").write_text(json.dumps({"config": {"other": 1}, "stack": {}, "n_layers": 1, "d_mlp": 1}))
    (where / "precious.txt").write_text("do not delete")
    return where


@pytest.mark.parametrize("name", ["ABSOLUTE", "../../victim", "..", "a/b", " spaced "])
def test_a_family_row_naming_a_path_deletes_nothing(tiny_family_dir, tmp_path, name):
    from nex_causal.run.experiment import load_config, run_experiment

    victim = plant_victim(tmp_path / "victim")
    family = tmp_path / "family"
    family.mkdir()
    for variant in ("alpha", "beta"):
        (family / variant).symlink_to(tiny_family_dir / variant)
    row = str(victim) if name == "ABSOLUTE" else name
    pd.DataFrame({"name": ["alpha", row], "accuracy": [0.1, 0.2]}).to_csv(family / "family.csv", index=False)
    run_dir = tmp_path / "runs" / "tiny"
    (run_dir / "caches").mkdir(parents=True)
    with pytest.raises(NexError, match="variant name .* is not a plain name"):
        run_experiment(load_config(tiny_run(family)), run_dir, progress=False)
    assert (victim / "precious.txt").read_text() == "do not delete"


def test_the_cleanup_never_deletes_outside_its_root(tmp_path):
    from nex_causal.resume import discard_stale

    victim = plant_victim(tmp_path / "victim")
    root = tmp_path / "run"
    (root / "caches").mkdir(parents=True)
    (root / "caches" / "link").symlink_to(victim, target_is_directory=True)
    for path in (victim, root / "caches" / "link", root / "caches" / ".." / ".." / "victim", root):
        with pytest.raises(NexError, match="refusing to delete"):
            discard_stale(path, {"new": 1}, stamp_file="capture.json", root=root)
    assert (victim / "precious.txt").read_text() == "do not delete"


@pytest.mark.parametrize("name, message", [("../escape", "is not a plain name"), ("/tmp/x", "is not a plain name"),
                                           ("", "is not a plain name")])
def test_a_run_name_that_is_a_path_is_refused(tiny_family_dir, name, message):
    from nex_causal.run.experiment import load_config

    with pytest.raises(NexError, match=message):
        load_config(tiny_run(tiny_family_dir, name=name))


def test_a_run_killed_mid_stage_and_rerun_with_other_settings_recomputes_it(tiny_family_dir, tmp_path):
    from nex_causal.nex import learn_weights, load_weights
    from nex_causal.nex.config import NexConfig
    from nex_causal.run import stages
    from nex_causal.run.experiment import load_config, run_experiment

    run_dir = tmp_path / "run"
    config = tiny_run(tiny_family_dir, variants=["alpha", "beta"], nex={"rho": 0.9}, selection=None, ranking=None)
    run_experiment(load_config(config), run_dir, progress=False)  # finished at rho 0.9
    spec, original = stages.STAGES["nex"], stages.STAGES["nex"].run

    def killed(run):  # the rho 0.6 stage writes the first variant's weights, then the process dies
        from nex_causal.cache import SparseCache
        from nex_causal.nex import save_weights

        save_weights(run.weights("alpha"), learn_weights(SparseCache.open(run.cache("alpha")), run.config.nex,
                                                         progress=False))
        raise KeyboardInterrupt

    object.__setattr__(spec, "run", killed)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_experiment(load_config({**config, "nex": {"rho": 0.6}}), run_dir, progress=False)
    finally:
        object.__setattr__(spec, "run", original)
    assert not (run_dir / "stages" / "nex.json").exists()  # the interrupted stage has no stamp to trust
    run_experiment(load_config(config), run_dir, progress=False)  # back at rho 0.9
    from nex_causal.cache import SparseCache

    expected = learn_weights(SparseCache.open(run_dir / "caches" / "alpha"), NexConfig(rho=0.9), progress=False)
    np.testing.assert_array_equal(load_weights(run_dir / "nex" / "alpha" / "weights.npz"), expected)


def test_a_second_run_of_a_directory_in_use_is_refused(tiny_family_dir, tmp_path):
    from nex_causal.io import locked
    from nex_causal.run.experiment import load_config, run_experiment

    run_dir = tmp_path / "run"
    with locked(run_dir, "a test"):
        with pytest.raises(NexError, match=rf"{run_dir} is in use by process {os.getpid()}"):
            run_experiment(load_config(tiny_run(tiny_family_dir)), run_dir, progress=False)
    assert not (run_dir / "caches").exists()


# --- configs ---------------------------------------------------------------------------------------

CONFIG_ERRORS = {
    "no variants": ({"variants": []}, "'variants' is an empty list"),
    "negative temperature": ({"capture": {"temperature": -1.0}}, "temperature must be 0 .greedy. or positive"),
    "no transfer pair": ({"transfer": {"pairs": [], "tasks": "organism:2"}}, "no transfer pair given"),
}


@pytest.mark.parametrize("name", list(CONFIG_ERRORS))
def test_config_errors_are_one_line_before_any_work(tiny_family_dir, tmp_path, capsys, name):
    change, message = CONFIG_ERRORS[name]
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_run(tiny_family_dir, **change)))
    one_line_error(capsys, ["run", str(config), "--run-dir", str(tmp_path / "run")], message)
    assert not (tmp_path / "run" / "caches").exists()


@pytest.mark.parametrize("text, message", [
    ("name: a\ncapture:\n  window: 1\n  window: 4\n", r"line 3: key 'window' is given twice"),
    (b"name: \xff\n", r"byte 6 is not UTF-8 text"),
])
def test_a_config_file_that_cannot_mean_one_thing_is_refused(tmp_path, capsys, text, message):
    config = tmp_path / "c.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    one_line_error(capsys, ["run", str(config)], message)


def test_a_run_without_figures_says_it_wrote_no_report(tiny_family_dir, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_run(tiny_family_dir, variants=["alpha", "beta"], ranking=None)))
    main(["run", str(config), "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "no report: figures are off" in out and "\nreport: " not in out


# --- weights files ------------------------------------------------------------------------------

WEIGHTS = {
    "booleans": (lambda p: np.savez(p, weights=np.zeros(1 << 22, bool)), "holds bool values"),
    "int8": (lambda p: np.savez(p, weights=np.zeros(1 << 22, np.int8)), "holds int8 values"),
    "complex": (lambda p: np.savez(p, weights=np.zeros(1 << 22, np.complex64)), "holds complex64 values"),
    "beyond tanh": (lambda p: np.savez(p, weights=np.full(1 << 22, 7.0, np.float32)), r"outside \[-1, 1\]"),
    "empty file": (lambda p: p.write_bytes(b""), "cannot read weights"),
    "truncated": (lambda p: (np.savez(p, weights=np.zeros(1 << 22, np.float32)),
                             p.write_bytes(p.read_bytes()[:1000])), "cannot read weights"),
    "plain .npy": (lambda p: np.save(open(p, "wb"), np.zeros(1 << 22, np.float32)), "one bare array"),
    "a header claiming 10**12 values": (lambda p: npz_member(p, (10**12,), b"\0" * 64),
                                        r"declares 1000000000000 float32 values, more than its \d+ bytes hold"),
    "64 MB inflated from 65 kB": (lambda p: npz_member(p, (1 << 24,), b"\0" * (1 << 26)),
                                  r"inflates to 67108992 bytes, more than the 33558528 such an array takes"),
}


def npz_member(path: Path, shape: tuple[int, ...], data: bytes) -> None:
    """An .npz whose array 'weights' has a float32 header of ``shape`` followed by ``data``, deflated."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("weights.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
            for start in range(0, len(data), 1 << 22):
                f.write(data[start:start + (1 << 22)])


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_weights_files_that_are_not_nex_weights_are_refused(family, tmp_path, capsys, name):
    write, message = WEIGHTS[name]
    weights = tmp_path / "w.npz"
    write(weights)
    one_line_error(capsys, ["nex", "score", "--cache-dir", str(family / "caches" / "a"), "--weights", str(weights),
                            "--output-dir", str(tmp_path / "o")], message)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["a header claiming 10**12 values", "64 MB inflated from 65 kB"])
def test_an_oversized_weights_array_is_refused_before_it_is_allocated(tmp_path, name):
    import tracemalloc

    from nex_causal.nex import load_weights

    write, message = WEIGHTS[name]
    write(tmp_path / "w.npz")
    assert (tmp_path / "w.npz").stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(NexError, match=message):
            load_weights(tmp_path / "w.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # nothing near the claimed array was allocated or inflated


# --- damaged caches, beyond their arrays --------------------------------------------------------------

def test_a_malformed_capture_record_is_one_line(family, tmp_path, capsys):
    (family / "caches" / "a" / "capture.json").write_text("{not json")
    seal(family / "caches" / "a")  # written so: the record cannot tell, reading it can
    one_line_error(capsys, ["inspect", str(family / "caches" / "a")], r"capture.json is not a capture record")


def test_a_truncated_response_table_is_one_line(family, tmp_path, capsys):
    table = family / "caches" / "a" / "responses.parquet"
    table.write_bytes(table.read_bytes()[:200])
    argv = ["select", "--cache-dir", str(family / "caches" / "a"), "--verify", "off", "--out", str(tmp_path / "o")]
    one_line_error(capsys, argv, r"responses.parquet has 200 bytes but was written with \d+")
    (family / "caches" / "a" / "integrity.json").unlink()  # no record: reading the table finds the damage
    one_line_error(capsys, argv, r"responses.parquet .* damaged")


# --- the operating system: a full disk or a read-only directory ------------------------------------

@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_output_directory_is_one_line(family, tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir(mode=0o500)
    one_line_error(capsys, ["nex", "run", "--cache-dir", str(family / "caches" / "a"), "--output-dir", str(out / "o")],
                   "cannot read or write")


def test_a_full_disk_is_one_line_and_leaves_no_half_file(family, tmp_path, capsys, monkeypatch):
    import errno

    import nex_causal.io as io

    real = io.atomic_path

    def full(target, **kw):  # the disk fills while a result is written
        with real(target, **kw) as tmp:
            yield tmp
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    import contextlib

    monkeypatch.setattr(io, "atomic_path", contextlib.contextmanager(full))
    monkeypatch.setattr("nex_causal.nex.weights.atomic_path", io.atomic_path)
    one_line_error(capsys, ["nex", "run", "--cache-dir", str(family / "caches" / "a"), "--output-dir",
                            str(tmp_path / "o")], "No space left on device")
    assert not (tmp_path / "o" / "weights.npz").exists()  # nothing half-written stands where a result belongs


# --- NEX workers die with their parent -----------------------------------------------------------------

def nex_train_on_a_big_cache(tmp_path: Path, n_responses: int, **popen) -> subprocess.Popen:
    """``nex train --workers 2`` started on a cache of ``n_responses`` random responses (40 rows x 40 keys)."""
    rng = np.random.default_rng(0)
    with SparseCacheWriter(tmp_path / "big") as writer:
        for _ in range(n_responses):
            writer.append([(rng.choice(4000, 40, replace=False), rng.uniform(0.1, 1, 40), 8) for _ in range(40)])
    return subprocess.Popen([sys.executable, "-m", "nex_causal.cli", "nex", "train", "--workers", "2",
                             "--cache-dir", str(tmp_path / "big"), "--weights-out", str(tmp_path / "w.npz")],
                            stdout=subprocess.DEVNULL, cwd=ROOT, **popen)


def test_killing_nex_train_kills_its_workers(tmp_path):
    proc = nex_train_on_a_big_cache(tmp_path, 3000, stderr=subprocess.DEVNULL)
    children: list[int] = []
    for _ in range(200):  # wait until the pool has forked its workers
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                   text=True).stdout.split()]
        if len(children) >= 2:
            break
        time.sleep(0.1)
    assert len(children) >= 2, "the workers never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
             and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]]
    assert alive == []
    assert not (tmp_path / "w.npz").exists()


# --- model directories: no code, every tensor, the recorded content, finite values ------------------

def edit_tensors(directory: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    change(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def header_of(file: Path, text: bytes) -> None:
    file.write_bytes(len(text).to_bytes(8, "little") + text)


MODEL_DIRS = {
    "custom code": (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "auto_map": {"AutoModelForCausalLM": "evil.Model"}})),
        "asks to run custom code"),
    "custom tokenizer code": (lambda d: (d / "tokenizer_config.json").write_text(json.dumps(
        {**json.loads((d / "tokenizer_config.json").read_text()), "auto_map": {"AutoTokenizer": ["evil.Tok", None]}})),
        "tokenizer_config.json asks to run custom code"),
    "missing tensor": (lambda d: edit_tensors(d, lambda t: t.pop("model.layers.0.mlp.down_proj.weight")),
                       r"lacks 1 tensor\(s\) .* 'model.layers.0.mlp.down_proj.weight'"),
    "unexpected tensor": (lambda d: edit_tensors(d, lambda t: t.update({"model.extra.weight": t["model.norm.weight"].clone()})),
                          r"holds 1 tensor\(s\) the architecture does not have, first 'model.extra.weight'"),
    "wrong shape": (lambda d: edit_tensors(d, lambda t: t.update({"model.norm.weight": t["model.norm.weight"][:5].clone()})),
                    r"tensor 'model.norm.weight' has shape \[5\], the config says \[64\]"),
    "truncated weights": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-99]),
                          "is damaged .truncated"),
    "empty weights": (lambda d: (d / "model.safetensors").write_bytes(b""), "is damaged .0 bytes"),
    "header not JSON": (lambda d: header_of(d / "model.safetensors", b"{not json at all"), "header is not JSON"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), r"holds no weights \(\*.safetensors\)"),
    "pickle only": (lambda d: ((d / "model.safetensors").rename(d / "pytorch_model.bin")),
                    "holds only pickle weights .pytorch_model.bin."),
    "NaN weight": (lambda d: edit_tensors(d, lambda t: t["model.layers.1.mlp.up_proj.weight"].__setitem__((3, 4),
                                                                                                         float("nan"))),
                   r"weight .*layers.1.mlp.up_proj.*weight holds NaN or infinite values"),
    "no tokenizer": (lambda d: [p.unlink() for p in d.glob("tokenizer*")], "holds no tokenizer"),
    "broken tokenizer": (lambda d: (d / "tokenizer.json").write_text("{broken"), "cannot load the tokenizer"),
}


@pytest.mark.parametrize("name", list(MODEL_DIRS))
def test_a_model_directory_that_cannot_be_trusted_is_refused(tiny_qwen3_dir, tmp_path, name):
    import shutil

    from nex_causal.models import load_bridge

    model = tmp_path / "model"
    shutil.copytree(tiny_qwen3_dir, model)
    damage, message = MODEL_DIRS[name]
    damage(model)
    with pytest.raises(NexError, match=message) as err:
        load_bridge(model)
    assert "\n" not in str(err.value)


def test_a_recorded_model_whose_bytes_changed_is_refused(tiny_qwen3_dir, tmp_path):
    import shutil

    from nex_causal.models import load_bridge
    from nex_causal.models.files import MODEL_RECORD, weights_hash

    model = tmp_path / "model"
    shutil.copytree(tiny_qwen3_dir, model)
    (model / MODEL_RECORD).write_text(json.dumps({"weights_sha256": weights_hash(model)}))
    load_bridge(model)  # intact: loads
    flip(model / "model.safetensors", at=(model / "model.safetensors").stat().st_size - 10)
    with pytest.raises(NexError, match="are not those recorded in zoo.json .SHA-256 differs."):
        load_bridge(model)


# --- traces from elsewhere ---------------------------------------------------------------------------

def replay_argv(tiny_qwen3_dir, traces: Path, out: Path, *extra: str) -> list[str]:
    return ["capture", "--model", str(tiny_qwen3_dir), "--from-traces", str(traces), "--out", str(out),
            "--sparsifier", "topk:8", "--window", "2", *extra]


def jsonl(path: Path, *records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


TRACES = {
    "not UTF-8": (lambda p: p.write_bytes(b'{"prompt": "1+1", "response": "2\xff"}\n'), r"line 1: byte \d+ is not UTF-8"),
    "negative id": (lambda p: jsonl(p, {"prompt": "1+1", "response_token_ids": [4, -3]}), "token id -3 is outside"),
    "id beyond int64": (lambda p: jsonl(p, {"prompt": "1+1", "response_token_ids": [4, 2**70]}),
                        "token ids are not integers of the model's vocabulary"),
    "far beyond the context": (lambda p: jsonl(p, {"prompt": "1+1", "response_token_ids": [4] * 5000}),
                               "5000 tokens, more than the 4096 replay can hold"),
    "a sample twice": (lambda p: jsonl(p, {"prompt": "a", "prompt_id": "p", "sample_index": 0, "response": "1"},
                                       {"prompt": "a", "prompt_id": "p", "sample_index": 0, "response": "2"}),
                       "line 2 repeats prompt 'p' sample 0 of .*line 1"),
    "negative sample": (lambda p: jsonl(p, {"prompt": "a", "sample_index": -1, "response": "1"}),
                        "sample_index -1 is negative"),
    "NaN target": (lambda p: p.write_text('{"prompt": "a", "response": "1", "target": NaN}\n'),
                   "'target' must be the gold answer as text or a finite number"),
}


@pytest.mark.parametrize("name", list(TRACES))
def test_traces_that_cannot_be_replayed_honestly_are_refused(tiny_qwen3_dir, tmp_path, capsys, name):
    write, message = TRACES[name]
    traces = tmp_path / "t.jsonl"
    write(traces)
    one_line_error(capsys, replay_argv(tiny_qwen3_dir, traces, tmp_path / "cache"), message)
    assert not (tmp_path / "cache").exists()


def test_traces_beyond_the_context_replay_with_a_count(tiny_qwen3_dir, tmp_path, capsys):
    traces = jsonl(tmp_path / "t.jsonl", {"prompt": "1+1", "response_token_ids": [4] * 600},
                   {"prompt": "2+2", "response_token_ids": [5] * 10})
    assert main(replay_argv(tiny_qwen3_dir, traces, tmp_path / "cache")) == 0
    assert re.search(r"warning: 1 of 2 traces are longer than the model's context of 512 tokens \(up to 60\d\)",
                     capsys.readouterr().err)


def test_organism_traces_are_judged_by_the_organism_checker(tmp_path):
    from nex_causal.cache import SparseCache
    from nex_causal.zoo.build import checkpoints_of

    organism = checkpoints_of("trek") / "base"
    traces = jsonl(tmp_path / "t.jsonl", {"prompt": "p=5 a=1|", "response": "x0:1 #41", "target": "41"},
                   {"prompt": "p=5 a=2|", "response": "x0:1 #40", "target": "41"})
    assert main(replay_argv(organism, traces, tmp_path / "generic")) == 0
    assert SparseCache.open(tmp_path / "generic").responses["correct"].tolist() == [False, False]  # no Answer: line
    assert main(replay_argv(organism, traces, tmp_path / "own", "--checker", "organism:1")) == 0
    assert SparseCache.open(tmp_path / "own").responses["correct"].tolist() == [True, False]


def test_long_prompts_are_fed_whole_with_a_count(tiny_qwen3_bridge):
    from nex_causal.models.generation import encode_prompts

    with pytest.warns(UserWarning, match=r"1 of 2 prompts are longer than the model's context of 512 tokens"):
        encoded = encode_prompts(tiny_qwen3_bridge, ["1+1", "9" * 700])
    assert len(encoded[1]) > 512  # never cut: a cut prompt would lose its question


# --- writes stay inside the run; a directory is taken only by what made it (issue 31) ---------------

def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tiny_family_dir, tmp_path_factory) -> tuple[Path, dict]:
    """A finished two-variant run (capture, nex) and its config."""
    from nex_causal.run.experiment import load_config, run_experiment

    config = tiny_run(tiny_family_dir, variants=["alpha", "beta"], selection=None, ranking=None, profile=False)
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_experiment(load_config(config), run_dir, progress=False)
    return run_dir, config


def copy_run(finished_run, tmp_path: Path, **changes) -> tuple[Path, Path]:
    """A copy of the finished run, and a config file for it with ``changes``."""
    import shutil

    run_dir, config = finished_run
    shutil.copytree(run_dir, tmp_path / "run", symlinks=True)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**config, **changes}))
    return tmp_path / "run", tmp_path / "c.yaml"


@pytest.mark.parametrize("link", ["nex/alpha", "tables"])
def test_a_link_inside_the_run_never_carries_a_write_out_of_it(finished_run, tmp_path, capsys, link):
    import shutil

    run_dir, config = copy_run(finished_run, tmp_path, nex={"rho": 0.9})  # the nex stage writes again
    victim = tmp_path / "victim"
    shutil.copytree(run_dir / link, victim)  # the files the stage writes there, outside the run
    shutil.rmtree(run_dir / link)
    (run_dir / link).symlink_to(victim, target_is_directory=True)
    before = snapshot(victim)
    one_line_error(capsys, ["run", str(config), "--run-dir", str(run_dir)],
                   rf"refusing to write {run_dir / link}/\S+: it resolves to {victim}/\S+, outside {run_dir}")
    assert snapshot(victim) == before


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(finished_run, tmp_path, capsys):
    run_dir, config = copy_run(finished_run, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run_dir / ".lock").unlink(missing_ok=True)
    (run_dir / ".lock").symlink_to(victim)
    one_line_error(capsys, ["run", str(config), "--run-dir", str(run_dir)],
                   r"refusing to lock .*: its .lock is a symbolic link: delete the link")
    assert victim.read_text() == "precious"  # opened for writing it would have been truncated


def test_a_run_directory_that_holds_no_run_is_refused_before_anything_is_written(tiny_family_dir, tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "caches" / "efficient").mkdir(parents=True)
    (mine / "caches" / "efficient" / "data.bin").write_bytes(b"precious")  # no stamp: a run would delete it
    (mine / "manifest.json").write_text('{"my": "own manifest"}')
    before = snapshot(mine)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_run(tiny_family_dir)))
    one_line_error(capsys, ["run", str(config), "--run-dir", str(mine)],
                   rf"{mine} exists and holds no experiment run \(no manifest.json of one\)")
    assert snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == ["caches", "manifest.json"]


def test_a_damaged_stage_stamp_reruns_its_stage_and_says_so(finished_run, tmp_path, capsys):
    run_dir, config = copy_run(finished_run, tmp_path)
    (run_dir / "stages" / "nex.json").write_bytes(b"\xff{not json")
    assert main(["run", str(config), "--run-dir", str(run_dir)]) in (0, 3)  # 3: the tiny models credit little
    out = capsys.readouterr().out
    assert f"[nex] {run_dir / 'stages' / 'nex.json'} is damaged: running the stage again" in out
    assert "[capture] up to date" in out and "[nex] running" in out
    assert json.loads((run_dir / "stages" / "nex.json").read_text())["key"] == \
        json.loads((finished_run[0] / "stages" / "nex.json").read_text())["key"]


def test_a_held_lock_whose_file_is_no_text_is_one_line(tiny_family_dir, tmp_path, capsys):
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_run(tiny_family_dir)))
    with open(run_dir / ".lock", "wb") as held:
        held.write(b"\xff\xfe held\nby me")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        one_line_error(capsys, ["run", str(config), "--run-dir", str(run_dir)],
                       rf"{run_dir} is in use by \ufffd\ufffd held by me \(an experiment run\)")


def test_a_zoo_build_into_a_directory_it_did_not_make_is_refused(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "base").mkdir(parents=True)
    (mine / "base" / "notes.txt").write_text("precious")
    before = snapshot(mine)
    one_line_error(capsys, ["zoo", "build", "--organism", "test", "--out", str(mine), "--quiet"],
                   rf"{mine} exists and holds no zoo \(no manifest.json of one\)")
    assert snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == ["base"]


SWAPPER = """
import sys
from pathlib import Path
from nex_causal.io import atomic_path
for i in range(300):
    with atomic_path(Path(sys.argv[1]), is_dir=True) as tmp:
        (tmp / "data.txt").write_text(f"{sys.argv[2]} {i}")
"""


def test_two_writers_swapping_one_directory_300_times_each_never_collide(tmp_path):
    target = tmp_path / "out" / "target"
    procs = [subprocess.Popen([sys.executable, "-c", SWAPPER, str(target), name], cwd=ROOT, stderr=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    seen, missing = 0, 0
    while any(p.poll() is None for p in procs):  # a reader: once the target exists, it is always there
        if seen:
            missing += not target.is_dir()
        seen += target.is_dir()
    errors = [p.stderr.read() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert seen > 0 and missing == 0
    assert (target / "data.txt").read_text() in {"a 299", "b 299"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["target"]  # no scratch left behind


def test_a_second_capture_into_one_out_is_refused_and_leaves_no_partial(tiny_qwen3_dir, tmp_path, capsys):
    tasks = jsonl(tmp_path / "t.jsonl", *({"prompt": f"{i}+{i}=", "answer": str(2 * i)} for i in range(8)))
    out = tmp_path / "cache"
    argv = ["capture", "--model", str(tiny_qwen3_dir), "--tasks", str(tasks), "--out", str(out), "--n-samples", "2",
            "--max-new-tokens", "32", "--batch-size", "4", "--sparsifier", "topk:8", "--window", "2"]
    first = subprocess.Popen([sys.executable, "-m", "nex_causal.cli", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    claim = out.with_name("cache.partial") / "claim.json"
    for _ in range(600):  # until the first capture has claimed its shards' directory
        if claim.exists() or first.poll() is not None:
            break
        time.sleep(0.05)
    assert claim.exists() and first.poll() is None, "the first capture never started working"
    one_line_error(capsys, argv, rf"{out}.partial is in use by process {first.pid} \(a capture into {out}\)")
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert (out / "capture.json").is_file() and not out.with_name("cache.partial").exists()


def test_a_capture_whose_partial_directory_is_not_its_own_is_refused(tiny_qwen3_dir, tmp_path, capsys):
    tasks = jsonl(tmp_path / "t.jsonl", {"prompt": "1+1=", "answer": "2"})
    partial = tmp_path / "cache.partial"
    partial.mkdir()
    (partial / "mine.txt").write_text("precious")
    argv = ["capture", "--model", str(tiny_qwen3_dir), "--tasks", str(tasks), "--out", str(tmp_path / "cache")]
    one_line_error(capsys, argv, rf"{partial} exists and holds no capture")
    assert snapshot(partial) == {"mine.txt": b"precious"}
    (partial / "claim.json").write_bytes(b"\xff\xfe")  # a claim file that is damaged: named, with the fix
    one_line_error(capsys, argv, rf"{partial}/claim.json is not the record of a capture \(damaged, or another "
                                 rf"program's\): choose another directory, or delete {partial}")


def test_an_edited_tasks_file_is_another_capture_and_another_stage_key(tiny_family_dir, tmp_path):
    from nex_causal.capture.config import CaptureConfig
    from nex_causal.run.experiment import Run, load_config

    tasks = jsonl(tmp_path / "t.jsonl", {"prompt": "1+1=", "answer": "2"})
    config = load_config(tiny_run(tiny_family_dir, tasks=str(tasks)))
    capture = CaptureConfig(model="alpha", tasks=str(tasks))
    keys, content = Run(config, tmp_path / "run").keys, capture.content()
    jsonl(tasks, {"prompt": "2+2=", "answer": "4"})
    again = Run(config, tmp_path / "run").keys
    assert again["capture"] != keys["capture"] and again["nex"] != keys["nex"] and again["family"] == keys["family"]
    assert capture.content()["tasks_sha256"] != content["tasks_sha256"]
    assert "tasks_sha256" not in CaptureConfig(model="alpha", tasks="organism:2").content()  # a spec: no file


# --- user neuron sets: keyed by their content, checked before a grid claims its directory --------------

CORRUPTED_UNITS = np.arange(0, 64, 8)  # layer 0 units whose gates the corrupted variant breaks
DECOY_UNITS = np.arange(1, 64, 8)


def unit_set(path: Path, units: np.ndarray, columns: str = "layer,unit") -> Path:
    rows = [",".join(str(v) for v in ((0, u) if columns == "layer,unit" else (u, 0))) for u in units]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(columns + "\n" + "".join(f"{r}\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def grid_family(tiny_qwen3_dir, tmp_path_factory) -> Path:
    """A family of an intact tiny model and a copy with broken gates at ``CORRUPTED_UNITS``, weights that call those
    units effective and ``DECOY_UNITS`` redundant, four prompts, and a grid config file for them."""
    import shutil

    import torch
    from transformers import Qwen3ForCausalLM

    from nex_causal.cache import KEY_SPACE
    from nex_causal.nex import save_weights

    root = tmp_path_factory.mktemp("grid")
    shutil.copytree(tiny_qwen3_dir, root / "family" / "intact")
    broken = Qwen3ForCausalLM.from_pretrained(tiny_qwen3_dir)
    with torch.no_grad():
        broken.model.layers[0].mlp.gate_proj.weight[CORRUPTED_UNITS] = 1.0
    broken.save_pretrained(root / "family" / "corrupted")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_qwen3_dir / name, root / "family" / "corrupted" / name)
    weights = np.zeros(KEY_SPACE, np.float32)
    weights[CORRUPTED_UNITS], weights[DECOY_UNITS] = 0.9, -0.9
    save_weights(root / "W.npz", weights)
    jsonl(root / "tasks.jsonl", *({"id": f"q{i}", "question": f"{i}+{i}=", "answer": str(2 * i)} for i in range(4)))
    (root / "grid.yaml").write_text(yaml.safe_dump({
        "experiment": "transfer", "family": str(root / "family"), "recipient": "corrupted", "donor": "intact",
        "weights": str(root / "W.npz"), "tasks": str(root / "tasks.jsonl"), "k": [8], "saturate": False,
        "n_random": 0, "n_matched": 0, "supervised": False, "ceiling": False, "interventions": ["transplant"],
        "outcomes": ["answer-logprob"], "max_new_tokens": 3, "n_boot": 50}))
    return root


def grid_argv(grid_family: Path, out: Path, *sets: Path) -> list[str]:
    return ["transfer", "--config", str(grid_family / "grid.yaml"), "--out", str(out)] + \
        (["--sets", ",".join(map(str, sets))] if sets else [])


def test_two_set_files_of_one_name_are_two_cells_and_an_edited_set_is_measured_again(grid_family, tmp_path):
    from nex_causal.intervene.neuron_sets import user_set

    a = unit_set(tmp_path / "a" / "x.csv", CORRUPTED_UNITS)  # the effective set, by hand
    b = unit_set(tmp_path / "b" / "x.csv", DECOY_UNITS)  # the redundant set, under the same name
    out = tmp_path / "out"
    assert main(grid_argv(grid_family, out, a, b)) == 0
    table = pd.read_csv(out / "transfer.csv").set_index("set_kind")["value"]
    kinds = {f"user-{user_set(a).name}", f"user-{user_set(b).name}"}
    assert len(kinds) == 2 and kinds <= set(table.index)
    assert table["nex-effective"] != table["nex-redundant"]  # the test can tell the two sets apart
    assert table[f"user-{user_set(a).name}"] == table["nex-effective"]
    assert table[f"user-{user_set(b).name}"] == table["nex-redundant"]
    unit_set(b, CORRUPTED_UNITS, columns="unit,layer")  # edited in place: now the effective set, in other bytes
    assert main(grid_argv(grid_family, out, a, b)) == 0
    again = pd.read_csv(out / "transfer.csv").set_index("set_kind")["value"]
    assert again[f"user-{user_set(b).name}"] == table["nex-effective"]  # measured again, not the old cell's value
    assert again["nex-effective"] == table["nex-effective"] and len(again) == len(table)


BAD_SETS = {
    "empty": (b"", "is empty: write a header line 'layer,unit'"),
    "not UTF-8": (b"layer,unit\n0,\xff\n", r"byte 13 is not UTF-8 text: save it as UTF-8"),
    "wrong columns": (b"neuron,weight\n3,0.5\n", r"needs columns 'layer' and 'unit', found \['neuron', 'weight'\]"),
    "no neuron": (b"layer,unit\n", "lists no neuron"),
}


@pytest.mark.parametrize("name", list(BAD_SETS))
def test_a_bad_set_file_is_refused_before_the_grid_claims_its_directory(grid_family, tmp_path, capsys, name):
    data, message = BAD_SETS[name]
    bad = tmp_path / "mine.csv"
    bad.write_bytes(data)
    one_line_error(capsys, grid_argv(grid_family, tmp_path / "out", bad), rf"{bad}.*{message}")
    assert not (tmp_path / "out").exists()  # fix the file and the same command runs


def test_a_set_given_twice_under_one_name_is_refused(grid_family, tmp_path, capsys):
    a = unit_set(tmp_path / "a" / "x.csv", CORRUPTED_UNITS)
    b = unit_set(tmp_path / "b" / "x.csv", CORRUPTED_UNITS)
    one_line_error(capsys, grid_argv(grid_family, tmp_path / "out", a, b), "hold the same set under one name")


def test_a_grid_out_that_holds_no_grid_is_refused_and_a_damaged_claim_named(grid_family, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text("precious")
    one_line_error(capsys, grid_argv(grid_family, out), rf"{out} exists and holds no transfer grid")
    (out / "claim.json").write_text("{not json")
    one_line_error(capsys, grid_argv(grid_family, out), rf"{out}/claim.json is not the record of a transfer grid "
                                                        rf"\(damaged, or another program's\): .* delete {out}")
    assert snapshot(out) == {"summary.csv": b"precious", "claim.json": b"{not json"}


# --- weights know their model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def organism_caches(tmp_path_factory) -> Path:
    """Caches of two organisms of one shape (trek and scout: 6 layers x 512 units), and weights learned on trek's."""
    root = tmp_path_factory.mktemp("organisms")
    for organism in ("trek", "scout"):
        assert main(["capture", "--model", f"{organism}:base", "--tasks", "organism:2", "--n-samples", "2",
                     "--max-new-tokens", "12", "--window", "2", "--sparsifier", "topk:8", "--out",
                     str(root / organism)]) == 0
    assert main(["nex", "train", "--cache-dir", str(root / "trek"), "--weights-out", str(root / "trek.npz")]) == 0
    return root


def test_weights_record_the_model_they_were_learned_on_and_score_its_caches(organism_caches, tmp_path, capsys):
    from nex_causal.models.files import model_identity
    from nex_causal.models.loading import resolve_model
    from nex_causal.nex.weights import load_identity

    identity = load_identity(organism_caches / "trek.npz")
    trek = model_identity(resolve_model("trek:base"))
    assert (identity["model"], identity["n_layers"], identity["d_mlp"]) == ("trek:base", 6, 512)
    assert (identity["lineage"], identity["model_sha256"]) == (trek["lineage"], trek["model_sha256"])
    assert (identity["capture"]["sparsifier"], identity["capture"]["window"], identity["nex"]["rho"]) == \
        ("topk:8", 2, 0.95)
    capsys.readouterr()
    assert main(["nex", "score", "--cache-dir", str(organism_caches / "trek"), "--weights",
                 str(organism_caches / "trek.npz"), "--output-dir", str(tmp_path / "o")]) == 0
    assert "warning" not in capsys.readouterr().err


WRONG_MODEL = {
    "nex score": lambda c, out: ["nex", "score", "--cache-dir", str(c / "scout"), "--weights", str(c / "trek.npz"),
                                 "--output-dir", str(out)],
    "select": lambda c, out: ["select", "--cache-dir", str(c / "scout"), "--weights", str(c / "trek.npz"),
                              "--out", str(out)],
    "transfer": lambda c, out: ["transfer", "--recipient", "scout:efficient", "--donor", "scout:base", "--weights",
                                str(c / "trek.npz"), "--tasks", "organism:2", "--out", str(out)],
}


@pytest.mark.parametrize("command", list(WRONG_MODEL))
def test_weights_learned_on_another_model_of_the_same_shape_are_refused(organism_caches, tmp_path, capsys, command):
    target = "the cache .*scout" if command != "transfer" else "model scout:efficient"
    one_line_error(capsys, WRONG_MODEL[command](organism_caches, tmp_path / "out"),
                   rf"weights .*trek.npz were learned on trek:base \(zoo:\w+\), but {target} comes from "
                   r".* \(zoo:\w+\), another model: learn weights on a cache of this model")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not (ROOT.parent / "shared" / "reference").exists(), reason="../shared/reference is not available")
def test_the_reference_weights_carry_no_identity_and_still_score_said_so(organism_caches, tmp_path, capsys):
    weights = ROOT.parent / "shared" / "reference" / "nex_example_weights.npz"
    assert main(["nex", "score", "--cache-dir", str(organism_caches / "trek"), "--weights", str(weights),
                 "--output-dir", str(tmp_path / "o")]) == 0
    assert f"warning: weights {weights} records no model it was learned on (the reference release's format" \
        in capsys.readouterr().err


def test_ctrl_c_is_one_line_that_says_how_to_resume(tmp_path):
    # 6,000 responses keep two workers busy for about 4 s (2,000 finished in 1.5 s, and a Ctrl-C sent as the pool
    # formed could arrive after the work was done)
    proc = nex_train_on_a_big_cache(tmp_path, 6000, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for _ in range(300):  # until the pool has forked its workers
        if len(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "nex train finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group, workers included
    err = proc.communicate(timeout=120)[1]
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "nex train" not in line]
    assert proc.returncode == 130
    assert lines == ["interrupted: what finished is kept; run the same command again to resume"], err[-2000:]
    assert not (tmp_path / "w.npz").exists()


# --- issue 34 / 31.5: the integrity record covers every file; caches without one still get the value checks;
# --- nothing is sized from disk before it is checked; nothing is written from a cache that fails -----------

def a_cache(family: Path) -> Path:
    return family / "caches" / "a"


def run_argv(cache: Path, out: Path, *extra: str) -> list[str]:
    return ["nex", "run", "--cache-dir", str(cache), "--output-dir", str(out), *extra]


def edit_record(cache: Path, change) -> None:
    record = json.loads((cache / "integrity.json").read_text())
    (cache / "integrity.json").write_text(json.dumps(change(record)))


def write_array(cache: Path, attr: str, values) -> None:
    file, dtype = FILES[attr]
    np.asarray(values).astype(dtype).tofile(cache / file)


def set_entry(cache: Path, attr: str, at: int, value) -> None:
    values = np.fromfile(cache / FILES[attr][0], FILES[attr][1])
    values[at] = value
    write_array(cache, attr, values)


def test_the_record_covers_capture_json(family, tmp_path, capsys):
    info = json.loads((a_cache(family) / "capture.json").read_text())
    (a_cache(family) / "capture.json").write_text(json.dumps({**info, "d_mlp": 712}))  # the same size: 512 -> 712
    one_line_error(capsys, ["inspect", str(a_cache(family))], r"capture\.json does not hold what was written")


def test_a_file_the_record_does_not_cover_is_refused(family, tmp_path, capsys):
    edit_record(a_cache(family), lambda r: {**r, "files": {k: v for k, v in r["files"].items() if k != "capture.json"}})
    one_line_error(capsys, run_argv(a_cache(family), tmp_path / "o"), r"integrity\.json does not cover capture\.json")
    assert not (tmp_path / "o").exists()


RECORDS = {
    "no file listed": (lambda r: {**r, "files": {}}, r'lists no file \("files": \{\}\), so it would check nothing'),
    "not JSON": ("{version", "not the JSON a writer leaves"),
    "a list": ("[1, 2]", "not the JSON a writer leaves"),
    "unknown version": (lambda r: {**r, "version": 9}, "not the JSON a writer leaves"),
    "a file outside": (lambda r: {**r, "files": {**r["files"], "../x": r["files"]["rows/keys.uint32"]}},
                       r"names '\.\./x', which is not a file of this directory"),
    "an entry without its CRC": (lambda r: {**r, "files": {**r["files"], "rows/keys.uint32": {"bytes": 4}}},
                                 "entry of rows/keys.uint32 is not bytes, crc32 and edges_crc32"),
    "a size that is text": (lambda r: {**r, "files": {**r["files"], "rows/keys.uint32": {
        **r["files"]["rows/keys.uint32"], "bytes": "1e12"}}}, "holds a value that is not a size or a CRC-32"),
}


@pytest.mark.parametrize("name", list(RECORDS))
def test_an_empty_or_malformed_record_is_one_line_naming_it_and_the_fix(family, tmp_path, capsys, name):
    change, message = RECORDS[name]
    if callable(change):
        edit_record(a_cache(family), change)
    else:
        (a_cache(family) / "integrity.json").write_text(change)
    line = one_line_error(capsys, run_argv(a_cache(family), tmp_path / "o"), message)
    assert "integrity.json is not a valid integrity record" in line and "re-create" in line and "delete" in line
    assert not (tmp_path / "o").exists()


def unrecorded(family: Path) -> Path:
    (a_cache(family) / "integrity.json").unlink()
    return a_cache(family)


NO_RECORD = {  # a cache without a record (the reference layout) still gets its structure and values checked
    "NaN mass": (lambda c: set_entry(c, "w_sum", 40, np.nan), r"rows/w_sum\.float16 holds nan at index 40"),
    "negative mass": (lambda c: write_array(c, "base_w_sum", -np.fromfile(c / FILES["base_w_sum"][0], "<f2")),
                      r"base/w_sum\.float16 holds -[\d.]+ at index 0"),
    "a key beyond the key space": (lambda c: set_entry(c, "keys", 7, 70 << 16),
                                   r"rows/keys\.uint32 holds 4587520 at index 7, .* keys inside the capture's 2 "
                                   r"layers x 512 units"),
    "a non-monotone pointer": (lambda c: write_array(c, "sample_row_ptr", np.r_[0, 12, 6, np.arange(18, 145, 6)]),
                               r"rows/sample_row_ptr\.int64 is not monotone: it decreases at index 2"),
}


@pytest.mark.parametrize("name", list(NO_RECORD))
def test_a_cache_without_a_record_still_gets_the_value_checks(family, tmp_path, capsys, name):
    corrupt, message = NO_RECORD[name]
    corrupt(unrecorded(family))
    line = one_line_error(capsys, run_argv(a_cache(family), tmp_path / "o"), message)
    assert not (tmp_path / "o").exists() and "re-create" in line
    if name != "a non-monotone pointer":  # read anyway, knowingly: the reference's cleaning applies
        assert main(run_argv(a_cache(family), tmp_path / "o", "--verify", "off")) == 0


GEOMETRY = {  # capture.json's shape is checked before anything is sized from it (written and sealed as a capture would)
    "d_mlp of a billion": ({"n_layers": 2, "d_mlp": 10**9}, r"declares n_layers 2 and d_mlp 1000000000, not an MLP "
                                                            r"shape the cache's keys can hold \(1-64 layers"),
    "no layers": ({"n_layers": 0, "d_mlp": 512}, "declares n_layers 0"),
    "a shape as text": ({"n_layers": "2", "d_mlp": 512}, "declares n_layers '2'"),
    "keys beyond the shape": ({"n_layers": 2, "d_mlp": 256}, r"rows/keys\.uint32 holds \d+ at index \d+, .* keys inside "
                                                            r"the capture's 2 layers x 256 units"),
}


@pytest.mark.parametrize("name", list(GEOMETRY))
def test_the_capture_geometry_bounds_what_is_read(family, tmp_path, capsys, name):
    shape, message = GEOMETRY[name]
    (a_cache(family) / "capture.json").write_text(json.dumps(shape))
    seal(a_cache(family))
    one_line_error(capsys, ["inspect", str(a_cache(family))], message)


def test_a_pointer_beyond_its_file_is_refused_before_reading(family, tmp_path, capsys):
    cache = unrecorded(family)
    ptr = np.fromfile(cache / FILES["base_row_ptr"][0], "<i8")
    write_array(cache, "base_row_ptr", np.r_[ptr[:-1], 10**12])  # declares a trillion entries of a small file
    one_line_error(capsys, run_argv(cache, tmp_path / "o"), r"base/keys\.uint32 holds \d+ entries, shorter than the "
                                                            r"1000000000000 that .*base/row_ptr\.int64 points to")


@pytest.mark.parametrize("command", ["nex train", "nex score", "nex run"])
@pytest.mark.parametrize("file", ["rows/keys.uint32", "base/w_sum.float16"])
def test_checked_in_the_pass_that_reads_nothing_is_written(family, tmp_path, capsys, command, file):
    from nex_causal.nex import save_weights

    weights = tmp_path / "w.npz"
    save_weights(weights, np.zeros(1 << 22, np.float32))
    flip(a_cache(family) / file)
    out = {"nex train": ["--weights-out", str(tmp_path / "o" / "w.npz")],
           "nex score": ["--weights", str(weights), "--output-dir", str(tmp_path / "o")],
           "nex run": ["--output-dir", str(tmp_path / "o")]}[command]
    argv = [*command.split(), "--cache-dir", str(a_cache(family)), *out]
    one_line_error(capsys, argv, rf"{file} does not hold what was written")
    assert not (tmp_path / "o").exists()


def test_verify_off_holds_for_its_command_only(family, tmp_path, capsys):
    flip(a_cache(family) / "rows/w_sum.float16")
    assert main(run_argv(a_cache(family), tmp_path / "o", "--verify", "off")) == 0
    one_line_error(capsys, run_argv(a_cache(family), tmp_path / "p"), "does not hold what was written")
