"""The program-of-thought role (FDD): the teacher writes a Python program that stores its result
in ``answer`` (or ``ans``). A program is kept only if it runs in the sandbox and its value equals
the gold answer; rejected programs are kept with the reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..gen.base import Backend, GenSettings, Message
from ..scoring import answers_match
from ..scoring.program import program_answers
from ..tasks.base import Example
from .base import run_role
from .prompts import POT_SYSTEM, POT_USER


class PotRole:
    name = "pot"

    def format_input(self, example: Example) -> list[Message]:
        return [
            {"role": "system", "content": POT_SYSTEM},
            {"role": "user", "content": POT_USER.format(question=example.question)},
        ]

    def format_output(self, text: str, example: Example) -> dict[str, Any]:
        return {"reply": text}


def teacher_programs(teacher: Backend, examples: Sequence[Example], settings: GenSettings,
                     batch_size: int = 64, progress: bool = True,
                     desc: str = "teacher programs") -> list[list[dict[str, Any]]]:
    """``settings.n`` programs per example, each run in the sandbox: records with ``program``,
    ``value`` (the normalised answer, None unless it ran ok), ``verdict`` and ``error``."""
    per_ex = run_role(teacher, PotRole(), examples, settings, batch_size, desc=desc,
                      progress=progress)
    flat = [rec for recs in per_ex for rec in recs]
    for rec, ans in zip(flat, program_answers([r.pop("reply") for r in flat]), strict=True):
        rec.update(ans.to_dict())
    return per_ex


def distill_programs(teacher: Backend, examples: Sequence[Example], settings: GenSettings,
                     batch_size: int = 64, progress: bool = True,
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """PoT rationales for problems with a gold answer: ``(kept, rejected)``; a program is kept
    when it runs and returns the gold answer (identical programs for a question kept once)."""
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for ex, recs in zip(examples, teacher_programs(teacher, examples, settings, batch_size,
                                                   progress), strict=True):
        seen: set[str] = set()
        for rec in recs:
            rec.update(question=ex.question, answer=ex.answer)
            if not rec.get("teacher_error"):  # a failed request has run_role's reason already
                rec["reason"] = _program_reason(rec, ex, seen)
            rec["kept"] = rec["reason"] is None
            (kept if rec["kept"] else rejected).append(rec)
    return kept, rejected


def _program_reason(rec: dict[str, Any], ex: Example, seen: set[str]) -> str | None:
    """Why a teacher program for ``ex`` is rejected, or None to keep it (then remembered in
    ``seen``, so an identical program for the same question is a duplicate)."""
    if rec["program"] is None:
        return "no program found"
    if rec["verdict"] != "ok":
        return f"program {rec['verdict']}: {rec['error']}"
    if not answers_match(rec["value"], ex.answer, ex.answer_type, ex.options):
        return f"wrong answer (program {rec['value']}, gold {ex.answer})"
    if rec["program"] in seen:
        return "duplicate"
    seen.add(rec["program"])
    return None
