import numpy as np
import pytest

from nex_causal.errors import NexError
from nex_causal.stats import (
    bootstrap,
    kendall,
    quadratic_fit,
    rank_correlations,
    resample_counts,
    spearman,
    weighted_mean,
)


def test_resample_counts_draw_n_items_per_resample_and_repeat_with_the_seed():
    counts = resample_counts(7, n_boot=50, seed=3)
    assert counts.shape == (50, 7)
    assert (counts.sum(axis=1) == 7).all()
    assert (counts >= 0).all()
    assert np.array_equal(counts, resample_counts(7, n_boot=50, seed=3))
    assert not np.array_equal(counts, resample_counts(7, n_boot=50, seed=4))


def test_bootstrap_mean_contains_the_estimate_and_shrinks_with_more_prompts():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 800):
        correct = (rng.random(n) < 0.6).astype(float)
        ci = bootstrap(weighted_mean(correct), n, n_boot=2000, seed=1)
        assert ci.estimate == pytest.approx(correct.mean())
        assert ci.low <= ci.estimate <= ci.high
        # the normal approximation to a proportion's 95% interval: 2 * 1.96 * sd
        sd = np.sqrt(correct.mean() * (1 - correct.mean()) / n)
        assert ci.width == pytest.approx(2 * 1.96 * sd, rel=0.15)
        widths.append(float(ci.width))
    assert widths[1] < widths[0] / 3  # ~ 1/sqrt(16) = 1/4


def test_bootstrap_vector_statistic_gives_one_interval_per_component():
    values = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    ci = bootstrap(lambda c: c @ values / c.sum(axis=1, keepdims=True), 4, n_boot=500)
    assert ci.estimate.shape == (2,)
    assert ci.estimate == pytest.approx([0.5, 1.0])
    assert ci.low[1] == ci.high[1] == 1.0  # a constant column has no spread


def test_bootstrap_rejects_a_bad_level():
    with pytest.raises(NexError):
        bootstrap(weighted_mean(np.ones(3)), 3, level=1.5)


def test_spearman_and_kendall_on_hand_worked_values():
    x, y = np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4])
    assert spearman(x, y) == pytest.approx(1 - 6 * 2 / (4 * 15))  # d^2 = 0 + 1 + 1 + 0
    assert kendall(x, y) == pytest.approx((5 - 1) / 6)  # 5 concordant, 1 discordant pair


def test_spearman_of_a_score_equal_to_accuracy_is_one():
    accuracy = np.array([0.2, 0.55, 0.4, 0.9, 0.1])
    assert spearman(accuracy, accuracy) == pytest.approx(1.0)
    assert spearman(np.exp(accuracy), accuracy) == pytest.approx(1.0)  # any monotone map
    assert spearman(-accuracy, accuracy) == pytest.approx(-1.0)
    assert kendall(accuracy, accuracy) == pytest.approx(1.0)


def test_correlations_drop_non_finite_pairs_and_are_nan_when_undefined():
    x = np.array([1.0, np.nan, 3.0, 2.0])
    y = np.array([1.0, 5.0, 3.0, 2.0])
    assert spearman(x, y) == pytest.approx(1.0)
    assert np.isnan(spearman(np.ones(4), y))
    assert np.isnan(kendall([1.0], [2.0]))
    assert np.isnan(spearman([np.nan, 1.0], [1.0, np.nan]))
    with pytest.raises(NexError):
        spearman([1.0, 2.0], [1.0, 2.0, 3.0])


def test_row_wise_correlations_match_scipy_with_ties_and_missing_values():
    from scipy import stats as sps

    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, (200, 7)).astype(float)  # many ties
    y = rng.integers(0, 5, (200, 7)).astype(float)
    x[rng.random(x.shape) < 0.1] = np.nan
    rho, tau = rank_correlations(x, y)
    for b in range(len(x)):
        keep = np.isfinite(x[b]) & np.isfinite(y[b])
        xs, ys = x[b, keep], y[b, keep]
        if keep.sum() < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
            assert np.isnan(rho[b]) and np.isnan(tau[b])
        else:
            assert rho[b] == pytest.approx(sps.spearmanr(xs, ys).statistic)
            assert tau[b] == pytest.approx(sps.kendalltau(xs, ys).statistic)


def test_quadratic_fit_recovers_the_peak_of_planted_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 2, 400)
    y = 0.8 - 0.5 * (x - 1.3) ** 2 + rng.normal(0, 0.05, x.size)
    fit = quadratic_fit(x, y)
    assert fit.peak == pytest.approx(1.3, abs=0.05)
    assert fit.coef[2] == pytest.approx(-0.5, abs=0.05)
    assert fit.p_quadratic < 1e-10
    assert fit.n == 400


def test_quadratic_fit_is_exact_on_noise_free_points():
    x = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])
    fit = quadratic_fit(x, 2 + 3 * x - 0.5 * x**2)
    assert fit.coef == pytest.approx((2, 3, -0.5))
    assert fit.peak == pytest.approx(3.0)
    assert fit.r2 == pytest.approx(1.0)


def test_quadratic_fit_finds_no_bend_in_a_line():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 200)
    fit = quadratic_fit(x, 0.3 + 0.4 * x + rng.normal(0, 0.1, x.size))
    assert fit.p_quadratic > 0.05


def test_quadratic_fit_needs_enough_points():
    with pytest.raises(NexError):
        quadratic_fit([0.0, 1.0, 2.0], [0.0, 1.0, 0.0])


def test_logistic_quadratic_fit_equals_an_unpenalized_scikit_learn_fit():
    from sklearn.linear_model import LogisticRegression

    from nex_causal.stats import logistic_quadratic_fit

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 4, 3000)
    y = (rng.random(x.size) < 1 / (1 + np.exp(-(-1 + 2 * x - 0.5 * x**2)))).astype(float)
    fit = logistic_quadratic_fit(x, y)
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(np.column_stack([x, x**2]), y)
    np.testing.assert_allclose(fit.coef, [ref.intercept_[0], *ref.coef_[0]], rtol=1e-4, atol=1e-4)
    assert fit.peak == pytest.approx(-fit.coef[1] / (2 * fit.coef[2]))
    assert fit.shape == "inverted U" and fit.p_quadratic < 1e-20
    # a planted U bends the other way, and its vertex is not called a peak
    u = logistic_quadratic_fit(x, (rng.random(x.size) < 1 / (1 + np.exp(-(1 - 2 * x + 0.5 * x**2)))).astype(float))
    assert u.shape == "U" and np.isnan(u.peak)


def test_logistic_quadratic_fit_refuses_what_has_no_fit():
    from nex_causal.stats import logistic_quadratic_fit

    x = np.linspace(0, 1, 40)
    with pytest.raises(NexError, match="0/1"):
        logistic_quadratic_fit(x, np.full(40, 0.5))
    with pytest.raises(NexError, match="both outcomes"):
        logistic_quadratic_fit(x, np.ones(40))
    with pytest.raises(NexError, match="separated"):
        logistic_quadratic_fit(x, (x > 0.5).astype(float))
