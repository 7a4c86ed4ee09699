"""Cycles, reuse credit and neuron weights (NEX_METHOD sections 4-5): a response computed on
paper, every gating rule, planted effective/redundant neurons, and the weights file."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nex_causal.cache import KEY_SPACE, ResponseRows, unpack_keys
from nex_causal.errors import NexError
from nex_causal.nex import NexConfig, learn, learn_weights, load_weights, save_weights
from nex_causal.nex.credit import (
    analyze_response,
    classify,
    credit,
    cycles,
    explore_exploit_runs,
    neuron_weights,
)
from nex_causal.nex.novelty import Rows, clean_rows, novelty

SHARED = Path(__file__).resolve().parents[2] / "shared"
T, F = True, False


def response(*rows):
    return ResponseRows.from_rows([(k, m, 10) for k, m in rows])


def median32(*values: float) -> float:
    """The reference's median of reuse shares: taken over their float32 values."""
    return float(np.median(np.asarray(values, np.float32)))


# Worked on paper, every row 10 tokens:
#   row  keys: mass            introduced   slope   label
#   0    1 2 3 4: 1 1 1 1      1 2 3 4      0.4     E   cycle 1: E [0, 1], X [2, 3]
#   1    5 6: 2 2              5 6          0.2     E
#   2    1 7: 3 1              7            0.1     X
#   3    2 5 8: 1 1 2          8            0.1     X
#   4    9..13: 1 each         9..13        0.5     E   cycle 2: E [4, 4], X [5, 5]
#   5    9: 4                  -            0.0     X
# median slope 0.15.  Cycle 1: strength 0.3 - 0.15, consolidation 1 - 0.1 / 0.3, reuse: X mass 8, of
# which on neurons 1..6: 3 + 1 + 1 = 5.  Cycle 2: strength 0.35, consolidation 1, reuse 4 / 4.
HAND = response(([1, 2, 3, 4], [1, 1, 1, 1]), ([5, 6], [2, 2]), ([1, 7], [3, 1]), ([2, 5, 8], [1, 1, 2]),
                ([9, 10, 11, 12, 13], [1] * 5), ([9], [4]))
HAND_LABELS = np.array([T, T, F, F, T, F])


def test_cycle_measures_by_hand():
    nov = novelty(clean_rows(HAND))
    c1, c2 = cycles(nov, HAND_LABELS)
    r1, r2 = 5 / (8 + 1e-6), 4 / (4 + 1e-6)
    assert (c1.e_start, c1.e_end, c1.x_start, c1.x_end) == (0, 1, 2, 3)
    assert (c2.e_start, c2.e_end, c2.x_start, c2.x_end) == (4, 4, 5, 5)
    assert c1.strength == pytest.approx(0.15) and c2.strength == pytest.approx(0.35)
    assert c1.consolidation == pytest.approx(1 - 0.1 / (0.3 + 1e-6)) and c2.consolidation == 1.0
    assert c1.reuse == pytest.approx(r1, abs=1e-12) and c2.reuse == pytest.approx(r2, abs=1e-12)
    # the median of two shares is their mean (over their float32 values): progress is +-half their gap
    assert c1.progress == r1 - median32(r1, r2) and c2.progress == r2 - median32(r1, r2)
    assert c1.progress == pytest.approx((r1 - r2) / 2, abs=1e-7)
    assert (c1.kind, c2.kind) == ("redundant", "effective")
    assert c1.scale == -c1.progress and c2.scale == c2.progress * c2.consolidation


def test_credit_by_hand():
    nov = novelty(clean_rows(HAND))
    c1, c2 = cycles(nov, HAND_LABELS)
    got = credit(nov, [c1, c2])
    assert got.keys.tolist() == [1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13]
    assert got.effective.tolist() == [False] * 6 + [True] * 5
    assert got.amount.dtype == np.float32  # m * scale in float32, as the reference's float32 arrays
    np.testing.assert_array_equal(got.amount, np.float32([1, 1, 1, 1, 2, 2, 1, 1, 1, 1, 1])
                                  * np.float32([c1.scale] * 6 + [c2.scale] * 5))


@pytest.mark.parametrize("progress, consolidation, expected", [
    (0.2, 0.5, ("effective", 0.1)),
    (0.2, 0.0, ("redundant", 0.2)),    # progress without consolidation is redundant
    (-0.3, 0.9, ("redundant", 0.3)),
    (0.0, 1.0, ("none", 0.0)),
    (np.nan, 1.0, ("none", 0.0)),
])
def test_classify(progress, consolidation, expected):
    kind, scale = classify(progress, consolidation)
    assert kind == expected[0] and scale == pytest.approx(expected[1])


def test_runs_leading_x_and_trailing_e_form_no_cycle():
    assert explore_exploit_runs(np.array([F, T, T, F, F, T, F, T, T])) == [(1, 2, 3, 4), (5, 5, 6, 6)]
    assert explore_exploit_runs(np.array([T, T, T])) == [] and explore_exploit_runs(np.array([], bool)) == []


def test_a_lone_cycle_is_credited_by_the_rounding_residue_of_its_share():
    labels = np.array([T, T, F, F, T, T])  # rows 4-5 end the response in E: one cycle
    nov = novelty(clean_rows(HAND))
    (only,) = cycles(nov, labels)
    assert (only.e_start, only.x_end) == (0, 3)
    # its share is its own median, but the median is taken in float32 (the reference's arithmetic)
    r = 5 / (8 + 1e-6)
    assert only.progress == r - float(np.float32(r)) != 0.0 and abs(only.progress) < 1e-7
    assert only.kind == ("effective" if only.progress > 0 else "redundant")
    assert credit(nov, [only]).keys.tolist() == [1, 2, 3, 4, 5, 6]


def test_cycle_below_the_median_slope_gets_no_share():
    # cycle 2's E run has slope 0.1 = the median slope: strength 0, no share; cycle 1 is then
    # alone, its progress 0, and it credits nothing
    rr = response(([1, 2, 3, 4], [1] * 4), ([5], [1]), ([1, 2], [1, 1]), ([6], [1]), ([1], [1]), ([2, 7], [1, 1]))
    nov = novelty(clean_rows(rr))
    np.testing.assert_allclose(nov.slopes, [0.4, 0.1, 0.0, 0.1, 0.0, 0.1])
    c1, c2 = cycles(nov, np.array([T, F, F, T, F, F]))
    assert c1.strength == pytest.approx(0.3) and c2.strength == 0.0
    assert np.isnan(c2.reuse) and np.isnan(c2.progress) and c2.kind == "none"
    assert abs(c1.progress) < 1e-7  # alone: only the float32 residue of its share


def test_e_run_that_introduced_nothing_gets_no_share_and_zero_consolidation():
    rr = response(([1, 2], [1, 1]), ([3], [1]), ([1, 2], [1, 1]), ([2], [1]), ([1], [1]))
    nov = novelty(clean_rows(rr))
    _, c2 = cycles(nov, np.array([T, F, T, T, F]))
    assert c2.consolidation == 0.0 and np.isnan(c2.reuse) and c2.kind == "none"


def test_reuse_is_undefined_when_the_x_rows_have_no_mass():
    rows = Rows(keys=np.array([1, 2, 3]), mass=np.float32([1.0, 1.0, 0.0]), row_ptr=np.array([0, 2, 3]),
                tokens=np.array([10, 10]), source=np.arange(2))
    (c,) = cycles(novelty(rows), np.array([T, F]))
    assert np.isnan(c.reuse) and c.kind == "none"


def test_fewer_than_three_usable_rows_add_no_credit():
    rr = response(([1, 2, 3], [1, 1, 1]), ([], []), ([4], [np.nan]), ([1, 5], [1, 1]))
    trace = analyze_response(rr)
    assert trace.source.tolist() == [0, 3] and trace.method == "short"
    assert trace.cycles == [] and trace.credit.keys.size == 0


def test_analyze_response_on_a_planted_response(nex_planted):
    rows, labels = nex_planted.response(np.random.default_rng(1), "ABAB")
    trace = analyze_response(ResponseRows.from_rows(rows))
    assert trace.explore.tolist() == labels.tolist()
    assert [c.kind for c in trace.cycles] == ["effective", "redundant", "effective", "redundant"]
    layer, _ = unpack_keys(trace.credit.keys.astype(np.uint32))
    effective, amount = trace.credit.effective, trace.credit.amount
    assert (effective[layer == nex_planted.GOOD]).all() and not effective[layer == nex_planted.BAD].any()
    assert (amount > 0).all() and set(layer.tolist()) <= {nex_planted.GOOD, nex_planted.BAD, nex_planted.BACKGROUND}


def test_neuron_weights_by_hand():
    w = neuron_weights(np.array([0.0, 1.0, 2.0, 0.0, 3.0]), np.array([0.0, 1.0, 1.0, 3.0, 0.0]))
    assert w.dtype == np.float32
    # tanh(log 2) = (2 - 1/2) / (2 + 1/2) = 0.6
    np.testing.assert_allclose(w, [0.0, 0.0, 0.6, -1.0, 1.0], atol=1e-6)
    assert w[0] == 0.0
    with pytest.raises(NexError, match="non-negative"):
        neuron_weights(np.array([-1.0]), np.array([0.0]))


def test_named_weightings_by_hand():
    eff, red = np.array([0.0, 1.0, 2.0, 0.0, 3.0, 30.0]), np.array([0.0, 1.0, 1.0, 3.0, 0.0, 0.0])
    np.testing.assert_allclose(neuron_weights(eff, red, "eff"), [0, 1 / 30, 2 / 30, 0, 0.1, 1], rtol=1e-6)
    np.testing.assert_allclose(neuron_weights(eff, red, "eff-red"), [0, 0, 1 / 30, -0.1, 0.1, 1], rtol=1e-6)
    assert (neuron_weights(eff, red) == 1.0).sum() == 2  # tanh ties 3 and 30 units of evidence at 1
    with pytest.raises(NexError, match="unknown weighting"):
        neuron_weights(eff, red, "softmax")


def test_skip_opening_credits_nothing_from_the_first_cycle(nex_planted):
    rows, _ = nex_planted.response(np.random.default_rng(1), "ABAB")
    full = analyze_response(ResponseRows.from_rows(rows))
    skipped = analyze_response(ResponseRows.from_rows(rows), NexConfig(skip_opening=True))
    assert skipped.cycles == full.cycles  # the cycles are the same; only the credit of the first goes
    first = full.cycles[0]
    opening = set(full.credit.keys.tolist()) - set(skipped.credit.keys.tolist())
    assert opening and set(skipped.credit.keys.tolist()) < set(full.credit.keys.tolist())
    source = full.source
    first_keys = set(np.concatenate([rows[j][0] for j in source[first.e_start:first.e_end + 1]]).tolist())
    assert opening <= first_keys


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)), min_size=1, max_size=30))
def test_weights_lie_in_the_unit_interval_with_the_sign_of_eff_minus_red(pairs):
    eff, red = np.array(pairs).T
    w = neuron_weights(eff, red)
    assert ((w >= -1) & (w <= 1)).all()  # open interval in exact arithmetic; float32 rounds |w| near 1 to 1
    nonzero = w != 0  # w is 0 where Eff = Red, or where they differ below the ratio's rounding
    assert (np.sign(w[nonzero]) == np.sign(eff - red)[nonzero]).all()
    assert not w[eff == red].any()


def test_learning_recovers_planted_neurons(nex_planted):
    cache = nex_planted.cache()
    cal = learn(cache, progress=False, keep_traces=True)
    layer, _ = unpack_keys(np.arange(KEY_SPACE))
    good, bad = cal.weights[layer == nex_planted.GOOD], cal.weights[layer == nex_planted.BAD]
    assert (good[good != 0] > 0.99).all() and (good != 0).sum() > 250
    assert (bad[bad != 0] < -0.99).all() and (bad != 0).sum() > 250
    assert not cal.weights[layer == nex_planted.NOISE].any()  # introduced only in exploit rows
    assert cal.n_responses == cache.n_responses == len(cal.traces)
    assert cal.eff.sum() == pytest.approx(sum(t.credit.amount[t.credit.effective].sum() for t in cal.traces))
    np.testing.assert_array_equal(learn_weights(cache, progress=False), cal.weights)  # same input, same weights


def test_max_responses_learns_from_the_first_ones(nex_planted):
    cache = nex_planted.cache()
    cal = learn(cache, max_responses=2, progress=False, keep_traces=True)
    assert cal.n_responses == 2
    first_two = sum(t.credit.amount.sum() for t in learn(cache, progress=False, keep_traces=True).traces[:2])
    assert cal.eff.sum() + cal.red.sum() == pytest.approx(first_two)
    assert learn(cache, max_responses=100, progress=False).n_responses == cache.n_responses
    with pytest.raises(NexError, match="max_responses must be a non-negative integer"):
        learn(cache, max_responses=-1)


rows_strategy = st.lists(
    st.lists(st.tuples(st.integers(0, 60), st.floats(0.01, 5.0)), min_size=1, max_size=10, unique_by=lambda e: e[0]),
    min_size=3, max_size=14)


@settings(max_examples=40, deadline=None)
@given(rows=rows_strategy, seed=st.integers(0, 2**16))
def test_permuting_keys_within_a_row_changes_nothing(rows, seed):
    rng = np.random.default_rng(seed)
    plain = [([k for k, _ in row], [m for _, m in row]) for row in rows]
    shuffled = []
    for keys, mass in plain:
        order = rng.permutation(len(keys))
        shuffled.append(([keys[i] for i in order], [mass[i] for i in order]))
    a, b = analyze_response(response(*plain)), analyze_response(response(*shuffled))
    assert [astuple(c)[:4] for c in a.cycles] == [astuple(c)[:4] for c in b.cycles]
    # float32 sums in another order round differently: equal up to that rounding, and the
    # kinds equal wherever progress is more than rounding (a lone cycle's is only rounding)
    numbers = [astuple(c)[4:8] for c in a.cycles], [astuple(c)[4:8] for c in b.cycles]
    np.testing.assert_allclose(*numbers, rtol=1e-5, atol=1e-6)
    assert [c.kind for c in a.cycles if abs(c.progress) > 1e-5] == [c.kind for c in b.cycles if abs(c.progress) > 1e-5]
    np.testing.assert_array_equal(a.explore, b.explore)
    for t in (a, b):
        assert (t.credit.amount >= 0).all()
    np.testing.assert_array_equal(np.sort(a.credit.keys), np.sort(b.credit.keys))


def test_weights_file_round_trip_and_errors(tmp_path):
    w = np.zeros(KEY_SPACE, np.float32)
    w[[5, 70000]] = [0.5, -0.25]
    save_weights(tmp_path / "w.npz", w)
    with np.load(tmp_path / "w.npz") as archive:
        assert archive.files == ["weights"] and archive["weights"].dtype == np.float32
    np.testing.assert_array_equal(load_weights(tmp_path / "w.npz"), w)
    np.savez(tmp_path / "other.npz", w=w)
    with pytest.raises(NexError, match="has no array named 'weights'"):
        load_weights(tmp_path / "other.npz")
    np.savez(tmp_path / "short.npz", weights=w[:10])
    with pytest.raises(NexError, match=r"has shape \(10,\), expected one dimension of at least 4194304"):
        load_weights(tmp_path / "short.npz")
    w[3] = np.nan
    np.savez(tmp_path / "nan.npz", weights=w)
    with pytest.raises(NexError, match="non-finite"):
        load_weights(tmp_path / "nan.npz")
    with pytest.raises(NexError, match="weights file .*missing.npz does not exist"):
        load_weights(tmp_path / "missing.npz")


@pytest.mark.skipif(not (SHARED / "reference").exists(), reason="../shared/reference is not available")
def test_reference_weights_load():
    w = load_weights(SHARED / "reference" / "nex_example_weights.npz")
    assert w.dtype == np.float32 and ((w >= -1) & (w <= 1)).all() and (w != 0).sum() == 108551


def test_prompt_seen_never_introduces_what_the_prompt_activated(nex_planted, tmp_path):
    """Responses whose prompts already activated the good pool: with prompt_seen those neurons are never
    introduced, so never credited, and the first rows lose their novelty; without it nothing changes."""
    from nex_causal.cache import SparseCache, SparseCacheWriter, pack_keys

    rng = np.random.default_rng(3)
    good = pack_keys(nex_planted.GOOD, np.arange(300))
    with SparseCacheWriter(tmp_path / "c") as writer:
        for r in range(6):
            writer.append(nex_planted.response(rng, "ABAB")[0],
                          meta={"prompt_id": f"p{r}", "sample_index": 0, "prompt_keys": good.astype(np.uint32)})
    cache = SparseCache.open(tmp_path / "c")
    plain, seen = learn(cache, progress=False), learn(cache, NexConfig(prompt_seen=True), progress=False)
    assert (plain.weights[good] > 0).sum() > 250 and not seen.weights[good].any()
    np.testing.assert_array_equal(learn(cache, NexConfig(), progress=False).weights, plain.weights)
    rows = cache.response_rows(0)
    assert analyze_response(rows, NexConfig(), seen=good).slopes[0] < analyze_response(rows).slopes[0]
    bare = nex_planted.cache(seed=5)
    with pytest.raises(NexError, match="records no prompt neurons"):
        learn(bare, NexConfig(prompt_seen=True), progress=False)
