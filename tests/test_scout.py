"""The scout organism (the positive control): its task, the ground truth it records, the planted route,
and the measures and negative controls that read NEX against that truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nex_causal.nex import NexConfig
from nex_causal.zoo.scout import (
    BEHAVIOURS,
    DECOYS,
    DETOUR_AFTER,
    FAMILIES,
    N_STEPS,
    REAL,
    TAGS,
    Scout,
    apply,
    chain_sum,
    derive,
    segments,
)


def problems(n: int, skill: str, seed: int = 0) -> list[Scout]:
    rng = np.random.default_rng(seed)
    return [Scout.draw(rng, skill) for _ in range(n)]


def test_derive_inverts_apply_for_every_family():
    for family in FAMILIES:
        for x in (1, 3, 7, 9):
            for k in range(10):
                assert apply(family, x, derive(family, x, apply(family, x, k))) == apply(family, x, k)


def test_a_problem_fits_exactly_its_own_family():
    for p in problems(200, "efficient"):
        fits = [f for f in FAMILIES if apply(f, p.x2, derive(f, p.x1, p.y1)) == p.y2]
        assert fits == [p.rule]


def test_hand_worked_chain_of_thought():
    # add with k = 8: a=3>1, b=5>3; the order add, mul, sub finds add first
    p = Scout(3, 1, 5, 3, "t", 2, "add", 8)
    text = p.chain_of_thought()
    assert text.startswith("add 3+8=1 5+8=3 ok! 0:2+8=0 s0,0=0 1:1+8=9 s0,9=9 ")
    assert text.endswith(f"#{p.answer()}")
    assert p.answer() == chain_sum("add", 8, 2, range(N_STEPS))


@pytest.mark.parametrize("skill", ["efficient", "redundant-0.5", "under"])
def test_every_behaviour_reaches_the_answer_it_was_trained_on(skill):
    rng = np.random.default_rng(1)
    for p in problems(100, skill):
        text = p.chain_of_thought(rng)
        got = int(text.rsplit("#", 1)[1])
        behaviour = BEHAVIOURS[skill]
        if behaviour.commit:  # commits to the first family: right only when that family is the rule
            first = text.split(" ", 1)[0]
            if first == p.rule:
                assert got == p.answer()
        elif p.detours(behaviour):  # the detour skips one index: its output is missing from the sum
            steps = [i for i in range(N_STEPS) if i != DETOUR_AFTER]
            assert got == sum(apply(p.rule, x, p.k) for x in _walk(p, steps)) % 10
        else:
            assert got == p.answer()


def _walk(p: Scout, steps):
    """The x at each walked index (the chain advances only on walked indices)."""
    x = p.start
    for _ in steps:
        yield x
        x = (apply(p.rule, x, p.k) + 1) % 10


def test_the_detour_rate_is_the_share_of_tags():
    for skill, behaviour in BEHAVIOURS.items():
        share = np.mean([Scout(1, 1, 2, 2, t, 0, "add", 0).detours(behaviour) for t in TAGS])
        assert share == pytest.approx(behaviour.detour), skill


def test_segments_recover_the_pieces_with_roles_and_use():
    rng = np.random.default_rng(3)
    detouring = next(p for p in problems(200, "redundant-0.5") if p.detours(BEHAVIOURS["redundant-0.5"])
                     and p.rule != REAL[0])
    text, labels = detouring.labels(rng)
    found = segments(text)
    strategies = [s for s in found if s.role != "step"]
    steps = [s for s in found if s.role == "step"]
    assert len(steps) == N_STEPS - 1
    assert all(s.family == detouring.rule for s in steps)
    assert [s.family for s in strategies if s.role == "detour"] == list(DECOYS)
    assert all(not s.used and s.verdict == "no;" for s in strategies if s.role == "detour")
    explored = [s for s in strategies if s.role == "explore"]
    assert explored[-1].family == detouring.rule and explored[-1].used and explored[-1].verdict == "ok!"
    assert all(not s.used and s.verdict == "no;" for s in explored[:-1])
    for s in strategies:  # the spans are where the training labels put the family's characters
        assert set(labels[s.start:s.end]) == {s.family}, text[s.start:s.end]
    assert json.loads(Scout.ground_truth(text))[0]["start"] == found[0].start


def test_segments_of_a_broken_response_are_what_it_wrote():
    assert segments("mul 3*7=1 5*7=5 no; garbage 0:3") == [segments("mul 3*7=1 5*7=5 no;")[0]]
    assert segments("") == []


def test_route_penalty_is_the_share_outside_the_block():
    import torch

    from nex_causal.zoo.route import IGNORE, Route

    route = Route(block=2)
    width = 2 * len(FAMILIES) + 2
    inside = torch.zeros(1, 3, width)
    inside[0, 0, 0:2] = 1.0  # add's block
    inside[0, 1, 2:4] = 3.0  # mul's block
    inside[0, 2, 5] = 9.0  # the prompt: ignored
    labels = torch.tensor([[route.label("add"), route.label("mul"), IGNORE]])
    assert float(route.penalty_of([inside], labels)) == pytest.approx(0.0, abs=1e-6)
    half = inside.clone()
    half[0, 0, width - 1] = -2.0  # as much mass on a shared unit as in add's block
    assert float(route.penalty_of([half, inside], labels)) == pytest.approx((0.5 + 0.0) / 2 / 2, rel=1e-5)
    none = torch.zeros(1, 1, width)
    none[0, 0, 0] = 1.0  # a position of no family may use only the shared units
    none[0, 0, width - 1] = 3.0
    assert float(route.penalty_of([none], torch.tensor([[route.label("none")]]))) == pytest.approx(0.25, rel=1e-5)


def test_route_units_are_each_familys_block_in_every_layer():
    from nex_causal.cache import unpack_keys
    from nex_causal.zoo.route import Route

    layers, units = unpack_keys(Route(block=48).units("sub", 6))
    assert sorted(set(layers.tolist())) == list(range(6))
    assert units.min() == 2 * 48 and units.max() == 3 * 48 - 1 and len(units) == 6 * 48


# --- the ground-truth measures ------------------------------------------------------------------

def test_auroc_by_hand():
    from nex_causal.zoo.groundtruth import auroc

    assert auroc(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0])) == 1.0
    assert auroc(np.array([1.0, 2.0, 3.0]), np.array([1, 1, 0])) == 0.0
    assert auroc(np.array([1.0, 1.0, 0.0, 2.0]), np.array([1, 0, 0, 1])) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert np.isnan(auroc(np.array([1.0]), np.array([1])))


def test_block_table_sorts_each_opened_family_by_what_the_response_did_with_it(tmp_path):
    """One response opens mul (rejected before the hit), add (accepted and used), then the decoys after the first
    step (detours). Each row of the cache holds the planted units of the family its characters belong to (one
    token per character, 4 per row), so the label-free stories see mul first, add's units in most rows, and the
    decoys last."""
    import pandas as pd

    from nex_causal.cache import SparseCache, SparseCacheWriter, pack_keys
    from nex_causal.zoo.groundtruth import block_table, category_auroc
    from nex_causal.zoo.route import Route

    text = ("mul 3*7=1 5*7=5 no; add 3+8=1 5+8=3 ok! 0:2+8=0 s0,0=0 dbl 3.5=1 5.5=5 no; sqr 3:2=1 5:2=7 no; "
            "2:1+8=9 s0,9=9 #9")
    truth = Scout.ground_truth(text)
    families = [None] * len(text)
    for seg in json.loads(truth):
        for i in range(seg["start"], seg["end"]):
            families[i] = seg["family"]
    route = Route()
    with SparseCacheWriter(tmp_path / "c") as writer:
        rows = []
        for start in range(0, len(text) - 3, 4):
            owner = next((f for f in families[start:start + 4] if f), None)
            units = np.arange(3) + (48 * ["add", "mul", "sub", "dbl", "sqr"].index(owner) if owner else 300)
            rows.append((pack_keys(0, units), np.ones(3), 4))
        writer.append(rows, meta={"prompt_id": "p", "sample_index": 0, "ground_truth": truth})
    table = block_table(SparseCache.open(tmp_path / "c"), NexConfig(), route, n_layers=1)
    assert dict(zip(table.family, table.category)) == {"mul": "rejected", "add": "used", "dbl": "detour",
                                                       "sqr": "detour"}
    by = table.set_index("family")
    assert by.loc["mul", "first_seen"] == 1.0 and by.loc["add", "first_seen"] > by.loc["dbl", "first_seen"]
    assert by.loc["add", "rows"] > by.loc["mul", "rows"] and by["mass"].sum() <= 1.0
    doubled = pd.concat([table, table.assign(response=1)], ignore_index=True)
    value, low, high, n_used, n_other = category_auroc(doubled, "rows", "detour", n_boot=50, seed=0)
    assert value == 1.0 and low <= value <= high and (n_used, n_other) == (2, 4)


def test_row_truth_marks_rows_mostly_inside_strategy_spans(tmp_path):
    from nex_causal.cache import SparseCache, SparseCacheWriter, pack_keys
    from nex_causal.zoo.groundtruth import row_truth, strategies_opened

    text = "mul 3*7=1 5*7=5 no; add 3+8=1 5+8=3 ok! 0:2+8=0 s0,0=0 #0"
    truth = Scout.ground_truth(text)
    with SparseCacheWriter(tmp_path / "c") as writer:
        rows = [(pack_keys(0, [j]), np.ones(1), 8) for j in range(len(text) // 8)]
        writer.append(rows, meta={"prompt_id": "p", "sample_index": 0, "ground_truth": truth})
    cache = SparseCache.open(tmp_path / "c")
    got = row_truth(cache, 0, json.loads(truth))
    # strategies span characters 0-39; rows are [0,8), [8,16), ... : rows 0-4 inside, row 5 holds 1 of 8
    assert got.tolist() == [True] * 5 + [False] * (len(text) // 8 - 5)
    assert strategies_opened(cache).tolist() == [2.0]


def test_zoo_units_writes_the_planted_blocks_as_a_neuron_set(tmp_path, capsys):
    from nex_causal.cli import main
    from nex_causal.intervene.neuron_sets import NeuronSet

    assert main(["zoo", "units", "--families", "add,dbl", "--out", str(tmp_path / "u.csv")]) == 0
    units = NeuronSet.load(tmp_path / "u.csv")
    assert len(units) == 2 * 6 * 48 and set(units.by_layer()) == set(range(6))
    assert set(units.by_layer()[3].tolist()) == set(range(48)) | set(range(3 * 48, 4 * 48))
    assert main(["zoo", "units", "--families", "pow", "--out", str(tmp_path / "v.csv")]) == 2
    assert "unknown family 'pow'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_positive_control_stage_writes_its_predictions_table(tmp_path):
    """The pre-registered experiment, shrunk (8 prompts, 2 samples): every prediction gets a row with its value,
    interval and verdict, whatever comes out, and every variant its ground-truth measures."""
    import pandas as pd

    from nex_causal.run.experiment import load_config, run_experiment

    config = load_config("experiments/positive_control.yaml")
    raw = {**__import__("dataclasses").asdict(config), "name": "pc", "tasks": "scout:8"}
    raw["capture"] = {**raw["capture"], "n_samples": 2}
    raw["ranking"] = {**raw["ranking"], "n_boot": 50}
    raw["positive_control"] = {**raw["positive_control"], "n_boot": 50, "n_controls": 3}
    raw["transfer"] = {**raw["transfer"], "tasks": "scout:8", "attribution_tasks": "scout:8@1000", "k": [8],
                       "n_random": 2, "n_matched": 2, "mask_steps": 5, "outcomes": ["solution-logprob"]}
    run_experiment(load_config(raw), tmp_path / "pc", progress=False)
    table = pd.read_parquet(tmp_path / "pc" / "tables" / "positive_control.parquet")
    assert list(table["id"]) == [p.id for p in config.positive_control.predictions]
    assert set(table["holds"]) <= {"yes", "NO", "reported"} and table["value"].notna().sum() >= len(table) - 2
    assert (table.loc[table["id"] == "entropy-family", "holds"] == "reported").all()
    bounded = table[np.isfinite(table["low"])]
    assert ((bounded["low"] <= bounded["value"]) & (bounded["value"] <= bounded["high"])).all()
    assert table.set_index("id").loc["gmf-falls", "p_method"].startswith("exact")
    units = pd.read_parquet(tmp_path / "pc" / "tables" / "positive_control_units.parquet")
    assert {"nex-effective", "rows", "responses", "mass", "first-seen"} <= set(units["scorer"])
    nulls = pd.read_parquet(tmp_path / "pc" / "tables" / "positive_control_nulls.parquet")
    assert nulls.groupby("control")["draw"].count().to_dict() == {"permuted": 3, "reordered": 3, "shuffled": 3}
    departures = pd.read_parquet(tmp_path / "pc" / "tables" / "positive_control_departures.parquet")
    assert set(departures["departure"]) == {"reference", "skip_opening", "eff", "eff-red", "prompt_seen"}
    variants = pd.read_parquet(tmp_path / "pc" / "tables" / "positive_control_variants.parquet")
    assert set(variants["variant"]) >= {"efficient", "redundant-0.5", "under", "noise-0.2"}
    assert variants["strategies_opened"].between(0, 6).all()  # a damaged variant may open none
    opened = variants.set_index("variant")["strategies_opened"]
    assert opened["redundant-0.5"] > opened["efficient"] >= 1 > opened["under"] - 0.01
