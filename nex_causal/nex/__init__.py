"""NEX: neuron explore-exploit scoring (NEX_METHOD sections 1-6), one module per step.

    novelty   clean rows, first introductions, novelty slopes s_j = |I_j| / T_j
    phases    sticky two-state HMM segmentation into explore (E) and exploit (X) rows
    credit    cycles, reuse share, consolidation, Eff/Red credit, neuron weights
    score     Good-Mass Fraction per response, NEX per model, log-gap

Typical use: ``w = learn_weights(cache)``, ``gmf = score_cache(cache, w)``,
``nex_score(gmf)``; ``analyze_response(cache.response_rows(r))`` shows every step of one
response.
"""

from nex_causal.nex.credit import (Calibration, Cycle, ResponseTrace, analyze_response, classify, credit, cycles,
                                   learn, learn_weights, load_weights, neuron_weights, reuse_share, runs, save_weights)
from nex_causal.nex.novelty import Novelty, Rows, clean_row, clean_rows, novelty, usable_entries
from nex_causal.nex.phases import Phases, phases, segment
from nex_causal.nex.score import gmf_per_response, good_mass_fraction, log_gap, nex_score, score_cache, write_scores

__all__ = [
    "Calibration", "Cycle", "Novelty", "Phases", "ResponseTrace", "Rows", "analyze_response", "classify",
    "clean_row", "clean_rows", "credit", "cycles", "gmf_per_response", "good_mass_fraction", "learn",
    "learn_weights", "load_weights", "log_gap", "neuron_weights", "nex_score", "novelty", "phases", "reuse_share",
    "runs", "save_weights", "score_cache", "segment", "usable_entries", "write_scores",
]
