"""A run's Markdown report: the headline tables and the figures, readable on GitHub or locally."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from nex_causal.io import atomic_path
from nex_causal.selectors import POOLED


def _table(run_dir: Path, name: str) -> pd.DataFrame | None:
    path = run_dir / "tables" / f"{name}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def _family(run_dir: Path) -> pd.DataFrame | None:
    """The family table of the run's family stage, if it ran."""
    stamp = run_dir / "stages" / "family.json"
    if not stamp.exists():
        return None
    family = Path(json.loads(stamp.read_text())["outputs"]["family_dir"]) / "family.csv"
    return pd.read_csv(family) if family.exists() else None


def _with_ci(df: pd.DataFrame, column: str, low: str, high: str) -> pd.Series:
    return df.apply(lambda r: "n/a" if pd.isna(r[column]) else f"{r[column]:+.3f} [{r[low]:+.3f}, {r[high]:+.3f}]",
                    axis=1)


def _markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".3f")


def degenerate_findings(run_dir: str | Path) -> list[str]:
    """The results of a run that are degenerate rather than findings, one line each.

    A family whose every variant scores 0, caches where not one sampled response is correct
    (the oracle is 0), NEX weights without an effective or without a redundant neuron, and
    transfer or ablation sets that came out empty: each makes the tables built on it
    meaningless, whatever their numbers.
    """
    run_dir = Path(run_dir)
    found = []
    if (table := _family(run_dir)) is not None:
        if "accuracy" in table and (table["accuracy"] == 0).all():
            found.append(f"every variant of the family ({len(table)}) has accuracy 0: the stack computes "
                         "garbage or the task is unsolved; run `nex-causal doctor`")
    if (sel := _table(run_dir, "selection")) is not None:
        oracle = sel[(sel["selector"] == "oracle") & (sel["status"] == "ok") & (sel["cache"] != POOLED)]
        zero = oracle[oracle["accuracy"] == 0]
        if len(zero):
            found.append(f"oracle accuracy is 0 on {len(zero)} of {len(oracle)} caches "
                         f"({', '.join(map(str, zero['cache'][:4]))}{', ...' if len(zero) > 4 else ''}): no sampled "
                         "response is correct, so no selector can be judged there")
    if (nex := _table(run_dir, "nex")) is not None:
        for column, kind in (("n_effective", "effective"), ("n_redundant", "redundant")):
            none = nex.loc[nex[column] == 0, "variant"].astype(str).tolist()
            if none:
                found.append(f"NEX credited no {kind} neuron in {len(none)} of {len(nex)} variants "
                             f"({', '.join(none[:4])}{', ...' if len(none) > 4 else ''}): their traces hold no "
                             "crediting cycle (see `nex-causal inspect`)")
    for name in ("transfer", "ablate"):
        if (grid := _table(run_dir, name)) is not None:
            empty = grid[grid["set_kind"].isin(["effective", "redundant"]) & (grid["set_size"] == 0)]
            if len(empty):
                cells = sorted({f"{r.set_kind} k={r.k}" for r in empty.itertuples()})
                found.append(f"the {name} grid ran on empty neuron sets ({', '.join(cells)}): its gaps compare "
                             "the untouched model with itself")
    return found


def headline_tables(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The report's tables, by section title, built from the run's result tables."""
    run_dir = Path(run_dir)
    out: dict[str, pd.DataFrame] = {}
    if (family := _family(run_dir)) is not None and "accuracy" in family:
        columns = [c for c in ("name", "method", "accuracy", "accuracy_search", "accuracy_compute", "n_eval")
                   if c in family]
        out["The family: greedy accuracy of each variant"] = family[columns]
    if (control := _table(run_dir, "positive_control")) is not None:
        table = control[["id", "prediction", "predicted"]].copy()
        table["measured [95% CI]"] = control.apply(
            lambda r: f"{r.value:+.3f}" + ("" if pd.isna(r.low) else f" [{r.low:+.3f}, {r.high:+.3f}]"), axis=1)
        if "p" in control:
            table["p"] = control.apply(lambda r: "" if pd.isna(r.p) else f"{r.p:.2g} ({r.p_method})", axis=1)
        table["holds"] = control["holds"]  # yes / NO / reported, as the stage judged it (``Prediction.verdict``)
        table["detail"] = control["detail"]
        out["Positive control: the predictions written before the run, as measured"] = table
    if (variants := _table(run_dir, "positive_control_variants")) is not None:
        out["Positive control: each variant against the ground truth"] = variants[
            ["variant", "p", "accuracy", "answered", "loop_rate", "nex", "strategies_opened", "phase_kappa",
             "unit_auroc", "opening_eff_share"]]
    if (nex := _table(run_dir, "nex")) is not None:
        out["NEX per variant (self-calibrated)"] = nex[
            ["variant", "nex_score", "log_gap", "n_scored_responses", "n_effective", "n_redundant"]]
    if (sel := _table(run_dir, "selection")) is not None:
        ok = sel[sel["status"] == "ok"]
        pivot = ok[ok["cache"] != POOLED].pivot_table(index="selector", columns="cache", values="accuracy", sort=False)
        pooled = ok[ok["cache"] == POOLED].set_index("selector")
        single = ok[ok["cache"] != POOLED].set_index("selector") if ok["cache"].nunique() == 1 else None
        if len(pooled) or single is not None:
            rows = pooled if len(pooled) else single
            title = "pooled [95% CI]" if len(pooled) else "accuracy [95% CI]"
            pivot.insert(0, title, _with_ci(rows, "accuracy", "ci_low", "ci_high").reindex(pivot.index))
            order = rows["accuracy"].reindex(pivot.index)
            if single is not None:  # one cache: its column would repeat the interval's estimate
                pivot = pivot[[title]]
        else:
            order = pivot.mean(axis=1)
        table = pivot.loc[order.sort_values(ascending=False).index].reset_index()
        notes = sel[sel["note"].astype(str).ne("")].drop_duplicates("selector") if "note" in sel else sel.iloc[:0]
        if len(notes):
            table["note"] = table["selector"].map(dict(zip(notes["selector"], notes["note"]))).fillna("")
        out["Best-of-N accuracy per selector and variant"] = table
    if (rank := _table(run_dir, "ranking")) is not None:
        ok = rank[rank["status"] == "ok"].copy()
        table = ok[["score"]].copy()
        if "calibration" in ok:  # NEX's calibration protocol: self is the authors'
            table["calibration"] = ok["calibration"].replace("", "-")
        for metric in ("spearman", "kendall", "top1", "regret"):
            table[f"{metric} [95% CI]"] = _with_ci(ok, metric, f"{metric}_low", f"{metric}_high").to_numpy()
        out["Ranking the family: agreement with accuracy"] = table
    if (scorers := _table(run_dir, "transfer_scorers")) is not None:
        out["Transfer: every unit scorer's share of the ceiling"] = scorer_report(scorers)
    for name, title in (("transfer_summary", "Transfer: effective vs redundant vs random"),
                        ("donor_ablation_summary", "The same sets ablated inside each donor"),
                        ("ablate_summary", "Ablation: effective vs redundant vs random")):
        if (summary := _table(run_dir, name)) is not None:
            out[title] = gap_table(summary)
    if (pooled := _table(run_dir, "transfer_pairs")) is not None:
        table = pooled[["intervention", "dose", "outcome", "n_pairs", "n_prompts"]].copy()
        for gap in ("effective_minus_random", "effective_minus_matched", "effective_minus_redundant"):
            if gap in pooled:
                table[f"{gap.replace('effective_minus_', 'eff - ')} [95% CI]"] = _with_ci(
                    pooled, gap, f"{gap}_low", f"{gap}_high").to_numpy()
        for column, title in (("pairs_beating_random", "pairs with p < 0.05"),
                              ("pairs_beating_matched", "pairs with p < 0.05 (matched)"),
                              ("pairs_positive_control_moved", "pairs whose positive control moved")):
            if column in pooled:
                table[title] = pooled[column]
        out["Transfer pooled over pairs"] = table
    return out


def scorer_report(scorers: pd.DataFrame) -> pd.DataFrame:
    """The scorers' table as read: per pair, outcome and scorer, the share of the ceiling at each dose with its
    interval, the p-value against the matched null, and (where the truth is known) the share of the set that is
    planted."""
    keys = [c for c in ("donor", "recipient") if c in scorers]
    table = scorers[[*keys, "intervention", "outcome", "set_kind", "dose", "set_size"]].copy()
    table["kind"] = scorers["supervised"].map({True: "supervised", False: "label-free"}).fillna("set")
    table["share of ceiling [95% CI]"] = _with_ci(scorers, "share_of_ceiling", "share_low", "share_high").to_numpy()
    for column, title in (("p_value", "p (vs random)"), ("p_value_matched", "p (vs matched)"),
                          ("truth_precision", "planted share")):
        if column in scorers:
            table[title] = scorers[column]
    return table


def gap_table(summary: pd.DataFrame) -> pd.DataFrame:
    """A grid summary as read: per pair, intervention, dose and outcome NEX's changes, gaps with intervals,
    p-values against both random nulls and the redundant set, the minimum detectable effect, what the positive
    control and the ceilings did, and the verdict on whether the test can see at this dose."""
    keys = [c for c in ("donor", "recipient") if c in summary]
    table = summary[[*keys, "intervention", "dose", "outcome", "n_prompts",
                     *(c for c in ("effective_delta", "redundant_delta") if c in summary)]].copy()
    for kind, p in (("random", "p_value"), ("matched", "p_value_matched")):
        if f"{kind}_delta" in summary:
            table[f"n_{kind}"] = summary[f"n_{kind}"]
            table[f"{kind}_delta"] = summary[f"{kind}_delta"]
            if f"effective_minus_{kind}" in summary:
                table[f"eff - {kind} [95% CI]"] = _with_ci(summary, f"effective_minus_{kind}",
                                                           f"effective_minus_{kind}_low",
                                                           f"effective_minus_{kind}_high").to_numpy()
                table[f"p (vs {kind})"] = summary[p]
    if "mde" in summary:
        table["mde"] = summary["mde"]
    if "effective_minus_redundant" in summary:
        table["eff - redundant [95% CI]"] = _with_ci(summary, "effective_minus_redundant",
                                                     "effective_minus_redundant_low",
                                                     "effective_minus_redundant_high").to_numpy()
        table["p (vs redundant)"] = summary["p_value_redundant"]
    if "positive_control_delta" in summary:
        name = summary["positive_control"].dropna().iloc[0]
        table[f"positive control ({name}) [95% CI]"] = _with_ci(summary, "positive_control_delta",
                                                                "positive_control_low",
                                                                "positive_control_high").to_numpy()
    for part in ("", "_attention", "_embeddings", "_norms"):
        if f"ceiling{part}_delta" in summary:
            title = f"ceiling{part.replace('_', ' ')}" if part else "ceiling (MLP)"
            table[f"{title} [95% CI]"] = _with_ci(summary, f"ceiling{part}_delta", f"ceiling{part}_low",
                                                  f"ceiling{part}_high").to_numpy()
    if "effective_share_of_ceiling" in summary:
        table["eff / ceiling"] = summary["effective_share_of_ceiling"]
    if "verdict" in summary:
        table["verdict"] = summary["verdict"].map(lambda v: v if v == "informative" else "test cannot see")
    return table


def write_report(run_dir: str | Path, figures: Sequence[Path] = (),
                 skipped: dict[str, str] | None = None) -> Path:
    """Write ``report.md`` into ``run_dir`` and return its path."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
    config = manifest.get("config", {})
    lines = [f"# nex_causal run: {config.get('name', run_dir.name)}", ""]
    if warnings := degenerate_findings(run_dir):
        lines += ["> **Warning: degenerate results.** These tables are not findings:", ">"]
        lines += [f"> - {w}" for w in warnings] + [""]
    if config:
        lines += [f"Family `{config.get('family')}` (zoo seed {config.get('zoo_seed')}), tasks "
                  f"`{config.get('tasks')}`, capture `{json.dumps(config.get('capture'))}`, "
                  f"NEX `{json.dumps(config.get('nex'))}`.", ""]
    for title, table in headline_tables(run_dir).items():
        lines += [f"## {title}", "", _markdown(table), ""]
    pngs = [f for f in figures if f.suffix == ".png"]
    if pngs:
        lines += ["## Figures", ""]
        for f in pngs:
            caption = f.with_name(f"{f.stem}.caption.txt")
            lines += [f"![{f.stem}]({f.relative_to(run_dir).as_posix()})", ""]
            if caption.exists():
                lines += [f"*Figure {f.stem}.* {caption.read_text().strip()}", ""]
    lines += [f"- figure `{name}` not drawn: {why}" for name, why in (skipped or {}).items()]
    versions = manifest.get("versions", {})
    if versions:
        lines += ["## Provenance", "", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())), ""]
    path = run_dir / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path
