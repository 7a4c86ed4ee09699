import itertools
import time

import numpy as np
import pytest
from scipy import stats as sps

from nex_causal.errors import NexError
from nex_causal.stats import (
    bca,
    bootstrap,
    jackknife,
    kendall,
    permutation_p,
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


def test_bca_equals_scipys_on_the_same_resamples():
    x = np.random.default_rng(0).exponential(1.0, 20) ** 2  # skewed: BCa and percentile differ
    for fn in (np.mean, np.std):
        ref = sps.bootstrap((x,), fn, method="BCa", n_resamples=3000, random_state=1)
        jack = np.array([fn(np.delete(x, i)) for i in range(len(x))])
        ci = bca(fn(x), ref.bootstrap_distribution, jack)
        assert (ci.low, ci.high) == pytest.approx(tuple(ref.confidence_interval), rel=1e-9)
    pct = np.percentile(ref.bootstrap_distribution, [2.5, 97.5])
    assert abs(ci.low - pct[0]) > 0.05 * ci.width  # the correction moved the interval


def test_jackknife_leaves_out_each_item_or_each_group_of_many():
    x = np.arange(6.0) ** 2
    assert jackknife(weighted_mean(x), 6) == pytest.approx([(x.sum() - v) / 5 for v in x])
    many = np.random.default_rng(0).exponential(1.0, 3000)
    groups = jackknife(weighted_mean(many), 3000)
    assert groups.shape == (1000,)  # 1000 groups of 3 left out
    assert groups.mean() == pytest.approx(many.mean(), rel=1e-6)
    assert ((many.sum() - 3 * groups) / 2997).min() >= 0  # each left-out group sums to a positive mass


def test_bca_takes_the_mid_rank_of_an_estimate_tied_in_its_bootstrap_distribution():
    tied = np.r_[np.zeros(20), np.ones(960), np.full(20, 2.0)]
    # mid-rank (20 + 960 / 2) / 1000 = 0.5: z0 = 0, no correction, the tie block on both sides
    assert (bca(1.0, tied, np.zeros(4)).low, bca(1.0, tied, np.zeros(4)).high) == (1.0, 1.0)
    # counting only values below (0.02) would read a large bias and return [0, 0]


def test_bca_contains_its_estimate_where_the_percentile_interval_does_not():
    """A coverage score over few prompts (as MUI is): distinct neurons drawn shrink in every resample,
    so the rank correlation of 8 variants' coverage with their order is biased in the bootstrap."""
    excluded = 0
    for seed in (28, 46, 0, 1):
        rng = np.random.default_rng(seed)
        act = rng.random((10, 8, 60)) < np.linspace(0.05, 0.02, 8)[None, :, None]  # prompts x variants x units

        def statistic(counts):
            cover = (np.einsum("bn,nvk->bvk", (counts > 0).astype(float), act) > 0).mean(axis=-1)
            return rank_correlations(-cover, np.broadcast_to(np.arange(8.0), cover.shape))[0]

        pct = bootstrap(statistic, 10, n_boot=1000, seed=1, method="percentile")
        ci = bootstrap(statistic, 10, n_boot=1000, seed=1)
        assert ci.estimate == pct.estimate and ci.low <= ci.estimate <= ci.high
        if not pct.low <= pct.estimate <= pct.high:
            excluded += 1
            assert ci.width >= pct.width  # the percentile interval widened to it, never collapsed onto it
    assert excluded == 2  # seeds 28 and 46: 0.976 [0.518, 0.940] and 1.000 [0.647, 0.994]


def test_bca_holds_the_estimate_when_every_resample_lies_on_one_side():
    x = np.random.default_rng(0).normal(size=6)
    x -= x.mean()

    def squared_mean(counts):  # ~0 on the sample, above it in every resample
        return (counts @ x / counts.sum(axis=1)) ** 2

    pct = bootstrap(squared_mean, 6, n_boot=500, method="percentile")
    ci = bootstrap(squared_mean, 6, n_boot=500)
    assert ci.estimate < 1e-30 < pct.low  # the percentile interval leaves its estimate out
    assert ci.low == ci.estimate and ci.high == pct.high  # BCa cannot correct this: widened to it
    nan = bca(np.nan, np.ones(10), np.ones(3))
    assert np.isnan(nan.low) and np.isnan(nan.high)


def test_permutation_p_on_hand_counted_orders():
    four = np.array([1.0, 2.0, 3.0, 4.0])
    for statistic in ("spearman", "kendall"):
        assert permutation_p(four, four, statistic=statistic) == (1 / 24, "exact over 24 orders")
        assert permutation_p(four, -four, statistic=statistic, alternative="less")[0] == pytest.approx(1 / 24)
        assert permutation_p(four, four, statistic=statistic, alternative="two-sided")[0] == pytest.approx(2 / 24)
    three = np.array([1.0, 2.0, 3.0])  # over the 6 orders rho is 1, 0.5, 0.5, -0.5, -0.5, -1
    assert permutation_p(three, three, alternative="two-sided")[0] == pytest.approx(2 / 6)
    assert permutation_p(three, [1.0, 3.0, 2.0])[0] == pytest.approx(3 / 6)  # rho = 0.5: 1, 0.5, 0.5
    assert permutation_p(three, [1.0, 3.0, 2.0], alternative="two-sided")[0] == pytest.approx(1.0)
    # ties take average ranks: y = (1, 1, 2, 3) is matched as well by 2 of the 24 orders
    assert permutation_p(four, [1.0, 1.0, 2.0, 3.0])[0] == pytest.approx(2 / 24)
    assert permutation_p(four, [1.0, np.nan, 2.0, 3.0])[0] == pytest.approx(1 / 6)  # the finite pairs
    assert np.isnan(permutation_p(four, np.ones(4))[0])


def test_permutation_p_exact_over_9_orders_is_fast_and_monte_carlo_agrees_beyond():
    rng = np.random.default_rng(0)
    x, y = rng.random(7), rng.random(7) + np.linspace(0, 0.5, 7)
    for statistic, ref in (("spearman", sps.spearmanr), ("kendall", sps.kendalltau)):
        exact, how = permutation_p(x, y, statistic=statistic)
        assert how == "exact over 5040 orders"
        null = np.array([ref(x, order).statistic for order in itertools.permutations(y)])
        assert exact == pytest.approx(np.mean(null >= ref(x, y).statistic - 1e-12))
        sampled, how = permutation_p(x, y, statistic=statistic, max_exact=6, n_perm=100_000)
        assert how == "Monte Carlo, 100000 random orders"
        assert sampled == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 100_000))
    start = time.perf_counter()
    assert permutation_p(rng.random(9), rng.random(9), statistic="kendall")[1] == "exact over 362880 orders"
    assert time.perf_counter() - start < 3


def test_permutation_p_is_uniform_under_the_null():
    # exact: over all 120 equally likely orders of y, P(p <= a) = a at every attainable p
    x, y = np.arange(5.0), np.random.default_rng(0).random(5)
    ps = np.array([permutation_p(x, np.array(order))[0] for order in itertools.permutations(y)])
    for a in np.unique(ps):
        assert np.mean(ps <= a + 1e-12) == pytest.approx(a)
    # Monte Carlo, 12 items: p-values of independent draws pass a uniformity test
    rng = np.random.default_rng(1)
    sampled = [permutation_p(rng.random(12), rng.random(12), n_perm=2000, seed=k)[0] for k in range(300)]
    assert sps.kstest(sampled, "uniform").pvalue > 0.01


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
