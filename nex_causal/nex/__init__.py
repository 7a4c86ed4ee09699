"""NEX: neuron explore-exploit scoring (NEX_METHOD sections 1-6), one module per step, then what surrounds it.

    novelty      clean rows, first introductions, novelty slopes s_j = |I_j| / T_j
    phases       sticky two-state HMM segmentation into explore (E) and exploit (X) rows
    credit       cycles, reuse share, consolidation, Eff/Red credit of one response, neuron weights
    learn        Eff/Red over a calibration set (in worker processes), the weights, each response's summary
    score        Good-Mass Fraction per response, NEX per model, log-gap
    weights      the weights file (the reference release's .npz), one validator for every reader
    config       NexConfig: rho, min_run and the named departures from the reference
    calibration  where the weights that score a cache come from: self, pooled, cross, split
    profile      can NEX read a cache: its profile and what makes NEX degenerate there
    diagnostics  where NEX's credit comes from: opening cycle, reuse by cycle, ties, lexical novelty, loops
    annotate     human (or ground-truth) E/X labels scored against the HMM phases
    tables       NEX's results as tables; runlength: maximal runs of equal labels

The reference release (../shared/reference/nex_reference) is the definition: on every cache
it reads, ``learn_weights`` gives its weights and ``score_responses`` its GMF, bit for bit.
Typical use: ``w = learn_weights(cache)``, ``gmf = score_responses(cache, w)``,
``score_cache(cache, w)`` (the mean); ``analyze_response(cache.response_rows(r))`` shows
every step of one response.
"""

from nex_causal.nex.config import NexConfig
from nex_causal.nex.credit import ResponseTrace, analyze_response
from nex_causal.nex.learn import Calibration, learn, learn_weights
from nex_causal.nex.score import (
    log_gap,
    nex_score,
    score_cache,
    score_responses,
    write_scores,
)
from nex_causal.nex.weights import load_weights, save_weights

__all__ = [
    "Calibration", "NexConfig", "ResponseTrace", "analyze_response", "learn", "learn_weights", "load_weights",
    "log_gap", "nex_score", "save_weights", "score_cache", "score_responses", "write_scores",
]
