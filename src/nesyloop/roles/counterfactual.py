"""The counterfactual rationale role (the joined loop, ``[joined] counterfactual``): the teacher
solves a problem taking the facts of a knowledge block as true, one of whose numbers was
changed. The reply is kept when its answer differs from the problem's gold answer (the changed
fact was used) and it states the changed fact; otherwise it is rejected with the reason."""

from __future__ import annotations

from typing import Any

from ..gen.base import Message
from ..scoring import answers_match, extract
from ..tasks.base import Example
from .prompts import COUNTERFACTUAL_USER, RATIONALE_SYSTEM


def stated(sentence: str, text: str) -> bool:
    """Whether ``text`` states ``sentence`` (case, spacing and its final period ignored)."""
    def norm(s: str) -> str:
        return " ".join(s.lower().split()).rstrip(".")

    return norm(sentence) in norm(text)


def _negative(value: str) -> bool:
    return value.strip().startswith("-")


class CounterfactualRole:
    """``example.meta``: ``knowledge`` (the changed block) and ``changed`` (its changed
    sentence); ``example.answer`` is the gold answer under the true facts."""

    name = "counterfactual"

    def format_input(self, example: Example) -> list[Message]:
        return [
            {"role": "system", "content": RATIONALE_SYSTEM},
            {"role": "user", "content": COUNTERFACTUAL_USER.format(
                knowledge=example.meta["knowledge"], question=example.question)},
        ]

    def format_output(self, text: str, example: Example) -> dict[str, Any]:
        ext = extract(text, example.answer_type, example.options, mode="strict")
        rationale = text.strip()
        if ext.value is None:
            reason = "no final answer found"
        elif answers_match(ext.value, example.answer, example.answer_type, example.options):
            reason = "the changed fact did not change the answer"
        elif example.answer_type == "number" and _negative(ext.value) \
                and not _negative(example.answer):
            reason = "the changed fact gives a negative answer"
        elif not stated(example.meta["changed"], rationale):
            reason = "the rationale does not state the changed fact"
        else:
            reason = None
        return {"rationale": rationale, "pred": ext.value, "kept": reason is None,
                "reason": reason}
