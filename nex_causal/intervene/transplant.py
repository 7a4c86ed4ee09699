"""Weight transplant: give the recipient the donor's weights for a set of MLP neurons.

Neuron ``(layer, unit)`` owns row ``unit`` of the gate and up projections and column
``unit`` of the down projection (W_in row and W_out column for a non-gated MLP), plus
the matching bias entries where the architecture has them (NEX_METHOD section 7);
``nex_causal.models.geometry.MLPGeometry`` knows where those live for each architecture, and all
reads and writes go through it. Donor and recipient must be variants of one
architecture, size and dtype.

:func:`transplanted` is the reversible form (a context manager that restores the
recipient bit-exactly on exit, also when its body raises); :func:`write_transplant`
makes the change permanent in a new Hugging Face directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from nex_causal.errors import NexError
from nex_causal.intervene.base import INTERVENTIONS, InterventionKind
from nex_causal.intervene.neuron_sets import NeuronSet
from nex_causal.io import atomic_path, write_json
from nex_causal.models.geometry import MLPGeometry
from nex_causal.models.loading import load_bridge, plain_model

PROVENANCE_FILE = "nex_transplant.json"


def _geometries(recipient, donor, neurons: NeuronSet) -> tuple[MLPGeometry, MLPGeometry]:
    target, source = MLPGeometry.of(recipient), MLPGeometry.of(donor)
    target.check_compatible(source)
    neurons.check_fits(target.n_layers, target.d_mlp)
    return target, source


def transplant(recipient, donor, neurons: NeuronSet) -> None:
    """Overwrite the recipient's weights of ``neurons`` with the donor's, in place."""
    target, source = _geometries(recipient, donor, neurons)
    for layer, units in neurons.by_layer().items():
        target.set_neuron_weights(layer, units, source.neuron_weights(layer, units))


@contextlib.contextmanager
def transplanted(recipient, donor, neurons: NeuronSet) -> Iterator:
    """The recipient with ``neurons`` transplanted from the donor; restored exactly on exit."""
    target, _ = _geometries(recipient, donor, neurons)
    by_layer = neurons.by_layer()
    saved = {layer: target.neuron_weights(layer, units) for layer, units in by_layer.items()}
    try:
        transplant(recipient, donor, neurons)
        yield recipient
    finally:
        for layer, units in by_layer.items():
            target.set_neuron_weights(layer, units, saved[layer])


class Transplant:
    """The weight transplant as an intervention for ``patching.intervened``."""

    def __init__(self, donor, neurons: NeuronSet):
        self.donor = donor
        self.neurons = neurons

    def applied(self, bridge) -> contextlib.AbstractContextManager:
        return transplanted(bridge, self.donor, self.neurons)


INTERVENTIONS.add("transplant", InterventionKind("transfer", lambda neurons, r: Transplant(r.donor, neurons),
                                                 needs_donor=True, uses_hooks=False))


# the parts of a model outside its MLP units, by the Hugging Face parameter names that hold them
PARTS = {
    "attention": ("self_attn.", ".attn.", "attention."),
    "embeddings": ("embed_tokens.", "lm_head.", "wte.", "wpe.", "embed_in.", "embed_out."),
    "norms": ("layernorm.", "norm.", "ln_1.", "ln_2.", "ln_f."),
}


def _part_of(name: str) -> str | None:
    """Which of ``PARTS`` a parameter belongs to (None for an MLP weight)."""
    if ".mlp." in f".{name}":
        return None
    found = [part for part, marks in PARTS.items() if any(mark in f".{name}" for mark in marks)]
    return found[0] if found else None


@contextlib.contextmanager
def parts_transplanted(recipient, donor, parts: tuple[str, ...]) -> Iterator:
    """The recipient with every weight of ``parts`` (``PARTS``: attention, embeddings, norms) taken from the donor,
    whole; restored exactly on exit. The ceilings outside the MLP units: how much of the difference lies there."""
    if unknown := [p for p in parts if p not in PARTS]:
        raise NexError(f"unknown model part {unknown[0]!r}: use {', '.join(PARTS)}")
    mine = dict(plain_model(recipient).named_parameters())
    theirs = dict(plain_model(donor).named_parameters())
    names = [n for n in mine if _part_of(n) in parts]
    if missing := [n for n in names if n not in theirs or theirs[n].shape != mine[n].shape]:
        raise NexError(f"the donor lacks {missing[0]!r} as the recipient has it: transplant needs two variants of "
                       "one architecture and size")
    saved = {n: mine[n].detach().clone() for n in names}
    try:
        with torch.no_grad():
            for n in names:
                mine[n].copy_(theirs[n])
        yield recipient
    finally:
        with torch.no_grad():
            for n in names:
                mine[n].copy_(saved[n])


def _save_pretrained(bridge, directory: Path) -> None:
    """Write the bridge's model (current weights) and tokenizer into ``directory`` in HF format."""
    plain_model(bridge).save_pretrained(directory)
    bridge.tokenizer.save_pretrained(directory)


def write_transplant(recipient: str | os.PathLike, donor: str | os.PathLike, neurons: NeuronSet,
                     out: str | os.PathLike, *, device: str = "cpu") -> Path:
    """Write a new model directory: ``recipient`` with ``neurons`` transplanted from ``donor``.

    Both models are anything ``load_bridge`` accepts (zoo name, directory, HF id). The
    directory records its provenance in ``nex_transplant.json`` and the set in ``neurons.csv``.
    """
    out = Path(out)
    if out.exists():
        raise NexError(f"{out} already exists: choose another output directory or delete it")
    target = load_bridge(recipient, device=device)
    transplant(target, load_bridge(donor, device=device), neurons)
    with atomic_path(out, is_dir=True) as tmp:
        _save_pretrained(target, tmp)
        neurons.save(tmp / "neurons.csv")
        write_json(tmp / PROVENANCE_FILE, {"recipient": str(recipient), "donor": str(donor),
                                           "neurons": neurons.name, "n_neurons": len(neurons)})
    return out
