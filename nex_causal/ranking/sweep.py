"""An honest settings sweep: which capture window, sparsifier and HMM settings let NEX read a family.

From one token-level cache per variant (captured with ``window 1`` and the loosest
sparsifier), every setting's caches are derived without the model (``nex_causal.capture.rewindow``),
and for each (window, sparsifier, rho, min_run) NEX is self-calibrated on every variant and
judged two ways: its ranking of the family against accuracy (Spearman, Kendall, top-1 hit,
regret) and its Best-of-N pick (nex-self), each with a bootstrap interval over prompts, beside
the profile's medians (``nex_causal.nex.profile``).

Honest by construction: the prompts are split in two by a hash of their ids; the setting is
chosen on split 1 by ``criterion`` among the eligible settings (those where NEX can read the
cache: ``min_crediting_cycles`` and ``max_coverage``, declared beforehand) and reported on
split 2, beside the pre-declared default's split-2 result and, when the floor excluded it, the
best ineligible setting's; the tables say how many settings were tried.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nex_causal.cache import CAPTURE_FILE, SparseCache
from nex_causal.capture.rewindow import rewindow
from nex_causal.errors import NexError
from nex_causal.io import check_name
from nex_causal.nex import NexConfig, learn, score_responses
from nex_causal.nex.calibration import prompt_split
from nex_causal.nex.profile import profile_of
from nex_causal.ranking.agreement import METRICS, agreement, family_accuracy
from nex_causal.ranking.config import SweepConfig
from nex_causal.resume import discard_stale
from nex_causal.selectors.pool import Pool
from nex_causal.stats import bootstrap

PROFILE_COLUMNS = ("rows_per_response", "neuron_coverage", "cycles_per_response", "crediting_cycles_per_response",
                   "crediting_response_share", "novelty_decay")


def derived_caches(token_caches: dict[str, Path], work: Path, window: int, sparsifier: str,
                   progress: bool) -> dict[str, SparseCache]:
    """Each variant's cache at ``window`` and ``sparsifier``, derived once and reused while current."""
    out = {}
    for variant, source in token_caches.items():
        target = work / f"w{window}-{sparsifier.replace(':', '')}" / variant
        info = SparseCache.open(source).capture_info
        wanted = {**info["config"], "window": window, "sparsifier": sparsifier}
        discard_stale(target, wanted, stamp_file=CAPTURE_FILE, root=work)
        out[variant] = SparseCache.open(target) if target.exists() else rewindow(
            source, target, window=window, sparsifier=sparsifier, progress=False)
    return out


@dataclass(frozen=True)
class Scored:
    """One variant under one setting: per-prompt sums of GMF and counts, the nex-self pick, and the profile."""

    gmf_sum: np.ndarray
    gmf_count: np.ndarray
    picked_correct: np.ndarray
    profile: dict


def score_variant(cache: SparseCache, config: NexConfig, prompts: pd.Index) -> Scored:
    """NEX self-calibrated on ``cache``, per prompt of ``prompts`` (in that order)."""
    cal = learn(cache, config, progress=False)
    gmf = score_responses(cache, cal.weights, progress=False).astype(np.float64)
    pool = Pool.from_cache(cache)
    index = pool.prompt_ids.get_indexer(prompts)
    finite = np.isfinite(gmf)
    sums = np.array([gmf[g][finite[g]].sum() for g in pool.groups])[index]
    counts = np.array([finite[g].sum() for g in pool.groups], np.float64)[index]
    picks = np.array([pool.correct[g][int(np.argmax(np.where(np.isnan(gmf[g]), -np.inf, gmf[g])))]
                      for g in pool.groups], np.float64)[index]
    medians = profile_of(cache, cal).medians
    return Scored(sums, counts, picks, {k: medians[k] for k in PROFILE_COLUMNS})


def judge(scored: dict[str, Scored], accuracy: np.ndarray, mask: np.ndarray, config: SweepConfig) -> dict:
    """Ranking agreement and nex-self Best-of-N on the prompts in ``mask``, with bootstrap intervals."""
    num = np.stack([s.gmf_sum[mask] for s in scored.values()], axis=1)
    den = np.stack([s.gmf_count[mask] for s in scored.values()], axis=1)
    picked = np.stack([s.picked_correct[mask] for s in scored.values()], axis=1).mean(axis=1)

    def statistic(counts: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            nex = (counts @ num) / (counts @ den)
        rows = agreement(nex, np.broadcast_to(accuracy, nex.shape))
        return np.column_stack([rows, counts @ picked / counts.sum(axis=1)])

    ci = bootstrap(statistic, int(mask.sum()), n_boot=config.n_boot, seed=config.seed)
    out = {"n_prompts": int(mask.sum())}
    for j, name in enumerate([*METRICS, "best_of_n"]):
        out[name], out[f"{name}_low"], out[f"{name}_high"] = (float(ci.estimate[j]), float(ci.low[j]),
                                                              float(ci.high[j]))
    return out


def run_sweep(family: pd.DataFrame, caches: str | Path, config: SweepConfig, work: str | Path, *,
              progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sweep ``config``'s settings over the token-level caches ``caches/<variant>/`` of ``family``.

    Returns the ``sweep`` table (one row per setting and split) and ``sweep_choice`` (the
    chosen setting and the declared default, each on split 2, with the number of settings tried).
    """
    caches, work = Path(caches), Path(work)
    names = [n for n in family["name"].astype(str) if (caches / check_name(n, "variant")).is_dir()]
    if len(names) < 2:
        raise NexError(f"the sweep needs token-level caches of at least two variants under {caches}")
    tokens = {n: caches / n for n in names}
    for name, path in tokens.items():
        info = SparseCache.open(path).capture_info or {}
        if info.get("config", {}).get("window") != 1:
            raise NexError(f"{path} is not a token-level cache (window {info.get('config', {}).get('window')}): "
                           "the sweep derives every window from captures with window 1")
    if config.accuracy == "family":
        acc = family_accuracy(family)
        accuracy = np.array([acc[n] for n in names], np.float64)
    else:
        accuracy = np.array([Pool.from_cache(SparseCache.open(p)).correct.mean() for p in tokens.values()])
    prompts = Pool.from_cache(SparseCache.open(tokens[names[0]])).prompt_ids
    split = prompt_split(prompts, config.seed)
    settings = config.settings()
    default = config.default_setting()
    if default not in settings:
        settings.append(default)
    rows = []
    bar = tqdm(total=len(settings), desc="sweep", unit="setting", disable=not progress)
    for (window, sparsifier), group in itertools.groupby(sorted(settings, key=lambda s: (s["window"], s["sparsifier"])),
                                                         key=lambda s: (s["window"], s["sparsifier"])):
        derived = derived_caches(tokens, work, window, sparsifier, progress)
        for setting in group:
            nex = NexConfig(rho=setting["rho"], min_run=setting["min_run"])
            scored = {n: score_variant(derived[n], nex, prompts) for n in names}
            profile = {k: float(np.median([s.profile[k] for s in scored.values()])) for k in PROFILE_COLUMNS}
            for part in (1, 2):
                rows.append({**setting, "split": part, **judge(scored, accuracy, split == part, config), **profile,
                             "default": setting == default})
            bar.update(1)
    bar.close()
    table = pd.DataFrame(rows)
    table["eligible"] = ((table["crediting_cycles_per_response"] >= config.min_crediting_cycles)
                         & (table["neuron_coverage"] <= config.max_coverage))
    first = table[table["split"] == 1]
    if not first["eligible"].any():
        raise NexError(f"no setting of the sweep is eligible (median crediting cycles >= "
                       f"{config.min_crediting_cycles:g}, coverage <= {config.max_coverage:g}): widen the settings "
                       "or relax the floor")
    keys = ["window", "sparsifier", "rho", "min_run"]
    held_out = table[table["split"] == 2].set_index(keys)

    def row(role: str, setting: pd.Series) -> dict:
        return {"role": role, **held_out.loc[tuple(setting[k] for k in keys)].to_dict(),
                **{k: setting[k] for k in keys}, f"{config.criterion}_split1": float(setting[config.criterion])}

    best = first[first["eligible"]].loc[lambda t: t[config.criterion].idxmax()]
    picked = [row("chosen on split 1", best)]
    anywhere = first.loc[first[config.criterion].idxmax()]
    if not anywhere["eligible"]:  # what the floor excluded, reported rather than hidden
        picked.append(row("best on split 1, ineligible", anywhere))
    picked.append({"role": "pre-declared default", **held_out.loc[tuple(default[k] for k in keys)].to_dict(),
                   **default})
    choice = pd.DataFrame(picked).assign(criterion=config.criterion, n_settings=len(settings), n_variants=len(names))
    return table, choice
