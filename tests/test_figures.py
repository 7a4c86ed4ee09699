"""Figures render real content from small tables: ink where the data is, vector PDFs, legends
that carry the numbers, and a run directory's figures with the missing ones named."""

import json
import re
import zlib

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from nex_causal import figures as F
from nex_causal.cache import ResponseRows
from nex_causal.cli import main
from nex_causal.errors import NexError
from nex_causal.figures.registry import FIGURES
from nex_causal.figures.selection import REFERENCE_SELECTORS
from nex_causal.io import write_table
from nex_causal.nex import analyze_response
from nex_causal.nex.tables import trace_table, weights_table
from nex_causal.ranking.inverted_u import inverted_u, inverted_u_table

DPI = 300


def saved(fig, tmp_path, name="fig"):
    """Save ``fig``; return the PNG as an [H, W, 3] array and the PDF's bytes."""
    pdf, png = F.save_figure(fig, tmp_path / name)
    return imread(png)[..., :3], pdf.read_bytes()


def pixel(fig, ax, x, y, image):
    """The PNG pixel at data point (x, y) of ``ax`` (display coords scale with the save dpi)."""
    px, py = ax.transData.transform((x, y)) * DPI / fig.dpi
    return image[int(round(image.shape[0] - py)), int(round(px))]


def plot_area_ink(fig, ax, image) -> float:
    """Share of non-white pixels inside the axes rectangle."""
    (x0, y0), (x1, y1) = ax.get_position().get_points()
    h, w = image.shape[:2]
    area = image[int((1 - y1) * h):int((1 - y0) * h), int(x0 * w):int(x1 * w)]
    return float((area.min(axis=-1) < 0.95).mean())


def pdf_streams(data: bytes) -> bytes:
    """All content streams of a PDF, inflated."""
    out = []
    for raw in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            out.append(zlib.decompress(raw))
        except zlib.error:
            out.append(raw)
    return b"\n".join(out)


def assert_vector(pdf: bytes) -> None:
    content = pdf_streams(pdf)
    assert b"/Subtype /Image" not in pdf and b"/Subtype/Image" not in pdf
    assert len(re.findall(rb"\d m\b", content)) > 5 and len(re.findall(rb"\d l\b", content)) > 5  # moveto, lineto
    assert b"/FontFile2" in pdf  # TrueType text, embedded


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


# --- one response's trace ---------------------------------------------------------------

EXPLORE = np.array([0, 0, 1, 1, 0, 0, 1, 1, 1, 0], bool)


def hand_trace() -> pd.DataFrame:
    return pd.DataFrame({
        "row": np.arange(10), "slope": np.where(EXPLORE, 3.0, 1.0),
        "explore": EXPLORE,
        "cycle": [-1, -1, 0, 0, 0, 0, 1, 1, 1, 1],
        "cycle_kind": ["", ""] + ["effective"] * 4 + ["redundant"] * 4,
    })


def test_trace_shades_explore_rows_and_marks_each_cycle(tmp_path):
    fig = F.plot_trace(hand_trace())
    ax = fig.axes[0]
    shaded = [p for p in ax.patches if p.get_facecolor()[:3] == pytest.approx((0.88,) * 3)]
    assert len(shaded) == 2  # the E runs 2-3 and 6-8
    assert legend_texts(ax) == ["explore (E)", "novelty slope", "effective cycle", "redundant cycle"]
    brackets = [line for line in ax.lines if len(line.get_xdata()) == 2]
    assert sorted(tuple(line.get_xdata()) for line in brackets) == [(1.65, 5.35), (5.65, 9.35)]
    image, pdf = saved(fig, tmp_path)
    assert pixel(fig, ax, 2.5, 0.3, image) == pytest.approx((0.88,) * 3, abs=0.02)  # inside an E run
    assert pixel(fig, ax, 4.5, 0.3, image) == pytest.approx((1.0,) * 3, abs=0.02)  # an X row: background
    assert plot_area_ink(fig, ax, image) > 0.05
    assert_vector(pdf)


def test_trace_table_of_an_analysed_response_lines_up_with_its_cycles():
    pattern = "XXEEXXXEEXXXEEXX"
    keys, mass, nxt, last = [], [], 0, np.empty(0, np.int64)
    for p in pattern:  # E rows recruit 40 new neurons, X rows reuse the last E run's
        if p == "E":
            k = last = np.arange(nxt, nxt + 40)
            nxt += 40
        else:
            k = np.r_[last[:20], nxt]
            nxt += 1
        keys.append(k.astype(np.uint32))
        mass.append(np.ones(len(k), np.float32))
    keys.insert(5, np.empty(0, np.uint32))  # an empty row: skipped by the method, a gap in `row`
    mass.insert(5, np.empty(0, np.float32))
    trace = analyze_response(ResponseRows.from_rows(list(zip(keys, mass, [4] * len(keys)))))
    table = trace_table(trace)
    assert table["row"].tolist() == [j for j in range(17) if j != 5]
    assert "".join("E" if e else "X" for e in table["explore"]) == pattern
    for i, c in enumerate(trace.cycles):
        part = table[table["cycle"] == i]
        assert part.index.tolist() == list(range(c.e_start, c.x_end + 1))
        assert set(part["cycle_kind"]) == {c.kind}
    assert (table.loc[table["cycle"] < 0, "cycle_kind"] == "").all()
    fig = F.plot_trace(table)
    assert len([p for p in fig.axes[0].patches if p.get_facecolor()[:3] == pytest.approx((0.88,) * 3)]) == 3


def test_trace_needs_one_response_and_its_columns():
    with pytest.raises(NexError, match="2 responses"):
        F.plot_trace(hand_trace().assign(response=[0] * 5 + [1] * 5))
    with pytest.raises(NexError, match="lacks column.*explore"):
        F.plot_trace(hand_trace().drop(columns="explore"))
    with pytest.raises(NexError, match="empty"):
        F.plot_trace(hand_trace().iloc[:0])


# --- the inverted U ------------------------------------------------------------------------

def test_inverted_u_draws_the_fitted_parabola_with_its_peak(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 2.5, 300)
    curves = {"response": inverted_u(x, 0.8 - 0.3 * (x - 1.5) ** 2 + rng.normal(0, 0.02, 300))}
    fits, bins = inverted_u_table(curves)
    fig = F.plot_inverted_u(bins, fits)
    ax = fig.axes[0]
    peak = fits["peak"].iloc[0]
    assert peak == pytest.approx(1.5, abs=0.05)  # the planted vertex
    assert any(f"peak {peak:.3g}" in t for t in legend_texts(ax))
    curve = next(line for line in ax.lines if len(line.get_xdata()) == 200)
    assert curve.get_xdata()[np.argmax(curve.get_ydata())] == pytest.approx(peak, abs=0.02)
    image, pdf = saved(fig, tmp_path)
    assert plot_area_ink(fig, ax, image) > 0.01
    assert_vector(pdf)
    no_fit = F.plot_inverted_u(bins)  # without the fit table only the bins are drawn
    assert not [line for line in no_fit.axes[0].lines if len(line.get_xdata()) == 200]


# --- scores against accuracy ------------------------------------------------------------------

def test_score_panels_carry_the_rank_correlation_nex_first(tmp_path):
    scores = pd.DataFrame({
        "variant": list("abcde"), "accuracy": [0.1, 0.2, 0.3, 0.4, 0.5],
        "entropy": [5.0, 4.0, 3.0, 2.0, 1.0],  # perfectly reversed: rho = -1
        "nex": [0.2, 0.1, 0.4, 0.3, 0.5],  # d = (1, 1, 1, 1, 0): rho = 1 - 6 * 4 / 120 = 0.8
    })
    correlations = pd.DataFrame({"score": ["nex", "entropy"], "direction": [1, -1], "spearman": [0.8, 1.0],
                                 "spearman_low": [0.3, 0.5], "spearman_high": [1.0, 0.9]})
    fig = F.plot_scores_vs_accuracy(scores, correlations)
    nex, entropy = fig.axes[:2]
    assert nex.get_xlabel() == "nex"
    assert legend_texts(nex) == ["ρ = +0.80 [+0.30, +1.00]"]
    # entropy is claimed lower-is-better: drawn negated, with the table's oriented rho
    assert legend_texts(entropy) == ["ρ = +1.00 [+0.50, +0.90]"]
    assert entropy.get_xlabel() == "−entropy (claimed: lower is better)"
    assert list(entropy.lines[0].get_xdata()) == [-5.0, -4.0, -3.0, -2.0, -1.0]
    assert list(nex.lines[0].get_xdata()) == [0.2, 0.1, 0.4, 0.3, 0.5]
    assert legend_texts(F.plot_scores_vs_accuracy(scores).axes[0]) == ["ρ = +0.80"]
    caption = FIGURES["nex_vs_accuracy"].caption(scores, correlations)
    assert "5 variants" in caption and "(entropy negated)" in caption
    image, pdf = saved(fig, tmp_path)
    assert plot_area_ink(fig, nex, image) > 0.005
    assert_vector(pdf)


def test_several_rankings_are_drawn_as_series_with_their_own_correlation():
    one = pd.DataFrame({"variant": list("abcd"), "accuracy": [0.1, 0.2, 0.3, 0.4], "nex": [1.0, 2.0, 3.0, 4.0]})
    two = one.assign(nex=[4.0, 3.0, 2.0, 1.0])
    scores = pd.concat([one.assign(caches="runs/a"), two.assign(caches="runs/b")], ignore_index=True)
    correlations = pd.DataFrame({"score": ["nex", "nex"], "direction": [1, 1], "spearman": [1.0, -1.0],
                                 "spearman_low": [0.9, -1.0], "spearman_high": [1.0, -0.8],
                                 "caches": ["runs/a", "runs/b"]})
    ax = F.plot_scores_vs_accuracy(scores, correlations).axes[0]
    assert legend_texts(ax) == ["ρ = +1.00 [+0.90, +1.00] (runs/a)", "ρ = -1.00 [-1.00, -0.80] (runs/b)"]
    assert [line.get_marker() for line in ax.lines] == ["o", "s"]


# --- Best-of-N --------------------------------------------------------------------------------

def test_best_of_n_orders_selectors_and_draws_intervals_and_baselines(tmp_path):
    selection = pd.DataFrame({
        "selector": ["nex-self", "medoid", "entropy", "random", "avg@n", "oracle", "deepconf-tail"],
        "accuracy": [0.62, 0.55, 0.58, 0.50, 0.51, 0.80, np.nan],
        "ci_low": [0.55, 0.50, 0.52, 0.45, 0.46, 0.75, np.nan],
        "ci_high": [0.70, 0.61, 0.64, 0.55, 0.56, 0.85, np.nan],
        "status": ["ok"] * 6 + ["skipped: no token statistics"],
    })
    fig = F.plot_best_of_n(selection)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["medoid", "entropy", "nex-self"]
    assert legend_texts(ax) == ["baseline (95% CI)", "NEX (95% CI)", "random", "avg@n", "oracle"]
    assert sorted(line.get_xdata()[0] for line in ax.lines if line.get_label() in REFERENCE_SELECTORS) == \
        [0.50, 0.51, 0.80]
    bars = [seg for coll in ax.collections for seg in coll.get_segments()]
    assert sorted((round(s[0][0], 6), round(s[1][0], 6)) for s in bars) == [(0.5, 0.61), (0.52, 0.64), (0.55, 0.7)]
    image, pdf = saved(fig, tmp_path)
    assert plot_area_ink(fig, ax, image) > 0.01
    assert_vector(pdf)
    with pytest.raises(NexError, match="no selector"):
        F.plot_best_of_n(selection[selection["selector"].isin(["random", "oracle"])])


# --- transfer dose response ---------------------------------------------------------------

def transfer_table() -> pd.DataFrame:
    """Rows as ``intervene.tables.gap_summary`` writes them: two interventions, three doses, the last "all"."""
    rows = []
    for intervention in ("transplant", "patch"):
        for k, dose in ((8, "8"), (32, "32"), (128, "all")):
            effective = -0.1 * np.log2(k / 4)
            rows.append({"intervention": intervention, "k": k, "dose": dose, "outcome": "answer-logprob",
                         "effective_delta": effective, "redundant_delta": 0.01, "random_delta": 0.0,
                         "random_low": -0.06, "random_high": 0.06, "p_value": 0.02 if k == 128 else 0.5,
                         "n_random": 50, "n_prompts": 200, "positive_control": "mask",
                         "positive_control_delta": -0.2 * np.log2(k / 4), "positive_control_moved": k > 8,
                         "ceiling_delta": -1.5})
    return pd.DataFrame(rows)


def test_transfer_panels_lines_null_band_and_marks(tmp_path):
    fig = F.plot_transfer(transfer_table())
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["transplant, answer-logprob", "patch, answer-logprob"]
    ax = visible[0]
    assert ax.get_xscale() == "log"  # k spans 16x
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "32", "all"]
    effective = next(line for line in ax.lines if line.get_label() == "NEX effective")
    assert list(effective.get_ydata()) == pytest.approx([-0.1, -0.3, -0.5])
    positive = next(line for line in ax.lines if line.get_label() == "positive control (mask)")
    assert list(positive.get_ydata()) == pytest.approx([-0.2, -0.6, -1.0])
    ceiling = next(line for line in ax.lines if line.get_label() == "ceiling")
    assert list(ceiling.get_ydata()) == pytest.approx([-1.5, -1.5])
    band = next(c for c in ax.collections if c.get_label() == "random (null quantiles)")
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(-0.06) and ys.max() == pytest.approx(0.06)
    marked = next(c for c in ax.collections if c.get_label() == "p < 0.05")
    assert marked.get_offsets().tolist() == [[128, pytest.approx(-0.5)]]  # only the significant cell is ringed
    image, pdf = saved(fig, tmp_path)
    assert plot_area_ink(fig, ax, image) > 0.05
    assert_vector(pdf)
    with pytest.raises(NexError, match="summary table is empty"):
        F.plot_transfer(transfer_table().iloc[:0])


def test_transfer_with_one_dose_draws_the_null_as_bars_and_no_unused_legend_entry():
    one = transfer_table().query("k == 32 and intervention == 'transplant'")
    fig = F.plot_transfer(one)
    ax = fig.axes[0]
    bars = [seg for coll in ax.collections for seg in getattr(coll, "get_segments", lambda: [])()]
    assert [(s[0][1], s[1][1]) for s in bars if s[0][0] == s[1][0]] == [(pytest.approx(-0.06), pytest.approx(0.06))]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["NEX effective", "NEX redundant", "positive control (mask)", "ceiling",
                      "random: mean, central 95%"]  # p = 0.5: no ring, no ring entry
    assert F.layout_problems(fig) == []


# --- neuron weights by layer -------------------------------------------------------------

def test_neuron_weight_bars_count_effective_and_redundant_per_layer(tmp_path):
    weights = pd.DataFrame({"layer": [0, 0, 0, 1, 2, 2, 2, 2], "unit": range(8),
                            "weight": [0.5, 0.2, -0.3, 0.0, -0.9, -0.1, 0.7, -0.2]})
    fig = F.plot_neuron_weights(weights)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == [2, 0, 1, -1, 0, -3]  # effective per layer, then redundant (below the axis)
    image, pdf = saved(fig, tmp_path)
    assert plot_area_ink(fig, ax, image) > 0.05
    assert_vector(pdf)


def test_weights_table_lists_the_credited_neurons_of_a_weight_vector():
    from nex_causal.cache import KEY_SPACE, pack_keys

    weights = np.zeros(KEY_SPACE, np.float32)
    weights[pack_keys([0, 0, 2, 63], [1, 700, 5, 65535])] = [0.5, -0.25, 0.75, -1.0]
    table = weights_table(weights)
    assert table.values.tolist() == [[1, 0, 1, 0.5], [700, 0, 700, -0.25], [(2 << 16) | 5, 2, 5, 0.75],
                                     [(63 << 16) | 65535, 63, 65535, -1.0]]
    heights = [p.get_height() for p in F.plot_neuron_weights(table).axes[0].patches]
    assert heights[0] == 1 and heights[2] == 1 and heights[64] == -1 and heights[64 + 63] == -1


# --- saving, and a run directory ---------------------------------------------------------------

def test_save_figure_is_atomic_vector_sized_and_reproducible(tmp_path):
    pdf, png = F.save_figure(F.plot_trace(hand_trace()), tmp_path / "a", config={"seed": 3})
    again, _ = F.save_figure(F.plot_trace(hand_trace()), tmp_path / "b")
    assert pdf.read_bytes() == again.read_bytes()  # no creation date: same table, same bytes
    assert imread(png).shape[1] == round(F.SINGLE * DPI)
    sidecar = json.loads((tmp_path / "a.json").read_text())
    assert sidecar["config"] == {"seed": 3} and "matplotlib" in sidecar["versions"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.pdf", "a.png", "b.json", "b.pdf", "b.png"]


def test_make_figures_draws_what_exists_and_names_the_rest(tmp_path, capsys):
    run = tmp_path / "run"
    write_table(hand_trace(), run / "tables" / "trace", config={"response": 4})
    write_table(transfer_table(), run / "tables" / "transfer_summary")
    ablate = transfer_table().replace({"intervention": {"transplant": "zero", "patch": "mean"}})
    write_table(ablate, run / "tables" / "ablate_summary")
    paths = F.make_figures(run)
    assert [p.name for p in paths] == ["trace.pdf", "trace.png", "transfer.pdf", "transfer.png",
                                       "ablation.pdf", "ablation.png"]
    assert json.loads((run / "figures" / "trace.json").read_text())["config"]["tables"] == {"trace": {"response": 4}}
    assert F.missing_tables(run) == {"profile": ["profile_curve", "profile_responses", "profile_reuse"],
                                     "inverted_u": ["inverted_u_bins"], "nex_vs_accuracy": ["ranking_scores"],
                                     "best_of_n": ["selection"], "sweep": ["sweep", "sweep_choice"],
                                     "neuron_weights": ["neuron_weights"], "nex_cross": ["nex_cross"],
                                     "donor_ablation": ["donor_ablation_summary"],
                                     "transfer_scorers": ["transfer_scorers"],
                                     "positive_control": ["positive_control"],
                                     "positive_control_units": ["positive_control_units"],
                                     "positive_control_nulls": ["positive_control_nulls"],
                                     "positive_control_departures": ["positive_control_departures"],
                                     "stop_frontier": ["stop_pareto"]}
    assert main(["figures", str(run), "--readme", "--out", str(tmp_path / "readme")]) == 0
    out = capsys.readouterr().out
    assert "skipped best_of_n: no table selection" in out and "skipped inverted_u" not in out
    assert sorted(p.name for p in (tmp_path / "readme").glob("*.p*")) == \
        ["trace.pdf", "trace.png", "transfer.pdf", "transfer.png"]
    assert main(["figures", str(tmp_path)]) == 2  # no tables/ folder: one-line error
    assert "no tables/ folder" in capsys.readouterr().err
    with pytest.raises(NexError, match="unknown figure"):
        F.make_figures(run, names=["pie"])


def pooled_selection() -> pd.DataFrame:
    """Rows as ``selectors.selection_table`` writes them for two caches, with the pooled rows."""
    rows = [{"cache": c, "selector": s, "accuracy": a, "ci_low": a - 0.1, "ci_high": a + 0.1, "status": "ok",
             "n_prompts": 32, "note": ""}
            for c, shift in (("a", 0.0), ("b", 0.2)) for s, a in (("nex-self", 0.5 + shift), ("entropy", 0.3 + shift),
                                                                    ("random", 0.35 + shift))]
    rows += [{"cache": "pooled", "selector": s, "accuracy": a, "ci_low": a - 0.05, "ci_high": a + 0.05, "status": "ok",
              "n_prompts": 64, "note": "whole-trace mean" if s == "entropy" else ""}
             for s, a in (("nex-self", 0.6), ("entropy", 0.4), ("random", 0.45))]
    return pd.DataFrame(rows)


def test_best_of_n_over_several_caches_draws_the_pooled_mean_and_each_cache():
    fig = F.plot_best_of_n(pooled_selection())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["entropy*", "nex-self"]  # a noted selector is starred
    bars = sorted((round(seg[0][0], 6), round(seg[1][0], 6)) for c in ax.collections for seg in c.get_segments())
    assert bars == [(0.35, 0.45), (0.55, 0.65)]  # the pooled intervals, not the range over caches
    dots = next(line for line in ax.lines if line.get_marker() == ".")
    assert sorted(dots.get_xdata()) == pytest.approx([0.3, 0.5, 0.5, 0.7])  # each cache's own accuracy
    assert legend_texts(ax) == ["each of 2 caches", "baseline (95% CI)", "NEX (95% CI)", "random"]
    caption = FIGURES["best_of_n"].caption(pooled_selection())
    assert "2 caches" in caption and "64 prompts" in caption and "* entropy: whole-trace mean" in caption
    with pytest.raises(NexError, match="no pooled rows"):
        F.plot_best_of_n(pooled_selection().query("cache != 'pooled'"))


# --- paste-ready: nothing clipped, a table and a caption beside every figure ---------------------

def ranking_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-variant scores and the ranking table as the demo wrote them: NEX under two calibrations, the
    self row first (the demo's numbers), pooled second, each with its own column of scores."""
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"variant": [f"variant-{i}" for i in range(6)], "accuracy": np.linspace(0.1, 0.8, 6),
                           "nex": rng.random(6), "nex[pooled]": rng.random(6), "entropy": rng.random(6),
                           "perplexity": rng.random(6), "self-certainty": rng.random(6)})
    ranking = pd.DataFrame({"score": ["nex", "nex", "entropy", "perplexity", "self-certainty"],
                            "calibration": ["self", "pooled", "", "", ""], "direction": [1, 1, -1, -1, 1],
                            "spearman": [-0.2016, -0.1369, 0.8, 0.7, -0.1],
                            "spearman_low": [-0.3607, -0.2575, 0.3, 0.1, -0.7],
                            "spearman_high": [-0.1751, -0.0147, 1.0, 1.0, 0.6],
                            "spearman_p": [0.6431, 0.5847, 0.0417, 0.0681, 0.5764]})
    return scores, ranking


def every_figure_tables() -> dict[str, tuple[pd.DataFrame, ...]]:
    """Tables for every registered figure, as a run writes them."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 2.5, 400)
    y = (rng.random(400) < 1 / (1 + np.exp(-(1 - 2 * (x - 1.5) ** 2)))).astype(float)
    fits, bins = inverted_u_table({"response": inverted_u(x, y),
                                   "variant": inverted_u(x[:12], 0.8 - 0.3 * (x[:12] - 1.5) ** 2)})
    scores, ranking = ranking_tables()
    # as the demo's caches give them: the reference example beside them, cycles from 0 to 21 per response
    position = np.linspace(0.05, 0.95, 10)
    curve = pd.concat([pd.DataFrame({"variant": v, "position": position, "q25": 1.0, "median": 2.0 - position,
                                     "q75": 3.0}) for v in ("v", "reference")])
    responses = pd.DataFrame({"variant": "v", "cycles": np.minimum(rng.poisson(6, 3000), 21),
                              "crediting_cycles": rng.poisson(3, 3000)})
    sweep = pd.DataFrame([{"window": w, "sparsifier": sp, "rho": 0.9, "min_run": 2, "split": 1, "spearman": v}
                          for w in (1, 4) for sp, v in (("topk:8", 0.4), ("topk:16", -0.2))])
    choice = pd.DataFrame([{"role": role, "window": 1, "sparsifier": "topk:8", "rho": 0.9, "min_run": 2,
                            "criterion": "spearman", "n_settings": 8, "spearman": 0.3, "spearman_low": -0.2,
                            "spearman_high": 0.7} for role in ("chosen on split 1", "pre-declared default")])
    pairs = pd.concat([transfer_table().assign(donor="expert-compute", recipient="task-arithmetic-0.3", n_prompts=500),
                       transfer_table().assign(donor="task-arithmetic-0.3", recipient="expert-compute", n_prompts=500)])
    weights = pd.DataFrame({"layer": [0, 0, 2, 3, 5], "weight": [0.5, -0.2, 0.7, -0.9, 0.1]})
    names = ["efficient", "redundant-0.1", "redundant-0.5", "under"]
    cross = pd.DataFrame([{"weights": w, "scored": v, "nex": 0.9 + 0.02 * i - 0.01 * j}
                          for i, w in enumerate(names) for j, v in enumerate(names)])
    predictions = pd.DataFrame({"id": ["design", "phases", "units", "entropy"], "value": [-1.0, 0.3, 0.55, 0.1],
                                "low": [-1.0, 0.2, 0.5, -0.4], "high": [-0.8, 0.4, 0.6, 0.6],
                                "predicted": ["<= -0.8", ">= 0.2", ">= 0.6", "none"],
                                "holds": ["yes", "yes", "NO", "reported"],
                                "p_method": ["exact over 40320 orders", "", "", ""]})
    units = pd.DataFrame({"scorer": ["nex-effective", "rows", "first-seen", "mask"],
                          "kind": ["label-free", "label-free story", "label-free story", "supervised"],
                          "auroc": [0.9, 0.8, 0.95, 0.5], "low": [0.85, 0.7, 0.9, 0.4], "high": [0.95, 0.85, 0.99, 0.6]})
    nulls = pd.concat([pd.DataFrame({"control": c, "draw": np.arange(50), "auroc": rng.normal(m, 0.02, 50),
                                     "observed": 0.9}) for c, m in (("shuffled", 0.6), ("reordered", 0.7),
                                                                    ("permuted", 0.88))], ignore_index=True)
    departures = pd.DataFrame([{"departure": d, "id": i, "value": v, "holds": "yes" if v > 0.5 else "NO", "detail": ""}
                               for d in ("reference", "skip_opening", "eff") for i, v in (("units", 0.9),
                                                                                          ("gmf-falls", 0.3))])
    scorer_rows = []
    for kind, supervised, base in (("nex-effective", False, 0.05), ("rows", False, 0.02), ("mask", True, 0.3),
                                   ("weight-difference", False, 0.2)):
        for k in (8, 24, 72, 154):
            share = min(1.0, base * np.log2(k))
            scorer_rows.append({"intervention": "transplant", "outcome": "greedy", "set_kind": kind, "k": k,
                                "set_size": k, "supervised": supervised, "share_of_ceiling": share,
                                "share_low": share - 0.1, "share_high": share + 0.1})
    scorer_rows.append({"intervention": "transplant", "outcome": "greedy", "set_kind": "truth", "k": 144,
                        "set_size": 144, "supervised": None, "share_of_ceiling": 0.97, "share_low": 0.9,
                        "share_high": 1.0})
    scorers = pd.DataFrame(scorer_rows)
    null_summary = pd.DataFrame({"intervention": "transplant", "outcome": "greedy", "k": [8, 24, 72, 154],
                                 "ceiling_delta": 0.4, "random_low": -0.01, "random_high": 0.02, "n_random": 20,
                                 "matched_low": -0.02, "matched_high": 0.03, "n_matched": 20})
    reuse = pd.DataFrame({"variant": ["v"] * 22 + ["reference"] * 22, "cycle": list(range(22)) * 2,
                          "median": np.r_[0.9 * 0.5 ** np.arange(22), 0.91 * 0.4 ** np.arange(22)],
                          "n": np.r_[np.arange(40, 18, -1), np.ones(22)]})
    return {"trace": (hand_trace(),), "profile": (curve, responses, reuse), "sweep": (sweep, choice),
            "inverted_u": (bins, fits), "nex_vs_accuracy": (scores, ranking), "best_of_n": (pooled_selection(),),
            "transfer": (pairs,), "ablation": (transfer_table().assign(n_prompts=200),),
            "neuron_weights": (weights,), "nex_cross": (cross,),
            "donor_ablation": (transfer_table().assign(n_prompts=200, donor="efficient"),),
            "positive_control": (predictions,), "positive_control_units": (units,),
            "positive_control_nulls": (nulls,), "positive_control_departures": (departures,),
            "transfer_scorers": (scorers, null_summary), "stop_frontier": (stop_pareto(),)}


def stop_pareto() -> pd.DataFrame:
    """A stop-rule sweep as the stop stage writes it: two variants (one without a planted detour), every rule at three
    settings."""
    rows = []
    for variant in ("scout:efficient", "scout:redundant-0.5"):
        rows.append({"rule": "none", "setting": np.nan, "split": "reported", "accuracy": 0.9, "token_share": 1.0,
                     "detour_cut": np.nan if variant == "scout:efficient" else 0.0, "useful_cut": 0.0,
                     "tokens": 800.0, "n_prompts": 64, "n_samples": 256, "variant": variant})
        for i, rule in enumerate(("nex-detour", "nex-gmf", "prune-agreement", "prune-gmf", "prune-random",
                                  "deepconf-online", "deer", "budget")):
            for share in (0.1, 0.5, 0.9):
                rows.append({"rule": rule, "setting": share, "split": "reported",
                             "accuracy": 0.9 - share * (0.2 + 0.05 * i), "token_share": 1 - share * 0.6,
                             "detour_cut": np.nan if variant == "scout:efficient" else min(1.0, share * (1 + 0.1 * i)),
                             "useful_cut": share * 0.4,
                             "tokens": 800 * (1 - share * 0.6), "n_prompts": 64, "n_samples": 256,
                             "variant": variant})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_reads_cleanly_nothing_cut_overlapping_or_crowded(name):
    tables = every_figure_tables()[name]
    fig = FIGURES[name].draw(*tables)
    assert F.layout_problems(fig) == []
    caption = FIGURES[name].caption(*tables)
    assert caption.endswith(".") and len(caption) > 80 and "nan" not in caption


def test_layout_problems_find_cut_overlapping_and_crowded_texts():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    ax = fig.add_subplot()
    ax.set_xlabel("a label far too long to fit inside a two-inch canvas, so it is cut at both edges")
    found = F.layout_problems(fig)
    assert any(p.startswith("cut: 'a label far too long") for p in found)
    assert any(p.startswith("cut: x-axis of panel 1") for p in found)
    fig.set_layout_engine("constrained")
    ax.set_xlabel("fits")
    assert F.layout_problems(fig) == []
    # the profile figure as it was: legends above neighbouring panels, wider than their panels
    fig = Figure(figsize=(F.DOUBLE, 2.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, labels in ((left, ["interquartile range", "median", "reference example, scaled"]),
                       (right, ["cycles", "crediting cycles", "median cycles 6"])):
        for label in labels:
            ax.plot([0, 1], [0, 1], label=label)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)
    found = F.layout_problems(fig)
    assert any(p.startswith("overlap: legend 'interquartile range'") and "legend 'cycles'" in p for p in found)
    assert any(p.startswith("drawing: constrained_layout not applied") for p in found)
    # an integer axis 0-21 squeezed into a narrow panel: its tick labels run together
    fig = Figure(figsize=(1.2, 1.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xticks(range(0, 22, 2))
    ax.set_xlim(-0.5, 21.5)
    assert any(p.startswith("crowded: x-axis of panel 1, '8' and '10'") for p in F.layout_problems(fig))


def test_inverted_u_fits_responses_logistically_over_the_data_range_only():
    bins, fits = every_figure_tables()["inverted_u"]
    assert fits.set_index("level")["link"].to_dict() == {"response": "logit", "variant": "identity"}
    fig = F.plot_inverted_u(bins, fits)
    for ax, level in zip(fig.axes, ("response", "variant")):
        curve = next(line for line in ax.lines if len(line.get_xdata()) == 200)
        part = bins[bins["level"] == level]
        assert curve.get_xdata().min() >= part["proxy_low"].min() and curve.get_xdata().max() <= part["proxy_high"].max()
        assert 0 <= curve.get_ydata().min() and curve.get_ydata().max() <= 1
        assert any("inverted U" in t for t in legend_texts(ax))
    caption = FIGURES["inverted_u"].caption(bins, fits)
    assert "logistic regression" in caption and "bends as an inverted U" in caption


def test_make_figures_writes_each_figures_table_and_caption_and_the_report_prints_it(tmp_path):
    from nex_causal.run.report import write_report

    run = tmp_path / "run"
    write_table(pooled_selection(), run / "tables" / "selection")
    paths = F.make_figures(run, names=["best_of_n"])
    out = run / "figures"
    assert sorted(p.name for p in out.iterdir()) == ["best_of_n.caption.txt", "best_of_n.csv", "best_of_n.json",
                                                     "best_of_n.pdf", "best_of_n.png"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "best_of_n.csv", keep_default_na=False), pooled_selection(),
                                  check_dtype=False)
    caption = (out / "best_of_n.caption.txt").read_text().strip()
    report = write_report(run, paths).read_text()
    assert "![best_of_n](figures/best_of_n.png)" in report and f"*Figure best_of_n.* {caption}" in report


def test_the_reports_selection_table_carries_intervals_for_one_cache_and_for_the_pool(tmp_path):
    from nex_causal.run.report import headline_tables

    title = "Best-of-N accuracy per selector and variant"
    write_table(pooled_selection(), tmp_path / "tables" / "selection")
    table = headline_tables(tmp_path)[title]
    assert table.columns.tolist() == ["selector", "pooled [95% CI]", "a", "b", "note"]
    assert table["selector"].tolist() == ["nex-self", "random", "entropy"]  # by pooled accuracy
    assert table["pooled [95% CI]"].iloc[0] == "+0.600 [+0.550, +0.650]"
    write_table(pooled_selection().query("cache == 'a'"), tmp_path / "tables" / "selection")
    table = headline_tables(tmp_path)[title]
    assert table.columns.tolist() == ["selector", "accuracy [95% CI]"]
    assert table["accuracy [95% CI]"].tolist()[0] == "+0.500 [+0.400, +0.600]"


def test_the_reports_predictions_say_what_the_stage_judged(tmp_path):
    """A failed prediction reads NO and one without a bound "reported": the verdict is a string, never truthy."""
    from nex_causal.run.report import headline_tables

    control = pd.DataFrame({
        "id": ["a", "b", "c"], "prediction": ["x", "y", "z"], "predicted": [">= 0.6", "<= -0.4", ""],
        "value": [0.8, -0.07, 0.75], "low": [0.7, -0.38, 0.73], "high": [0.9, 0.19, 0.77],
        "p": [np.nan, 0.441, 6e-05], "p_method": ["", "exact over 40320 orders", "Monte Carlo, 200000 random orders"],
        "holds": ["yes", "NO", "reported"], "detail": ["", "", ""]})
    write_table(control, tmp_path / "tables" / "positive_control")
    table = headline_tables(tmp_path)["Positive control: the predictions written before the run, as measured"]
    assert table["holds"].tolist() == ["yes", "NO", "reported"]
    assert table["p"].tolist() == ["", "0.44 (exact over 40320 orders)", "6e-05 (Monte Carlo, 200000 random orders)"]
    assert table["measured [95% CI]"].tolist()[1] == "-0.070 [-0.380, +0.190]"


# --- figures say what the tables say: every printed statistic equals its table row ------------------

NUMBER = re.compile(r"[+\-−]?\d+(?:\.\d+)?(?:e[+\-]\d+)?")


def printed(text: str) -> list[str]:
    """The numbers in ``text`` as printed (a leading sign or Unicode minus kept)."""
    return NUMBER.findall(text)


def says(token: str, value: float) -> bool:
    """Whether the printed ``token`` is ``value`` to the precision it was printed with."""
    token = token.replace("−", "-")
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return abs(float(token) - value) <= 0.5 * 10.0 ** (int(exponent or 0) - decimals) * (1 + 1e-9)


def test_score_panels_print_the_ranking_row_of_the_column_they_draw():
    scores, ranking = ranking_tables()
    rows = {("nex" if c == "self" else f"nex[{c}]" if c else s): r for s, c, r in
            zip(ranking["score"], ranking["calibration"], ranking.itertuples())}
    fig = F.plot_scores_vs_accuracy(scores, ranking)
    for ax in (ax for ax in fig.axes if ax.get_visible()):
        drawn = ax.lines[0].get_xdata()
        column = next(c for c in rows if np.allclose(np.abs(drawn), np.abs(scores[c])))  # identified by its points
        row = rows[column]
        (legend,) = legend_texts(ax)
        assert len(printed(legend)) == 4, legend
        for token, value in zip(printed(legend), (row.spearman, row.spearman_low, row.spearman_high, row.spearman_p)):
            assert says(token, value), (column, legend, value)
        if row.calibration:
            assert {"self": "self-calibrated", "pooled": "pooled calibration"}[row.calibration] in ax.get_xlabel()
    caption = FIGURES["nex_vs_accuracy"].caption(scores, ranking)
    assert printed(caption) == [str(len(scores)), "95"]  # n variants, and the level


def test_inverted_u_prints_its_fit_table_in_legends_and_caption():
    bins, fits = every_figure_tables()["inverted_u"]
    fig = F.plot_inverted_u(bins, fits)
    caption = FIGURES["inverted_u"].caption(bins, fits)
    for ax in fig.axes:
        level = ax.get_title().removeprefix("per ")
        fit = fits.set_index("level").loc[level]
        legend = next(t for t in legend_texts(ax) if "fit" in t)
        assert [says(t, v) for t, v in zip(printed(legend), (fit.peak, fit.t_quadratic, fit.p_quadratic))] == [True] * 3
        assert len(printed(legend)) == 3
        part = caption.split(f"Per {level}: ")[1].split("Per ")[0]
        assert [says(t, v) for t, v in zip(printed(part), (fit.n, fit.t_quadratic, fit.p_quadratic, fit.peak))] \
            == [True] * 4


def test_best_of_n_prints_the_selection_tables_counts():
    selection = pooled_selection()
    fig = F.plot_best_of_n(selection)
    caption = FIGURES["best_of_n"].caption(selection)
    n_caches = selection.loc[selection["cache"] != "pooled", "cache"].nunique()
    n_prompts = selection.loc[selection["cache"] == "pooled", "n_prompts"].max()
    assert printed(legend_texts(fig.axes[0])[0]) == [str(n_caches)] and "each of" in legend_texts(fig.axes[0])[0]
    assert printed(caption) == [str(n_caches), str(n_prompts), "95"]
