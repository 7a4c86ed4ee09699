"""Differential tests: nex_causal's NEX against the authors' reference release, on adversarial caches.

The oracle is the release itself, imported from ../shared/reference/nex_reference (the tests
skip when it is absent). Caches are written raw, in the reference layout, so they can hold
what a capture never writes but a cache from elsewhere may: zero, subnormal, NaN, infinite,
negative and saturated float16 mass, repeated keys inside a row, layer-255 keys, keys beyond
the 2**22 key space, empty rows, rows of no or one token, responses of 0-3 rows, constant
slopes, very long responses and many tiny cycles. Weights must be equal bit for bit, and so
must every response's GMF.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nex_causal.cache import SparseCache
from nex_causal.nex import NexConfig, learn, score_responses
from nex_causal.nex.weights import load_weights, save_weights

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "nex_reference"
pytestmark = pytest.mark.skipif(not (REFERENCE / "nex_core").is_dir(), reason="../shared/reference absent")

SPECIAL_MASS = np.array([0.0, 6e-8, 1e-7, 65504.0, np.nan, np.inf, -np.inf, -1.0, -0.0], np.float16)


def oracle():
    if str(REFERENCE) not in sys.path:
        sys.path.insert(0, str(REFERENCE))
    import nex_core

    return nex_core


def write_raw(path: Path, responses: list[list[tuple[np.ndarray, np.ndarray, int]]],
              bases: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    """A cache in the reference layout, written array by array with no check at all."""
    (path / "rows").mkdir(parents=True)
    (path / "base").mkdir()
    rows = [row for response in responses for row in response]
    sample = np.cumsum([0] + [len(r) for r in responses])
    row_ptr = np.cumsum([0] + [len(k) for k, _, _ in rows])
    token_ptr = np.cumsum([0] + [t for _, _, t in rows])
    keys = np.concatenate([k for k, _, _ in rows] or [np.empty(0)]).astype("<u4")
    mass = np.concatenate([m for _, m, _ in rows] or [np.empty(0)]).astype("<f2")
    arrays = {"rows/sample_row_ptr.int64": sample, "rows/row_ptr.int64": row_ptr,
              "rows/token_row_ptr.int64": token_ptr, "rows/keys.uint32": keys, "rows/w_sum.float16": mass,
              "base/row_ptr.int64": np.cumsum([0] + [len(k) for k, _ in bases]),
              "base/keys.uint32": np.concatenate([k for k, _ in bases] or [np.empty(0)]).astype("<u4"),
              "base/w_sum.float16": np.concatenate([m for _, m in bases] or [np.empty(0)]).astype("<f2")}
    for name, array in arrays.items():
        dtype = {"int64": "<i8", "uint32": "<u4", "float16": "<f2"}[name.rsplit(".", 1)[1]]
        np.asarray(array).astype(dtype).tofile(path / name)
    return path


@st.composite
def adversarial_cache(draw) -> tuple[list, list]:
    """Responses built from a small neuron pool (so rows reuse neurons) plus every oddity."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pool = (rng.integers(0, 4, 60).astype(np.int64) << 16) | rng.integers(0, 40, 60)
    n_responses = draw(st.integers(1, 6))
    responses, bases = [], []
    for _ in range(n_responses):
        style = draw(st.sampled_from(["random", "bursts", "constant", "tiny-cycles", "short", "long"]))
        n_rows = {"short": int(rng.integers(0, 4)), "long": int(rng.integers(150, 420))}.get(
            style, int(rng.integers(3, 40)))
        rows, fresh = [], iter(np.concatenate([pool, ((rng.permutation(16384) >> 12) << 16) | (rng.permutation(16384) & 4095)]).tolist())
        burst = True
        for j in range(n_rows):
            if style == "constant":
                keys = pool[:12].copy()
            elif style in ("bursts", "tiny-cycles", "long"):
                period = 2 if style == "tiny-cycles" else int(rng.integers(2, 6))
                burst = (j // period) % 2 == 0
                keys = (np.array([next(fresh) for _ in range(int(rng.integers(3, 12)))]) if burst
                        else rng.choice(pool[:20], int(rng.integers(2, 10))))
            else:
                keys = rng.choice(pool, int(rng.integers(0, 15)))
            keys = np.asarray(keys, np.int64)
            if rng.random() < 0.15 and keys.size:
                keys = np.concatenate([keys, keys[:2]])  # a key repeated inside the row
            if rng.random() < 0.1:
                keys = np.concatenate([keys, [(255 << 16) | 7]])
            if rng.random() < 0.03:
                keys = np.concatenate([keys, [(int(rng.integers(64, 255)) << 16) | 3]])  # beyond 2**22
            if rng.random() < 0.05:
                keys = keys[:0]  # an empty row
            mass = rng.exponential(1.0, keys.size).astype(np.float16)
            odd = rng.random(keys.size) < 0.12
            mass[odd] = rng.choice(SPECIAL_MASS, int(odd.sum()))
            if rng.random() < 0.05:
                mass[:] = 0  # a row whose mass all cleans to 0
            tokens = int(rng.choice([0, 1, 4, 32], p=[0.05, 0.15, 0.3, 0.5]))
            rows.append((keys, mass, tokens))
        responses.append(rows)
        keys = np.concatenate([k for k, _, _ in rows] or [np.empty(0, np.int64)])
        base_keys, inverse = np.unique(keys, return_inverse=True)
        masses = np.concatenate([m for _, m, _ in rows] or [np.empty(0, np.float16)]).astype(np.float64)
        base_mass = np.bincount(inverse, weights=np.nan_to_num(masses, nan=0.0, posinf=7.0, neginf=-7.0),
                                minlength=len(base_keys))
        bases.append((base_keys, np.clip(base_mass, -65504, 65504)))
    return responses, bases


def assert_conforms(path: Path, config: NexConfig = NexConfig()) -> np.ndarray:
    ref = oracle()
    cache = SparseCache.open(path, verify="off")  # values no capture writes, read knowingly (structure still checked)
    weights = learn(cache, config, workers=1, progress=False).weights
    if (path / "rows" / "keys.uint32").stat().st_size == 0:  # the reference cannot memory-map an empty file
        assert not weights.any()
        return weights
    expected = ref.learn_nex_weights(path, rho=config.rho, min_run=config.min_run)
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights, expected)
    if (path / "base" / "keys.uint32").stat().st_size:
        np.testing.assert_array_equal(score_responses(cache, expected, progress=False),
                                      ref.score_responses(path, expected))
    return weights


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=adversarial_cache(), rho=st.sampled_from([0.95, 0.5, 0.999]), min_run=st.sampled_from([2, 1, 3]))
def test_weights_and_scores_equal_the_reference(tmp_path_factory, data, rho, min_run):
    path = write_raw(tmp_path_factory.mktemp("adversarial") / "cache", *data)
    assert_conforms(path, NexConfig(rho=rho, min_run=min_run))


@pytest.mark.slow
@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=adversarial_cache(), rho=st.sampled_from([0.95, 0.5, 0.999]), min_run=st.sampled_from([2, 1, 3]))
def test_thousands_of_caches_equal_the_reference(tmp_path_factory, data, rho, min_run):
    path = write_raw(tmp_path_factory.mktemp("adversarial") / "cache", *data)
    assert_conforms(path, NexConfig(rho=rho, min_run=min_run))


def test_each_known_divergence_is_settled_as_the_reference_does(tmp_path):
    # a zero-mass entry introduces its neuron; a repeated key counts twice in s_j and is
    # credited once; a row with a key beyond 2**22 is dropped; a MAD of exactly 0 falls back
    # to the sign of the residual
    a, b, c = (1 << 16) | 1, (1 << 16) | 2, (2 << 16) | 9
    novel = [(np.array([a, b, b, c]), np.array([1.0, 0.0, 2.0, 3.0], np.float16), 4)]
    reuse = [(np.array([a, c]), np.array([1.0, 1.0], np.float16), 4)]
    beyond = [(np.array([a, (70 << 16) | 1]), np.array([1.0, 1.0], np.float16), 4)]
    response = novel + reuse * 3 + beyond + novel[:0] + [
        (np.array([(1 << 16) | 5, (1 << 16) | 6, (1 << 16) | 7]), np.array([2, 2, 2], np.float16), 4)] + reuse * 3
    path = write_raw(tmp_path / "cache", [response, response[:2], response * 3],
                     [(np.array([a, b, c]), np.array([1.0, 2.0, 3.0])) for _ in range(3)])
    assert_conforms(path)


def test_workers_do_not_change_the_weights(nex_planted):
    cache = nex_planted.cache(kinds=("ABAB", "BABA", "AABB", "ABBA") * 40, seed=4, name="workers")
    one = learn(cache, workers=1, progress=False).weights
    two = learn(cache, workers=2, progress=False).weights
    np.testing.assert_array_equal(one, two)
    assert (one > 0).sum() and (one < 0).sum()


def test_the_reference_example_scores_as_the_release_says(tmp_path):
    shared = REFERENCE.parent
    cache = SparseCache.open(shared / "nex_example_cache")
    weights = load_weights(shared / "nex_example_weights.npz")
    gmf = score_responses(cache, weights, progress=False)
    assert gmf.dtype == np.float32 and round(float(gmf[0]), 6) == 0.998311
    save_weights(tmp_path / "w.npz", weights)
    np.testing.assert_array_equal(np.load(tmp_path / "w.npz")["weights"], weights)  # the reference reads it
    assert_conforms(shared / "nex_example_cache")
