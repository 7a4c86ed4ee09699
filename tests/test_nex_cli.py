"""`nex-causal nex train|score|run`: the files other tools read, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nex_causal.cache import KEY_SPACE
from nex_causal.cli import main
from nex_causal.nex import NexConfig, learn_weights, score_responses

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"


def test_train_then_score_equals_run(nex_planted, tmp_path, capsys):
    cache = nex_planted.cache()
    d = str(cache.path)
    assert main(["nex", "train", "--cache-dir", d, "--weights-out", str(tmp_path / "w.npz")]) == 0
    with np.load(tmp_path / "w.npz", allow_pickle=False) as archive:  # as the reference reads it
        assert archive.files == ["weights", "identity"]  # the identity of what they were learned on rides beside
        w = archive["weights"]
    assert w.dtype == np.float32 and w.shape == (KEY_SPACE,)
    np.testing.assert_array_equal(w, learn_weights(cache, progress=False))
    assert "learned weights on 8 of 8 responses" in capsys.readouterr().out

    assert main(["nex", "score", "--cache-dir", d, "--weights", str(tmp_path / "w.npz"),
                 "--output-dir", str(tmp_path / "scored")]) == 0
    scores = np.load(tmp_path / "scored" / "response_scores.npy")
    assert scores.dtype == np.float32 and scores.shape == (8,)
    np.testing.assert_array_equal(scores, score_responses(cache, w, progress=False))
    summary = json.loads((tmp_path / "scored" / "summary.json").read_text())
    assert summary["n_responses"] == summary["n_scored_responses"] == 8
    assert summary["nex_score"] == pytest.approx(float(np.mean(scores)), rel=1e-6)
    assert "rho" not in summary and "log_gap" not in summary
    assert "scored 8 of 8 responses; NEX = " in capsys.readouterr().out

    assert main(["nex", "run", "--cache-dir", d, "--output-dir", str(tmp_path / "run"), "--log-gap-output"]) == 0
    with np.load(tmp_path / "run" / "weights.npz") as archive:
        np.testing.assert_array_equal(archive["weights"], w)
    np.testing.assert_array_equal(np.load(tmp_path / "run" / "response_scores.npy"), scores)
    run = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (run["rho"], run["min_run"], run["gmf_mean"]) == (0.95, 2, summary["nex_score"])
    assert run["nex_score"] == pytest.approx(-np.log10(1 - run["gmf_mean"]))  # the reference's summary
    assert "log-gap" in capsys.readouterr().out


def test_run_options_reach_the_learning(nex_planted, tmp_path):
    d = str(nex_planted.cache().path)
    assert main(["nex", "run", "--cache-dir", d, "--output-dir", str(tmp_path / "o"), "--rho", "0.9",
                 "--min-run", "3", "--max-responses", "2"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert (summary["rho"], summary["min_run"], summary["n_calibration_responses"]) == (0.9, 3, 2)
    assert summary["n_responses"] == 8  # every response is scored
    with np.load(tmp_path / "o" / "weights.npz") as archive:
        expected = learn_weights(nex_planted.cache(), NexConfig(rho=0.9, min_run=3), max_responses=2,
                                 progress=False)
        np.testing.assert_array_equal(archive["weights"], expected)


@pytest.mark.parametrize("argv, message", [
    (["nex", "train", "--cache-dir", "/nonexistent", "--weights-out", "w.npz"], "cache directory /nonexistent"),
    (["nex", "run", "--cache-dir", "{cache}", "--output-dir", "o", "--rho", "1.5"], "rho must lie strictly between 0 and 1"),
    (["nex", "score", "--cache-dir", "{cache}", "--weights", "/nonexistent.npz", "--output-dir", "o"],
     "weights file /nonexistent.npz does not exist"),
])
def test_errors_are_one_line(nex_planted, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{cache}", str(nex_planted.cache().path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "o").exists() and not (tmp_path / "w.npz").exists()


@pytest.mark.skipif(not REFERENCE.exists(), reason="../shared/reference is not available")
def test_score_the_reference_example(tmp_path):
    assert main(["nex", "score", "--cache-dir", str(REFERENCE / "nex_example_cache"), "--weights",
                 str(REFERENCE / "nex_example_weights.npz"), "--output-dir", str(tmp_path), "--log-gap-output"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_responses"] == summary["n_scored_responses"] == 1
    # the reference's summary of its example: the log-gap as nex_score
    assert round(summary["nex_score"], 4) == 2.7724 and round(summary["gmf_mean"], 6) == 0.998311
