import json

import numpy as np
import pandas as pd
import pytest

from nex_causal.cache import SparseCache, SparseCacheWriter, seal
from nex_causal.errors import NexError
from nex_causal.models.variants import load_family
from nex_causal.ranking.agreement import METRICS, agreement, family_pools, rank
from nex_causal.ranking.config import RankingConfig
from nex_causal.ranking.inverted_u import (
    exploration_curves,
    inverted_u,
    inverted_u_table,
)
from nex_causal.selectors.pool import Pool

ACCURACY = {"v0": 0.15, "v1": 0.35, "v2": 0.55, "v3": 0.75, "v4": 0.9}
N_PROMPTS, N_SAMPLES, N_LAYERS, D_MLP = 24, 4, 2, 3000


def variant_cache(path, accuracy, seed, n_prompts=N_PROMPTS, n=N_SAMPLES, pool=D_MLP, extras=10):
    """A variant's cache with planted, accuracy-tracking statistics.

    Correct responses have self-certainty 1 (wrong: 0), entropy 0.5 lower, and activate only
    a shared core of neurons; wrong ones add ``extras`` per row from the first ``pool`` units of
    layer 1 (scattered by default). Two rows of 8 tokens each.
    """
    rng = np.random.default_rng(seed)
    core = np.arange(20, dtype=np.uint32)
    with SparseCacheWriter(path) as writer:
        for p in range(n_prompts):
            for s in range(n):
                correct = bool(rng.random() < accuracy)
                entropy = 1.5 - 0.5 * correct + rng.uniform(0, 0.05, 16)
                rows = []
                for _ in range(2):
                    extra = (1 << 16) + rng.choice(pool, 0 if correct else extras, replace=False)
                    keys = np.concatenate([core, extra.astype(np.uint32)])
                    rows.append((keys, rng.uniform(0.5, 1.0, len(keys)), 8))
                writer.append(rows, meta={
                    "prompt_id": f"q{p}", "sample_index": s, "n_tokens": 16, "correct": correct,
                    "answer": None, "token_entropy": entropy, "token_logprob": -entropy,
                    "token_kl_uniform": np.full(16, float(correct)),
                    "token_top20_logprob_sum": -20 * (4 - entropy)})  # DeepConf C_t = 4 - entropy
    (path / "capture.json").write_text(json.dumps({"n_layers": N_LAYERS, "d_mlp": D_MLP}))
    seal(path)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    for i, (name, acc) in enumerate(ACCURACY.items()):
        variant_cache(root / "caches" / name, acc, seed=i)
    table = pd.DataFrame({"name": [*ACCURACY, "v5"], "method": "linear",
                          "accuracy": [*ACCURACY.values(), 0.99]})
    table.to_csv(root / "family.csv", index=False)
    return root


def test_agreement_on_a_hand_worked_family():
    scores = np.array([[3.0, 1.0, 2.0], [1.0, 3.0, 2.0], [np.nan, 1.0, 2.0]])
    accuracy = np.array([[0.5, 0.9, 0.7]] * 3)
    out = agreement(scores, accuracy)
    assert out[0] == pytest.approx([-1.0, -1.0, 0.0, 0.4])  # reversed order, picks the worst
    assert out[1] == pytest.approx([1.0, 1.0, 1.0, 0.0])
    assert out[2] == pytest.approx([-1.0, -1.0, 0.0, 0.2])  # NaN left out and never picked


def test_rank_a_score_equal_to_accuracy_agrees_perfectly(family):
    pools, notes = family_pools(load_family(family), family / "caches")
    assert notes == [f"v5: no cache at {family / 'caches' / 'v5'}; left out"]
    out = rank(pools, RankingConfig(scores=["self-certainty"], n_boot=200))
    row = out.table.set_index("score").loc["self-certainty"]
    # per-variant self-certainty = mean of 0/1 correct = the cache's accuracy, in every resample
    assert out.variants["self-certainty"].to_numpy() == pytest.approx(out.variants.accuracy.to_numpy())
    for metric, value in [("spearman", 1.0), ("kendall", 1.0), ("top1", 1.0), ("regret", 0.0)]:
        assert row[metric] == row[f"{metric}_low"] == row[f"{metric}_high"] == pytest.approx(value)
    assert row.n_variants == 5 and row.n_prompts == N_PROMPTS
    # the one order of 5 variants that matches accuracy: p = 1 / 5!
    assert row.spearman_p == row.kendall_p == pytest.approx(1 / 120) and row.p_method == "exact over 120 orders"


def test_ranking_intervals_hold_their_estimates_where_percentile_ones_do_not(tmp_path, monkeypatch):
    """MUI counts the distinct units over the prompts drawn: a variant whose extras scatter loses about a
    third of them in a resample, one whose extras come from a small pool keeps them all. Planted: the
    three least accurate variants scatter (higher MUI on all 12 prompts), the three most accurate use
    pools of 40, 36 and 32 units, so the resamples reverse the order the full sample shows."""
    from functools import partial

    from nex_causal.ranking import agreement
    from nex_causal.stats import bootstrap

    pools = {}
    for i, (pool, extras) in enumerate([(D_MLP, 2)] * 3 + [(40, 10), (36, 10), (32, 10)]):
        variant_cache(tmp_path / f"v{i}", 0.5, seed=i, n_prompts=12, n=2, pool=pool, extras=extras)
        pools[f"v{i}"] = Pool.from_cache(SparseCache.open(tmp_path / f"v{i}"))
    accuracy = {name: 0.1 * i for i, name in enumerate(pools)}
    config = RankingConfig(scores=["mui"], n_boot=500)
    row = rank(pools, config, accuracy=accuracy).table.iloc[0]
    monkeypatch.setattr(agreement, "bootstrap", partial(bootstrap, method="percentile"))
    percentile = rank(pools, config, accuracy=accuracy).table.iloc[0]
    for metric in ("spearman", "kendall"):
        assert row[metric] == percentile[metric]
        assert percentile[f"{metric}_high"] < percentile[metric]  # the percentile interval leaves it out
        assert row[f"{metric}_low"] == pytest.approx(percentile[f"{metric}_low"]) and row[f"{metric}_high"] == row[metric]
    for metric in METRICS:
        assert row[f"{metric}_low"] <= row[metric] <= row[f"{metric}_high"]
    # v1, v0, v2 by MUI then v3, v4, v5: one inversion (rho = 0.829, tau = 0.733); 21 of the 720 orders
    # have sum d^2 <= 6, 20 have at most 2 inversions
    assert (row.spearman, row.kendall) == pytest.approx((1 - 6 * 6 / 210, 11 / 15))
    assert (row.spearman_p, row.kendall_p) == pytest.approx((21 / 720, 20 / 720))
    assert row.p_method == "exact over 720 orders"


def test_rank_recovers_planted_orderings_with_honest_intervals(family):
    pools, _ = family_pools(load_family(family), family / "caches")
    out = rank(pools, RankingConfig(scores=["entropy", "activated", "perplexity", "mui"], n_boot=300, seed=1))
    table = out.table.set_index("score")
    assert (table.status == "ok").all()
    assert (table.direction == -1).all()
    assert table.spearman.to_numpy() == pytest.approx(1.0)  # lower is better, and the planted order holds
    assert (table.spearman_low <= table.spearman).all()
    assert table.regret.to_numpy() == pytest.approx(0.0)
    # MUI by hand for one variant: distinct keys over all its responses / (n_layers * d_mlp)
    cache = pools["v0"].cache
    assert out.variants.set_index("variant").loc["v0", "mui"] == pytest.approx(
        len(np.unique(np.asarray(cache.base_keys))) / (N_LAYERS * D_MLP))
    activated = np.diff(np.asarray(cache.base_row_ptr)).mean()
    assert out.variants.set_index("variant").loc["v0", "activated"] == pytest.approx(activated)


def test_rank_against_the_family_accuracy_column(family):
    table = load_family(family)
    pools, _ = family_pools(table, family / "caches")
    reversed_acc = dict(zip(ACCURACY, reversed(ACCURACY.values())))
    out = rank(pools, RankingConfig(scores=["self-certainty"], n_boot=100), accuracy=reversed_acc)
    row = out.table.iloc[0]
    assert row.spearman == pytest.approx(-1.0)
    assert row.regret == pytest.approx(0.9 - 0.15)  # picks v4, whose given accuracy is 0.15
    assert out.variants.accuracy.tolist() == list(reversed_acc.values())
    with pytest.raises(NexError, match="no accuracy for v4"):
        rank(pools, RankingConfig(scores=["entropy"]), accuracy={k: v for k, v in ACCURACY.items() if k != "v4"})


def test_rank_nex_is_the_mean_gmf_of_self_calibrated_weights(family):
    from nex_causal.nex import learn_weights, score_cache

    pools, _ = family_pools(load_family(family), family / "caches")
    pools = {k: pools[k] for k in ("v0", "v4")}
    out = rank(pools, RankingConfig(scores=["nex"], n_boot=50))
    assert out.table.status.item() == "ok"
    for name, pool in pools.items():
        expected = score_cache(pool.cache, learn_weights(pool.cache, progress=False), progress=False)
        assert out.variants.set_index("variant").loc[name, "nex"] == pytest.approx(expected)


def test_rank_reports_scores_that_cannot_run(family):
    pools, _ = family_pools(load_family(family), family / "caches")
    bare = {name: Pool(pool.responses.drop(columns=["token_kl_uniform"])) for name, pool in pools.items()}
    out = rank(bare, RankingConfig(scores=["self-certainty", "activated", "entropy"], n_boot=50)).table.set_index("score")
    assert out.loc["entropy", "status"] == "ok"
    assert "token_kl_uniform" in out.loc["self-certainty", "status"]
    assert "cache" in out.loc["activated", "status"]
    assert np.isnan(out.loc["activated", "spearman"])
    out = rank(bare, RankingConfig(scores=["mui"], n_neurons=100, n_boot=10)).table
    assert out.status.item().startswith("skipped")


def test_rank_uses_only_prompts_every_variant_answered(family):
    pools, _ = family_pools(load_family(family), family / "caches")
    first = pools["v0"].responses
    pools["v0"] = Pool(first[first.prompt_id != "q3"].reset_index(drop=True))
    out = rank(pools, RankingConfig(scores=["entropy"], n_boot=20))
    assert out.table.n_prompts.item() == N_PROMPTS - 1
    assert out.notes == [f"{v}: 1 prompts not shared by every variant were left out" for v in list(ACCURACY)[1:]]


def test_rank_needs_two_variants_and_known_scores(family):
    pools, _ = family_pools(load_family(family), family / "caches")
    with pytest.raises(NexError, match="two variants"):
        rank({"v0": pools["v0"]})
    with pytest.raises(NexError, match="unknown score"):
        rank(pools, RankingConfig(scores=["vibes"]))


def test_load_family_errors_name_the_fix(tmp_path):
    with pytest.raises(NexError, match="family table"):
        load_family(tmp_path)
    pd.DataFrame({"variant": ["a"]}).to_csv(tmp_path / "family.csv", index=False)
    with pytest.raises(NexError, match="name"):
        load_family(tmp_path / "family.csv")


def test_inverted_u_recovers_the_peak_of_planted_data():
    rng = np.random.default_rng(0)
    entropy = rng.uniform(0.2, 2.8, 6000)
    p_correct = 1 / (1 + np.exp(-(1.5 - 1.2 * (entropy - 1.4) ** 2)))  # planted on the logit scale
    correct = rng.random(entropy.size) < p_correct
    curve = inverted_u(entropy, correct, n_bins=8)
    assert curve.fit.link == "logit" and curve.fit.shape == "inverted U"  # 0/1 outcomes: logistic fit
    assert curve.fit.peak == pytest.approx(1.4, abs=0.1)
    assert curve.fit.coef[2] == pytest.approx(-1.2, abs=0.15)
    assert curve.fit.p_quadratic < 1e-6
    assert 0 <= curve.fit.predict(np.array([-5.0, 10.0])).min() <= curve.fit.predict(np.array([1.4]))[0] <= 1
    assert len(curve.bins) == 8 and curve.bins.n.sum() == entropy.size
    middle = curve.bins.accuracy.iloc[3:5].mean()
    assert middle > curve.bins.accuracy.iloc[0] and middle > curve.bins.accuracy.iloc[-1]


def test_exploration_curves_per_response_and_per_variant(family):
    pools, _ = family_pools(load_family(family), family / "caches")
    curves = exploration_curves(pools, n_bins=4)
    per_response = curves["response"]
    n_responses = sum(len(p.responses) for p in pools.values())
    assert per_response.bins.n.sum() == n_responses
    # planted: correct responses have entropy exactly 0.5 lower, so entropy separates them perfectly and
    # no logistic fit exists; the bins stand, and the reason is given instead of a fitted curve
    assert per_response.fit is None and "separated" in per_response.reason
    assert curves["variant"].fit.n == 5 and curves["variant"].fit.link == "identity"
    summary, _ = inverted_u_table(curves)
    assert summary.status.tolist()[0].startswith("no fit: ") and summary.status.tolist()[1] == "ok"
    # planted: accuracy falls linearly with entropy, so the response-level bins decrease
    assert per_response.bins.accuracy.is_monotonic_decreasing


def test_rank_command_writes_every_table(family, tmp_path, capsys):
    from nex_causal.cli import main

    argv = ["rank", "--family", str(family), "--caches", str(family / "caches"), "--out", str(tmp_path),
            "--scores", "entropy,self-certainty", "--n-boot", "50", "--n-bins", "4"]
    assert main(argv) == 0
    ranking = pd.read_parquet(tmp_path / "ranking.parquet")
    assert ranking.score.tolist() == ["entropy", "self-certainty"]
    assert pd.read_parquet(tmp_path / "ranking_scores.parquet").variant.tolist() == list(ACCURACY)
    summary = pd.read_parquet(tmp_path / "inverted_u.parquet")
    assert summary.level.tolist() == ["response", "variant"]
    assert pd.read_parquet(tmp_path / "inverted_u_bins.parquet").n.sum() > 0
    printed = capsys.readouterr().out
    assert "note: v5: no cache" in printed and "self-certainty" in printed
    assert main(argv + ["--accuracy", "family"]) == 0
