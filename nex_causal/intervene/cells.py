"""What a causal grid is made of: its config and its cells (light: no torch), below the modules that run them.

``GridConfig`` determines a transfer or ablation grid (``intervene.grid`` runs it); a
``Cell`` is one intervention on one neuron set, a column of per-prompt outcomes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from nex_causal.errors import NexError
from nex_causal.intervene.base import (
    EXPERIMENTS,
    INTERVENTIONS,
    OUTCOMES,
    of_experiment,
)
from nex_causal.intervene.neuron_sets import NeuronSet
from nex_causal.io import file_sha256
from nex_causal.nex.weights import credit_path
from nex_causal.settings import input_digests

RESUME_FREE = ("device", "batch_size", "n_boot", "level")  # settings that do not change a cell's result
RANDOM_KINDS = ("random", "matched")  # the nulls: layer-matched and covariate-matched random sets


@dataclass(frozen=True)
class GridConfig:
    """Everything that determines a transfer or ablation grid.

    ``recipient`` receives a transfer, or is the model ablated in place. ``family`` is
    a directory of variants in which ``recipient`` and ``donor`` are looked up by name (else
    they are anything ``load_bridge`` accepts). Evaluation prompts come from ``tasks``
    drawn with ``task_seed`` (organism specs draw from the held-out test split).
    """

    experiment: str = field(metadata={"help": "transfer or ablate"})
    recipient: str = field(metadata={"help": "the variant that receives the neurons, or the model ablated"})
    weights: str = field(metadata={"help": "NEX weights (.npz from `nex-causal nex train`)"})
    tasks: str = field(metadata={"help": "held-out prompts: organism:200, rg:<dataset>:100, or a .jsonl file",
                                 "file": True})
    donor: str | None = field(default=None, metadata={"help": "variant whose neurons are given (transfer)"})
    family: str | None = field(default=None, metadata={"help": "directory of the family whose variants are named"})
    k: tuple[int, ...] = field(default=(8, 32, 128, 512), metadata={"help": "set sizes (the dose range)"})
    saturate: bool = field(default=True, metadata={
        "help": "add the dose k = every neuron of positive weight (the range to saturation)"})
    n_random: int = field(default=50, metadata={"help": "layer-matched random sets per k (the null distribution)"})
    n_random_accuracy: int = field(default=10, metadata={
        "help": "of those (and of the matched sets), how many also measure the accuracy outcomes (generation is "
                "costly)"})
    n_matched: int = field(default=50, metadata={
        "help": "random sets per k matched on layer, activation mass and weight difference (intervene.controls)"})
    scorers: tuple[str, ...] | None = field(default=None, metadata={
        "help": "unit scorers whose top-k sets are intervened on (intervene.scorers; default: every one the grid's "
                "evidence allows)"})
    supervised: bool = field(default=True, metadata={
        "help": "run the supervised scorers too (atp, atp-transplant, mask), on the attribution split"})
    positive_control: str = field(default="mask", metadata={
        "help": "the scorer whose sets are the test's positive control: the verdict says the test can see at a dose "
                "only where they move the outcome (atp when the grid has no donor)"})
    ceiling: bool = field(default=True, metadata={
        "help": "add the ceilings (transfer): every MLP unit of the layers that differ, all attention weights, "
                "the embeddings"})
    recipient_weights: str | None = field(default=None, metadata={
        "help": "NEX weights learned on the recipient's cache (for the nex-*-recipient scorers)"})
    caches: tuple[str, ...] = field(default=(), metadata={
        "help": "the donor's caches (the ablated model's), for the label-free cache scorers: rows, responses, mass, "
                "first-seen"})
    truth: str | None = field(default=None, metadata={
        "help": "a neuron set known to carry the difference (a localized organism's planted block): intervened on "
                "as a set of its own, and every scorer's overlap with it reported"})
    mask_steps: int = field(default=100, metadata={"help": "Adam steps of the learned transplant mask"})
    mask_lr: float = field(default=0.1, metadata={"help": "learning rate of the learned transplant mask"})
    attribution_tasks: str | None = field(default=None, metadata={
        "help": "the positive control's own prompts (default: tasks drawn with attribution_seed; prompts the test "
                "scores are dropped)", "file": True})
    attribution_seed: int = field(default=1000, metadata={
        "help": "seed drawing the positive control's own prompts"})
    interventions: tuple[str, ...] | None = field(default=None, metadata={
        "help": "interventions to run (default: every one of the experiment's)"})
    sets: tuple[str, ...] = field(default=(), metadata={
        "help": "your own neuron sets, run beside the grid: CSV/parquet files with columns layer, unit", "file": True})
    outcomes: tuple[str, ...] = field(default=("answer-logprob", "greedy"), metadata={
        "help": "per-prompt outcomes: greedy, sampled (accuracy), answer-logprob, solution-logprob (continuous)"})
    temperature: float = field(default=0.7, metadata={"help": "temperature of the sampled outcome"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus mass of the sampled outcome"})
    max_new_tokens: int = field(default=256, metadata={"help": "tokens generated per prompt"})
    chat: bool = field(default=False, metadata={"help": "wrap prompts in the tokenizer's chat template"})
    seed: int = field(default=0, metadata={"help": "seed of random sets, sampling and bootstrap"})
    task_seed: int = field(default=1, metadata={"help": "seed drawing the prompts"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples"})
    level: float = field(default=0.95, metadata={"help": "confidence level of intervals; 1 - level is the tests' size"})
    batch_size: int = field(default=32, metadata={"help": "sequences per forward pass"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16"})

    def __post_init__(self) -> None:
        if self.experiment not in EXPERIMENTS:
            raise NexError(f"unknown experiment {self.experiment!r}: use one of {', '.join(EXPERIMENTS)}")
        allowed = of_experiment(self.experiment)
        interventions = tuple(self.interventions or allowed)
        if bad := [i for i in interventions if i not in allowed]:
            raise NexError(f"intervention {bad[0]!r} does not belong to {self.experiment}: "
                           f"use {', '.join(allowed)}")
        object.__setattr__(self, "interventions", interventions)
        ks = tuple(int(k) for k in self.k)
        if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
            raise NexError(f"k must be distinct positive integers, got {self.k}")
        object.__setattr__(self, "k", ks)
        object.__setattr__(self, "outcomes", tuple(OUTCOMES.check(self.outcomes)))
        object.__setattr__(self, "sets", tuple(str(p) for p in self.sets))
        object.__setattr__(self, "caches", tuple(str(p) for p in self.caches))
        if self.scorers is not None:
            from nex_causal.intervene.scorers import SCORERS

            object.__setattr__(self, "scorers", tuple(SCORERS.check(self.scorers)))
        if self.mask_steps < 0 or not self.mask_lr > 0:
            raise NexError(f"mask_steps must be >= 0 and mask_lr > 0, got {self.mask_steps} and {self.mask_lr}")
        if not self.outcomes:
            raise NexError(f"name at least one outcome: {', '.join(OUTCOMES)}")
        if not self.temperature >= 0:
            raise NexError(f"temperature must be 0 (greedy) or positive, got {self.temperature}")
        if "sampled" in self.outcomes and self.temperature <= 0:
            raise NexError(f"the sampled outcome needs a temperature > 0, got {self.temperature}")
        if min(self.n_random, self.n_random_accuracy, self.n_matched) < 0 or self.max_new_tokens < 1 or self.n_boot < 1 \
                or self.batch_size < 1:
            raise NexError("n_random, n_random_accuracy and n_matched must be >= 0 and max_new_tokens, n_boot, "
                           "batch_size >= 1")
        if not 0 < self.level < 1:
            raise NexError(f"level must lie in (0, 1), got {self.level}")
        if any(INTERVENTIONS[i].needs_donor for i in interventions) and not self.donor:
            raise NexError(f"a {self.experiment} needs a donor: pass --donor")

    def outcomes_of(self, cell: Cell) -> tuple[str, ...]:
        """The outcomes ``cell`` measures: all, but only the continuous ones on the extra random sets."""
        if cell.kind in RANDOM_KINDS and cell.seed >= self.n_random_accuracy:
            return tuple(o for o in self.outcomes if OUTCOMES[o].continuous)
        return self.outcomes

    def content(self) -> dict:
        """What a finished cell depends on (a resume must agree on it): the fields that change a
        result, and the content of the weights and tasks files (a path alone does not say what they hold).
        A user's set is keyed by its cell's name instead (``neuron_sets.user_set``): an edited set is a new cell."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in RESUME_FREE}
        files = {"weights": self.weights, "recipient_weights": self.recipient_weights, "truth": self.truth}
        out = {**fields, **{f"{name}_sha256": _digest(path) for name, path in files.items()}}
        for name, path in (("weights", self.weights), ("recipient_weights", self.recipient_weights)):
            out[f"{name}_credit_sha256"] = _digest(credit_path(path)) if path else None
        out["caches_integrity"] = [_digest(Path(c) / "integrity.json") for c in self.caches]
        return {**out, **input_digests(self, ("tasks", "attribution_tasks"))}


def _digest(path: str | None) -> str | None:
    """The SHA-256 of a file a grid reads, None when there is none."""
    return file_sha256(Path(path)) if path and Path(path).is_file() else None


@dataclass(frozen=True)
class Cell:
    """One intervention on one neuron set: a column of per-prompt outcomes."""

    kind: str  # a unit scorer | random | matched | ceiling-<part> | truth | user-<file> (and baseline, donor)
    k: int
    seed: int
    intervention: str
    neurons: NeuronSet
    part: str | None = None  # a ceiling outside the MLP units: the donor's weights of this part (transplant.PARTS)

    @property
    def name(self) -> str:
        if self.intervention == "none" or self.part:
            return self.kind
        return f"{self.intervention}-{self.kind}-k{self.k}-s{self.seed}"
