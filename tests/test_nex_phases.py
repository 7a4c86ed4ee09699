"""Sticky-HMM segmentation (NEX_METHOD section 3): each step by hand, each branch, and a
planted run structure that must be recovered."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nex_causal.cache import ResponseRows
from nex_causal.errors import NexError
from nex_causal.nex import clean_rows, novelty, phases, segment
from nex_causal.nex.phases import detrend, enforce_min_run, hmm_explore, log_slope, robust_z

T, F = True, False


def test_log_slope_clips_negative_slopes():
    np.testing.assert_allclose(log_slope([-1.0, 0.0, np.e - 1]), [0.0, 0.0, 1.0])


def test_detrend_removes_an_exact_log_time_trend():
    j = np.arange(12)
    y = 2.0 + 3.0 * np.log1p(j)
    np.testing.assert_allclose(detrend(y), 0.0, atol=1e-12)
    bump = y.copy()
    bump[5] += 1.0  # least squares by hand: design [1, log(1+j)], residual = bump - projection
    design = np.column_stack([np.ones(12), np.log1p(j)])
    hat = design @ np.linalg.inv(design.T @ design) @ design.T
    np.testing.assert_allclose(detrend(bump), (np.eye(12) - hat)[:, 5], atol=1e-12)


def test_detrend_falls_back_to_the_median_when_the_fit_fails():
    y = np.array([1.0, np.nan, 2.0, 4.0])
    with np.errstate(invalid="ignore"):
        expected = y - np.median(y)
    np.testing.assert_array_equal(np.isnan(detrend(y)), np.isnan(expected))


def test_robust_z_by_hand():
    z, mad = robust_z(np.array([0.0, 1.0, 2.0, 3.0, 10.0]))  # median 2, |e - 2| = 2 1 0 1 8: MAD 1
    assert mad == 1.0
    np.testing.assert_allclose(z, np.array([-2.0, -1.0, 0.0, 1.0, 8.0]) / (1.0 + 1e-6))


@pytest.mark.parametrize("labels, min_run, expected", [
    ([T, F, F, T, F, F], 2, [F, F, F, F, F, F]),      # first run takes the run after it, then the lone T
    ([F, F, T, F, F, T, T], 2, [F, F, F, F, F, T, T]),
    ([F, F, F, T], 2, [F, F, F, F]),                  # a trailing short E run joins the run before it
    ([T, T, F, T, T, F, F], 2, [T, T, T, T, T, F, F]),
    ([T, T, F, F, T, T, T], 3, [F, F, F, F, T, T, T]),  # TT joins FF; FFFF is then long enough
    ([T, F, T, F], 1, [T, F, T, F]),                  # min_run 1 keeps everything
    ([T], 2, [T]),                                    # a lone run has no neighbour to join
])
def test_min_run_by_hand(labels, min_run, expected):
    assert enforce_min_run(np.array(labels), min_run).tolist() == expected


@pytest.mark.parametrize("n", [0, 1, 2])
def test_fewer_than_three_rows_are_all_exploit(n):
    out = phases(np.full(n, 5.0))
    assert out.method == "short" and out.explore.tolist() == [False] * n
    assert np.isnan(out.z).all() and out.y.shape == (n,)


@pytest.mark.parametrize("y", [np.full(10, 0.4), 0.3 + 0.2 * np.log1p(np.arange(40))])
def test_zero_mad_uses_the_sign_of_the_residual(y):
    # the trend fits exactly: residuals are 0 up to rounding, so the sign rule labels no row E
    # (rounding noise would otherwise reach the HMM as z-scores of +-1e-10)
    out = phases(np.expm1(y), min_run=1)
    assert out.method == "sign" and not out.explore.any()
    assert np.abs(out.residual).max() < 1e-12


def test_non_finite_mad_uses_the_sign_rule_and_labels_nothing():
    out = phases(np.array([np.nan, 1.0, 2.0, 0.5]))
    assert out.method == "sign" and not out.explore.any()


def test_mixture_failure_falls_back_to_positive_z():
    slopes = np.array([0.1, 0.3, 0.2, np.inf, 0.25, 0.15, 0.2])  # inf z: the mixture refuses it
    out = phases(slopes, min_run=1)
    assert out.method == "fallback"
    assert out.explore.tolist() == (out.z > 0).tolist()


def planted_slopes():
    """Two clear explore bursts on a flat exploit background."""
    s = np.full(30, 0.05)
    s[[0, 1, 2, 3, 14, 15, 16, 17]] = 0.9
    s += 0.01 * np.sin(np.arange(30))  # a little noise so MAD > 0
    return s


def test_known_run_structure_is_recovered():
    out = phases(planted_slopes())
    assert out.method == "hmm"
    expected = np.zeros(30, bool)
    expected[[0, 1, 2, 3, 14, 15, 16, 17]] = True
    assert out.explore.tolist() == expected.tolist()
    assert out.explore.tolist() == segment(planted_slopes()).tolist()


def test_planted_response_segments_into_its_bursts(nex_planted):
    rows, labels = nex_planted.response(np.random.default_rng(3), "ABBA")
    rr = ResponseRows([k for k, _, _ in rows], [m for _, m, _ in rows], np.array([t for _, _, t in rows]))
    assert segment(novelty(clean_rows(rr)).slopes).tolist() == labels.tolist()


def test_state_with_the_larger_mean_is_explore():
    z = np.r_[np.full(5, -1.0), np.full(5, 3.0), np.full(5, -1.0)] + 0.01 * np.arange(15)
    assert hmm_explore(z, 0.95).tolist() == [F] * 5 + [T] * 5 + [F] * 5
    assert hmm_explore(-z, 0.95).tolist() == [T] * 5 + [F] * 5 + [T] * 5


def test_sticky_transitions_absorb_a_lone_outlier():
    noise = np.random.default_rng(0).normal(0.0, 0.5, 31)
    z = np.r_[noise[:10], 1.5, noise[10:20], 3.0 + noise[20:]]
    sticky, free = hmm_explore(z, 0.95), hmm_explore(z, 0.5)
    # the outlier is likelier under E, but less so than two switches cost at rho 0.95 (2 log 20)
    assert free.tolist() == [F] * 10 + [T] + [F] * 10 + [T] * 11
    assert sticky.tolist() == [F] * 21 + [T] * 11


def test_same_input_same_labels_and_no_library_warnings():
    s = planted_slopes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = phases(s)
        phases(np.r_[np.zeros(6), 1.0, np.zeros(6)])  # degenerate mixture: one distinct outlier
        phases(s, rho=1.0)
    assert first.explore.tolist() == phases(s).explore.tolist()
    np.testing.assert_array_equal(first.z, phases(s).z)


@pytest.mark.parametrize("rho, min_run, message", [
    (1.5, 2, "rho must be a probability"), (-0.1, 2, "rho must be a probability"),
    (0.95, 0, "min_run must be a positive integer"), (0.95, 1.5, "min_run must be a positive integer"),
])
def test_bad_parameters(rho, min_run, message):
    with pytest.raises(NexError, match=message):
        phases(planted_slopes(), rho, min_run)
