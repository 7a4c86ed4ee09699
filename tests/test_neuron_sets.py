"""Neuron sets: top/bottom-k by NEX weight, matched random controls, set algebra, files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nex_causal.cache import KEY_SPACE
from nex_causal.errors import NexError
from nex_causal.intervene.neuron_sets import (
    NeuronSet,
    bottom_redundant,
    check_weights_fit,
    matched_random,
    top_effective,
)


def weight_vector(entries: dict[tuple[int, int], float]) -> np.ndarray:
    w = np.zeros(KEY_SPACE, dtype=np.float32)
    for (layer, unit), value in entries.items():
        w[(layer << 16) | unit] = value
    return w


WEIGHTS = weight_vector({(0, 5): 0.9, (1, 2): 0.5, (2, 7): 0.5, (0, 1): 0.1,
                         (1, 9): -0.8, (3, 0): -0.2, (2, 2): -0.95})


def pairs(s: NeuronSet) -> list[tuple[int, int]]:
    return list(zip(s.layers.tolist(), s.units.tolist()))


def test_top_effective_takes_the_largest_positive_weights():
    s = top_effective(WEIGHTS, 1)
    assert pairs(s) == [(0, 5)] and s.weights.tolist() == pytest.approx([0.9])
    assert s.name == "effective-1"
    assert pairs(top_effective(WEIGHTS, 3)) == [(0, 5), (1, 2), (2, 7)]  # no tie at the cut


def test_ties_at_the_cut_are_broken_in_a_seeded_random_order_with_a_warning():
    # (1,2) and (2,7) tie at 0.5 behind (0,5): k=2 takes (0,5) and one of the two
    with pytest.warns(UserWarning, match="2 units tie at score 0.5 at the cut; 1 of them"):
        picks = {tuple(pairs(top_effective(WEIGHTS, 2, seed=s))) for s in range(12)}
    assert picks == {((0, 5), (1, 2)), ((0, 5), (2, 7))}
    with pytest.warns(UserWarning):
        assert pairs(top_effective(WEIGHTS, 2, seed=3)) == pairs(top_effective(WEIGHTS, 2, seed=3))
    # many saturated neurons: the choice among them does not favour the first layers
    w = np.zeros(KEY_SPACE, dtype=np.float32)
    w[[(layer << 16) | unit for layer in range(4) for unit in range(100)]] = 1.0
    with pytest.warns(UserWarning, match="400 units tie"):
        counts = top_effective(w, 200, seed=0).per_layer_counts(4)
    assert np.all(np.abs(counts - 50) < 20)


def test_bottom_redundant_takes_the_most_negative_weights():
    s = bottom_redundant(WEIGHTS, 2)
    assert pairs(s) == [(1, 9), (2, 2)]
    assert s.weights.tolist() == pytest.approx([-0.8, -0.95])


def test_fewer_neurons_of_a_sign_than_k_warns_and_uses_what_exists():
    with pytest.warns(UserWarning, match="only 3 units have a positive score"):
        s = bottom_redundant(WEIGHTS, 10)
    assert len(s) == 3 and s.name == "redundant-10"
    assert len(top_effective(WEIGHTS, 0)) == 0


def test_matched_random_matches_layer_counts_avoids_the_reference_and_is_seeded():
    reference = NeuronSet.from_units("eff", [0, 0, 0, 2, 3], [1, 2, 3, 4, 5])
    a = matched_random(reference, d_mlp=16, seed=0)
    assert a.per_layer_counts(4).tolist() == reference.per_layer_counts(4).tolist() == [3, 0, 1, 1]
    assert len(a.intersection(reference)) == 0
    assert pairs(matched_random(reference, d_mlp=16, seed=0)) == pairs(a)
    draws = {tuple(pairs(matched_random(reference, d_mlp=16, seed=s))) for s in range(20)}
    assert len(draws) > 15  # seeds give different sets


def test_matched_random_is_uniform_over_the_allowed_units():
    reference = NeuronSet.from_units("eff", [1], [0])
    units = [int(matched_random(reference, d_mlp=4, seed=s).units[0]) for s in range(3000)]
    counts = np.bincount(units, minlength=4)
    assert counts[0] == 0  # the reference's own unit is excluded
    assert np.all(np.abs(counts[1:] - 1000) < 120)


def test_matched_random_refuses_when_a_layer_is_too_small():
    reference = NeuronSet.from_units("eff", [0, 0, 0], [0, 1, 2])
    with pytest.raises(NexError, match="layer 0 has only 1 units"):
        matched_random(reference, d_mlp=4, seed=0)


def test_union_intersection_and_counts_by_hand():
    a = NeuronSet.from_units("a", [0, 1, 1], [3, 0, 4])
    b = NeuronSet.from_units("b", [1, 2], [4, 0])
    assert pairs(a.union(b)) == [(0, 3), (1, 0), (1, 4), (2, 0)]
    assert pairs(a.intersection(b)) == [(1, 4)]
    assert a.per_layer_counts(3).tolist() == [1, 2, 0]
    assert {k: v.tolist() for k, v in a.by_layer().items()} == {0: [3], 1: [0, 4]}


@settings(max_examples=50, deadline=None)
@given(st.sets(st.integers(0, 2**20 - 1), max_size=30), st.sets(st.integers(0, 2**20 - 1), max_size=30))
def test_set_algebra_agrees_with_python_sets(x, y):
    a, b = NeuronSet("a", np.array(sorted(x))), NeuronSet("b", np.array(sorted(y)))
    assert set(a.union(b).keys.tolist()) == x | y
    assert set(a.intersection(b).keys.tolist()) == x & y
    assert len(a.union(b)) + len(a.intersection(b)) == len(a) + len(b)


def test_construction_sorts_keys_with_their_weights_and_rejects_duplicates():
    s = NeuronSet.from_units("s", [2, 0], [1, 1], weights=[0.2, -0.3])
    assert pairs(s) == [(0, 1), (2, 1)] and s.weights.tolist() == pytest.approx([-0.3, 0.2])
    with pytest.raises(NexError, match=r"\(layer 0, unit 1\) twice"):
        NeuronSet.from_units("s", [0, 0], [1, 1])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_save_load_round_trip(tmp_path, suffix):
    s = top_effective(WEIGHTS, 3)
    s.save(tmp_path / f"eff{suffix}")
    back = NeuronSet.load(tmp_path / f"eff{suffix}")
    assert back.name == "eff" and pairs(back) == pairs(s)
    np.testing.assert_array_equal(back.weights, s.weights)


def test_a_hand_written_csv_loads_without_weights(tmp_path):
    (tmp_path / "mine.csv").write_text("layer,unit\n3,17\n0,2\n")
    s = NeuronSet.load(tmp_path / "mine.csv")
    assert pairs(s) == [(0, 2), (3, 17)] and s.weights is None


@pytest.mark.parametrize("text,message", [
    ("layer,neuron\n0,1\n", "needs columns 'layer' and 'unit'"),
    ("layer,unit\n0,1.5\n", "whole numbers"),
    ("layer,unit\n70,1\n", r"layers must lie in \[0, 64\)"),
    ("layer,unit\n0,1\n0,1\n", "twice"),
])
def test_bad_set_files_name_the_problem(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(NexError, match=message):
        NeuronSet.load(tmp_path / "bad.csv")


def test_bad_paths_name_the_problem(tmp_path):
    with pytest.raises(NexError, match="does not exist"):
        NeuronSet.load(tmp_path / "missing.csv")
    with pytest.raises(NexError, match="use a .csv or .parquet"):
        top_effective(WEIGHTS, 1).save(tmp_path / "eff.txt")
    assert not (tmp_path / "eff.txt").exists()


def test_sets_and_weights_outside_the_model_are_refused():
    s = NeuronSet.from_units("eff", [0, 4], [1, 2])
    s.check_fits(5, 8)
    with pytest.raises(NexError, match=r"\(layer 4, unit 2\), outside this model's 4 layers x 8 units"):
        s.check_fits(4, 8)
    with pytest.raises(NexError, match=r"\(layer 0, unit 5\).*another model"):
        check_weights_fit(WEIGHTS, 4, 5)
    check_weights_fit(WEIGHTS, 4, 10)


def test_table_has_the_documented_columns():
    df = top_effective(WEIGHTS, 3).table()
    assert list(df.columns) == ["layer", "unit", "weight"]
    pd.testing.assert_series_equal(df["unit"], pd.Series([5, 2, 7], name="unit"))
