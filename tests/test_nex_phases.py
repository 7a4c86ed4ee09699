"""Sticky-HMM segmentation (NEX_METHOD section 3): each step by hand, each branch, and a
planted run structure that must be recovered."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nex_causal.cache import ResponseRows
from nex_causal.errors import NexError
from nex_causal.nex.novelty import clean_rows, novelty
from nex_causal.nex.phases import (
    detrend,
    enforce_min_run,
    fit_mixture,
    hmm_explore,
    log_slope,
    segment,
    viterbi,
)

phases = segment

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
    out = phases(np.float32([0.5, 0.1, 2.0, 0.05, 0.9, 0.3, 0.2]))
    e = out.residual - np.median(out.residual)
    mad = np.median(np.abs(e))
    np.testing.assert_array_equal(out.z, e / (mad + 1e-6))


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


@pytest.mark.parametrize("n, value", [(4, 0.0), (5, 0.25), (5, 1.0)])
def test_a_mad_of_exactly_zero_uses_the_sign_of_the_residual(n, value):
    out = phases(np.full(n, value, np.float32), min_run=1)  # constant slopes: MAD exactly 0 here
    assert out.method == "sign"
    assert out.explore.tolist() == (out.residual - np.median(out.residual) > 0).tolist()


@pytest.mark.parametrize("y", [np.full(10, 0.4), 0.3 + 0.2 * np.log1p(np.arange(40))])
def test_mad_rounding_treats_an_exact_trend_as_constant(y):
    # the trend fits exactly: residuals are 0 up to rounding; the reference (mad <= 0) may hand
    # that noise to the HMM, the named alternative labels no row E
    out = phases(np.expm1(y), min_run=1, mad_rounding=True)
    assert out.method == "sign" and not out.explore.any()
    assert np.abs(out.residual).max() < 1e-12


def test_non_finite_mad_uses_the_sign_rule_and_labels_nothing():
    out = phases(np.array([np.nan, 1.0, 2.0, 0.5]))
    assert out.method == "sign" and not out.explore.any()


def test_the_mixture_refuses_non_finite_z_as_scikit_learn_does():
    # segment() catches this and labels E = z > 0 (its "fallback"), as the reference does
    from sklearn.mixture import GaussianMixture

    z = np.array([0.1, -0.3, 0.2, np.inf, 0.25, -0.15]).reshape(-1, 1)
    with pytest.raises(ValueError):
        GaussianMixture(n_components=2, covariance_type="diag", random_state=0).fit(z)
    with pytest.raises(ValueError):
        fit_mixture(z)


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


def test_planted_response_segments_into_its_bursts(nex_planted):
    rows, labels = nex_planted.response(np.random.default_rng(3), "ABBA")
    assert segment(novelty(clean_rows(ResponseRows.from_rows(rows))).slopes).explore.tolist() == labels.tolist()


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
        phases(s, rho=0.999)
    assert first.explore.tolist() == phases(s).explore.tolist()
    np.testing.assert_array_equal(first.z, phases(s).z)


@pytest.mark.parametrize("rho, min_run, message", [
    (1.5, 2, "rho must lie strictly between 0 and 1"), (-0.1, 2, "rho must lie strictly between 0 and 1"),
    (1.0, 2, "rho must lie strictly between 0 and 1"), (0.0, 2, "rho must lie strictly between 0 and 1"),
    (0.95, 0, "min_run must be a positive integer"), (0.95, 1.5, "min_run must be a positive integer"),
])
def test_bad_parameters(rho, min_run, message):
    with pytest.raises(NexError, match=message):
        phases(planted_slopes(), rho, min_run)


def _library_fit(values: np.ndarray, rho: float) -> np.ndarray:
    """The segmentation's step 6 through the libraries' public API, as the reference writes it."""
    from hmmlearn.hmm import GaussianHMM
    from sklearn.mixture import GaussianMixture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mixture = GaussianMixture(n_components=2, covariance_type="diag", random_state=0, max_iter=50,
                                  reg_covar=1e-6).fit(values)
    hmm = GaussianHMM(n_components=2, covariance_type="diag", init_params="", params="")
    hmm.startprob_, hmm.transmat_ = np.array([0.5, 0.5]), np.array([[rho, 1 - rho], [1 - rho, rho]])
    hmm.means_ = mixture.means_
    hmm.covars_ = np.clip(mixture.covariances_.reshape(-1), 1e-6, None).reshape(-1, 1)
    return mixture.means_, mixture.covariances_, hmm.decode(values, algorithm="viterbi")[1]


@pytest.mark.parametrize("seed", range(40))
def test_the_fast_mixture_and_viterbi_equal_the_libraries_public_api(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([3, 4, 7, 30, 120, 300, 700]))
    kind = seed % 4
    z = (rng.normal(size=n) if kind == 0 else rng.exponential(size=n) if kind == 1
         else np.round(rng.normal(size=n), 1) if kind == 2 else np.r_[np.zeros(n - 2), 5.0, -5.0])
    values = z.reshape(-1, 1)
    means, variances, states = _library_fit(values, 0.95)
    fast_means, fast_variances = fit_mixture(values)
    np.testing.assert_array_equal(fast_means, means)
    np.testing.assert_array_equal(fast_variances, variances)
    clipped = np.clip(fast_variances.reshape(-1), 1e-6, None).reshape(-1, 1)
    np.testing.assert_array_equal(viterbi(values, fast_means, clipped, 0.95), states)
