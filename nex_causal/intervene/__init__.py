"""Causal interventions on MLP neurons (NEX_METHOD section 7), every one reversible.

    neuron_sets   NeuronSet; top-k effective, bottom-k redundant, random sets matched by layer or by
                  covariates, the supervised positive control, the ceiling
    controls      what the controls are built from: activation mass, weight difference, attribution
    base          the intervention protocol and the registries (INTERVENTIONS, OUTCOMES)
    cells         GridConfig and Cell: what a grid is made of (light: no torch)
    transplant    copy a set's weights from a donor (context manager, or a new HF directory)
    patching      activation edits on the MLP hook: donor patch (lock step), zero/mean ablation, scaling
    outcomes      what a cell measures per prompt: accuracy, answer- and solution-logprob
    grid          the transfer and ablation grids behind `nex-causal transfer` / `nex-causal ablate`
    pairs         transfer over several donor>recipient pairs, pooled
    tables        the grids' outcome tables and gap summaries

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
    "write_transplant": "transplant", "run_grid": "grid",
})
