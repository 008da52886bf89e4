"""The CoT rationale role (NesyCD's teacher prompt) and the filter that keeps a rationale only
when its extracted answer equals the gold answer. Rejected outputs are kept with the reason.

``teacher.backend = "dataset"`` asks no model: :func:`dataset_rationales` takes each training
example's own worked solution (GSM8K's) and sends it through the same filter."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
            reason = {"hedged": "hedged final answer (two different candidates)",
                      "invalid": "final answer is not a valid option"
                      }.get(ext.rule, "no final answer found")
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
    return _split(examples, run_role(teacher, role, examples, settings, batch_size,
                                     desc="teacher rationales", progress=progress))


NO_SOLUTION = "no worked solution in the data set"


def with_final_answer(rationale: str, example: Example) -> str:
    """``rationale`` ending "Therefore, the answer is <gold>." when no final answer is stated."""
    text = rationale.strip()
    if extract(text, example.answer_type, example.options, mode="strict").value is not None:
        return text
    gold = f"({example.answer})" if example.answer_type == "choice" else example.answer
    return f"{text}\nTherefore, the answer is {gold}."


def dataset_rationales(
    examples: Sequence[Example],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The data set's worked solutions as rationales (one per example), filtered like a
    teacher's: ``(kept, rejected)`` with the same record fields and reasons, plus
    ``source: "dataset"``. An example without a solution is rejected with :data:`NO_SOLUTION`."""
    role = RationaleRole()
    per_example = []
    for ex in examples:
        if ex.rationale and ex.rationale.strip():
            rec = role.format_output(with_final_answer(ex.rationale, ex), ex)
        else:
            rec = {"rationale": "", "pred": None, "rule": "none", "kept": False,
                   "reason": NO_SOLUTION}
        rec.update({"id": ex.id, "sample": 0, "role": role.name, "source": "dataset"})
        per_example.append([rec])
    return _split(examples, per_example)


def _split(examples: Sequence[Example], records: Iterable[list[dict[str, Any]]],
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, rejected) of the filtered records of each example; identical kept rationales for
    one question are kept once (later copies are rejected with reason "duplicate")."""
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for ex, recs in zip(examples, records, strict=True):
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
