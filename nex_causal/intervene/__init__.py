"""Causal interventions on MLP neurons (NEX_METHOD section 7), every one reversible.

    neuron_sets   NeuronSet; top-k effective, bottom-k redundant, layer-matched random sets
    transplant    copy a set's weights from a donor (context manager, or a new HF directory)
    patching      activation edits on hook_post: donor patch (lock step), zero/mean ablation, scaling
    transfer      the transfer and ablation grids behind `nex-causal transfer` / `nex-causal ablate`

Typical use::

    with intervened(recipient, [Transplant(donor, top_effective(w, 32))]) as model:
        evaluate(model, taskset, max_new_tokens=256)
"""

from nex_causal.intervene.neuron_sets import (NeuronSet, bottom_redundant, check_weights_fit, matched_random,
                                              top_effective)
from nex_causal.intervene.patching import (DonorPatch, LockStep, MeanAblation, Scaling, ZeroAblation,
                                           activation_means, intervened)
from nex_causal.intervene.transfer import Grid, GridConfig, run_grid
from nex_causal.intervene.transplant import Transplant, transplant, transplanted, write_transplant

__all__ = [
    "DonorPatch", "Grid", "GridConfig", "LockStep", "MeanAblation", "NeuronSet", "Scaling", "Transplant",
    "ZeroAblation", "activation_means", "bottom_redundant", "check_weights_fit", "intervened",
    "matched_random", "run_grid", "top_effective", "transplant", "transplanted", "write_transplant",
]
