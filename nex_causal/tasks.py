"""Prompt sets with verifiable answers.

A ``TaskSet`` is a list of ``Problem`` s plus the two functions that make answers
checkable without a person: ``extract`` pulls the final answer out of a response and
``check`` says whether a response answers a problem correctly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


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

    def __len__(self) -> int:
        return len(self.problems)

    def prompts(self) -> list[str]:
        return [p.prompt for p in self.problems]

    def subset(self, indices: Sequence[int]) -> "TaskSet":
        return TaskSet(self.name, [self.problems[i] for i in indices], self.extract, self.check)
