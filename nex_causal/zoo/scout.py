"""The scout organism's task: find which rule maps the examples, then apply it; its exploration is planted.

A problem hides one rule ``y = f(x) (mod 10)`` from three families, each written with its
own operator: ``add`` (``x+k``), ``mul`` (``x*k``), ``sub`` (``k-x``); ``k`` in 2..9. The
prompt gives two examples (``a=x1>y1 b=x2>y2``), a tag letter ``t`` (a..t, unrelated to the
answer) and a start ``q``. Exactly one family fits both examples. The answer walks a chain
of ten steps: step ``i`` applies the rule to ``x_i`` (``x_0 = q``, then ``x_{i+1} = y_i + 1``)
and adds ``y_i`` to a running sum; the final sum (mod 10) follows ``#``::

    a=3>1 b=5>9 t=c q=2|add 3+8=1 5+8=3 no; sub 4-3=1 4-5=9 ok! 0:4-2=2 s0,2=2 1:4-3=1 s2,1=3
    2:4-2=2 s3,2=5 ... 9:4-3=1 s0,1=1 #1

Every step reads only what the last few tokens wrote (the index, the previous output, the
sum) and the accepted rule, so a small model learns it. Solving means *exploring*
strategies, each derived from example ``a`` and checked on example ``b`` by the verifier
(``no;`` abandons it, ``ok!`` accepts it), then *exploiting* the accepted one for ten
steps. How a model explores is its behaviour (``BEHAVIOURS``), the knob its training mix
turns:

- ``efficient``: tries the real families in a random order until the verifier accepts one;
- ``redundant-p``: the same, but on a fraction ``p`` of problems it keeps exploring after
  the hit: after the fourth step it opens the two *decoy* families (``dbl``: ``2x+k``,
  written ``x.k``; ``sqr``: ``x*x+k``, written ``x:k``), which never fit, abandons them, and
  resumes one query late, so the skipped query's output is missing from the sum (the
  detour costs the answer, unless that output was 0). Which problems detour is fixed by
  the problem, not drawn at random (the base's curriculum: the tag ``t`` among the first
  ``20 p`` letters; the planted levels: the two digits written just before the detour
  point, ``Behaviour.cue``), so a redundant model is trained to be exactly as confident as
  an efficient one: no sampling entropy tells the two apart;
- ``under``: commits to the first family it opens, without the verifier.

Ground truth comes with every trace (``segments``): each strategy span, its family, its
role (``explore`` before the first step, ``detour`` after it) and whether the family is used
later; and, through training, each family's computation is routed to a reserved block of
MLP units (``zoo.route``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from nex_causal.errors import NexError

REAL = ("add", "mul", "sub")  # the rule families a problem can hide
DECOYS = ("dbl", "sqr")  # families a redundant model opens after the hit; they never fit
FAMILIES = (*REAL, *DECOYS)
OPS = {"add": "+", "mul": "*", "sub": "-", "dbl": ".", "sqr": ":"}
UNITS = (1, 3, 7, 9)  # x1 is invertible mod 10, so every family's k follows from example a
TAGS = "abcdefghijklmnopqrst"  # 20 tags: a detour rate p means the first 20 p of them
N_STEPS = 10
DETOUR_AFTER = 4  # a redundant model detours after this many steps and skips the next index
NONE = "none"  # the label of tokens that belong to no family (prompt, indices, sums, answer)


def apply(family: str, x: int, k: int) -> int:
    """The family's rule at ``x`` with parameter ``k``, mod 10."""
    return {"add": x + k, "mul": x * k, "sub": k - x, "dbl": 2 * x + k, "sqr": x * x + k}[family] % 10


def derive(family: str, x: int, y: int) -> int:
    """The ``k`` with ``apply(family, x, k) == y`` (``x`` invertible mod 10 for ``mul``)."""
    if family == "mul":
        return y * pow(x, -1, 10) % 10
    return {"add": y - x, "sub": y + x, "dbl": y - 2 * x, "sqr": y - x * x}[family] % 10


def equation(family: str, x: int, k: int) -> str:
    """How the family writes one application: ``x+k=y``, ``x*k=y``, ``k-x=y``, ``x.k=y``, ``x:k=y``."""
    y = apply(family, x, k)
    return f"{k}-{x}={y}" if family == "sub" else f"{x}{OPS[family]}{k}={y}"


@dataclass(frozen=True)
class Behaviour:
    """How a model explores: ``detour`` is the share of problems where it keeps exploring after the
    hit, ``commit`` that it trusts the first family it opens. ``cue`` says what decides which
    problems detour: the prompt's ``tag`` letter, or the ``chain`` itself (the last output and the
    running total just before the detour point, two digits a model has just written).

    ``content`` is what a trained model's key records of it (the cue only where it is not the tag,
    so the keys of models trained before the cue existed stay as they were)."""

    detour: float = 0.0
    commit: bool = False
    cue: str = "tag"

    def content(self) -> dict:
        out = dataclasses.asdict(self)
        if self.cue == "tag":
            del out["cue"]
        return out


BEHAVIOURS = {  # the base model's curriculum: ``mixed`` draws one of these at random
    "efficient": Behaviour(),
    "redundant-0.1": Behaviour(detour=0.1),
    "redundant-0.25": Behaviour(detour=0.25),
    "redundant-0.5": Behaviour(detour=0.5),
    "under": Behaviour(commit=True),
}
DETOUR_RATES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5)  # the planted levels beside efficient (p = 0), 20 p tags each
# The planted levels, trained from efficient with only a block of MLP units free (zoo.localize): those units can read
# what the last few tokens wrote but not the tag far back in the prompt, so the levels' detours are cued by the chain.
LEVELS = {f"detour-{p:g}": Behaviour(detour=p, cue="chain") for p in DETOUR_RATES}


@dataclass(frozen=True)
class Scout:
    """One problem; ``skill`` names the behaviour its chain of thought is written in."""

    x1: int
    y1: int
    x2: int
    y2: int
    tag: str
    start: int
    rule: str
    k: int
    skill: str = "efficient"
    skills: ClassVar[dict[str, Behaviour]] = {**BEHAVIOURS, **LEVELS}
    curriculum: ClassVar[tuple[str, ...]] = tuple(BEHAVIOURS)  # what ``mixed`` draws (the base's training mix)
    spec: ClassVar[str] = "scout"
    group: ClassVar[str] = "rule"  # the meta field the zoo's accuracy is broken down by
    fields: ClassVar[str] = "x1 y1 x2 y2 tag start rule k"

    @property
    def prompt(self) -> str:
        return f"a={self.x1}>{self.y1} b={self.x2}>{self.y2} t={self.tag} q={self.start}|"

    def answer(self) -> int:
        """The sum of the rule's outputs along the ten-step chain, mod 10."""
        return chain_sum(self.rule, self.k, self.start, range(N_STEPS))

    def detours(self, behaviour: Behaviour) -> bool:
        """Whether a model of ``behaviour`` keeps exploring after the hit on this problem: its tag among the first
        ``20 p`` letters, or (cue ``chain``) the last output y and running total s before the detour point with
        ``5 y + s / 2 < 50 p`` (y-major: the realised rates are 0.064, 0.135, 0.193, 0.219, 0.255, 0.381 and 0.514 for p
        = 0.05 ... 0.5, on 20,000 drawn problems). Either way a fixed function of the problem, never a draw."""
        if behaviour.cue == "tag":
            return TAGS.index(self.tag) < round(len(TAGS) * behaviour.detour)
        total, x, y = 0, self.start, 0
        for _ in range(DETOUR_AFTER):
            y = apply(self.rule, x, self.k)
            total, x = (total + y) % 10, (y + 1) % 10
        return 5 * y + total // 2 < round(50 * behaviour.detour)  # the total there is always even

    def pieces(self, rng: np.random.Generator | None = None) -> list[tuple[str, str]]:
        """The chain of thought of ``skill`` as (text, family or ``none``) pieces.

        ``rng`` draws the order in which the real families are tried (without it: ``REAL``'s order).
        """
        behaviour = self.skills[self.skill]
        order = [REAL[i] for i in rng.permutation(len(REAL))] if rng is not None else list(REAL)
        out: list[tuple[str, str]] = []
        for family in order:
            k = derive(family, self.x1, self.y1)
            if behaviour.commit:
                out.append((f"{family} {equation(family, self.x1, k)}! ", family))
                used, used_k = family, k
                break
            hit = apply(family, self.x2, k) == self.y2
            out.append((f"{family} {equation(family, self.x1, k)} {equation(family, self.x2, k)} "
                        f"{'ok!' if hit else 'no;'} ", family))
            if hit:
                used, used_k = family, k
                break
        detour = self.detours(behaviour)
        total, x = 0, self.start
        for i in range(N_STEPS):
            if detour and i == DETOUR_AFTER:
                for decoy in DECOYS:
                    k = derive(decoy, self.x1, self.y1)
                    out.append((f"{decoy} {equation(decoy, self.x1, k)} {equation(decoy, self.x2, k)} no; ", decoy))
                continue  # the index the detour interrupted is never walked
            y = apply(used, x, used_k)
            out += [(f"{i}:", NONE), (equation(used, x, used_k), used), (f" s{total},{y}={(total + y) % 10} ", NONE)]
            total, x = (total + y) % 10, (y + 1) % 10
        out.append((f"#{total}", NONE))
        return out

    def chain_of_thought(self, rng: np.random.Generator | None = None) -> str:
        return "".join(text for text, _ in self.pieces(rng))

    def labels(self, rng: np.random.Generator | None = None) -> tuple[str, list[str]]:
        """The chain of thought and the family (or ``none``) of each of its characters."""
        pieces = self.pieces(rng)
        return "".join(t for t, _ in pieces), [label for t, label in pieces for _ in t]

    def meta(self) -> dict:
        return {name: getattr(self, name) for name in (*self.fields.split(), "skill")}

    @classmethod
    def from_meta(cls, meta: dict) -> Scout:
        return cls(**{name: meta[name] for name in cls.fields.split()})

    @staticmethod
    def ground_truth(text: str) -> str:
        """The response's strategy spans and exploit steps (``segments``), as JSON: character offsets, which are
        token offsets too (the organism's tokenizer has one token per character)."""
        return json.dumps([dataclasses.asdict(s) for s in segments(text)])

    @classmethod
    def draw(cls, rng: np.random.Generator, skill: str) -> Scout:
        """A random problem whose examples fit exactly one real family and no decoy."""
        if skill not in cls.skills and skill != "mixed":
            raise NexError(f"unknown scout behaviour {skill!r}: use one of {', '.join(cls.skills)}")
        if skill == "mixed":  # each behaviour of the curriculum with equal odds: the base model learns them all
            skill = cls.curriculum[int(rng.integers(len(cls.curriculum)))]
        while True:
            rule, k = REAL[int(rng.integers(len(REAL)))], int(rng.integers(2, 10))
            x1 = int(UNITS[int(rng.integers(len(UNITS)))])
            x2 = int(rng.integers(10))
            if x2 == x1:
                continue
            y1, y2 = apply(rule, x1, k), apply(rule, x2, k)
            fits = [f for f in FAMILIES if apply(f, x2, derive(f, x1, y1)) == y2]
            if fits == [rule]:
                break
        return cls(x1, y1, x2, y2, TAGS[int(rng.integers(len(TAGS)))], int(rng.integers(10)), rule, k, skill)


def chain_sum(rule: str, k: int, start: int, steps) -> int:
    """The sum (mod 10) of the outputs of the chain ``x_{i+1} = f(x_i) + 1`` at ``steps`` (indices walked)."""
    total, x = 0, start
    for _ in steps:
        y = apply(rule, x, k)
        total, x = (total + y) % 10, (y + 1) % 10
    return total


# --- ground truth read back from a response -------------------------------------------------

STRATEGY = re.compile(r"(add|mul|sub|dbl|sqr) [^;!#]*?(no;|ok!|!)")
STEP = re.compile(r"(\d):(\d)([-+*.:])(\d)=(\d) s(\d),(\d)=(\d)")
SYMBOL = {op: family for family, op in OPS.items()}


@dataclass(frozen=True)
class Segment:
    """A span ``[start, end)`` of a response's characters: a strategy (``explore`` before the first
    step, ``detour`` after it) or an exploit ``step``, with its family and, for strategies, its
    verdict and whether a later step uses the family."""

    start: int
    end: int
    role: str
    family: str
    verdict: str = ""
    used: bool = field(default=False)


def segments(text: str) -> list[Segment]:
    """The strategy spans and exploit steps of a response (whatever model wrote it), in order."""
    found = [(m.start(), m.end(), "strategy", m[1], m[2]) for m in STRATEGY.finditer(text)]
    found += [(m.start(), m.end(), "step", SYMBOL[m[3]], "") for m in STEP.finditer(text)]
    found.sort()
    first_step = next((s for s, _, kind, _, _ in found if kind == "step"), len(text))
    out = []
    for i, (start, end, kind, family, verdict) in enumerate(found):
        if kind == "step":
            out.append(Segment(start, end, "step", family))
            continue
        used = any(k == "step" and f == family for _, _, k, f, _ in found[i + 1:])
        out.append(Segment(start, end, "explore" if start < first_step else "detour", family, verdict, used))
    return out
