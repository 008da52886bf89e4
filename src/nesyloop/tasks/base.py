"""The example record every task produces and every stage consumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

AnswerType = Literal["number", "choice", "text"]


@dataclass
class Example:
    id: str
    question: str
    answer: str  # gold answer as text: "18", "B", "True", "valid"
    answer_type: AnswerType = "number"
    options: list[str] | None = None  # multiple choice: option texts in order (A, B, C, ...)
    rationale: str | None = None  # gold chain of thought, when the task has one
    program: str | None = None  # gold program-of-thought (Python), when the task has one
    split: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)
