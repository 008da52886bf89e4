"""The problem-evolution role (FDD data evolution): the teacher writes a harder variant of a
problem the student solved, or a new problem of similar difficulty to one it failed.

:func:`parse_problem` reads the reply; a malformed reply is rejected with a reason, never
guessed at."""

from __future__ import annotations

import re
from typing import Any

from ..gen.base import Message
from ..tasks.base import Example
from .prompts import EVOLVE_HARDER_SYSTEM, EVOLVE_SIMILAR_SYSTEM, EVOLVE_USER

KINDS = ("harder", "similar")
MIN_WORDS = 5
MAX_WORDS = 200
_LABEL = re.compile(r"^\s*\**\s*(?:new\s+)?problem\s*\**\s*:\s*\**", re.IGNORECASE | re.MULTILINE)
_NEXT_LABEL = re.compile(r"\n\s*\**\s*(?:solution|answer|explanation|reasoning|note)\s*\**\s*:",
                         re.IGNORECASE)


def parse_problem(text: str, source: str) -> tuple[str | None, str | None]:
    """``(question, None)`` or ``(None, reason)`` for a reply to an evolution prompt."""
    labels = list(_LABEL.finditer(text or ""))
    if not labels:
        return None, "no 'Problem:' in the reply"
    body = text[labels[-1].end():]
    body = _NEXT_LABEL.split(body, 1)[0]
    body = body.split("\n\n", 1)[0]
    q = " ".join(body.replace("**", "").split()).strip().strip('"').strip()
    if not q:
        return None, "empty problem"
    if q.startswith("<") and q.endswith(">"):
        return None, "placeholder instead of a problem"
    words = len(q.split())
    if words < MIN_WORDS:
        return None, f"problem too short ({words} words)"
    if words > MAX_WORDS:
        return None, f"problem too long ({words} words)"
    if " ".join(q.lower().split()) == " ".join(source.lower().split()):
        return None, "the same problem as its source"
    return q, None


class EvolveRole:
    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown evolution kind {kind!r}")
        self.kind = kind
        self.name = f"evolve-{kind}"

    def format_input(self, example: Example) -> list[Message]:
        system = EVOLVE_HARDER_SYSTEM if self.kind == "harder" else EVOLVE_SIMILAR_SYSTEM
        return [{"role": "system", "content": system},
                {"role": "user", "content": EVOLVE_USER.format(question=example.question)}]

    def format_output(self, text: str, example: Example) -> dict[str, Any]:
        question, reason = parse_problem(text, example.question)
        return {"kind": self.kind, "parent": example.id, "parent_question": example.question,
                "question": question, "reply": text, "reason": reason}
