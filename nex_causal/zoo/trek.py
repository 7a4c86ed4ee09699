"""The seek and trek organisms' task: modular searches whose chains of thought explore, then exploit.

Two tasks share one problem family and differ in how the chain of thought is written:
``seek`` (seek-and-compute, the small organism's) and ``trek`` (longer searches with
backtracking and re-checks between computations, the default organism's; see ``Trek``).

A problem gives a prime ``p``, ``a`` in 1..p-1, ``b, c`` in [0, p), a number of rounds
``r`` and two numbers ``d, e``. Round 1 finds the unique ``x`` in [0, p) with
``(a*x + b) mod p == c``; every later round searches again with the previous round's ``x``
in place of ``b``. The answer is ``y = x*d + e`` for the last round's ``x``.

The chain of thought *explores*: each round tries x = 0, 1, 2, ... (or, its choice,
x = p-1, p-2, ...) writing ``f(x) = (a*x + b) mod p`` (each value is the previous one plus
or minus ``a``, mod ``p``), every miss a dead end, until ``f(x) == c`` (marked ``!``); the
next round restates its new ``b``. It then *exploits*: a deterministic computation of
``y`` (a two-digit ``d`` is split into tens and units). The final answer follows ``#``
and ends the response (here every round searches upward)::

    p=7 a=3 b=4 c=5 r=2 d=6 e=2|x0:4 x1:0 x2:3 x3:6 x4:2 x5:5! b=5 x0:5! 0*6=0 0+2=2 #2
    p=5 a=2 b=1 c=0 r=2 d=37 e=15|x0:1 x1:3 x2:0! b=2 x0:2 x1:4 x2:1 x3:3 x4:0! 4*37=120+28=148 148+15=163 #163

Skills shape the mixture: ``search`` problems have four or five rounds and one-digit
``d, e`` (long exploration, easy arithmetic), ``compute`` problems two or three rounds and
two-digit ``d, e`` (shorter exploration, multi-step arithmetic); ``mixed`` draws each problem
from one of the two with equal odds. Moduli stay below 10 so that every search value is a
single character: with two-digit values a model this small needs several times more
training steps to learn the modular step. Train and test splits are disjoint by a hash of
the problem's parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Skill:
    """The parameter ranges (inclusive) one skill draws its problems from."""

    rounds: tuple[int, int]
    d: tuple[int, int]
    e: tuple[int, int]
    primes: tuple[int, ...] = (5, 7)


SKILLS = {
    "search": Skill(rounds=(4, 5), d=(2, 9), e=(0, 9)),
    "compute": Skill(rounds=(2, 3), d=(12, 99), e=(10, 99)),
}


@dataclass(frozen=True)
class SeekCompute:
    """One problem instance; ``skill`` records which distribution drew it."""

    p: int
    a: int
    b: int
    c: int
    r: int
    d: int
    e: int
    skill: str = "mixed"
    skills: ClassVar[dict[str, Skill]] = SKILLS
    spec: ClassVar[str] = "seek"  # the task spec's name: seek:N, seek-<skill>:N
    group: ClassVar[str] = "skill"  # the meta field the zoo's accuracy is broken down by

    @property
    def prompt(self) -> str:
        return f"p={self.p} a={self.a} b={self.b} c={self.c} r={self.r} d={self.d} e={self.e}|"

    def offsets_and_roots(self) -> list[tuple[int, int]]:
        """Per round, its ``b`` and the unique ``x`` in [0, p) with ``(a*x + b) mod p == c``."""
        rounds, b = [], self.b
        for _ in range(self.r):
            x = (self.c - b) * pow(self.a, -1, self.p) % self.p
            rounds.append((b, x))
            b = x
        return rounds

    def answer(self) -> int:
        """``y = x*d + e`` for the last round's ``x``."""
        return self.offsets_and_roots()[-1][1] * self.d + self.e

    def chain_of_thought(self, rng: np.random.Generator | None = None) -> str:
        """The response the organism is trained to write: searches, then computation, then answer.

        Each round searches upward from x = 0 or, when ``rng`` picks it (odds 1/2 per round),
        downward from x = p-1 (each value then the previous one minus ``a``, mod ``p``).
        Training draws the direction at random, so the organism's search is a genuine
        choice and sampled traces differ; without ``rng`` every round searches upward.
        """
        searches = []
        for k, (b, x) in enumerate(self.offsets_and_roots()):
            downward = rng is not None and rng.random() < 0.5
            order = range(self.p - 1, x - 1, -1) if downward else range(x + 1)
            trials = " ".join(f"x{i}:{(self.a * i + b) % self.p}" for i in order)
            searches.append(f"{trials}!" if k == 0 else f"b={b} {trials}!")
        return f"{' '.join(searches)} {self.computation(x)}"

    def computation(self, x: int) -> str:
        """The exploit phase: ``y = x*d + e`` written out (a two-digit ``d`` split into tens and
        units), then the answer after ``#``."""
        y, product = self.answer(), x * self.d
        if self.d >= 10:
            tens, units = divmod(self.d, 10)
            multiply = f"{x}*{self.d}={x * tens * 10}+{x * units}={product}"
        else:
            multiply = f"{x}*{self.d}={product}"
        return f"{multiply} {product}+{self.e}={y} #{y}"

    def meta(self) -> dict:
        """The problem's fields (and the last round's root) as a ``Problem``'s meta."""
        return {"p": self.p, "a": self.a, "b": self.b, "c": self.c, "r": self.r, "d": self.d, "e": self.e,
                "x": self.offsets_and_roots()[-1][1], "skill": self.skill}

    @classmethod
    def from_meta(cls, meta: dict) -> SeekCompute:
        return cls(**{k: meta[k] for k in "pabcrde"})

    @classmethod
    def draw(cls, rng: np.random.Generator, skill: str) -> SeekCompute:
        """One problem of ``skill`` (``mixed`` picks search or compute with equal odds)."""
        if skill == "mixed":
            skill = ("search", "compute")[int(rng.integers(2))]
        ranges = cls.skills[skill]
        p = int(rng.choice(ranges.primes))
        return cls(
            p=p, a=int(rng.integers(1, p)), b=int(rng.integers(p)), c=int(rng.integers(p)),
            r=int(rng.integers(ranges.rounds[0], ranges.rounds[1] + 1)),
            d=int(rng.integers(ranges.d[0], ranges.d[1] + 1)), e=int(rng.integers(ranges.e[0], ranges.e[1] + 1)),
            skill=skill,
        )


TREK_SKILLS = {
    "search": Skill(rounds=(4, 6), d=(2, 9), e=(0, 9)),
    "compute": Skill(rounds=(3, 4), d=(12, 99), e=(10, 99)),
}


@dataclass(frozen=True)
class Trek(SeekCompute):
    """The default organism's task: the same problems, searched longer and re-checked.

    Each round searches for ``x`` with ``(a*x + b) mod p == c`` in strides of two (x = s,
    s+2, ...), and when it runs off the end without a hit, backtracks (``;``) to the other
    parity; the hit is re-checked (``?a*x+b=v=c``); the next round's offset is computed from
    it, ``b' = (x + c) mod p`` (``b=x+c=v=b'``). The answer is ``y = x*d + e`` for the last
    round's ``x``, so every search must have gone right::

        p=7 a=3 b=4 c=5 r=2 d=6 e=2|x0:4 x2:3 x4:2 x6:1; x1:0 x3:6 x5:5! ?3*5+4=19=5 b=5+5=10=3
        x0:3 x2:2 x4:1 x6:0; x1:6 x3:5! ?3*3+3=12=5 3*6=18 18+2=20 #20

    Training draws the starting parity of each round at random (``rng``); without it every
    round starts at 0.
    """

    skills: ClassVar[dict[str, Skill]] = TREK_SKILLS
    spec: ClassVar[str] = "trek"

    def offsets_and_roots(self) -> list[tuple[int, int]]:
        """Per round, its ``b`` and the unique root; the next ``b`` is ``(x + c) mod p``."""
        rounds, b = [], self.b
        for _ in range(self.r):
            x = (self.c - b) * pow(self.a, -1, self.p) % self.p
            rounds.append((b, x))
            b = (x + self.c) % self.p
        return rounds

    def chain_of_thought(self, rng: np.random.Generator | None = None) -> str:
        parts = []
        rounds = self.offsets_and_roots()
        for k, (b, x) in enumerate(rounds):
            start = int(rng.integers(2)) if rng is not None else 0
            first = [i for i in range(start, self.p, 2)]
            order = first[:first.index(x) + 1] if x in first else first + [";"] + [
                i for i in range(1 - start, x + 1, 2)]
            trials = " ".join(t if t == ";" else f"x{t}:{(self.a * t + b) % self.p}" for t in order)
            value = self.a * x + b
            check = f"?{self.a}*{x}+{b}={value}={value % self.p}"
            step = ""
            if k + 1 < len(rounds):
                step = f" b={x}+{self.c}={x + self.c}={(x + self.c) % self.p}"
            parts.append(f"{trials.replace(' ; ', '; ')}! {check}{step}")
        return f"{' '.join(parts)} {self.computation(rounds[-1][1])}"
