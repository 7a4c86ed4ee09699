"""Prompt sets with verifiable answers.

A ``TaskSet`` is a list of ``Problem`` s plus the two functions that make answers
checkable without a person: ``extract`` pulls the final answer out of a response and
``check`` says whether a response answers a problem correctly. Two more serve the
continuous outcomes of the causal grids: ``answer_prefix`` cuts a response just before
its final answer (so the log-probability of the gold answer can be read there), and
``solution``, where the task has one, writes a problem's reference solution.

Families of task sets are registered in ``TASK_FAMILIES`` and chosen by ``load_tasks(spec)``:

- ``rg:<dataset>:N[:key=value,...]``: procedural problems from ``reasoning-gym`` (with the
  dataset's config options), scored by its own
  ``score_answer`` (full credit counts as correct);
- ``path.jsonl``: user problems in the usual math formats (GSM8K ``#### N``, MATH
  ``\\boxed{...}``), compared after answer normalisation;
- ``organism:N`` and the like: the model organisms' own tasks, which the zoo registers.

Prompts of the last two ask for a final ``Answer: X`` line; ``final_answer`` also accepts
``\\boxed{X}``, ``<answer>X</answer>``, ``#### X`` and "the answer is X", whichever comes last.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from nex_causal.errors import NexError
from nex_causal.io import jsonl_objects
from nex_causal.registry import Registry

ANSWER_INSTRUCTION = 'Think step by step, then give your final answer on the last line as "Answer: <answer>".'
QUESTION_FIELDS = ("question", "problem", "prompt")
ANSWER_FIELDS = ("answer", "solution")


@dataclass(frozen=True)
class Problem:
    """One prompt with its gold answer; ``meta`` holds task-specific fields."""

    id: str
    prompt: str
    target: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskSet:
    """Problems plus answer extraction and checking for one task family."""

    name: str
    problems: list[Problem]
    extract: Callable[[str], str | None]
    check: Callable[[Problem, str], bool]
    answer_prefix: Callable[[str], str] = field(default=lambda text: answer_prefix(text))
    solution: Callable[[Problem], str] | None = None
    ground_truth: Callable[[str], str] | None = None  # what the task knows of a response beyond its answer (JSON)

    def __len__(self) -> int:
        return len(self.problems)

    def prompts(self) -> list[str]:
        return [p.prompt for p in self.problems]


def with_instruction(question: str) -> str:
    """The prompt for ``question``: the question, then the request for an ``Answer:`` line."""
    return f"{question.strip()}\n\n{ANSWER_INSTRUCTION}"


# -- finding the final answer in a response ---------------------------------------------------

MARKER = re.compile(r"answer\s*(?::|is\b:?)|####", re.IGNORECASE)
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> tuple[int, str] | None:
    """Start and content of the last ``\\boxed{...}`` (nested braces matched), or None."""
    for match in reversed(list(BOXED.finditer(text))):
        depth = 1
        for end in range(match.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                return match.start(), text[match.end():end]
    return None


def final_answer(text: str) -> str | None:
    """The raw final answer of a response: whichever answer form appears last, or None.

    After an ``Answer:``-style marker the answer is the rest of that line, or the rest of
    the text when the line is empty (multi-line answers such as grids).
    """
    found: list[tuple[int, str]] = []
    if (boxed := last_boxed(text)) is not None:
        found.append(boxed)
    if tags := list(ANSWER_TAG.finditer(text)):
        found.append((tags[-1].start(), tags[-1].group(1)))
    if markers := list(MARKER.finditer(text)):
        rest = text[markers[-1].end():]
        line = rest.split("\n", 1)[0].strip(" \t*")
        found.append((markers[-1].start(), line or rest))
    if not found:
        return None
    answer = max(found, key=lambda f: f[0])[1].strip().strip("*").strip()
    return answer or None


# -- normalising answers ----------------------------------------------------------------------

NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
FRACTION = re.compile(rf"\s*(-?)\\frac\{{({NUMBER})\}}\{{({NUMBER})\}}\s*")
RATIO = re.compile(rf"\s*({NUMBER})\s*/\s*({NUMBER})\s*")
WITH_UNIT = re.compile(rf"\s*({NUMBER})(?:\s*%|\s*°[CF]?|\s+[a-zA-Z][a-zA-Z /.]*)?\s*")  # "12 apples", "50%"


def _fraction(number: str) -> Fraction:
    return Fraction(number.replace(",", ""))


def parse_number(text: str) -> Fraction | None:
    """The exact value of a numeric answer ("1,234", "-$5.00", "1/2", "\\frac{1}{2}", "12 cm"), or None."""
    text = text.replace("$", "").replace("\u2212", "-")
    if m := FRACTION.fullmatch(text):
        num, den = _fraction(m[2]), _fraction(m[3])
        return None if den == 0 else (-1 if m[1] else 1) * num / den
    if m := RATIO.fullmatch(text):
        num, den = _fraction(m[1]), _fraction(m[2])
        return None if den == 0 else num / den
    if m := WITH_UNIT.fullmatch(text):
        return _fraction(m[1])
    return None


def format_number(value: Fraction) -> str:
    """Canonical text of a number: "12", "-0.125" for finite decimals, else "1/3"."""
    if value.denominator == 1:
        return str(value.numerator)
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)  # the fewest decimal places that write the value exactly
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    return f"{'-' if value < 0 else ''}{digits[:-places]}.{digits[-places:]}"


def normalize_answer(text: str) -> str:
    """Canonical form of an answer, so that equal answers compare equal as strings.

    Numbers become ``format_number`` of their exact value (commas, ``$``, trailing units,
    a trailing period, ``x =`` and the Unicode minus are dropped; "1/2", "0.5" and
    ``\\frac{1}{2}`` agree); other answers lose LaTeX wrappers, case and extra spaces.
    """
    s = text.strip()
    if (boxed := last_boxed(s)) is not None:
        s = boxed[1]
    s = s.replace("\u2212", "-").replace("\\$", "$").replace("\\%", "%")
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}", r" \1", s)
    s = re.sub(r"\\[,;:! ]|\\left|\\right", "", s)
    s = re.sub(r"\^\s*\{?\\circ\}?", "°", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.strip().strip("*$").strip()
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s).rstrip(".").strip()
    if (value := parse_number(s)) is not None:
        return format_number(value)
    s = re.sub(r"\s*([,()\[\]{}=+\-*/^\\])\s*", r"\1", s)
    return " ".join(s.lower().split())


def answer_prefix(text: str) -> str:
    """``text`` up to its last ``Answer:``-style marker and one space; or the text, then ``\nAnswer: ``."""
    if markers := list(MARKER.finditer(text)):
        return text[:markers[-1].end()] + " "
    return text.rstrip() + "\nAnswer: "


def extract_answer(text: str) -> str | None:
    """The normalised final answer of a response, or None when it gives none."""
    answer = final_answer(text)
    return None if answer is None else normalize_answer(answer) or None


def check_answer(problem: Problem, text: str) -> bool:
    """True when the response's normalised final answer equals the normalised gold answer."""
    answer = extract_answer(text)
    return answer is not None and answer == normalize_answer(problem.target)


# -- task families ---------------------------------------------------------------------------

def gold_answer(solution: Any) -> str:
    """The gold answer in a GSM8K answer (``... #### 72``), a MATH solution (last ``\\boxed``) or a value."""
    if isinstance(solution, bool) or not isinstance(solution, (str, int, float)):
        raise ValueError(f"answer must be a string or a number, got {type(solution).__name__}")
    text = str(solution)
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    if (boxed := last_boxed(text)) is not None:
        return boxed[1].strip()
    return text.strip()


def load_jsonl(path: str | Path) -> TaskSet:
    """Problems from a JSONL file: one object a line with a question and an answer field.

    The question is read from the first of ``question``/``problem``/``prompt``, the gold
    answer from ``answer``/``solution`` (see ``gold_answer``); ``id`` is kept when present.
    Other fields go to ``Problem.meta``. Blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise NexError(f"task file {path} does not exist: check the path")
    problems: list[Problem] = []
    seen: set[str] = set()
    for lineno, where, record in jsonl_objects(path):
        q_key = next((k for k in QUESTION_FIELDS if isinstance(record.get(k), str)), None)
        a_key = next((k for k in ANSWER_FIELDS if record.get(k) is not None), None)
        if q_key is None or a_key is None:
            raise NexError(f"{where}: needs a text field {'/'.join(QUESTION_FIELDS)} and a field "
                           f"{'/'.join(ANSWER_FIELDS)}")
        try:
            target = gold_answer(record[a_key])
        except ValueError as err:
            raise NexError(f"{where}: {err}") from None
        if not target:
            raise NexError(f"{where}: the {a_key!r} field holds no answer: give the gold answer")
        pid = str(record.get("id", f"{path.stem}-{lineno}"))
        if pid in seen:
            raise NexError(f"{where}: duplicate id {pid!r}: ids must be unique")
        seen.add(pid)
        meta = {k: v for k, v in record.items() if k not in (q_key, a_key, "id")}
        problems.append(Problem(pid, with_instruction(record[q_key]), target, meta))
    if not problems:
        raise NexError(f"task file {path} holds no problems: add one JSON object per line")
    return TaskSet(path.stem, problems, extract_answer, check_answer)


def _option_value(text: str) -> int | float | bool | str:
    """A dataset option's value as written in a task spec: an int, a float, true/false, else text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def reasoning_gym_tasks(dataset: str, n: int, seed: int = 0, options: str = "") -> TaskSet:
    """``n`` seeded problems of a reasoning-gym dataset, checked by its own ``score_answer``.

    ``options`` are the dataset's config fields as ``key=value,...`` (from a spec
    ``rg:<dataset>:N:key=value,...``), e.g. ``min_terms=2,max_terms=2`` for basic_arithmetic.
    """
    import reasoning_gym

    try:
        kwargs = {k.strip(): _option_value(v.strip()) for k, v in (item.split("=", 1) for item in options.split(",")
                                                                   if item.strip())}
    except ValueError:
        raise NexError(f"cannot read the options {options!r} of rg:{dataset}: write key=value,key=value") from None
    try:
        data = reasoning_gym.create_dataset(dataset, size=n, seed=seed, **kwargs)
    except ValueError:
        raise NexError(f"unknown reasoning-gym dataset {dataset!r}: see "
                       f"reasoning_gym.factory.DATASETS for the names") from None
    except (TypeError, AssertionError) as err:
        raise NexError(f"rg:{dataset} does not take the options {options!r}: {err}") from None
    problems = [
        Problem(f"rg-{dataset}-{seed}-{i}", with_instruction(entry["question"]),
                "" if entry["answer"] is None else str(entry["answer"]), {"entry": entry})
        for i, entry in enumerate(data)
    ]

    def check(problem: Problem, text: str) -> bool:
        try:
            return data.score_answer(final_answer(text), problem.meta["entry"]) >= 1.0
        except Exception:  # a scorer that chokes on a malformed answer: not correct
            return False

    return TaskSet(f"rg:{dataset}", problems, final_answer, check)


@dataclass(frozen=True)
class TaskFamily:
    """A family of task sets named by a spec: ``pattern`` (matched against the whole spec),
    ``load(match, seed)`` building the TaskSet, and ``form``, how the spec is written."""

    pattern: re.Pattern
    load: Callable[[re.Match, int], TaskSet]
    form: str


TASK_FAMILIES: Registry[TaskFamily] = Registry("task family")
TASK_FAMILIES.add("reasoning-gym", TaskFamily(re.compile(r"rg:([\w-]+):(\d+)(?::(\S+))?"),
                                               lambda m, seed: reasoning_gym_tasks(m[1], int(m[2]), seed=seed,
                                                                                   options=m[3] or ""),
                                               '"rg:<dataset>:N", "rg:<dataset>:N:key=value,..."'))


def load_tasks(spec: str, *, seed: int = 0) -> TaskSet:
    """The task set named by ``spec`` (a registered family's form, or a .jsonl path), the same for the same seed."""
    spec = str(spec)
    if spec.endswith(".jsonl"):
        tasks = load_jsonl(spec)
    else:
        found = [(f, m) for f in TASK_FAMILIES.values() if (m := f.pattern.fullmatch(spec))]
        if not found:
            forms = ", ".join(f.form for f in TASK_FAMILIES.values())
            raise NexError(f"unknown task spec {spec!r}: use {forms} or a path ending in .jsonl")
        family, match = found[0]
        tasks = family.load(match, seed)
    if len(tasks) == 0:
        raise NexError(f"task spec {spec!r} gives no problems: ask for at least one")
    return tasks
