import numpy as np
import pandas as pd
import pytest

from nex_causal.errors import NexError
from nex_causal.nex.novelty import activated_keys as clean_key_set
from nex_causal.selectors import SelectionConfig, select
from nex_causal.selectors.answers import majority_vote
from nex_causal.selectors.base import argmax_pick
from nex_causal.selectors.confidence import (
    bottom_group_confidence,
    group_confidences,
    lowest_group_confidence,
    tail_confidence,
)
from nex_causal.selectors.neurons import (
    consensus_min,
    dbscan_medoid,
    jaccard_distances,
    knn_medoid,
    medoid,
    min_act,
)
from nex_causal.selectors.pool import Pool


def run(pool, names, **config):
    """``select`` with the selectors ``names`` and the other settings of ``config``."""
    weights = config.pop("weights", None)
    return select(pool, SelectionConfig(selectors=list(names), **config), weights=weights)


def line_distances(positions):
    """Distances of points on a line, scaled into [0, 1]: a hand-checkable metric."""
    x = np.asarray(positions, dtype=float)
    return np.abs(x[:, None] - x[None, :]) / np.ptp(x)


# Three identical responses (A), a hub halfway, four identical responses (B) at the far end.
CLUSTERS = line_distances([0, 0, 0, 5, 10, 10, 10, 10])


# --- NAD on key sets ---------------------------------------------------------------------

def test_jaccard_distances_and_medoid_of_hand_worked_key_sets():
    sets = [np.array([1, 2, 3]), np.array([2, 3, 4]), np.array([1, 2, 3, 4]), np.array([9])]
    d = jaccard_distances(sets)
    expected = np.array([[0, 0.5, 0.25, 1], [0.5, 0, 0.25, 1], [0.25, 0.25, 0, 1], [1, 1, 1, 0]])
    assert d == pytest.approx(expected)
    # mean distances 0.4375, 0.4375, 0.375, 0.75: the superset {1, 2, 3, 4} is the medoid
    assert medoid(d) == 2
    assert knn_medoid(d, k=3) == 2  # mean top-3 similarities 5/12, 5/12, 1/2, 0


def test_jaccard_distance_between_empty_sets_is_zero():
    d = jaccard_distances([np.array([], np.uint32), np.array([], np.uint32), np.array([7], np.uint32)])
    assert d == pytest.approx(np.array([[0, 0, 1], [0, 0, 1], [1, 1, 0]]))


def test_medoid_and_knn_medoid_differ_where_a_tight_pair_sits_away_from_a_hub():
    # 0 is at distance 0.5 from everyone; (1, 2) and (3, 4) are tight pairs 0.9 apart.
    d = np.full((5, 5), 0.9)
    d[0, :] = d[:, 0] = 0.5
    d[1, 2] = d[2, 1] = d[3, 4] = d[4, 3] = 0.1
    np.fill_diagonal(d, 0)
    assert medoid(d) == 0  # row sums 2.0 vs 2.4
    assert knn_medoid(d, k=1) == 1  # nearest neighbour 0.9 similar; 1 is the first of four ties
    assert knn_medoid(d, k=3) == 0  # 0.5 for everyone: the lowest index wins


def test_dbscan_medoid_takes_the_largest_cluster_not_the_hub():
    # eps = 30th percentile of off-diagonal distances = 0.05: A and B are clusters, the hub is noise
    assert medoid(CLUSTERS) == 3  # the hub ties B's mean distance (3.5 / 8) and comes first
    assert dbscan_medoid(CLUSTERS) == 4  # B (4 members) beats A (3)
    assert knn_medoid(CLUSTERS, k=3) == 4


def test_dbscan_medoid_falls_back_to_the_medoid_when_no_cluster_forms():
    d = line_distances([0, 4, 10])  # eps 0.52: nobody has 3 neighbours
    assert dbscan_medoid(d) == medoid(d) == 1
    assert dbscan_medoid(line_distances([0, 1])) == 0  # fewer responses than min_samples


def test_consensus_min_picks_the_sparsest_of_the_three_medoids():
    sizes = np.array([1, 1, 1, 50, 60, 60, 60, 60])  # A is sparsest but no medoid picks it
    assert consensus_min(CLUSTERS, sizes) == 3  # candidates {3, 4}: the hub is smaller
    sizes[4] = 40
    assert consensus_min(CLUSTERS, sizes) == 4
    sizes[4] = 50
    assert consensus_min(CLUSTERS, sizes) == 3  # equal sizes: lowest index
    assert min_act(sizes) == 0


def test_clean_key_set_drops_reserved_layer_and_massless_keys():
    keys = np.array([(2 << 16) | 5, (255 << 16) | 1, (1 << 16) | 3, (1 << 16) | 4, (2 << 16) | 5], np.uint32)
    mass = np.array([1.0, 9.0, 0.0, np.nan, 2.0])
    assert clean_key_set(keys, mass).tolist() == [(2 << 16) | 5]


# --- output-based scores -----------------------------------------------------------------

def test_deepconf_windows_on_a_short_trace():
    conf = np.array([3.0, 1.0, 2.0, 4.0, 0.0, 5.0])
    assert group_confidences(conf, 2) == pytest.approx([2.0, 1.5, 3.0, 2.0, 2.5])
    assert lowest_group_confidence(conf, 2) == pytest.approx(1.5)
    assert bottom_group_confidence(conf, 2) == pytest.approx(1.5)  # 10% of 5 groups: 1
    assert bottom_group_confidence(conf, 2, fraction=0.4) == pytest.approx((1.5 + 2.0) / 2)
    assert tail_confidence(conf, 2) == pytest.approx(2.5)
    # a window longer than the trace: one group, the whole trace
    assert lowest_group_confidence(conf, 2048) == tail_confidence(conf, 2048) == pytest.approx(2.5)
    assert np.isnan(lowest_group_confidence(np.array([]), 4))


def test_argmax_pick_ignores_nan_and_breaks_ties_low():
    assert argmax_pick([np.nan, 1.0, 1.0]) == 1
    assert argmax_pick([np.nan, np.nan]) == 0
    assert argmax_pick([-np.inf, np.nan, -1.0]) == 2


def test_self_certainty_of_a_uniform_distribution_is_zero():
    torch = pytest.importorskip("torch")
    from nex_causal.models.generation import token_statistics

    uniform = torch.zeros(3, 50)
    peaked = torch.zeros(3, 50)
    peaked[:, 0] = 8.0
    stats = [token_statistics(logits, torch.zeros(3, dtype=torch.long)).numpy() for logits in (uniform, peaked)]
    responses = table([[False, True]], token_kl_uniform=[s[:, 3] for s in stats])
    pool = Pool(responses)
    scores = pool.per_response(np.mean, "token_kl_uniform")
    assert scores[0] == pytest.approx(0.0, abs=1e-6)
    assert scores[1] > 1.0
    assert run(pool, ["self-certainty"], self_certainty_alignment="predicting").accuracy.item() == 1.0


# --- baselines as their authors compute them: where the reference's details change the pick ------------

def test_bottom_groups_round_down_as_the_reference_does():
    # 15 windows of width 1: the reference keeps max(1, int(1.5)) = 1 group, rounding up would keep 2
    a = np.array([0.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0])
    b = np.array([1.0, 1.0, *[9.0] * 13])
    assert bottom_group_confidence(a, 1) == 0.0 and bottom_group_confidence(b, 1) == 1.0
    assert np.sort(a)[:2].mean() > np.sort(b)[:2].mean()  # the rounded-up mean would prefer a
    responses = table([[False, True]], token_confidence_sum=[-a, -b], token_confidence_count=[np.ones(15)] * 2,
                      n_tokens=[15, 15])
    assert run(Pool(responses), ["deepconf-bottom10"], deepconf_window=1).accuracy.item() == 1.0


def test_token_confidence_averages_every_returned_entry():
    # trace 0 sampled a token outside its top 20 (21 returned entries); trace 1 did not
    top20 = [np.array([-40.0, -40.0]), np.array([-41.0, -41.0])]
    returned_sum = [np.array([-40.0 - 30.0, -40.0 - 30.0]), top20[1]]
    counts = [np.array([21.0, 21.0]), np.array([20.0, 20.0])]
    responses = table([[True, False]], token_top20_logprob_sum=top20, token_confidence_sum=returned_sum,
                      token_confidence_count=counts, n_tokens=[2, 2])
    # returned: C = 70/21 = 3.333 vs 41/20 = 2.05 (trace 0); top-20 only: 2.0 vs 2.05 (trace 1)
    assert run(Pool(responses), ["deepconf-lowest"]).accuracy.item() == 1.0
    assert run(Pool(responses), ["deepconf-lowest"], deepconf_entries="top20").accuracy.item() == 0.0


def test_token_confidence_is_rounded_to_three_decimals():
    from nex_causal.selectors.confidence import token_confidences

    responses = table([[True]], token_confidence_sum=[np.array([-20.00042, -3.0])],
                      token_confidence_count=[np.array([20.0, 3.0])], n_tokens=[2])
    (c,) = token_confidences(Pool(responses), SelectionConfig())
    assert c.tolist() == [1.0, 1.0]  # 1.000021 -> 1.0


def test_weighted_vote_and_filtered_vote_differ_from_majority():
    # three traces answer 4 with low confidence, two answer 5 with high confidence, and the
    # single most confident trace answers 6
    conf = [1.0, 1.0, 1.0, 2.0, 2.0, 2.5]
    answers = ["4", "4", "4", "5", "5", "6"]
    correct = [a == "5" for a in answers]
    responses = table([correct], answer=answers, token_confidence_sum=[np.array([-c]) for c in conf],
                      token_confidence_count=[np.ones(1)] * 6, n_tokens=[1] * 6)
    out = run(Pool(responses), ["majority-vote", "deepconf-weighted-vote", "deepconf-filter10-vote"],
              deepconf_window=1).set_index("selector")
    assert out.loc["majority-vote", "accuracy"] == 0.0  # 4 has the most votes
    assert out.loc["deepconf-weighted-vote", "accuracy"] == 1.0  # 5: 4.0 against 3.0 and 2.5
    assert out.loc["deepconf-filter10-vote", "accuracy"] == 0.0  # the 90th percentile keeps the 6 alone
    keep_half = run(Pool(responses), ["deepconf-filter10-vote"], deepconf_window=1, filter_eta=0.5)
    assert keep_half.accuracy.item() == 1.0  # the top half (2, 2, 2.5) votes 5


def test_votes_skip_traces_without_answers_and_ties_go_first():
    from nex_causal.selectors.answers import weighted_vote

    assert weighted_vote([None, "3", "", "2"], [9.0, 1.0, 9.0, 1.0]) == 1
    assert weighted_vote(["2", "3", "3", "2"], [1.0, 1.0, 1.0, 1.0]) == 0
    assert weighted_vote([None, None], [1.0, 2.0]) is None


def test_self_certainty_alignment_and_missing_answers():
    # predicting: trace 0 has the higher mean (its first distribution); the reference drops that
    # one and adds the distribution after the last token, where trace 1 is more certain
    kl = [np.array([9.0, 1.0, 1.0]), np.array([2.0, 2.0, 2.0])]
    responses = table([[False, True]], token_kl_uniform=kl, final_kl_uniform=[1.0, 3.0], answer=["1", "2"])
    assert run(Pool(responses), ["self-certainty"]).accuracy.item() == 1.0
    assert run(Pool(responses), ["self-certainty"], self_certainty_alignment="predicting").accuracy.item() == 0.0
    # without an answer, the most certain trace scores lowest
    responses["answer"] = [None, "2"]
    responses["token_kl_uniform"] = [np.array([9.0, 9.0, 9.0]), np.array([1.0, 1.0, 1.0])]
    assert run(Pool(responses), ["self-certainty"]).accuracy.item() == 1.0
    stepwise = responses.drop(columns="final_kl_uniform")
    out = run(Pool(stepwise), ["self-certainty"])
    assert out.status.item().startswith("skipped:") and "final_kl_uniform" in out.status.item()


def test_self_certainty_borda_by_hand():
    # ranked by certainty: A (4), B (3), B (2), A (1), C (0); votes (N - r + 1)^0.5 with N = 5:
    # A: sqrt(5) + sqrt(2) = 3.65, B: sqrt(4) + sqrt(3) = 3.73, C: 1
    certainty = [4.0, 3.0, 2.0, 1.0, 0.0]
    answers = ["A", "B", "B", "A", "C"]
    responses = table([[a == "B" for a in answers]], token_kl_uniform=[np.array([c]) for c in certainty],
                      answer=answers)
    config = dict(self_certainty_alignment="predicting")
    assert run(Pool(responses), ["self-certainty-borda"], **config).accuracy.item() == 1.0
    assert run(Pool(responses), ["self-certainty"], **config).accuracy.item() == 0.0  # the single pick is A
    # with p = 1 the votes are 5 + 2 = 7 (A) against 4 + 3 = 7 (B): a tie, to the first ranked
    assert run(Pool(responses), ["self-certainty-borda"], borda_power=1.0, **config).accuracy.item() == 0.0


def test_short_traces_mark_deepconf_scores_as_whole_trace():
    responses, _ = planted_table(n_prompts=4)
    responses["token_confidence_sum"] = [-20 * np.ones(4)] * len(responses)
    responses["token_confidence_count"] = [20 * np.ones(4)] * len(responses)
    out = run(Pool(responses), ["deepconf-lowest", "deepconf-tail"], n_boot=20)
    assert out.note.str.startswith("whole-trace: every trace is shorter than the 2048-token window").all()
    assert (run(Pool(responses), ["deepconf-lowest"], deepconf_window=2, n_boot=20).note == "").all()


# --- majority vote -----------------------------------------------------------------------

def test_majority_vote_counts_stripped_answers():
    assert majority_vote(["7", None, "8", " 8"]) == 2


def test_majority_vote_ties_go_to_the_answer_seen_first():
    assert majority_vote(["4", "5", "5 ", "4", None]) == 0
    assert majority_vote(["5", "4", "4", "5"]) == 0
    assert majority_vote([None, "3", "2"]) == 1


def test_majority_vote_without_answers_is_none():
    assert majority_vote([None, "", "  "]) is None


# --- selection over a responses table -------------------------------------------------------

def table(correct_per_prompt, **columns):
    """A responses table: prompt p has the samples ``correct_per_prompt[p]``; extra columns as given."""
    rows = [{"prompt_id": f"p{p}", "sample_index": s, "correct": c,
             "n_tokens": 4} for p, group in enumerate(correct_per_prompt) for s, c in enumerate(group)]
    df = pd.DataFrame(rows)
    for name, values in columns.items():
        df[name] = list(values)
    return df


def planted_table(n_prompts=40, n=4, seed=0):
    """Correct responses have lower entropy and higher log-prob; every wrong answer is distinct."""
    rng = np.random.default_rng(seed)
    correct = rng.random((n_prompts, n)) < 0.4
    flat = correct.ravel()
    entropy = [np.full(4, 0.5 if c else 2.0) + rng.uniform(0, 0.1, 4) for c in flat]
    logprob = [-e for e in entropy]
    answers = ["right" if c else f"wrong{i}" for i, c in enumerate(flat)]
    return table(correct.tolist(), token_entropy=entropy, token_logprob=logprob, answer=answers), correct


def test_select_recovers_a_planted_signal_and_the_reference_rows():
    responses, correct = planted_table()
    out = run(Pool(responses), ["entropy", "logprob", "majority-vote", "random", "avg@n", "oracle"],
                 n_boot=200).set_index("selector")
    oracle = correct.any(axis=1).mean()
    assert out.loc["entropy", "accuracy"] == pytest.approx(oracle)  # the correct one is always picked
    assert out.loc["logprob", "accuracy"] == pytest.approx(oracle)
    # two correct samples outvote the distinct wrong answers; one correct sample ties them all
    # and wins only when it comes first
    votes = correct.sum(axis=1)
    majority_right = (votes >= 2) | (votes == 1) & correct[:, 0]
    assert out.loc["majority-vote", "accuracy"] == pytest.approx(majority_right.mean())
    assert out.loc["oracle", "accuracy"] == pytest.approx(oracle)
    assert out.loc["avg@n", "accuracy"] == pytest.approx(correct.mean())
    assert out.loc["random", "accuracy"] == pytest.approx(correct.mean(), abs=0.03)
    assert (out.ci_low <= out.accuracy).all() and (out.accuracy <= out.ci_high).all()
    assert out.loc["entropy", "tokens_per_prompt"] == 16  # 4 responses x 4 tokens
    assert out.loc["random", "tokens_per_prompt"] == 0
    assert np.isnan(out.loc["avg@n", "tokens_per_prompt"])
    assert (out.status == "ok").all()
    assert (out.n_prompts == 40).all()


def test_select_reports_selectors_that_cannot_run():
    responses, _ = planted_table(n_prompts=5)
    responses["answer"] = None
    out = run(Pool(responses), ["majority-vote", "nad-medoid", "nex-cross", "self-certainty", "entropy"],
                 n_boot=50).set_index("selector")
    assert out.loc["entropy", "status"] == "ok"
    for name, reason in [("majority-vote", "answers"), ("nad-medoid", "cache"), ("nex-cross", "cache"),
                         ("self-certainty", "token_kl_uniform")]:
        assert out.loc[name, "status"].startswith("skipped:") and reason in out.loc[name, "status"]
        assert np.isnan(out.loc[name, "accuracy"])


def test_select_is_deterministic_and_rejects_unknown_names():
    responses, _ = planted_table(n_prompts=10)
    pool = Pool(responses)
    first = run(pool, ["random", "entropy"], n_boot=100, seed=3)
    pd.testing.assert_frame_equal(first, run(Pool(responses), ["random", "entropy"], n_boot=100, seed=3))
    with pytest.raises(NexError, match="unknown selector"):
        run(pool, ["best-guess"])


def test_pool_groups_by_prompt_in_first_seen_order_and_needs_labels():
    responses = table([[True, False], [False]])
    responses = responses.iloc[[0, 2, 1]]  # interleaved prompts
    pool = Pool(responses)
    assert list(pool.prompt_ids) == ["p0", "p1"]
    assert [g.tolist() for g in pool.groups] == [[0, 2], [1]]
    responses = table([[True, None]])
    with pytest.raises(NexError, match="correct"):
        run(Pool(responses), ["avg@n"])


def test_selection_config_windows_change_the_deepconf_pick():
    # response 0 is confident except for a two-token dip; response 1 is uniformly middling
    top20 = [-20 * np.array([5.0, 5.0, 0.0, 0.0, 5.0, 5.0]), -20 * np.full(6, 2.0)]
    responses = table([[True, False]], token_top20_logprob_sum=top20)
    pool = Pool(responses)
    config = dict(deepconf_entries="top20")
    assert run(pool, ["deepconf-lowest"], deepconf_window=2048, **config).accuracy.item() == 1.0  # 10/3 vs 2
    assert run(pool, ["deepconf-lowest"], deepconf_window=2, **config).accuracy.item() == 0.0  # lowest windows 0 vs 2
    assert run(pool, ["deepconf-tail"], deepconf_window=2, **config).accuracy.item() == 1.0  # last two: 5 vs 2


# --- neuron-based selectors on a real SparseCache -----------------------------------------

def write_cache(path, responses, rows):
    """A cache whose response r has the rows ``rows[r]`` ((keys, mass, n_tokens) triples)."""
    from nex_causal.cache import SparseCacheWriter

    with SparseCacheWriter(path) as writer:
        for meta, response_rows in zip(responses.to_dict("records"), rows):
            writer.append(response_rows, meta=meta)
    return writer.close()


def planted_nad_cache(path, n_prompts=12, n=5, seed=0):
    """Correct responses recruit only a shared core of neurons; wrong ones add scattered extras.

    Every response has 4 rows of 16 tokens; every prompt has 0, 2, 3 or 4 correct samples.
    """
    rng = np.random.default_rng(seed)
    core = np.arange(20, dtype=np.uint32)
    correct = np.zeros((n_prompts, n), bool)
    for p in range(n_prompts):
        correct[p, rng.choice(n, size=[0, 2, 3, 4][p % 4], replace=False)] = True
    rows = []
    for c in correct.ravel():
        rows.append([])
        for _ in range(4):
            extra = [] if c else (1 << 16) + rng.choice(5000, 8, replace=False)
            keys = np.concatenate([core, np.asarray(extra, np.uint32)])
            rows[-1].append((keys, np.ones(len(keys)), 16))
    responses = table(correct.tolist())
    responses["n_tokens"] = 64
    return write_cache(path, responses, rows), correct


NAD = ["nad-minact", "nad-medoid", "nad-knn-medoid", "nad-dbscan-medoid", "nad-consensus-min"]


def test_nad_selectors_recover_planted_agreement(tmp_path):
    cache, correct = planted_nad_cache(tmp_path / "cache")
    pool = Pool.from_cache(cache)
    names = NAD + [f"{name}@early" for name in NAD]
    out = run(pool, names, n_boot=100).set_index("selector")
    assert (out.status == "ok").all()
    assert out.accuracy.to_numpy() == pytest.approx(correct.any(axis=1).mean())
    assert (out.loc[NAD, "tokens_per_prompt"] == 5 * 64).all()
    # early decision: rows 0 and 1 (tokens 0-31) of every response
    assert (out.loc[[f"{name}@early" for name in NAD], "tokens_per_prompt"] == 5 * 32).all()


def test_early_rows_lie_within_the_first_tokens(tmp_path):
    def row(key, n_tokens):
        return np.array([key], np.uint32), np.ones(1), n_tokens

    rows = [[row(1, 16), row(2, 16), row(3, 16), row(4, 10)],  # rows 0-1 fill 32 tokens
            [row(1, 40), row(2, 40)],  # the first row overruns 32 tokens and is still used
            [row(1, 32), row(2, 32), row(3, 5)],
            [row(1, 7)]]
    responses = table([[True, False, True, False]])
    cache = write_cache(tmp_path / "cache", responses, rows)
    sets, tokens = Pool.from_cache(cache).early(32)
    assert [s.tolist() for s in sets] == [[1, 2], [1], [1], [1]]
    assert tokens.tolist() == [32, 40, 32, 7]
    sets, tokens = Pool.from_cache(cache).early(48)
    assert [s.tolist() for s in sets] == [[1, 2, 3], [1], [1], [1]]
    assert tokens.tolist() == [48, 40, 32, 7]


def test_pool_needs_a_matching_cache(tmp_path):
    cache, _ = planted_nad_cache(tmp_path / "cache", n_prompts=2)
    with pytest.raises(NexError, match="responses"):
        Pool(table([[True]]), cache)


def test_select_command_writes_and_prints_the_table(tmp_path, capsys):
    from nex_causal.cli import main

    planted_nad_cache(tmp_path / "a", n_prompts=4)
    planted_nad_cache(tmp_path / "b", n_prompts=4, seed=1)
    argv = ["select", "--cache-dir", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out"),
            "--selectors", "nad-minact,majority-vote,oracle", "--n-boot", "50"]
    assert main(argv) == 0
    table = pd.read_parquet(tmp_path / "out" / "selection.parquet")
    assert table.cache.tolist() == [str(tmp_path / "a")] * 3 + [str(tmp_path / "b")] * 3 + ["pooled"] * 3
    assert table.selector.tolist() == ["nad-minact", "majority-vote", "oracle"] * 3
    # pooled rows: the accuracy over both caches' 8 prompts, equal to the mean of two caches of 4 prompts
    by = table.set_index(["cache", "selector"])
    for name in ("nad-minact", "oracle"):
        pooled = by.loc[("pooled", name)]
        assert pooled.n_prompts == 8
        assert pooled.accuracy == pytest.approx((by.loc[(str(tmp_path / "a"), name), "accuracy"]
                                                 + by.loc[(str(tmp_path / "b"), name), "accuracy"]) / 2)
        assert pooled.ci_low <= pooled.accuracy <= pooled.ci_high
    assert by.loc[("pooled", "majority-vote"), "status"].startswith("skipped: ")
    printed = capsys.readouterr().out
    assert "could not run majority-vote: no extracted answers" in printed
    assert "nad-minact" in printed
    assert main(argv[:-4] + ["--selectors", "nope"]) == 2  # a NexError: one line, exit status 2

    from nex_causal.nex import save_weights

    save_weights(tmp_path / "w.npz", planted_weights())
    assert main([*argv[:-4], "--selectors", "nex-cross,oracle", "--weights", str(tmp_path / "w.npz")]) == 0
    table = pd.read_parquet(tmp_path / "out" / "selection.parquet")
    assert (table.status == "ok").all()
    assert table.accuracy.iloc[0] == table.accuracy.iloc[1]  # nex-cross finds the oracle's pick


def planted_weights():
    """Effective weight on the shared core (layer 0), redundant on the scattered extras (layer 1)."""
    from nex_causal.cache import KEY_SPACE

    weights = np.zeros(KEY_SPACE, np.float32)
    weights[:20] = 0.5
    weights[1 << 16:(1 << 16) + 5000] = -0.5
    return weights


def test_nex_cross_picks_the_highest_good_mass_fraction(tmp_path):
    cache, correct = planted_nad_cache(tmp_path / "cache")
    pool = Pool.from_cache(cache)
    out = run(pool, ["nex-cross", "oracle"], n_boot=50, weights=planted_weights()).set_index("selector")
    # correct responses: GMF 1; wrong: core mass 4 x 20 over that plus 4 rows x 8 extras, 80 / 112
    assert out.loc["nex-cross", "accuracy"] == pytest.approx(correct.any(axis=1).mean())
    assert out.loc["nex-cross", "accuracy"] == out.loc["oracle", "accuracy"]


def test_nex_self_picks_the_argmax_of_self_calibrated_gmf(tmp_path):
    from nex_causal.nex import learn_weights, score_responses

    cache, correct = planted_nad_cache(tmp_path / "cache", n_prompts=8)
    gmf = score_responses(cache, learn_weights(cache, progress=False), progress=False).reshape(correct.shape)
    expected = correct[np.arange(len(correct)), [argmax_pick(g) for g in gmf]].mean()
    assert run(Pool.from_cache(cache), ["nex-self"], n_boot=20).accuracy.item() == pytest.approx(expected)
