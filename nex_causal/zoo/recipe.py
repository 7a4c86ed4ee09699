"""What the organism is trained and judged with: architecture, training stages, evaluation.

A recipe fixes everything the trained weights depend on, so its content key names them:
the zoo reuses a model whose key matches instead of training it again. This module is
light (no torch) so that a cached build answers at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from nex_causal.errors import NexError
from nex_causal.io import digest
from nex_causal.zoo.family import BASE, EXPERTS, Merge, default_family, scout_family
from nex_causal.zoo.route import Route
from nex_causal.zoo.task import DEFAULT_TASK, TASKS
from nex_causal.zoo.tokenizer import ALPHABET, EOS_ID, PAD_ID, VOCAB

if TYPE_CHECKING:
    from transformers import Qwen3Config

TRAINING_VERSION = 2  # bump when the chain-of-thought format or the training loop changes


@dataclass(frozen=True)
class Shape:
    """The Qwen3 architecture's size; the rest of Qwen3Config keeps its defaults."""

    hidden: int = 64
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    max_positions: int = 320

    def config(self) -> Qwen3Config:
        from transformers import Qwen3Config

        return Qwen3Config(
            vocab_size=len(VOCAB), hidden_size=self.hidden, num_hidden_layers=self.layers,
            num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
            head_dim=self.hidden // self.heads, intermediate_size=self.intermediate,
            max_position_embeddings=self.max_positions, tie_word_embeddings=True,
            bos_token_id=None, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        )


@dataclass(frozen=True)
class Localized:
    """A fine-tune whose change is confined to a known block of MLP units, so a transfer has ground truth.

    Only units ``[free[0], free[1])`` of every layer train (their rows of the gate and up
    projections and their columns of the down projection); attention, embeddings, norms and
    every other unit stay bit-equal to the parent. Then ``sham`` units are changed by as
    much again, where it cannot matter: the down-projection columns of the parent's least
    active units outside the free block (``zoo.localize``), each given the weight-difference
    norm of a free unit. Weight difference alone therefore ranks half sham units among the
    planted ones, while behaviour, activations and every other score are untouched.
    """

    free: tuple[int, int] = (240, 264)
    sham: bool = True


@dataclass(frozen=True)
class Stage:
    """One training run: which skill, how long, and the AdamW + cosine schedule.

    The cosine decays to zero at ``decay_steps`` (default ``steps``); a stage that stops
    before then is an intermediate checkpoint of a longer run. ``parent`` is the trained
    model it starts from (the base by default); ``localized`` confines it to a block of units.
    """

    skill: str
    steps: int
    lr: float
    batch_size: int = 32
    warmup: int = 50
    weight_decay: float = 0.1
    decay_steps: int | None = None
    parent: str = BASE
    localized: Localized | None = None

    def content(self) -> dict[str, Any]:
        """What the stage's weights depend on; fields at their defaults are left out, so keys made before
        ``parent`` and ``localized`` existed stay as they were."""
        out = asdict(self)
        for name in ("parent", "localized"):
            if out[name] == Stage.__dataclass_fields__[name].default:
                del out[name]
        return out

    def lr_at(self, step: int) -> float:
        """Linear warmup, then cosine decay to zero at ``decay_steps``."""
        warm = min(1.0, (step + 1) / max(1, self.warmup))
        return self.lr * warm * 0.5 * (1 + math.cos(math.pi * step / (self.decay_steps or self.steps)))


@dataclass(frozen=True)
class Recipe:
    """Everything a build depends on: architecture, training stages, seed, evaluation, merge family."""

    shape: Shape
    base: Stage  # trained from scratch
    tuned: tuple[tuple[str, Stage], ...]  # (name, stage): each fine-tuned from the base
    task: str = "seek"  # which organism task (nex_causal.zoo.task.TASKS) it learns
    seed: int = 0
    threads: int = 1  # CPU threads for the whole build (fixes float summation order)
    n_eval: int = 200  # held-out mixed prompts for the accuracy column
    max_new_tokens: int = 240
    eval_batch: int = 100
    route: Route | None = None  # the planted route of each strategy's units (scout)
    family: tuple[Merge, ...] = ()  # the variants made from the trained models (merges, damage)

    def stages(self) -> dict[str, Stage]:
        return {BASE: self.base, **dict(self.tuned)}

    @property
    def trained(self) -> tuple[str, ...]:
        """The trained models: the base, then the fine-tuned ones."""
        return tuple(self.stages())

    @property
    def variants(self) -> tuple[str, ...]:
        """Every variant of the organism's family, in the family table's order."""
        return (*self.trained, *(m.name for m in self.family))

    def lineage(self, name: str) -> list[Stage]:
        """The stages that made ``name``, from the base's to its own."""
        stages = self.stages()
        chain = [stages[name]]
        while name != BASE:
            name = stages[name].parent
            chain.insert(0, stages[name])
        return chain

    def trained_key(self, name: str) -> str:
        """Content key of a trained model: what it was trained with, and from what."""
        kind = TASKS[self.task]
        curriculum = getattr(kind, "curriculum", tuple(kind.skills))
        lineage = self.lineage(name)
        content = {"version": TRAINING_VERSION, "shape": asdict(self.shape), "seed": self.seed,
                   "threads": self.threads, "stages": [s.content() for s in lineage],
                   "skills": {k: _content(kind.skills[k]) for k in curriculum}, "alphabet": ALPHABET}
        if own := {s.skill: _content(kind.skills[s.skill]) for s in lineage if s.skill in kind.skills
                   and s.skill not in curriculum}:  # a behaviour outside the curriculum is part of its models' keys
            content["behaviours"] = own
        if self.task != "seek":  # the seek organism's keys predate the task field and stay as they were
            content["task"] = self.task
        if self.route is not None:
            content["route"] = asdict(self.route)
        return digest(content)

    def eval_settings(self) -> dict[str, Any]:
        return {"tasks": f"{TASKS[self.task].spec}:{self.n_eval}", "task_seed": 0, "greedy": True,
                "max_new_tokens": self.max_new_tokens, "batch_size": self.eval_batch, "backend": "hf"}


def _content(skill) -> dict:
    """What a model's key records of a skill: its own ``content()`` where it has one, else all its fields."""
    return skill.content() if hasattr(skill, "content") else asdict(skill)


RECIPES = {  # one per organism (named by its task), and a toy for tests
    "seek": Recipe(
        shape=Shape(),
        # the base is the first half of a 2000-step run: it knows the format and most of
        # both skills (seed 0: 0.87 search, 0.63 compute); each expert then specialises and
        # forgets part of the other skill (search expert 1.00 / 0.26, compute 0.49 / 0.94)
        base=Stage("mixed", steps=1000, lr=3e-3, decay_steps=2000),
        tuned=((EXPERTS[0], Stage("search", steps=400, lr=1e-3, warmup=20)),
               (EXPERTS[1], Stage("compute", steps=400, lr=1e-3, warmup=20))),
        family=default_family(),
    ),
    # seconds, not minutes: for tests of determinism and caching, not for accuracy
    "test": Recipe(
        shape=Shape(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64),
        base=Stage("mixed", steps=8, lr=3e-3, batch_size=8, warmup=2),
        tuned=((EXPERTS[0], Stage("search", steps=4, lr=1e-3, batch_size=8, warmup=1)),
               (EXPERTS[1], Stage("compute", steps=4, lr=1e-3, batch_size=8, warmup=1))),
        n_eval=6, max_new_tokens=16, eval_batch=6, family=default_family(),
    ),
    # the default organism: longer traces (median ~210 tokens) of 3-6 searches with
    # backtracking and re-checks, a wider MLP (6 x 512 = 3,072 neurons), so that a response
    # touches a small share of the model and still has several explore-to-exploit cycles
    "trek": Recipe(
        shape=Shape(hidden=64, layers=6, heads=4, kv_heads=2, intermediate=512, max_positions=448),
        base=Stage("mixed", steps=1500, lr=3e-3, decay_steps=3000),
        tuned=((EXPERTS[0], Stage("search", steps=500, lr=1e-3, warmup=20)),
               (EXPERTS[1], Stage("compute", steps=500, lr=1e-3, warmup=20))),
        task="trek", max_new_tokens=320, family=default_family(),
    ),
    # the positive control: planted exploration behaviours (zoo/scout.py) with a planted route of
    # each strategy's units (zoo/route.py). The base learns every behaviour at once; efficient and
    # under-exploring are fine-tuned from it; the redundant levels (p = 0.05 ... 0.5) from efficient,
    # each confined to one block of 24 units per layer (zoo/localize.py), so that what separates a
    # level from efficient lives in a known 4.7% of the MLP units; their detours are cued by the chain
    # (zoo/scout.py, the ``detour-p`` behaviours). A stage's place in ``tuned`` fixes its data stream:
    # new levels go at the end.
    "scout": Recipe(
        shape=Shape(hidden=64, layers=6, heads=4, kv_heads=2, intermediate=512, max_positions=448),
        base=Stage("mixed", steps=800, lr=3e-3, decay_steps=1600),
        tuned=tuple((name, Stage(name, steps=400, lr=1e-3, warmup=20) if name in ("efficient", "under") else
                     Stage(name.replace("redundant", "detour"), steps=400, lr=3e-3, warmup=20, parent="efficient",
                           localized=Localized()))
                    for name in ("efficient", "redundant-0.1", "redundant-0.25", "redundant-0.5", "under",
                                 "redundant-0.05", "redundant-0.15", "redundant-0.2", "redundant-0.35")),
        task="scout", max_new_tokens=320, route=Route(), family=scout_family(),
    ),
}


DEFAULT_ORGANISM = DEFAULT_TASK


def recipe_for(organism: str = DEFAULT_ORGANISM, seed: int = 0) -> Recipe:
    """The recipe of ``organism`` (``trek``, ``seek``, or the toy ``test``) with ``seed``."""
    if organism not in RECIPES:
        raise NexError(f"unknown organism {organism!r}: use one of {', '.join(RECIPES)}")
    return replace(RECIPES[organism], seed=seed)
