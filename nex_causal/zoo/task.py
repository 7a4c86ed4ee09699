"""The organisms' tasks as task sets: drawing problems, splitting them, checking answers, and their specs.

Each organism's problem class (``trek.SeekCompute``, ``trek.Trek``, ``scout.Scout``) says how
to draw one problem of a skill (``draw``), write its prompt and chain of thought, and store
it as a ``Problem``'s meta (``meta``/``from_meta``); a hash of the prompt splits every
organism's problems into train and test alike (``split_of``).
This module turns them into task sets and registers their specs with the task families
(``organism:N`` names the default organism, ``trek:N``, ``seek:N``, ``scout:N`` each one;
``<spec>-<skill>:N`` draws one skill; ``<spec>:N@SEED`` draws with another seed, a
calibration set apart from seed 0's). Every organism ends its answer with ``#<digits>``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

from nex_causal.errors import NexError
from nex_causal.models.tasks import TASK_FAMILIES, Problem, TaskFamily, TaskSet
from nex_causal.zoo.scout import Scout
from nex_causal.zoo.trek import SeekCompute, Trek

DEFAULT_TASK = "trek"  # the default organism's task, which ``organism:N`` names
TASKS: dict[str, Any] = {"seek": SeekCompute, "trek": Trek, "scout": Scout}
SPLITS = ("train", "test")
TEST_FRACTION = 1 / 8
ANSWER = re.compile(r"#(\d+)")


def split_of(prompt: str) -> str:
    """``test`` for a fixed 1/8 of all problems (by a hash of the prompt), else ``train``: disjoint splits."""
    digest = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "little") / 2**64 < TEST_FRACTION else "train"


def skill_names(task: str) -> tuple[str, ...]:
    """The skills a task draws from: ``mixed`` and its own."""
    return ("mixed", *TASKS[task].skills)


def sample_problem(rng: np.random.Generator, skill: str, task: str = DEFAULT_TASK):
    """Draw one problem of ``skill`` for ``task``."""
    return TASKS[task].draw(rng, skill)


def sample_problems(n: int, seed: int = 0, skill: str = "mixed", split: str = "test", task: str = DEFAULT_TASK):
    """``n`` distinct problems of ``skill`` from ``split`` for ``task``, the same for the same seed."""
    skills = skill_names(task)
    if skill not in skills:
        raise NexError(f"unknown organism skill {skill!r}: use one of {', '.join(skills)}")
    if split not in SPLITS:
        raise NexError(f"unknown split {split!r}: use 'train' or 'test'")
    if n < 0:
        raise NexError(f"number of problems must be >= 0, got {n}")
    rng = np.random.default_rng([seed, skills.index(skill), SPLITS.index(split)])
    seen: set[str] = set()
    out = []
    while len(out) < n:
        problem = sample_problem(rng, skill, task)
        if split_of(problem.prompt) == split and problem.prompt not in seen:
            seen.add(problem.prompt)
            out.append(problem)
    return out


def extract(text: str) -> str | None:
    """The final answer: the digits after the last ``#``, or None when there is none."""
    found = ANSWER.findall(text)
    return found[-1] if found else None


def check(problem: Problem, text: str) -> bool:
    """True when the response's final answer is exactly the gold answer (no leading zeros)."""
    return extract(text) == problem.target


def answer_prefix(text: str) -> str:
    """A response up to and including its last ``#`` (the answer marker); else the response, then `` #``."""
    cut = text.rfind("#")
    return text[:cut + 1] if cut >= 0 else text.rstrip() + " #"


def as_problem(instance) -> Problem:
    digest = hashlib.blake2b(instance.prompt.encode(), digest_size=6).hexdigest()
    return Problem(id=f"organism-{digest}", prompt=instance.prompt, target=str(instance.answer()),
                   meta=instance.meta())


def organism_tasks(n: int, seed: int = 0, skill: str = "mixed", split: str = "test",
                   task: str = DEFAULT_TASK) -> TaskSet:
    """``n`` problems of ``task`` as a TaskSet (named ``<spec>`` or ``<spec>-<skill>``)."""
    kind = TASKS[task]
    name = kind.spec if skill == "mixed" else f"{kind.spec}-{skill}"
    problems = [as_problem(p) for p in sample_problems(n, seed=seed, skill=skill, split=split, task=task)]
    return TaskSet(name, problems, extract, check, answer_prefix,
                   solution=lambda p: kind.from_meta(p.meta).chain_of_thought(),
                   ground_truth=getattr(kind, "ground_truth", None))


for _spec, _task in (("organism", DEFAULT_TASK), *((kind.spec, name) for name, kind in TASKS.items())):
    TASK_FAMILIES.add(_spec, TaskFamily(
        re.compile(rf"{_spec}(?:-([\w.-]+?))?:(\d+)(?:@(\d+))?"),
        lambda m, seed, task=_task: organism_tasks(int(m[2]), seed=seed if m[3] is None else int(m[3]),
                                                   skill=m[1] or "mixed", task=task),
        f'"{_spec}:N", "{_spec}-<skill>:N", "{_spec}:N@SEED"'))
