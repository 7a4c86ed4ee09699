"""Causal interventions on MLP neurons (NEX_METHOD section 7), every one reversible.

    neuron_sets   NeuronSet; top-k effective, bottom-k redundant, layer-matched random sets
    base          the intervention protocol and registry (INTERVENTIONS)
    transplant    copy a set's weights from a donor (context manager, or a new HF directory)
    patching      activation edits on the MLP hook: donor patch (lock step), zero/mean ablation, scaling
    grid          the transfer and ablation grids behind `nex-causal transfer` / `nex-causal ablate`
    tables        the grids' outcome tables and gap summaries

Typical use::

    with intervened(recipient, [Transplant(donor, top_effective(w, 32))]) as model:
        evaluate(model, taskset, max_new_tokens=256)
"""

from nex_causal.intervene.neuron_sets import NeuronSet, bottom_redundant, matched_random, top_effective
from nex_causal.intervene.transplant import Transplant, transplanted, write_transplant  # registers before patching
from nex_causal.intervene.patching import DonorPatch, MeanAblation, Scaling, ZeroAblation, intervened  # noqa: I001
from nex_causal.intervene.base import INTERVENTIONS
from nex_causal.intervene.grid import GridConfig, run_grid

__all__ = [
    "INTERVENTIONS", "DonorPatch", "GridConfig", "MeanAblation", "NeuronSet", "Scaling", "Transplant", "ZeroAblation",
    "bottom_redundant", "intervened", "matched_random", "run_grid", "top_effective", "transplanted",
    "write_transplant",
]
