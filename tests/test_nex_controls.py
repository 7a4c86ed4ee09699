"""The label-free unit stories (nex.units) and the negative controls of NEX's credit (nex.controls)."""

from __future__ import annotations

import numpy as np
import pytest

from nex_causal.cache import SparseCache, SparseCacheWriter, pack_keys, unpack_keys
from nex_causal.nex import NexConfig, learn
from nex_causal.nex.controls import CONTROLS, Prepared, draws, permute_rows, permuted_runs, rank_against
from nex_causal.nex.credit import neuron_weights
from nex_causal.nex.novelty import clean_rows
from nex_causal.nex.units import unit_counts
from nex_causal.zoo.groundtruth import auroc, present_keys

A, B, C = (int(k) for k in pack_keys(0, [1, 2, 3]))


def test_unit_statistics_by_hand(tmp_path):
    """Two responses: rows (A), (A, B), (B) and (C), (C, A). A is in 3 of 5 rows and both responses, first at the
    start of the first and at the end of the second (places 0 and 1: first_seen 0.5); B in 2 rows and one
    response, first at place 1/2; C in 2 rows, first at place 0."""
    with SparseCacheWriter(tmp_path / "c") as writer:
        writer.append([(np.array([A]), np.array([1.0]), 4), (np.array([A, B]), np.array([1.0, 2.0]), 4),
                       (np.array([B]), np.array([3.0]), 4)])
        writer.append([(np.array([C]), np.array([1.0]), 4), (np.array([C, A]), np.array([1.0, 2.0]), 4)])
    counts = unit_counts([SparseCache.open(tmp_path / "c")])
    rows, responses = counts.statistic("rows"), counts.statistic("responses")
    mass, first = counts.statistic("mass"), counts.statistic("first_seen")
    assert (rows[A], rows[B], rows[C]) == (3 / 5, 2 / 5, 2 / 5)
    assert (responses[A], responses[B], responses[C]) == (1.0, 0.5, 0.5)
    assert (mass[A], mass[B], mass[C]) == pytest.approx((4 / 11, 5 / 11, 2 / 11))
    assert (first[A], first[B], first[C]) == pytest.approx((0.5, 0.5, 1.0))
    assert rows[pack_keys(0, 9)] == 0 and first[pack_keys(0, 9)] == 0
    pooled = unit_counts([SparseCache.open(tmp_path / "c")] * 2)  # two copies: the same shares
    assert pooled.statistic("rows")[A] == rows[A] and pooled.n_responses == 4


def _planted_auroc(cache, eff, red):
    keys = present_keys(cache)
    layers, _ = unpack_keys(keys)
    keep = np.isin(layers, [3, 5])  # the planted good (3) and bad (5) pools
    return auroc(np.asarray(neuron_weights(eff, red))[keys[keep].astype(np.int64)], layers[keep] == 3)


def test_permuting_rows_keeps_every_row_whole(nex_planted):
    rows = clean_rows(nex_planted.cache(seed=2).response_rows(0))
    order = np.random.default_rng(0).permutation(rows.n_rows)
    moved = permute_rows(rows, order)
    for new, old in enumerate(order):
        assert moved.keys[moved.row_ptr[new]:moved.row_ptr[new + 1]].tolist() == \
            rows.keys[rows.row_ptr[old]:rows.row_ptr[old + 1]].tolist()
    assert moved.tokens.tolist() == rows.tokens[order].tolist()
    same = permute_rows(rows, np.arange(rows.n_rows))
    assert np.array_equal(same.keys, rows.keys) and np.array_equal(same.row_ptr, rows.row_ptr)


def test_permuted_runs_keep_every_run():
    labels = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1], bool)
    got_all = [permuted_runs(labels, np.random.default_rng(seed)) for seed in range(20)]
    for got in got_all:  # a concatenation of the same runs: three E runs of 3, 1 and 2 rows, X runs of 2 and 4
        assert got.sum() == labels.sum() and len(got) == len(labels)
        text = "".join("E" if x else "X" for x in got)
        for run in ("EEE", "XXXX"):
            assert run in text
    assert sum(not np.array_equal(got, labels) for got in got_all) >= 15


def test_controls_as_distributions_on_a_planted_cache(nex_planted):
    """Good neurons are reused in every later row, bad ones never. NEX itself separates them perfectly, and so
    does its credit with no control. Each control, drawn 12 times, lowers the AUROC below 1 on most draws; draws
    are reproducible by seed and independent of how many are drawn."""
    cache = nex_planted.cache(seed=4)
    config = NexConfig(rho=0.95, min_run=2)
    prepared = Prepared.of([cache], config)
    eff, red = prepared.credit(None, np.random.default_rng(0))
    cal = learn(cache, config, progress=False)
    assert np.array_equal(eff, cal.eff) and np.array_equal(red, cal.red)  # no control: NEX's own credit
    assert _planted_auroc(cache, eff, red) == 1.0
    for control in CONTROLS:
        values = np.array([_planted_auroc(cache, *d) for d in draws(prepared, control, 12, seed=1)])
        assert np.median(values) < 1.0, control
        again = draws(prepared, control, 3, seed=1)
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(again, draws(prepared, control, 12, seed=1)[:3]))
    with pytest.raises(ValueError, match="unknown control"):
        draws(prepared, "mirrored", 1, seed=0)


def test_rank_against_a_control_counts_draws_at_or_above():
    assert rank_against(0.9, [0.5, 0.9, 0.95, 0.2]) == (3 / 5, 2)
    assert rank_against(1.0, [0.5] * 49) == (1 / 50, 0)
