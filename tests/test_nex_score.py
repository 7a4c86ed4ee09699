"""Good-Mass Fraction, NEX and log-gap (NEX_METHOD section 6), and the reference example."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nex_causal.cache import (
    KEY_SPACE,
    SparseCache,
    SparseCacheWriter,
    pack_keys,
    unpack_keys,
)
from nex_causal.errors import NexError
from nex_causal.nex import (
    analyze_response,
    learn_weights,
    load_weights,
    log_gap,
    nex_score,
    score_cache,
    score_responses,
    write_scores,
)
from nex_causal.nex.score import good_mass_fraction

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"
K255 = int(pack_keys(255, 0))


def weights_with(values: dict[int, float]) -> np.ndarray:
    w = np.zeros(KEY_SPACE, np.float32)
    w[list(values)] = list(values.values())
    return w


def test_gmf_of_a_three_neuron_response_by_hand():
    w = weights_with({10: 0.5, 20: -0.5, 30: 0.0})
    # good = 2 * 0.5 = 1; weighted = 2 * 0.5 + 1 * 0.5 + 1 * 0 = 1.5
    assert good_mass_fraction(np.array([10, 20, 30]), np.array([2.0, 1.0, 1.0]), w) == pytest.approx(2 / 3)


def test_gmf_edge_cases():
    w = weights_with({10: 0.5, 20: -0.5})
    assert good_mass_fraction(np.array([30, 40]), np.array([1.0, 2.0]), w) == 0.0  # no weighted mass
    for keys, mass in [([], []), ([10, 20], [np.nan, -1.0]), ([K255], [5.0]), ([10], [0.0])]:
        assert np.isnan(good_mass_fraction(np.array(keys, np.uint32), np.array(mass), w))  # no usable mass
    # layer 255, NaN and negative mass are ignored next to usable entries
    assert good_mass_fraction(np.array([10, K255, 20, 20]), np.array([1.0, 9.0, np.inf, -3.0]), w) == 1.0


def test_a_key_beyond_the_key_space_leaves_the_response_unscored_and_bad_weights_are_refused():
    w = weights_with({1: 0.5})
    assert np.isnan(good_mass_fraction(np.array([1, 1 << 22]), np.array([1.0, 1.0]), w))  # as the reference
    with pytest.raises(NexError, match="shape \\(5,\\)"):
        good_mass_fraction(np.array([1]), np.array([1.0]), np.zeros(5))
    longer = np.zeros(KEY_SPACE + 7, np.float32)
    longer[1] = 0.5
    assert good_mass_fraction(np.array([1]), np.array([2.0]), longer) == 1.0  # the reference reads 2**22 of them


def test_cache_scores_match_one_response_at_a_time(tmp_path):
    rng = np.random.default_rng(0)
    with SparseCacheWriter(tmp_path / "c") as writer:
        for r in range(7):
            writer.append([(rng.choice(50, 10, replace=False), rng.exponential(1.0, 10), 32)] if r != 3 else [])
    cache = SparseCache.open(tmp_path / "c")
    w = weights_with({k: v for k, v in zip(range(50), rng.uniform(-1, 1, 50))})
    single = np.array([good_mass_fraction(*cache.base(r), w) for r in range(7)])
    assert np.isnan(single[3]) and np.isfinite(np.delete(single, 3)).all()
    scores = score_responses(cache, w, progress=False)
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, single.astype(np.float32))
    assert score_cache(cache, w, progress=False) == nex_score(scores)


def test_nex_score_and_log_gap_by_hand():
    assert nex_score(np.array([0.5, np.nan, 1.0])) == 0.75
    assert np.isnan(nex_score(np.array([np.nan]))) and np.isnan(nex_score(np.array([])))
    assert log_gap(0.99) == pytest.approx(2.0) and log_gap(0.9) == pytest.approx(1.0) and log_gap(0.0) == 0.0
    assert log_gap(1.0) == 12.0 and np.isnan(log_gap(np.nan))  # 1 - NEX clipped at 1e-12, as the reference
    with pytest.raises(NexError, match="NEX is a mean of fractions in \\[0, 1\\]"):
        log_gap(1.5)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 99), st.floats(-1, 100) | st.just(np.nan)), max_size=30),
       st.lists(st.floats(-1, 1), min_size=100, max_size=100), st.integers(0, 2**16))
def test_gmf_is_a_fraction_and_ignores_entry_order(entries, weights, seed):
    w = weights_with(dict(enumerate(weights)))
    keys = np.array([k for k, _ in entries], np.uint32)
    mass = np.array([m for _, m in entries])
    g = good_mass_fraction(keys, mass, w)
    assert np.isnan(g) or 0.0 <= g <= 1.0
    order = np.random.default_rng(seed).permutation(len(keys))
    np.testing.assert_allclose(good_mass_fraction(keys[order], mass[order], w), g, rtol=1e-5)  # float32 sums


def test_calibrate_on_one_cache_and_score_another(nex_planted):
    weights = learn_weights(nex_planted.cache(), progress=False)
    other = nex_planted.cache(kinds=("AAAA", "BBBB", "ABAB", "AABB", "ABBB"), seed=1)
    gmf = score_responses(other, weights, progress=False)
    assert gmf[0] == pytest.approx(1.0) and gmf[1] == pytest.approx(0.0)
    assert gmf[0] > gmf[3] > gmf[4] > gmf[1] and gmf[3] == pytest.approx(gmf[2], abs=0.05)


def test_write_scores(tmp_path):
    summary = write_scores(tmp_path / "o", np.float32([0.5, np.nan, 1.0]), rho=0.9)
    on_disk = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert on_disk == {"n_responses": 3, "n_scored_responses": 2, "nex_score": 0.75, "rho": 0.9}
    assert summary["nex_score"] == 0.75
    scores = np.load(tmp_path / "o" / "response_scores.npy")
    assert scores.dtype == np.float32 and scores[0] == 0.5 and np.isnan(scores[1])
    # --log-gap-output: the reference writes the log-gap itself as nex_score; the mean sits beside it
    write_scores(tmp_path / "g", np.float32([0.5, np.nan, 1.0]), log_gap_output=True)
    on_disk = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert on_disk["nex_score"] == pytest.approx(-np.log10(0.25)) and on_disk["gmf_mean"] == 0.75
    write_scores(tmp_path / "p", np.array([np.nan]), log_gap_output=True)
    on_disk = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert on_disk["nex_score"] is None and on_disk["gmf_mean"] is None  # NaN is written as null


@pytest.mark.skipif(not REFERENCE.exists(), reason="../shared/reference is not available")
def test_reference_example_scores_with_the_reference_weights():
    cache = SparseCache.open(REFERENCE / "nex_example_cache")
    w = load_weights(REFERENCE / "nex_example_weights.npz")
    (gmf,) = score_responses(cache, w, progress=False)
    keys, mass = cache.base(0)  # the definition written out once more, in float64
    wk = w[keys].astype(np.float64)
    expected = (mass * np.maximum(wk, 0)).sum() / (mass * np.abs(wk)).sum()
    assert 0.9 < gmf < 1.0 and gmf == pytest.approx(expected, rel=1e-6)  # float32 sums, as the reference
    assert nex_score(np.array([gmf])) == gmf and log_gap(gmf) == pytest.approx(-np.log10(1 - expected), rel=1e-4)
    assert (w[keys] != 0).mean() > 0.5  # the reference weights cover this Qwen3-4B response's neurons


@pytest.mark.skipif(not REFERENCE.exists(), reason="../shared/reference is not available")
def test_reference_example_response_trace():
    cache = SparseCache.open(REFERENCE / "nex_example_cache")
    rows = cache.response_rows(0)
    trace = analyze_response(rows)
    assert len(trace.slopes) == 83 and trace.method == "hmm"
    assert trace.slopes[0] == 372 / 32  # every neuron of the first row is new
    last = rows.row(len(rows) - 1)[0]
    assert trace.slopes[-1] == np.float32(len(np.setdiff1d(last, rows.keys[:rows.row_ptr[-2]])) / 22)
    assert np.rint(trace.slopes * trace.tokens).sum() == len(cache.base_keys)  # each neuron introduced once
    layer, _ = unpack_keys(trace.credit.keys.astype(np.uint32))
    assert layer.max() < 36 and len(trace.cycles) >= 1
