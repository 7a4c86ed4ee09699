"""Streaming NEX against the batch: equal wherever the two are defined alike, and the online phases measured."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_nex_conformance import adversarial_cache, write_raw

from nex_causal.cache import ResponseRows, SparseCache
from nex_causal.errors import NexError
from nex_causal.nex import NexConfig, analyze_response, learn
from nex_causal.nex.online import MinRun, PhaseFilter, PhaseModel, fit_phase_model
from nex_causal.nex.phases import enforce_min_run, segment
from nex_causal.nex.score import good_mass_fraction, score_responses
from nex_causal.nex.stream import StreamingNex, label_agreement


def streamed(rows: ResponseRows, config: NexConfig = NexConfig(), weights=None, labels=None) -> StreamingNex:
    """``rows`` pushed one at a time, each usable row with its batch label (``labels``, by raw row index)."""
    stream = StreamingNex(config, weights=weights)
    for i, (keys, mass, tokens) in enumerate(rows):
        stream.push(keys, mass, tokens, explore=bool(labels.get(i, False)))
    return stream.finish()


def sorted_credit(credit):
    order = np.argsort(credit.keys, kind="stable")
    return credit.keys[order], credit.amount[order], credit.effective[order]


def assert_same_as_batch(rows: ResponseRows, config: NexConfig) -> None:
    """Given the batch's raw Viterbi labels (before the minimum run), the stream's rows, slopes, labels, cycles and
    credit are the batch's, bit for bit."""
    trace = analyze_response(rows, config)
    raw = segment(trace.slopes, config.rho, 1, mad_rounding=config.mad_rounding).explore  # min_run 1: none applied
    stream = streamed(rows, config, labels=dict(zip(trace.source.tolist(), raw.tolist())))
    np.testing.assert_array_equal(stream.source, trace.source)
    np.testing.assert_array_equal(np.array(stream.slopes, np.float32), trace.slopes)
    assert stream.n_neurons == trace.neurons
    np.testing.assert_array_equal(stream.labels, trace.explore)
    assert len(stream.cycles()) == len(trace.cycles)
    for got, want in zip(stream.cycles(), trace.cycles):
        np.testing.assert_equal(vars(got), vars(want))  # NaN equal to NaN, every float to the bit
    for got, want in zip(sorted_credit(stream.credit()), sorted_credit(trace.credit)):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype


@pytest.mark.parametrize("config", [NexConfig(), NexConfig(min_run=1), NexConfig(min_run=3, skip_opening=True),
                                    NexConfig(positive_only=True)])
def test_streaming_equals_batch_on_planted_responses(nex_planted, config):
    cache = nex_planted.cache(("ABAB", "AAB", "BBA", "A"), seed=3)
    for r in range(cache.n_responses):
        assert_same_as_batch(cache.response_rows(r), config)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(adversarial_cache(), st.sampled_from([NexConfig(), NexConfig(min_run=3), NexConfig(positive_only=True)]))
def test_streaming_equals_batch_on_adversarial_caches(tmp_path_factory, made, config):
    """Zero, NaN, negative and saturated mass, repeated and layer-255 keys, keys beyond 2**22, empty rows, rows of
    no token, responses of 0-3 rows, very long ones and many tiny cycles (the conformance generator)."""
    cache = SparseCache.open(write_raw(tmp_path_factory.mktemp("adv"), *made), verify="off")
    for r in range(cache.n_responses):
        assert_same_as_batch(cache.response_rows(r), config)


def test_running_gmf_equals_batch_gmf_with_fixed_weights(nex_planted):
    cache = nex_planted.cache(("ABAB", "AABB", "BBAA", "BA"), seed=5)
    weights = learn(cache, NexConfig(), workers=1, progress=False).weights
    batch = score_responses(cache, weights, progress=False)
    for r in range(cache.n_responses):
        rows = cache.response_rows(r)
        stream = StreamingNex(weights=weights, phases=None)
        prefix = []
        for i, (keys, mass, tokens) in enumerate(rows):
            stream.push(keys, mass, tokens, explore=False)
            prefix.append((keys, mass))
            keys_so_far = np.concatenate([k for k, _ in prefix])
            sums = np.bincount(np.unique(keys_so_far, return_inverse=True)[1],
                               weights=np.concatenate([m for _, m in prefix]).astype(np.float64))
            # after every row: the GMF of the prefix's per-key sums
            assert stream.gmf == pytest.approx(good_mass_fraction(np.unique(keys_so_far), sums, weights), rel=1e-6)
        # the cache's base view holds the same sums rounded to float16
        assert stream.gmf == pytest.approx(float(batch[r]), abs=2e-3)
    assert np.isnan(StreamingNex(weights=weights).gmf) and np.isnan(StreamingNex().gmf)


@pytest.mark.parametrize("min_run", [1, 2, 3, 4])
def test_online_min_run_equals_the_batch_rule_on_every_prefix(min_run):
    rng = np.random.default_rng(min_run)
    for _ in range(200):
        raw = rng.random(int(rng.integers(1, 25))) < rng.uniform(0.2, 0.8)
        online = MinRun(min_run)
        for j, label in enumerate(raw):
            online.push(label)
            assert online.labels == enforce_min_run(raw[:j + 1], min_run).tolist()
            # every label counted final is the one the whole sequence ends with
            assert online.labels[:online.final] == enforce_min_run(raw, min_run)[:online.final].tolist()


def test_min_run_by_hand():
    online = MinRun(2)
    for label in (False, True, False, False, True, True, True, False):
        online.push(label)
    # X E X X E E E X: the short first run takes the label of the run after it (E), the lone E then keeps
    # it, and the trailing lone X takes the label of the run before it
    assert online.labels == [True, True, False, False, True, True, True, True]
    assert online.final == 7


def test_forward_filter_by_hand():
    model = PhaseModel(intercept=0.0, slope=0.0, centre=0.0, scale=1.0, means=(0.0, 2.0), variances=(1.0, 1.0),
                       rho=0.9)
    filt = PhaseFilter(model)
    # row 0: prior (0.5, 0.5); likelihood ratio E : X at z = 2 is exp(-0) / exp(-2) = e^2
    assert filt.update(2.0) == pytest.approx(math.e**2 / (1 + math.e**2))
    p_e = math.e**2 / (1 + math.e**2)
    # row 1 at z = 0: prior E = 0.9 p_e + 0.1 (1 - p_e), then likelihood ratio E : X = e^-2
    prior = 0.9 * p_e + 0.1 * (1 - p_e)
    assert filt.update(0.0) == pytest.approx(prior * math.e**-2 / (prior * math.e**-2 + (1 - prior)))
    # the observation: (log(1 + s) - a - b log(1 + j) - centre) / (MAD + 1e-6)
    shifted = PhaseModel(0.5, 0.25, 0.1, 2.0, (0.0, 1.0), (1.0, 1.0), 0.9)
    assert shifted.z(3.0, 4) == pytest.approx((math.log(4.0) - 0.5 - 0.25 * math.log(5.0) - 0.1) / (2.0 + 1e-6))


def phase_traces(cache, config=NexConfig()):
    traces = [analyze_response(cache.response_rows(r), config) for r in range(cache.n_responses)]
    return [(t.slopes, t.explore) for t in traces], traces


def test_online_phases_recover_planted_bursts(nex_planted):
    """Calibrated on one planted cache, the filtered labels of another find its planted explore rows."""
    model = fit_phase_model(phase_traces(nex_planted.cache(("ABAB",) * 6, seed=11))[0], rho=0.95)
    assert model.means[1] > model.means[0]
    held = nex_planted.cache(("ABAB", "AABB", "BABA"), seed=12)
    rng = np.random.default_rng(12)
    planted = [nex_planted.response(rng, kinds)[1] for kinds in ("ABAB", "AABB", "BABA")]
    online, batch = [], []
    for r in range(held.n_responses):
        stream = StreamingNex(phases=model)
        for keys, mass, tokens in held.response_rows(r):
            stream.push(keys, mass, tokens)
        online.append(stream.finish().labels)
        batch.append(analyze_response(held.response_rows(r)).explore)
        assert len(online[-1]) == len(planted[r])
        assert np.isfinite(stream.posterior).all()
    found = label_agreement(np.concatenate(online), np.concatenate(planted))
    assert found["agreement"] >= 0.9 and found["explore_recall"] >= 0.8
    gap = label_agreement(np.concatenate(online), np.concatenate(batch))
    assert 0.0 <= gap["agreement"] <= 1.0 and gap["rows"] == sum(map(len, batch))


def test_label_agreement_by_hand():
    found = label_agreement(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool))
    # agreement 3/4; chance 0.5 * 0.25 + 0.5 * 0.75 = 0.5; kappa (0.75 - 0.5) / 0.5
    assert found == {"rows": 4.0, "agreement": 0.75, "kappa": 0.5, "explore_recall": 1.0,
                     "exploit_recall": 2 / 3}


def test_stream_refuses_what_it_cannot_use(nex_planted):
    model = PhaseModel(0.0, 0.0, 0.0, 1.0, (0.0, 1.0), (1.0, 1.0), 0.95)
    with pytest.raises(NexError, match="label"):
        StreamingNex().push(np.array([1], np.uint32), np.ones(1), 4)
    with pytest.raises(NexError, match="label"):
        StreamingNex(phases=model).push(np.array([1], np.uint32), np.ones(1), 4, explore=True)
    with pytest.raises(NexError, match="rho"):
        StreamingNex(NexConfig(rho=0.9), phases=model)
    stream = StreamingNex(phases=model).finish()
    with pytest.raises(NexError, match="finished"):
        stream.push(np.array([1], np.uint32), np.ones(1), 4)
    with pytest.raises(NexError, match="explore and exploit"):
        fit_phase_model([(np.ones(5, np.float32), np.zeros(5, bool))], rho=0.95)
    with pytest.raises(NexError, match="3 usable rows"):
        fit_phase_model([(np.ones(2, np.float32), np.zeros(2, bool))], rho=0.95)
