"""Agreement of each score's ranking of a family with the family's accuracy, with bootstrap intervals.

Agreement is measured on the score times its direction, so a positive Spearman means "works
as claimed": Spearman, Kendall, top-1 hit (the variant the score ranks first is a most
accurate one) and regret (best accuracy minus accuracy of that variant). Intervals are BCa
bootstraps over prompts (``stats.bca``: they hold their estimate), one resample of prompt ids
shared by all variants (NEX weights stay those learned on the full cache). Beside each rank
correlation's interval stands its permutation p over variants: one-sided, that the score orders
the family as accuracy does no better than a random order would (exact over every order up to 9
variants, ``stats.permutation_p``); ``p_method`` says how it was computed.

Accuracy is, by default, each variant's mean ``correct`` on its cache (sampled accuracy
on the same prompts, resampled with them); ``accuracy="family"`` uses the family table's
``accuracy`` column (the zoo's greedy accuracy), held fixed in the bootstrap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.io import check_name
from nex_causal.nex.calibration import Calibrations, check_modes
from nex_causal.nex.config import NexConfig
from nex_causal.ranking.config import RankingConfig
from nex_causal.ranking.inverted_u import exploration_curves, inverted_u_table
from nex_causal.ranking.scores import SCORES, Context, per_prompt_mean
from nex_causal.selectors.pool import Pool
from nex_causal.stats import bootstrap, permutation_p, rank_correlations

METRICS = ("spearman", "kendall", "top1", "regret")
TESTED = ("spearman", "kendall")  # the metrics with a permutation p


def score_column(name: str, calibration: str) -> str:
    """The per-variant column of a score under a NEX calibration: the bare name for the authors' protocol
    (self, or weights given for every variant) and for scores without calibration, else ``name[mode]``."""
    return name if calibration in ("", "self", "given") else f"{name}[{calibration}]"


def agreement(scores: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """``[B, 4]`` Spearman, Kendall, top-1 hit and regret of each row of ``scores`` [B, V] vs ``accuracy``.

    The top pick is the highest score (NaN never wins, ties to the first variant); it is a
    hit when its accuracy equals the best accuracy of the row.
    """
    scores, accuracy = np.asarray(scores, np.float64), np.asarray(accuracy, np.float64)
    rho, tau = rank_correlations(scores, accuracy)
    top = np.argmax(np.where(np.isnan(scores), -np.inf, scores), axis=1)
    picked, best = accuracy[np.arange(len(scores)), top], accuracy.max(axis=1)
    return np.column_stack([rho, tau, (picked == best).astype(np.float64), best - picked])


@dataclass
class Ranking:
    """Agreement of each score with accuracy (``table``), the per-variant values (``variants``)."""

    table: pd.DataFrame
    variants: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    cross: pd.DataFrame | None = None  # NEX of every variant (scored) under every variant's weights


def common_prompts(pools: Mapping[str, Pool]) -> tuple[np.ndarray, list[str]]:
    """Prompt ids every variant answered (in the first variant's order), and notes on the rest."""
    ids = [pd.Index(pool.prompt_ids) for pool in pools.values()]
    common = ids[0]
    for other in ids[1:]:
        common = common.intersection(other, sort=False)
    if len(common) == 0:
        raise NexError("the variants' caches share no prompt; capture them on the same task set")
    notes = [f"{name}: {len(i) - len(common)} prompts not shared by every variant were left out"
             for name, i in zip(pools, ids) if len(i) > len(common)]
    return common.to_numpy(), notes


def rank(pools: Mapping[str, Pool], config: RankingConfig = RankingConfig(), *,
         accuracy: Mapping[str, float] | None = None, weights: np.ndarray | None = None,
         nex: NexConfig = NexConfig(), learned: Mapping[str, np.ndarray] | None = None,
         progress: bool = False) -> Ranking:
    """Score every variant (``pools``: name -> its cache's pool) and measure agreement with accuracy.

    ``accuracy`` (name -> accuracy, e.g. the family table's) replaces the caches' mean
    ``correct``. NEX runs under ``nex``, once per calibration of ``config.calibration``
    (``nex.calibration``; ``learned``: variant -> self-calibrated weights already learned with
    ``nex``), or, when ``weights`` are given, with those for every variant (calibration
    ``given``). A score that cannot be computed for some variant is reported as skipped.
    """
    names = SCORES.check(config.scores if config.scores is not None else SCORES)
    modes = ["given"] if weights is not None else check_modes(config.calibration)
    calibrations = Calibrations({v: pool.cache for v, pool in pools.items() if pool.cache is not None}, nex,
                                weights={v: weights for v in pools} if weights is not None else learned,
                                progress=progress)
    context = Context(config, calibrations, progress=progress)
    if len(pools) < 2:
        raise NexError(f"ranking needs at least two variants, got {len(pools)}")
    prompts, notes = common_prompts(pools)
    index = {v: pool.prompt_ids.get_indexer(prompts) for v, pool in pools.items()}
    if accuracy is None:
        truth = [per_prompt_mean(pool, pool.correct).subset(index[v]) for v, pool in pools.items()]
    else:
        missing = [v for v in pools if not np.isfinite(accuracy.get(v, np.nan))]
        if missing:
            raise NexError(f"no accuracy for {', '.join(missing)}; fill the family table's accuracy column "
                           "or rank against the caches' accuracy")
        fixed = np.array([accuracy[v] for v in pools], dtype=np.float64)

    def acc(counts: np.ndarray) -> np.ndarray:
        """[B, V] accuracies: resampled with the prompts, or the family table's, fixed."""
        if accuracy is None:
            return np.column_stack([t(counts) for t in truth])
        return np.broadcast_to(fixed, (len(counts), len(fixed)))

    computed, rows = {}, []
    for name in tqdm(names, desc="scores", disable=not progress):
        spec = SCORES[name]
        for mode in modes if spec.calibrated else [""]:
            row = {"score": name, "calibration": mode, "direction": spec.direction, "status": "ok"}
            try:
                computed[(name, mode)] = [
                    spec.compute(pool, replace(context, variant=v, calibration="self" if mode == "given" else mode)
                                 ).subset(index[v]) for v, pool in pools.items()]
            except NexError as err:
                row["status"] = f"skipped: {err}"
            rows.append(row)

    def statistic(counts: np.ndarray) -> np.ndarray:
        a = acc(counts)
        return np.stack([agreement(SCORES[n].direction * np.column_stack([s(counts) for s in computed[(n, m)]]), a)
                         for n, m in computed], axis=1).reshape(len(counts), -1)

    table = pd.DataFrame(rows)
    for metric in METRICS:
        table[[metric, f"{metric}_low", f"{metric}_high"]] = np.nan
    if computed:
        ci = bootstrap(statistic, len(prompts), n_boot=config.n_boot, level=config.level, seed=config.seed)
        at = [(r.score, r.calibration) in computed for r in table.itertuples()]
        for j, metric in enumerate(METRICS):
            for suffix, values in (("", ci.estimate), ("_low", ci.low), ("_high", ci.high)):
                table.loc[at, metric + suffix] = values.reshape(len(computed), len(METRICS))[:, j]
    table["n_variants"], table["n_prompts"] = len(pools), len(prompts)
    full = np.ones((1, len(prompts)))
    variants = pd.DataFrame({"variant": list(pools), "accuracy": acc(full)[0]})
    table[[f"{m}_p" for m in TESTED]], table["p_method"] = np.nan, ""
    for (name, mode), per_variant in computed.items():
        variants[score_column(name, mode)] = [float(s(full)[0]) for s in per_variant]
        at = (table["score"] == name) & (table["calibration"] == mode)
        for metric in TESTED:
            p, method = permutation_p(SCORES[name].direction * variants[score_column(name, mode)].to_numpy(),
                                      variants["accuracy"].to_numpy(), statistic=metric, seed=config.seed)
            table.loc[at, f"{metric}_p"], table.loc[at, "p_method"] = p, method
    order = ["score", "calibration", "direction",
             *[m + s for m in METRICS for s in ("", "_low", "_high", *(("_p",) if m in TESTED else ()))],
             "p_method", "n_variants", "n_prompts", "status"]
    cross = (pd.DataFrame([{"weights": w, "scored": v, "nex": value}
                           for (w, v), value in calibrations.cross_matrix().items()])
             if "cross" in modes else None)
    return Ranking(table[order], variants, notes + context.notes, cross)


# --- inputs: a family table and one cache per variant --------------------------------------

def family_pools(family: pd.DataFrame, caches: str | Path) -> tuple[dict[str, Pool], list[str]]:
    """The pool of every variant with a cache at ``caches/<name>/``; notes name those without."""
    caches = Path(caches)
    pools, notes = {}, []
    for name in family["name"].astype(str):
        if not (caches / check_name(name, "variant")).is_dir():
            notes.append(f"{name}: no cache at {caches / name}; left out")
            continue
        pools[name] = Pool.from_cache(SparseCache.open(caches / name))
    return pools, notes


def family_accuracy(family: pd.DataFrame) -> dict[str, float]:
    """The family table's accuracy of each variant (``RankingConfig.accuracy == "family"``)."""
    if "accuracy" not in family:
        raise NexError("the family table has no accuracy column; rank against the caches' accuracy "
                       "(accuracy: cache)")
    return dict(zip(family["name"].astype(str), family["accuracy"]))


def ranking_tables(family: pd.DataFrame, caches: Sequence[str | Path], config: RankingConfig = RankingConfig(), *,
                   weights: np.ndarray | None = None, nex: NexConfig = NexConfig(),
                   learned: Mapping[str, np.ndarray] | None = None, progress: bool = False
                   ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Ranking and inverted-U tables for each directory of per-variant caches, and the notes.

    Tables: ``ranking`` (agreement per score and calibration), ``ranking_scores`` (per
    variant), ``inverted_u`` (fit per level), ``inverted_u_bins`` and, with the cross
    calibration, ``nex_cross`` (the variant x variant NEX matrix); each has a ``caches``
    column. NEX runs under ``nex`` (``learned``: variant -> weights learned with it already).
    """
    accuracy = family_accuracy(family) if config.accuracy == "family" else None
    out: dict[str, list[pd.DataFrame]] = {"ranking": [], "ranking_scores": [], "inverted_u": [],
                                          "inverted_u_bins": [], "nex_cross": []}
    notes: list[str] = []
    for directory in caches:
        pools, missing = family_pools(family, directory)
        result = rank(pools, config, accuracy=accuracy, weights=weights, nex=nex, learned=learned,
                      progress=progress)
        summary, bins = inverted_u_table(exploration_curves(pools, variant_accuracy=accuracy, n_bins=config.n_bins))
        for key, table in zip(out, (result.table, result.variants, summary, bins, result.cross)):
            if table is not None:
                out[key].append(table.assign(caches=str(directory)))
        notes += [*missing, *result.notes]
    return {key: pd.concat(tables, ignore_index=True) for key, tables in out.items() if tables}, notes
