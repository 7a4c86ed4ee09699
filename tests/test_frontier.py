"""The stop rules' tables by hand: the operating point chosen on calibration prompts, tokens saved at matched accuracy
and the shares cut, with intervals that hold the values computed directly; the figure drawn from the table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nex_causal.figures import draw_to
from nex_causal.selectors.config import StopConfig
from nex_causal.selectors.frontier import NONE, matched, operating_point, summary

COLUMNS = ["tokens", "accuracy", "sample_accuracy", "stopped", "detour", "detour_cut", "useful", "useful_cut"]


def per_prompt(rows: list[list[float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


FULL = per_prompt([[100, 1, 1, 0, 20, 0, 80, 0], [200, 1, 0.5, 0, 40, 0, 160, 0], [100, 0, 0, 0, 0, 0, 100, 0]])
CUT = per_prompt([[80, 1, 1, 1, 20, 20, 80, 0], [150, 0, 0.5, 2, 40, 30, 160, 20], [100, 0, 0, 0, 0, 0, 100, 0]])


def test_summary_by_hand():
    row = summary(CUT, FULL)
    assert row["accuracy"] == pytest.approx(1 / 3) and row["tokens"] == pytest.approx(110.0)
    assert row["token_share"] == pytest.approx(330 / 400) and row["stopped"] == 3
    assert row["detour_cut"] == pytest.approx(50 / 60) and row["useful_cut"] == pytest.approx(20 / 340)


def pareto(rows: list[tuple[str, float, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"rule": r, "setting": s, "cutoff": s * 10, "split": split, "accuracy": a, "tokens": t}
                         for r, s, split, a, t in rows])


def test_operating_point_is_the_cheapest_setting_within_the_tolerance_on_calibration_prompts():
    table = pareto([(NONE, np.nan, "calibration", 0.8, 100), ("budget", 0.1, "calibration", 0.8, 90),
                    ("budget", 0.5, "calibration", 0.7, 50), ("budget", 0.9, "calibration", 0.5, 20),
                    ("budget", 0.9, "reported", 1.0, 1)])  # the reported split never picks
    assert operating_point(table, "budget", 0.0)["setting"] == 0.1
    assert operating_point(table, "budget", 0.1)["setting"] == 0.5
    assert operating_point(table, "budget", 0.3)["setting"] == 0.9
    never = pareto([(NONE, np.nan, "calibration", 0.8, 100), ("deer", 0.5, "calibration", 0.6, 50)])
    assert operating_point(never, "deer", 0.0) is None


def test_matched_values_and_intervals_equal_the_direct_computation():
    table = pareto([(NONE, np.nan, "calibration", 0.8, 100), ("budget", 0.5, "calibration", 0.8, 60),
                    ("deer", 0.5, "calibration", 0.2, 60)])
    config = StopConfig(n_boot=200, tolerance=0.0)
    out = matched(table, {("budget", 0.5): CUT}, FULL, config, ["budget", "deer"]).set_index("rule")
    budget = out.loc["budget"]
    assert budget["setting"] == 0.5 and budget["cutoff"] == 5.0
    assert budget["tokens_saved"] == pytest.approx(1 - 330 / 400)
    assert budget["accuracy_change"] == pytest.approx(1 / 3 - 2 / 3)
    assert budget["detour_cut"] == pytest.approx(50 / 60) and budget["useful_cut"] == pytest.approx(20 / 340)
    for m in ("tokens_saved", "accuracy_change", "detour_cut", "useful_cut"):
        assert budget[f"{m}_low"] <= budget[m] <= budget[f"{m}_high"]
    assert np.isnan(out.loc["deer", "setting"]) and "tolerance" in out.loc["deer", "note"]
    assert (out["n_prompts"] == 3).all()


def test_the_frontier_figure_draws_from_the_table(tmp_path):
    rows = []
    for variant in ("a", "b"):
        rows.append({"rule": NONE, "setting": np.nan, "split": "reported", "accuracy": 0.9, "token_share": 1.0,
                     "detour_cut": 0.0, "useful_cut": 0.0, "tokens": 400.0, "n_prompts": 3, "n_samples": 12,
                     "variant": variant})
        for rule in ("nex-detour", "budget"):
            for share in (0.2, 0.5):
                rows.append({"rule": rule, "setting": share, "split": "reported", "accuracy": 0.9 - share / 2,
                             "token_share": 1 - share, "detour_cut": share, "useful_cut": share / 3, "tokens": 300.0,
                             "n_prompts": 3, "n_samples": 12, "variant": variant})
    paths = draw_to("stop_frontier", {"stop_pareto": pd.DataFrame(rows)}, tmp_path)
    assert {p.suffix for p in paths} == {".pdf", ".png"}
    caption = (tmp_path / "stop_frontier.caption.txt").read_text()
    assert "3 reported prompts" in caption and "detour" in caption


def test_a_rule_no_calibration_trace_reaches_is_said_so():
    table = pareto([(NONE, np.nan, "calibration", 0.8, 100)])  # deepconf-online swept nothing
    out = matched(table, {}, FULL, StopConfig(n_boot=50), ["deepconf-online"])
    assert np.isnan(out["setting"].iloc[0]) and "decision point" in out["note"].iloc[0]
