"""Stop rules: offline cuts of captured traces equal real stopped generation; the rules, cutoffs and outcomes by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nex_causal.cache import SparseCache, SparseCacheWriter, pack_keys
from nex_causal.capture import CaptureConfig, SampleConfig, capture, sample
from nex_causal.capture.probes import checkpoints, marker_suffix, probe_traces
from nex_causal.errors import NexError
from nex_causal.models.tasks import Problem, TaskSet
from nex_causal.nex import NexConfig
from nex_causal.selectors.config import StopSettings
from nex_causal.selectors.stopped import Traces, extremes, first_crossing, group_cuts, outcome, points
from nex_causal.selectors.stopping import STOP_RULES, Calibrated, Session, cutoff, stop_plan
from nex_causal.zoo.build import checkpoints_of
from nex_causal.zoo.task import organism_tasks

SAMPLING = dict(n_samples=2, max_new_tokens=320, temperature=0.7, top_p=0.95, seed=1, batch_size=8)
RECORD = dict(sparsifier="topk:32", window=4)
SETTINGS = StopSettings(deepconf_window=16, probe_every=16, probe_tokens=4)


@pytest.fixture(scope="module")
def scout(tmp_path_factory):
    """A scout level that detours, its calibration cache (other prompts) and a stepwise capture of the test prompts."""
    from nex_causal.models.loading import load_bridge

    root = tmp_path_factory.mktemp("stopping")
    bridge = load_bridge(checkpoints_of("scout") / "redundant-0.5")
    tasks = organism_tasks(4, seed=3, task="scout")
    capture(CaptureConfig(model="scout", tasks="calibration", **SAMPLING, **RECORD), root / "calibration",
            bridge=bridge, taskset=organism_tasks(8, seed=5, task="scout"), progress=False)
    full = capture(CaptureConfig(model="scout", tasks="test", method="stepwise", **SAMPLING, **RECORD), root / "full",
                   bridge=bridge, taskset=tasks, progress=False)
    return root, bridge, tasks, full


def offline_cuts(scout, name: str):
    """The cutoff that stops about half of the test traces that reach a decision point, and the offline cuts there."""
    root, bridge, tasks, full = scout
    rule = STOP_RULES[name]
    probes = (probe_traces(bridge, full.responses, tasks.answer_prefix, tasks.extract, every=SETTINGS.probe_every,
                           max_tokens=SETTINGS.probe_tokens) if "probe" in rule.reads else None)
    traces = Traces(full, tasks, lambda ids: bridge.tokenizer.decode(ids, skip_special_tokens=True), probes, bridge,
                    SETTINGS.probe_tokens)
    cal = stop_plan(name, 1.0, SETTINGS, NexConfig(), str(root / "calibration")).calibrated
    if rule.group:
        return traces, 4.0, group_cuts(traces, rule, cal, 4)
    found = points(traces, rule, cal)
    k = cutoff(rule, extremes(rule, found), 0.5)
    return traces, k, first_crossing(traces, rule, found, k)


@pytest.mark.parametrize("name,backend", [("nex-detour", "bridge"), ("nex-gmf", "bridge"),
                                          ("prune-agreement", "bridge"), ("prune-gmf", "bridge"),
                                          ("deepconf-online", "bridge"), ("deer", "hf"), ("budget", "hf")])
def test_offline_cuts_equal_stopped_generation(scout, name, backend):
    """Each rule stops the same traces at the same token while generating as when it cuts the full traces, and a cut
    trace is scored as the generated one is (a DEER exit appends the same answer)."""
    root, bridge, tasks, full = scout
    traces, k, cuts = offline_cuts(scout, name)
    assert 0 < len(cuts) < full.n_responses  # the rule fires on some traces and not on others
    plan = stop_plan(name, k, SETTINGS, NexConfig(), str(root / "calibration"))
    out = sample(SampleConfig(model="scout", tasks="test", backend=backend, **SAMPLING), root / f"{name}.parquet",
                 bridge=bridge, taskset=tasks, progress=False, stop=plan)
    online = pd.read_parquet(out)
    assert (online["finish_reason"] == "stop").sum() == len(cuts)
    for r in range(full.n_responses):
        whole = np.asarray(full.responses["token_ids"].iloc[r])
        made = np.asarray(online["token_ids"].iloc[r])
        if r not in cuts:
            np.testing.assert_array_equal(made, whole)
            continue
        kept, trial = cuts[r]
        assert 0 < kept < len(whole) or trial is not None
        np.testing.assert_array_equal(made, np.concatenate([whole[:kept], trial.tokens]) if trial is not None
                                      else whole[:kept])
        assert online["finish_reason"].iloc[r] == "stop"
        answer = online["answer"].iloc[r]
        assert (None if pd.isna(answer) else answer, bool(online["correct"].iloc[r])) == traces.scored(r, cuts[r])


def test_the_stopped_traces_are_stamped_with_their_rule(scout, tmp_path):
    root, bridge, tasks, _ = scout
    plan = stop_plan("budget", 30, SETTINGS, NexConfig(), None)
    out = sample(SampleConfig(model="scout", tasks="test", backend="hf", **{**SAMPLING, "n_samples": 1}),
                 tmp_path / "t.parquet", bridge=bridge, taskset=tasks, progress=False, stop=plan)
    table = pd.read_parquet(out)
    # stopped after 30 tokens, each exits with the answer marker and a trial answer (budget forcing)
    assert (table["n_tokens"] > 30).all() and (table["finish_reason"] == "stop").all()
    assert table["response"].str.contains("#").all()
    assert (table["stop_rule"] == "budget").all()
    with pytest.raises(NexError, match="already holds traces made with"):  # another cutoff is another sample
        sample(SampleConfig(model="scout", tasks="test", backend="hf", **{**SAMPLING, "n_samples": 1}),
               tmp_path / "t.parquet", bridge=bridge, taskset=tasks, progress=False,
               stop=stop_plan("budget", 31, SETTINGS, NexConfig(), None))
    with pytest.raises(NexError, match="--backend bridge"):
        sample(SampleConfig(model="scout", tasks="test", backend="hf", **SAMPLING), tmp_path / "u.parquet",
               bridge=bridge, taskset=tasks, progress=False,
               stop=stop_plan("nex-gmf", 0.5, SETTINGS, NexConfig(), str(root / "calibration")))


def test_plans_refuse_what_they_cannot_run(scout):
    root = scout[0]
    with pytest.raises(NexError, match="calibration cache"):
        stop_plan("nex-detour", 40, SETTINGS, NexConfig(), None)
    with pytest.raises(NexError, match="whole number of rows"):
        stop_plan("prune-agreement", 2.5, SETTINGS, NexConfig(), str(root / "calibration"))
    with pytest.raises(NexError, match="unknown stop rule"):
        stop_plan("never", 1, SETTINGS, NexConfig(), None)


# --- by hand --------------------------------------------------------------------------------

def test_cutoffs_stop_the_share_asked():
    above, below = STOP_RULES["budget"], STOP_RULES["deepconf-online"]
    maxima = np.array([10.0, 20.0, 30.0, 40.0, np.nan])  # the NaN trace reached no decision point
    assert cutoff(above, maxima, 0.25) == 40.0 and cutoff(above, maxima, 0.5) == 30.0 and cutoff(above, maxima, 1) == 10
    assert sum(above.crosses(v, cutoff(above, maxima, 0.5)) for v in maxima[:4]) == 2
    minima = np.array([1.0, 2.0, 3.0, 4.0])
    k = cutoff(below, minima, 0.5)
    assert [below.crosses(v, k) for v in minima] == [True, True, False, False]
    with pytest.raises(NexError, match="share"):
        cutoff(above, maxima, 0.0)


def test_pruning_keeps_the_best_scores_ties_to_the_lower_sample():
    rule = STOP_RULES["prune-agreement"]
    session = Session(rule, Calibrated(StopSettings(keep=0.5), NexConfig()), 4, 2.0)
    sets = [[1, 2, 3], [1, 2, 3], [7, 8, 9], [1, 2, 4]]
    for step in range(2):
        for i, keys in enumerate(sets):
            session.token(i, np.zeros(6))
            session.row(i, np.array(keys, np.uint32), np.ones(3, np.float32), 4)
        if step == 0:
            assert session.stops() == []  # one row each: not yet
    # mean Jaccard similarity to the others: samples 0 and 1 agree most, sample 2 shares nothing
    assert session.stops() == [2, 3]
    assert session.stops() == []  # pruned once


def test_the_pruning_control_keeps_the_first_samples_at_the_same_row():
    session = Session(STOP_RULES["prune-random"], Calibrated(StopSettings(keep=0.5), NexConfig()), 4, 1.0)
    for i in range(4):
        session.row(i, np.array([i], np.uint32), np.ones(1, np.float32), 4)
    assert session.stops() == [2, 3]


def test_a_sample_that_ended_is_never_pruned_and_does_not_hold_the_others_back():
    session = Session(STOP_RULES["prune-agreement"], Calibrated(StopSettings(keep=0.5), NexConfig()), 3, 3.0)
    session.row(0, np.array([5], np.uint32), np.ones(1, np.float32), 4)  # shares nothing with the others...
    session.end(0)  # ... and ends after one row
    for step in range(3):
        assert session.stops() == []
        for i in (1, 2):
            session.row(i, np.array([1, 2], np.uint32), np.ones(2, np.float32), 4)
    # samples 1 and 2 reached 3 rows: sample 0 scores lowest but has ended, so nothing is stopped, once
    assert session.pruned is False and session.stops() == [] and session.pruned is True


def test_marker_and_checkpoints_by_hand():
    scout = organism_tasks(1, task="scout")
    assert marker_suffix("add 3+9=2 ok! 0:7+9=6 s0,6=6 ", scout.answer_prefix) == "#"
    assert marker_suffix("add 3+9=2 ok! 0:7", scout.answer_prefix) == " #"
    assert marker_suffix("... s8,6=4 #", scout.answer_prefix) == ""
    assert marker_suffix("... s8,6=4 #4", scout.answer_prefix) is None  # the answer is written: no trial
    assert checkpoints(48, "eos", 16) == [16, 32]  # the step writing the end of sequence is not a checkpoint
    assert checkpoints(48, "length", 16) == [16, 32, 48]


def write_two_prompts(path):
    """Two prompts x two samples of 8 one-character tokens, the second prompt's samples detouring on tokens 4-6."""
    rows = [(pack_keys(0, [j]), np.ones(1, np.float32), 4) for j in range(2)]
    answers = {"p0": "#1", "p1": "#2"}
    with SparseCacheWriter(path) as writer:
        for p, pid in enumerate(("p0", "p1")):
            for s in range(2):
                text = "abcdef" + answers[pid]
                truth = [{"start": 4, "end": 7, "role": "detour"}] if p == 1 else []
                writer.append(rows, meta={"prompt_id": pid, "sample_index": s, "n_tokens": 8, "response": text,
                                          "finish_reason": "eos", "token_ids": np.arange(8, dtype=np.int32),
                                          "answer": answers[pid][1:], "correct": s == 0 or p == 0,
                                          "ground_truth": json.dumps(truth)})
    return SparseCache.open(path)


def test_outcome_by_hand(tmp_path):
    cache = write_two_prompts(tmp_path / "c")
    problems = [Problem("p0", "", "1"), Problem("p1", "", "2")]
    decode = lambda ids: "abcdef#?"[:len(ids)]  # noqa: E731  token t is character t (the answer digit elided)
    tasks = TaskSet("t", problems, lambda text: text.split("#")[1] if "#" in text and text[-1] != "#" else None,
                    lambda problem, text: False)
    traces = Traces(cache, tasks, decode)
    full = outcome(traces, {})
    # p0: both correct (vote correct); p1: sample 0 correct, sample 1 wrong with the same answer: vote correct
    assert full["accuracy"].tolist() == [1.0, 1.0] and full["sample_accuracy"].tolist() == [1.0, 0.5]
    assert full["tokens"].tolist() == [16.0, 16.0] and full["detour"].tolist() == [0.0, 6.0]
    cut = outcome(traces, {2: (5, None), 3: (5, None)})  # both of p1's samples cut at token 5: no answer left
    assert cut["accuracy"].tolist() == [1.0, 0.0] and cut["tokens"].tolist() == [16.0, 10.0]
    # tokens 5 and 6 of each detour [4, 7) are cut, and token 7 besides
    assert cut["detour_cut"].tolist() == [0.0, 4.0] and cut["useful_cut"].tolist() == [0.0, 2.0]
    assert cut["stopped"].tolist() == [0.0, 2.0]


def test_the_frontier_sets_cutoffs_on_calibration_prompts_and_measures_on_the_reported(scout):
    from nex_causal.selectors.config import StopConfig
    from nex_causal.selectors.frontier import evaluate_caches, summary

    root, bridge, tasks, full = scout
    calibration_tasks = organism_tasks(8, seed=5, task="scout")
    config = StopConfig(**{**vars(SETTINGS)}, rules=["budget", "nex-detour", "prune-agreement"], calibration="x",
                        shares=[0.5], prune_rows=[4], n_boot=100)
    pareto, matched = evaluate_caches(str(root / "calibration"), str(full.path), calibration_tasks, tasks, bridge,
                                      config, NexConfig())
    cal = Traces(SparseCache.open(root / "calibration"), calibration_tasks,
                 lambda ids: bridge.tokenizer.decode(ids, skip_special_tokens=True), None, bridge, SETTINGS.probe_tokens)
    rep = Traces(full, tasks, lambda ids: bridge.tokenizer.decode(ids, skip_special_tokens=True), None, bridge,
                 SETTINGS.probe_tokens)
    budget = STOP_RULES["budget"]
    k = cutoff(budget, cal.n_tokens.astype(float), 0.5)  # budget's decision values: tokens written, up to each end
    row = pareto[(pareto["rule"] == "budget") & (pareto["split"] == "reported")].iloc[0]
    assert row["cutoff"] == k
    expected = summary(outcome(rep, first_crossing(rep, budget, points(rep, budget, Calibrated(SETTINGS, NexConfig())), k)), outcome(rep, {}))
    for key in ("accuracy", "tokens", "token_share", "detour_cut", "useful_cut"):
        assert row[key] == pytest.approx(expected[key], nan_ok=True)
    full_row = pareto[(pareto["rule"] == "none") & (pareto["split"] == "reported")].iloc[0]
    assert full_row["tokens"] * full_row["n_prompts"] == full.responses["n_tokens"].sum()
    assert set(matched["rule"]) == {"budget", "nex-detour", "prune-agreement"}
    with pytest.raises(NexError, match="shares .* prompts"):
        evaluate_caches(str(full.path), str(full.path), tasks, tasks, bridge, config, NexConfig())


def test_sample_stop_on_the_command_line(scout, tmp_path, capsys):
    from nex_causal.cli import main

    root = scout[0]
    base = ["sample", "--model", "scout:redundant-0.5", "--tasks", "scout:2@3", "--n-samples", "2",
            "--max-new-tokens", "320", "--temperature", "0.7", "--seed", "1"]
    assert main([*base, "--backend", "bridge", "--stop", "nex-detour", "--stop-threshold", "8", "--stop-calibration",
                 str(root / "calibration"), "--rho", "0.95", "--out", str(tmp_path / "d.parquet")]) == 0
    table = pd.read_parquet(tmp_path / "d.parquet")
    assert (table["stop_rule"] == "nex-detour").all() and len(table) == 4
    assert "stopped early" in capsys.readouterr().out
    assert main([*base, "--stop", "budget", "--out", str(tmp_path / "b.parquet")]) == 2
    assert "--stop budget needs --stop-threshold" in capsys.readouterr().err
    assert main([*base, "--stop-threshold", "3", "--out", str(tmp_path / "c.parquet")]) == 2
    assert "need --stop RULE" in capsys.readouterr().err
