"""Stop rules evaluated: accuracy against tokens generated over each rule's sweep, and tokens saved at matched accuracy.

Every rule is run offline on two caches of one model (``selectors.stopped``): the
calibration prompts', which alone set its cutoffs and pick its operating point, and the
reported prompts', on which everything is measured. A trace rule's sweep is a list of
shares (each cutoff stops that share of the calibration traces that reach a decision
point, ``stopping.cutoff``); a group rule's is the number of rows written before pruning.

``pareto_table``: one row per rule, setting and split (calibration or reported) with the
majority-vote accuracy over prompts, the mean correctness of the samples, the tokens
generated per prompt, their share of the full generation's, the share of traces stopped,
and, where the task records ground truth (scout), the share of the planted detour tokens
cut and the share of the other (useful) tokens cut; the full generation is rule ``none``.

``matched_table``: per rule, the operating point chosen on the calibration prompts (the
setting that generates fewest tokens there while its accuracy is at most ``tolerance``
below the full generation's; none when no setting is), and on the reported prompts the
tokens saved against full generation, the change of accuracy, and the detour and useful
shares cut, each with a BCa interval over the reported prompts (one resample shared by all
rules, ``nex_causal.stats.bootstrap``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from nex_causal.errors import NexError
from nex_causal.selectors.config import StopConfig
from nex_causal.selectors.stopped import (
    Cut,
    Traces,
    extremes,
    first_crossing,
    group_cuts,
    outcome,
    points,
)
from nex_causal.selectors.stopping import STOP_RULES, Calibrated, cutoff
from nex_causal.stats import bootstrap

SPLITS = ("calibration", "reported")
NONE = "none"  # the full generation's rule name in the tables
MEASURES = ("tokens_saved", "accuracy_change", "detour_cut", "useful_cut")


def sweep(name: str, cal: Traces, rep: Traces, calibrated: Calibrated, config: StopConfig
          ) -> list[tuple[float, float, dict[str, dict[int, Cut]]]]:
    """Each setting of rule ``name``'s sweep: (setting, cutoff, the cuts on each split)."""
    rule = STOP_RULES[name]
    if rule.group:
        return [(float(m), float(m), {"calibration": group_cuts(cal, rule, calibrated, m),
                                      "reported": group_cuts(rep, rule, calibrated, m)}) for m in config.prune_rows]
    found = {"calibration": points(cal, rule, calibrated), "reported": points(rep, rule, calibrated)}
    if not np.isfinite(extremes(rule, found["calibration"])).any():
        return []  # no calibration trace reaches a decision point (DeepConf's window longer than every trace)
    out = []
    for share in config.shares:
        k = cutoff(rule, extremes(rule, found["calibration"]), share)
        out.append((float(share), k, {split: first_crossing(t, rule, found[split], k)
                                      for split, t in zip(SPLITS, (cal, rep))}))
    return out


def summary(per_prompt: pd.DataFrame, full: pd.DataFrame) -> dict:
    """One setting's row of the Pareto table from its per-prompt outcome (``stopped.outcome``) and the full one's."""
    total = float(per_prompt["tokens"].sum())
    return {"accuracy": float(per_prompt["accuracy"].mean()),
            "sample_accuracy": float(per_prompt["sample_accuracy"].mean()),
            "tokens": total / len(per_prompt), "token_share": total / float(full["tokens"].sum()),
            "stopped": float(per_prompt["stopped"].sum()),
            "detour_cut": _share(per_prompt["detour_cut"].sum(), per_prompt["detour"].sum()),
            "useful_cut": _share(per_prompt["useful_cut"].sum(), per_prompt["useful"].sum()),
            "n_prompts": len(per_prompt)}


def _share(part: float, whole: float) -> float:
    return float(part) / float(whole) if whole > 0 else float("nan")


def evaluate(cal: Traces, rep: Traces, calibrated: Calibrated, config: StopConfig, *, rules: Sequence[str] | None = None
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Pareto table and the matched-accuracy table (module docstring) of ``rules`` (default: the config's,
    else every registered rule)."""
    check_pair(cal, rep)
    names = list(rules or config.rules or STOP_RULES)
    for name in names:
        STOP_RULES[name]  # an unknown name fails here, before any work
    full = {"calibration": outcome(cal, {}), "reported": outcome(rep, {})}
    n_samples = {split: len(t.n_tokens) for split, t in zip(SPLITS, (cal, rep))}
    rows = [{"rule": NONE, "setting": np.nan, "cutoff": np.nan, "split": split,
             **summary(full[split], full[split]), "stopped": 0.0, "n_samples": n_samples[split]} for split in SPLITS]
    per_prompt: dict[tuple[str, float], pd.DataFrame] = {}
    for name in names:
        for setting, k, cuts in sweep(name, cal, rep, calibrated, config):
            for split, traces in zip(SPLITS, (cal, rep)):
                got = outcome(traces, cuts[split])
                row = summary(got, full[split])
                rows.append({"rule": name, "setting": setting, "cutoff": k, "split": split, **row,
                             "stopped": row["stopped"] / n_samples[split], "n_samples": n_samples[split]})
                if split == "reported":
                    per_prompt[(name, setting)] = got
    pareto = pd.DataFrame(rows)
    pareto.insert(1, "unit", pareto["rule"].map(lambda n: STOP_RULES[n].unit if n != NONE else ""))
    return pareto, matched(pareto, per_prompt, full["reported"], config, names)


def operating_point(pareto: pd.DataFrame, name: str, tolerance: float) -> pd.Series | None:
    """Rule ``name``'s setting chosen on the calibration prompts: fewest tokens among those whose accuracy is at most
    ``tolerance`` below the full generation's (ties: the first in the sweep); None when none is."""
    cal = pareto[pareto["split"] == "calibration"]
    floor = float(cal.loc[cal["rule"] == NONE, "accuracy"].iloc[0]) - tolerance
    ok = cal[(cal["rule"] == name) & (cal["accuracy"] >= floor - 1e-12)]
    return None if ok.empty else ok.loc[ok["tokens"].idxmin()]


def matched(pareto: pd.DataFrame, per_prompt: dict[tuple[str, float], pd.DataFrame], full: pd.DataFrame,
            config: StopConfig, names: Sequence[str]) -> pd.DataFrame:
    """Per rule at its operating point: tokens saved, accuracy change, detour and useful shares cut on the reported
    prompts, each with its interval (one bootstrap resample of prompts shared by every rule)."""
    chosen = {name: operating_point(pareto, name, config.tolerance) for name in names}
    picked = [name for name in names if chosen[name] is not None]
    columns = ["tokens", "accuracy", "detour", "detour_cut", "useful", "useful_cut"]
    base = full[columns].to_numpy(np.float64)  # [P, 6]
    runs = [per_prompt[(name, float(chosen[name]["setting"]))][columns].to_numpy(np.float64) for name in picked]

    def statistic(counts: np.ndarray) -> np.ndarray:
        counts = counts.astype(np.float64)
        f = counts @ base  # [B, 6]
        out = []
        with np.errstate(invalid="ignore", divide="ignore"):
            for run in runs:
                s = counts @ run
                out.append(np.stack([1.0 - s[:, 0] / f[:, 0], (s[:, 1] - f[:, 1]) / counts.sum(axis=1),
                                     s[:, 3] / s[:, 2], s[:, 5] / s[:, 4]], axis=1))
        return np.concatenate(out, axis=1) if out else np.zeros((len(counts), 0))

    rows = []
    if picked:
        ci = bootstrap(statistic, len(full), n_boot=config.n_boot, level=config.level, seed=config.seed)
        est, low, high = (np.asarray(a).reshape(len(picked), len(MEASURES)) for a in (ci.estimate, ci.low, ci.high))
    for name in names:
        row: dict = {"rule": name, "unit": STOP_RULES[name].unit, "nex": STOP_RULES[name].nex}
        if chosen[name] is None:
            swept = (pareto["rule"] == name).any()
            rows.append({**row, "setting": np.nan, "cutoff": np.nan,
                         "note": "no setting keeps the calibration accuracy within the tolerance" if swept else
                                 "no calibration trace reaches a decision point of this rule"})
            continue
        j = picked.index(name)
        row.update(setting=float(chosen[name]["setting"]), cutoff=float(chosen[name]["cutoff"]), note="")
        for m, measure in enumerate(MEASURES):
            row.update({measure: est[j, m], f"{measure}_low": low[j, m], f"{measure}_high": high[j, m]})
        rows.append(row)
    table = pd.DataFrame(rows)
    table["n_prompts"], table["level"], table["tolerance"] = len(full), config.level, config.tolerance
    return table


def check_pair(cal: Traces, rep: Traces) -> None:
    """The calibration and reported caches share no prompt (cutoffs never see a reported prompt)."""
    shared = set(cal.responses["prompt_id"]) & set(rep.responses["prompt_id"])
    if shared:
        raise NexError(f"the calibration cache shares {len(shared)} prompts with the reported one (e.g. "
                       f"{sorted(shared)[0]}): calibrate on other prompts (another task seed)")


def evaluate_caches(calibration: str, reported: str, calibration_tasks, reported_tasks, bridge, config: StopConfig,
                    nex, *, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``evaluate`` on two caches of the model ``bridge`` holds (captured stepwise, or replayed where replay gives the
    bridge's activations bit for bit): NEX calibrated on the calibration cache, trial answers decoded by the model."""
    import dataclasses

    from nex_causal.cache import SparseCache
    from nex_causal.capture.probes import probe_traces
    from nex_causal.selectors.config import StopSettings
    from nex_causal.selectors.stopping import calibrate

    names = list(config.rules or STOP_RULES)
    settings = StopSettings(**{f.name: getattr(config, f.name) for f in dataclasses.fields(StopSettings)})
    probing = any("probe" in STOP_RULES[n].reads for n in names)

    def decode(ids: Sequence[int]) -> str:
        return bridge.tokenizer.decode(list(ids), skip_special_tokens=True)

    def traces(path: str, tasks) -> Traces:
        cache = SparseCache.open(path)
        probes = (probe_traces(bridge, cache.responses, tasks.answer_prefix, tasks.extract, every=settings.probe_every,
                               max_tokens=settings.probe_tokens) if probing else None)
        return Traces(cache, tasks, decode, probes, bridge, settings.probe_tokens)

    cal, rep = traces(calibration, calibration_tasks), traces(reported, reported_tasks)
    calibrated = (calibrate(cal.cache, settings, nex, progress=progress) if any(STOP_RULES[n].nex for n in names)
                  else Calibrated(settings, nex))
    return evaluate(cal, rep, calibrated, config, rules=names)
