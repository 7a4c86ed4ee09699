"""Ranking: order a family's variants by a label-free score and check the order against accuracy.

    config      RankingConfig and SweepConfig (light: no torch, no pandas)
    scores      the model-level scores (SCORES), each a ratio or a coverage over prompts
    agreement   each score's ranking against accuracy: Spearman, Kendall, top-1, regret, with intervals
    inverted_u  accuracy against an exploration proxy, binned, with a quadratic fit
    sweep       which capture and HMM settings let NEX read a family, chosen on one half of the prompts

Names are imported on first use.
"""

from nex_causal.registry import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "RankingConfig": "config", "SweepConfig": "config", "SCORES": "scores", "rank": "agreement",
    "ranking_tables": "agreement", "run_sweep": "sweep",
})
