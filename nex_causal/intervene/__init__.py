"""Causal interventions on MLP neurons (NEX_METHOD section 7), every one reversible.

    neuron_sets   NeuronSet; a scorer's top k, NEX's effective and redundant sets, random sets matched by
                  layer or by covariates, the ceiling, a user's set keyed by its content
    scorers       the unit scorers, one registry: NEX, the label-free stories, activation contrast, weight
                  difference, attribution patching, a learned transplant mask
    attribution   the gradient-based ones: AtP, the relaxed transplant and its learned mask
    controls      what the nulls are built from: activation mass, weight difference, activation contrast
    base          the intervention protocol and the registries (INTERVENTIONS, OUTCOMES)
    cells         GridConfig and Cell: what a grid is made of (light: no torch)
    transplant    copy a set's weights from a donor (context manager, or a new HF directory)
    patching      activation edits on the MLP hook: donor patch (lock step), zero/mean ablation, scaling
    outcomes      what a cell measures per prompt: accuracy, answer- and solution-logprob
    grid          the transfer and ablation grids behind `nex-causal transfer` / `nex-causal ablate`
    pairs         transfer over several donor>recipient pairs, pooled
    tables        the grids' outcome tables, gap summaries (with the verdict) and scorers' tables

Typical use::

    with intervened(recipient, [Transplant(donor, top_effective(w, 32))]) as model:
        evaluate(model, taskset, max_new_tokens=256)
"""

from nex_causal.registry import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "INTERVENTIONS": "base", "OUTCOMES": "base", "GridConfig": "cells", "NeuronSet": "neuron_sets",
    "bottom_redundant": "neuron_sets", "matched_random": "neuron_sets", "top_effective": "neuron_sets",
    "DonorPatch": "patching", "MeanAblation": "patching", "Scaling": "patching", "ZeroAblation": "patching",
    "intervened": "patching", "Transplant": "transplant", "transplanted": "transplant",
    "write_transplant": "transplant", "run_grid": "grid", "SCORERS": "scorers", "top_scored": "neuron_sets",
})
