"""The CoT rationale role (NesyCD's teacher prompt) and the filter that keeps a rationale only
when its extracted answer equals the gold answer. Rejected outputs are kept with the reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..gen.base import Backend, GenSettings, Message
from ..scoring import extract, answers_match
from ..tasks.base import Example
from .base import run_role
from .prompts import RATIONALE_SYSTEM, RATIONALE_USER


class RationaleRole:
    name = "rationale"

    def format_input(self, example: Example) -> list[Message]:
        return [
            {"role": "system", "content": RATIONALE_SYSTEM},
            {"role": "user", "content": RATIONALE_USER.format(question=example.question)},
        ]

    def format_output(self, text: str, example: Example) -> dict[str, Any]:
        ext = extract(text, example.answer_type, example.options, mode="strict")
        rationale = text.strip()
        if ext.value is None:
            reason = "no final answer found"
        elif not answers_match(ext.value, example.answer, example.answer_type, example.options):
            reason = f"wrong answer (teacher {ext.value}, gold {example.answer})"
        else:
            reason = None
        return {"rationale": rationale, "pred": ext.value, "rule": ext.rule,
                "kept": reason is None, "reason": reason}


def distill_rationales(
    teacher: Backend,
    examples: Sequence[Example],
    settings: GenSettings,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Ask the teacher for ``settings.n`` rationales per example and filter them.

    Returns ``(kept, rejected)``; identical rationales for the same question are kept once
    (later copies are rejected with reason "duplicate")."""
    role = RationaleRole()
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for ex, recs in zip(examples, run_role(teacher, role, examples, settings, batch_size,
                                           desc="teacher rationales", progress=progress),
                        strict=True):
        seen: set[str] = set()
        for rec in recs:
            rec["question"] = ex.question
            rec["answer"] = ex.answer
            if rec["kept"] and rec["rationale"] in seen:
                rec.update(kept=False, reason="duplicate")
            if rec["kept"]:
                seen.add(rec["rationale"])
                kept.append(rec)
            else:
                rejected.append(rec)
    return kept, rejected
