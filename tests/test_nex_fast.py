"""The vectorised pieces of NEX against the plain computations they replace, bit for bit: segment
sums against ``np.sum``, run medians against ``np.median``, the 1-D two-cluster k-means and
mixture against scikit-learn's estimators on awkward inputs (ties, near-duplicates that empty a
cluster, more rows than one Lloyd chunk, outliers), chunked scoring against one chunk, and
learning with or without traces and workers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nex_causal.nex import learn, score_responses
from nex_causal.nex import score as score_module
from nex_causal.nex.credit import run_medians
from nex_causal.nex.novelty import per_row, segment_sums
from nex_causal.nex.phases import fit_mixture, kmeans_labels, median


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 600), min_size=1, max_size=12), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_segment_sums_equal_np_sum_of_each_segment(lengths, seed, dtype):
    rng = np.random.default_rng(seed)
    values = (rng.exponential(1.0, sum(lengths)) * 10.0 ** rng.integers(-6, 6, sum(lengths))).astype(dtype)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    got = segment_sums(values, np.array(lengths))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, [np.sum(values[a:a + n]) for a, n in zip(starts, lengths)])


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 5), max_size=12), seed=st.integers(0, 2**16))
def test_per_row_counts_each_rows_selected_entries(sizes, seed):
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # empty rows anywhere, at the end too
    mask = np.random.default_rng(seed).random(int(ptr[-1])) < 0.5
    np.testing.assert_array_equal(per_row(mask, ptr), [mask[a:b].sum() for a, b in zip(ptr[:-1], ptr[1:])])


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_run_medians_equal_np_median_of_each_run(lengths, seed):
    rng = np.random.default_rng(seed)
    values = (rng.integers(0, 6, sum(lengths)) / rng.choice([1, 3, 7, 32], sum(lengths))).astype(np.float32)
    stops = np.cumsum(lengths)
    got = run_medians(values, stops - np.array(lengths), stops)
    np.testing.assert_array_equal(got, [np.median(values[b - n:b]) for b, n in zip(stops, lengths)])


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float32, np.float64]),
       odd=st.sampled_from(["none", "nan", "inf", "-inf", "ties", "huge"]))
def test_median_equals_np_median(n, seed, dtype, odd):
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=n) * 10.0 ** rng.integers(-8, 8)).astype(dtype)
    if odd == "ties":
        values = np.round(values[: max(1, n // 3)].repeat(3)[:n], 1)
    elif odd == "huge":
        values[rng.random(n) < 0.3] = np.finfo(dtype).max
    elif odd != "none":
        values[rng.integers(0, n)] = float(odd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.median(values)
    got = median(values)
    assert got.dtype == expected.dtype and np.array_equal(np.array(got), np.array(expected), equal_nan=True)


def awkward(seed: int) -> np.ndarray:
    """A column of z-like values of one of seven awkward kinds."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([3, 4, 8, 60, 255, 256, 257, 513]))
    z = [rng.normal(size=n), rng.exponential(size=n), np.round(rng.normal(size=n), 1),
         np.r_[np.zeros(n - 2), 5.0, -5.0], rng.choice([0.0, 1.0, 1.0 + 1e-15, -2.0], n),
         rng.integers(-3, 4, n) * float(rng.choice([1e-8, 1.0, 1e8])), np.r_[rng.normal(size=n - 1), 1e6]][seed % 7]
    return np.asarray(z, np.float64).reshape(-1, 1)


@pytest.mark.parametrize("seed", range(70))
def test_kmeans_and_mixture_equal_scikit_learn(seed):
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    values = awkward(seed)
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")
        labels = KMeans(n_clusters=2, n_init=1, random_state=0).fit(values).labels_
        mixture = GaussianMixture(n_components=2, covariance_type="diag", random_state=0, max_iter=50,
                                  reg_covar=1e-6).fit(values)
    np.testing.assert_array_equal(kmeans_labels(values), labels)
    means, variances = fit_mixture(values)
    np.testing.assert_array_equal(means, mixture.means_)
    np.testing.assert_array_equal(variances, mixture.covariances_)


def test_a_cluster_emptied_by_rounding_is_relocated_as_scikit_learn_does():
    from sklearn.cluster import KMeans

    # squared distances underflow to 0: every value ties to the first centre and the second empties
    values = np.array([1e-300, 1e-300, 1e-300, 1e-300, 0.0]).reshape(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = KMeans(n_clusters=2, n_init=1, random_state=0).fit(values).labels_
    np.testing.assert_array_equal(kmeans_labels(values), expected)


def test_scores_do_not_depend_on_the_chunk_size(nex_planted, monkeypatch):
    cache = nex_planted.cache(kinds=("ABAB", "BABA", "AABB") * 6, seed=7, name="chunks")
    weights = learn(cache, workers=1, progress=False).weights
    whole = score_responses(cache, weights, progress=False)
    monkeypatch.setattr(score_module, "CHUNK_ENTRIES", 50)
    np.testing.assert_array_equal(score_responses(cache, weights, progress=False), whole)


def test_traces_and_workers_leave_the_weights_unchanged(nex_planted):
    cache = nex_planted.cache(kinds=("ABAB", "BABA", "AABB", "ABBA") * 20, seed=5, name="traces")
    plain = learn(cache, workers=1, progress=False)
    traced = learn(cache, workers=2, progress=False, keep_traces=True)
    np.testing.assert_array_equal(plain.eff, traced.eff)
    np.testing.assert_array_equal(plain.red, traced.red)
    np.testing.assert_array_equal(plain.summaries, traced.summaries)
    assert len(traced.traces) == cache.n_responses
