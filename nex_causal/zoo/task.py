"""Seek-and-compute: the organism's task, whose chains of thought explore and then exploit.

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

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from nex_causal.errors import NexError
from nex_causal.tasks import TASK_FAMILIES, Problem, TaskFamily, TaskSet


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
SKILL_NAMES = ("mixed", *SKILLS)
SPLITS = ("train", "test")
TEST_FRACTION = 1 / 8
ANSWER = re.compile(r"#(\d+)")


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
        y = self.answer()
        product = x * self.d
        if self.d >= 10:
            tens, units = divmod(self.d, 10)
            multiply = f"{x}*{self.d}={x * tens * 10}+{x * units}={product}"
        else:
            multiply = f"{x}*{self.d}={product}"
        return f"{' '.join(searches)} {multiply} {product}+{self.e}={y} #{y}"

    def split(self) -> str:
        """``test`` for a fixed 1/8 of all parameter tuples (by hash), else ``train``."""
        digest = hashlib.blake2b(self.prompt.encode(), digest_size=8).digest()
        return "test" if int.from_bytes(digest, "little") / 2**64 < TEST_FRACTION else "train"


def sample_problem(rng: np.random.Generator, skill: str) -> SeekCompute:
    """Draw one problem of ``skill`` (``mixed`` picks search or compute with equal odds)."""
    if skill == "mixed":
        skill = ("search", "compute")[int(rng.integers(2))]
    ranges = SKILLS[skill]
    p = int(rng.choice(ranges.primes))
    return SeekCompute(
        p=p, a=int(rng.integers(1, p)), b=int(rng.integers(p)), c=int(rng.integers(p)),
        r=int(rng.integers(ranges.rounds[0], ranges.rounds[1] + 1)), d=int(rng.integers(ranges.d[0], ranges.d[1] + 1)),
        e=int(rng.integers(ranges.e[0], ranges.e[1] + 1)), skill=skill,
    )


def sample_problems(n: int, seed: int = 0, skill: str = "mixed", split: str = "test") -> list[SeekCompute]:
    """``n`` distinct problems of ``skill`` from ``split``, the same for the same seed."""
    if skill not in SKILL_NAMES:
        raise NexError(f"unknown organism skill {skill!r}: use one of {', '.join(SKILL_NAMES)}")
    if split not in SPLITS:
        raise NexError(f"unknown split {split!r}: use 'train' or 'test'")
    if n < 0:
        raise NexError(f"number of problems must be >= 0, got {n}")
    rng = np.random.default_rng([seed, SKILL_NAMES.index(skill), SPLITS.index(split)])
    seen: set[str] = set()
    out: list[SeekCompute] = []
    while len(out) < n:
        problem = sample_problem(rng, skill)
        if problem.split() == split and problem.prompt not in seen:
            seen.add(problem.prompt)
            out.append(problem)
    return out


def extract(text: str) -> str | None:
    """The final answer: the digits after the last ``#``, or None when there is none."""
    found = ANSWER.findall(text)
    return found[-1] if found else None


def check(problem: Problem, text: str) -> bool:
    """True when the response's final answer is exactly the gold ``y`` (no leading zeros)."""
    return extract(text) == problem.target


def as_problem(instance: SeekCompute) -> Problem:
    meta = {"p": instance.p, "a": instance.a, "b": instance.b, "c": instance.c, "r": instance.r,
            "d": instance.d, "e": instance.e, "x": instance.offsets_and_roots()[-1][1],
            "skill": instance.skill}
    digest = hashlib.blake2b(instance.prompt.encode(), digest_size=6).hexdigest()
    return Problem(id=f"organism-{digest}", prompt=instance.prompt, target=str(instance.answer()),
                   meta=meta)


def organism_tasks(n: int, seed: int = 0, skill: str = "mixed", split: str = "test") -> TaskSet:
    """``n`` seek-and-compute problems as a TaskSet (``organism`` or ``organism-<skill>``)."""
    name = "organism" if skill == "mixed" else f"organism-{skill}"
    problems = [as_problem(p) for p in sample_problems(n, seed=seed, skill=skill, split=split)]
    return TaskSet(name, problems, extract, check)


TASK_FAMILIES.add("organism", TaskFamily(re.compile(r"organism(?:-(\w+))?:(\d+)"),
                                          lambda m, seed: organism_tasks(int(m[2]), seed=seed, skill=m[1] or "mixed"),
                                          '"organism:N", "organism-<skill>:N"'))
