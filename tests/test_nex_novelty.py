"""Cleaning and novelty slopes (NEX_METHOD sections 1-2) on responses worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nex_causal.cache import ResponseRows, pack_keys
from nex_causal.errors import NexError
from nex_causal.nex.novelty import activated_keys, clean_mass, clean_rows, novelty

K255 = int(pack_keys(255, 3))


def response(*rows):
    """ResponseRows from (keys, mass, n_tokens) triples."""
    return ResponseRows.from_rows(rows)


def test_novelty_vector_by_hand():
    rows = clean_rows(response(
        ([1, 2, 3], [1, 1, 1], 32),      # I0 = {1, 2, 3}: 3 / 32
        ([2, 3, 4, 5], [1, 1, 1, 1], 32),  # I1 = {4, 5}: 2 / 32
        ([1, 6], [1, 1], 16),            # I2 = {6}: 1 / 16
        ([1, 2], [1, 1], 10),            # I3 = {}: 0
    ))
    nov = novelty(rows)
    np.testing.assert_allclose(nov.slopes, [3 / 32, 2 / 32, 1 / 16, 0.0])
    assert [nov.introduced_set(j).tolist() for j in range(4)] == [[1, 2, 3], [4, 5], [6], []]
    assert nov.first_row.tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 2, 0, 0]


def test_cleaning_zeroes_non_finite_and_clips_negative_mass_in_float32():
    mass = clean_mass(np.array([1.0, np.nan, -2.0, 0.0, np.inf, -np.inf]))
    assert mass.dtype == np.float32 and mass.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    keys = activated_keys(np.array([5, K255, 2, 3, 4, 5, 1]), np.array([1.0, 9.0, np.nan, -2.0, 0.0, 1.0, 2.0]))
    assert keys.tolist() == [1, 5] and keys.dtype == np.uint32  # positive finite mass, distinct, sorted


def test_a_retained_neuron_is_introduced_even_without_mass():
    rows = response(
        ([1, 2, K255], [1.0, 0.0, 5.0], 32),   # 2 is retained with no mass: introduced (the reference)
        ([2, 3], [np.nan, -1.0], 32),          # nothing positive: row skipped
        ([2, 1], [0.5, 1.0], 32),
    )
    nov = novelty(clean_rows(rows))
    assert nov.rows.source.tolist() == [0, 2] and nov.rows.keys.tolist() == [1, 2, 2, 1]
    np.testing.assert_array_equal(nov.slopes, np.float32([2 / 32, 0.0]))
    assert nov.introduced_set(0).tolist() == [1, 2] and nov.introduced_set(1).tolist() == []
    # the named alternative: a neuron is introduced where it first has positive mass
    strict = novelty(clean_rows(rows, positive_only=True))
    assert strict.rows.keys.tolist() == [1, 2, 1]
    np.testing.assert_array_equal(strict.slopes, np.float32([1 / 32, 1 / 32]))
    assert strict.introduced_set(1).tolist() == [2]


def test_rows_without_keys_tokens_or_mass_are_skipped():
    rows = clean_rows(response(
        ([], [], 32),                # no keys
        ([1], [1.0], 0),             # no tokens
        ([K255], [3.0], 32),         # only the reserved layer
        ([2, 3], [0.0, -1.0], 32),   # zero total mass after cleaning
        ([1, 4], [2.0, 1.0], 20),
    ))
    assert rows.source.tolist() == [4] and rows.tokens.tolist() == [20]
    assert rows.keys.tolist() == [1, 4] and rows.row_ptr.tolist() == [0, 2]
    np.testing.assert_allclose(novelty(rows).slopes, [2 / 20])


def test_empty_response():
    nov = novelty(clean_rows(response()))
    assert nov.slopes.shape == (0,) and nov.rows.n_rows == 0


def test_a_key_repeated_in_a_row_counts_once_per_copy():
    nov = novelty(clean_rows(response(([7, 7, 8], [1.0, 2.0, 1.0], 4), ([7, 9], [1.0, 1.0], 4))))
    np.testing.assert_array_equal(nov.slopes, np.float32([3 / 4, 1 / 4]))
    assert nov.introduced.tolist() == [True, True, True, False, True]


@pytest.mark.parametrize("key", [1 << 22, (200 << 16) | 1])
def test_a_row_with_a_key_beyond_the_key_space_is_dropped(key):
    rows = clean_rows(response(([1], [1.0], 32), ([2, key], [1.0, 1.0], 32), ([3], [1.0], 8)))
    assert rows.source.tolist() == [0, 2] and rows.keys.tolist() == [1, 3]


def test_mismatched_rows_are_refused():
    with pytest.raises(NexError, match="a pointer per row"):
        clean_rows(ResponseRows(np.array([1]), np.array([1.0], np.float32), np.array([0, 1]), np.array([32, 32])))
    with pytest.raises(NexError, match="as many mass values as keys"):
        ResponseRows.from_rows([([1, 2], [1.0], 32)])


rows_strategy = st.lists(
    st.lists(st.tuples(st.integers(0, 40), st.floats(-1.0, 5.0)), min_size=0, max_size=12, unique_by=lambda e: e[0]),
    min_size=0, max_size=8)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, seed=st.integers(0, 2**16))
def test_permuting_keys_within_a_row_changes_nothing(rows, seed):
    rng = np.random.default_rng(seed)
    plain = [([k for k, _ in row], [m for _, m in row], 8) for row in rows]
    shuffled = []
    for keys, mass, t in plain:
        order = rng.permutation(len(keys))
        shuffled.append(([keys[i] for i in order], [mass[i] for i in order], t))
    a, b = novelty(clean_rows(response(*plain))), novelty(clean_rows(response(*shuffled)))
    np.testing.assert_array_equal(a.slopes, b.slopes)
    for j in range(a.rows.n_rows):
        assert a.introduced_set(j).tolist() == b.introduced_set(j).tolist()
    # each slope counts exactly the neurons seen for the first time
    assert np.rint(a.slopes * a.rows.tokens).sum() == len(np.unique(a.rows.keys))
