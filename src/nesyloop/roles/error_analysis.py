"""NesyCD's symbolic knowledge distillation role: the teacher analyses a wrong student answer and
writes a learning summary plus supplementary knowledge, which become one knowledge-base entry.

The prompt carries up to two worked demonstrations (written for nesyloop, outside any task's
domain, so they teach the format and the level of generality, not facts). The student's response
is cleaned first (repetition cut, truncated to ``max_words`` words). Replies that do not parse
are returned with the reason and kept in the run.

Hygiene (``kb/hygiene.py``, docs/kb.md): a reply whose learning summary copies the prompt's
demonstrations is rejected ("copied the demonstration"), and so is one whose summary states a
false ``a op b = c`` ("false arithmetic"). A knowledge item that copies a demonstration or
states a false equation is dropped (listed with its reason in ``dropped_knowledge``); a reply
left with no item is rejected with the first dropped item's reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..gen.base import Backend, GenSettings, Message
from ..kb.hygiene import COPIED, FALSE_ARITHMETIC, demo_ngrams, equations, false_equations, is_copy
from ..kb.parse import clean_response, parse_analysis
from ..tasks.base import Example
from .base import run_role
from .prompts import ERROR_ANALYSIS_SYSTEM, ERROR_ANALYSIS_USER

DEMONSTRATIONS: tuple[dict[str, str], ...] = (
    {
        "question": "Tom buys 3 dozen eggs and uses 10 of them for a cake. How many eggs does "
                    "he have left?",
        "student_response": "3 dozen eggs are 3 * 10 = 30 eggs. 30 - 10 = 20. "
                            "Therefore, the answer is 20.",
        "answer": "26",
        "reply": "Learning summary: The student used a wrong size for a dozen, so every later "
                 "step was off. Before computing with a unit of count, recall exactly how many "
                 "items it stands for.\n"
                 "Supplementary knowledge:\n"
                 "1. A dozen is 12 items, so n dozen is n * 12 items.\n"
                 "2. Convert every quantity to single items before adding or subtracting.",
    },
    {
        "question": "A shop sells pencils in boxes of 8. Ana buys 5 boxes and gives away 12 "
                    "pencils. How many pencils does she have?",
        "student_response": "Ana has 5 + 8 = 13 pencils. 13 - 12 = 1. "
                            "Therefore, the answer is 1.",
        "answer": "28",
        "reply": "Learning summary: The student added the number of boxes to the box size "
                 "instead of multiplying. When a problem gives equal groups, find the total with "
                 "a multiplication first, then apply the later changes in order.\n"
                 "Supplementary knowledge:\n"
                 "1. Total in equal groups = number of groups * items per group.\n"
                 "2. Work out each step's total before subtracting what is given away.",
    },
)


class ErrorAnalysisRole:
    name = "error-analysis"

    def __init__(self, demonstrations: int = 2, max_words: int = 256):
        self.demos = DEMONSTRATIONS[:demonstrations]
        self.max_words = max_words
        self.demo_grams = demo_ngrams(
            t for d in self.demos for t in (d["question"], d["student_response"],
                                           *_demo_texts(d["reply"])))

    @staticmethod
    def _user(question: str, response: str, answer: str) -> str:
        return ERROR_ANALYSIS_USER.format(question=question, student_response=response,
                                          answer=answer)

    def format_input(self, example: Example) -> list[Message]:
        msgs: list[Message] = [{"role": "system", "content": ERROR_ANALYSIS_SYSTEM}]
        for d in self.demos:
            msgs.append({"role": "user", "content": self._user(
                d["question"], d["student_response"], d["answer"])})
            msgs.append({"role": "assistant", "content": d["reply"]})
        response = example.meta["student_response_clean"]
        msgs.append({"role": "user",
                     "content": self._user(example.question, response, example.answer)})
        return msgs

    def format_output(self, text: str, example: Example) -> dict[str, Any]:
        p = parse_analysis(text)
        rec = {"reply": text, "summary": p.summary, "knowledge": p.knowledge,
               "kept": p.ok, "reason": p.reason}
        if p.ok:
            student = example.meta.get("student_response_clean", "")
            rec.update(self.hygiene(p.summary or "", p.knowledge, student))
        return rec

    def _flaw(self, text: str, quoted: list) -> tuple[str, list[str]] | None:
        """Why ``text`` may not enter the KB (reason, the false equations), or None."""
        if is_copy(text, self.demo_grams):
            return COPIED, []
        wrong = false_equations(text, quoted)
        return (FALSE_ARITHMETIC, wrong) if wrong else None

    def hygiene(self, summary: str, knowledge: list[str], student: str) -> dict[str, Any]:
        """The record's fields after the hygiene checks: the summary rejects the whole reply, a
        flawed knowledge item is dropped, and a reply without items left is rejected."""
        quoted = [eq for _, eq in equations(student)]
        flaw = self._flaw(summary, quoted)
        if flaw is not None:
            out: dict[str, Any] = {"kept": False, "reason": flaw[0]}
            return {**out, "false_equations": flaw[1]} if flaw[1] else out
        kept, dropped = [], []
        for item in knowledge:
            flaw = self._flaw(item, quoted)
            if flaw is None:
                kept.append(item)
            else:
                dropped.append({"item": item, "reason": flaw[0],
                                **({"false_equations": flaw[1]} if flaw[1] else {})})
        if not dropped:
            return {}
        out = {"knowledge": kept, "dropped_knowledge": dropped}
        return {**out, "kept": False, "reason": dropped[0]["reason"]} if not kept else out


def _demo_texts(reply: str) -> list[str]:
    p = parse_analysis(reply)
    return [p.summary or "", *p.knowledge]


def analyse_errors(
    teacher: Backend,
    wrong: Sequence[dict[str, Any]],
    settings: GenSettings,
    demonstrations: int = 2,
    max_words: int = 256,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Error analysis for each wrong demonstration record (``id``, ``question``, ``answer``,
    ``response``). Returns ``(entries, rejected)``: one parsed record per kept reply (the first
    sample that parses and passes the hygiene checks), and every other reply, with its
    reason."""
    role = ErrorAnalysisRole(demonstrations, max_words)
    examples = []
    for d in wrong:
        clean, what = clean_response(d["response"], max_words)
        examples.append(Example(id=d["id"], question=d["question"], answer=str(d["answer"]),
                                meta={"student_response_clean": clean, "cleaning": what,
                                      "round": d.get("round")}))
    entries: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for ex, recs in zip(examples, run_role(teacher, role, examples, settings, batch_size,
                                           desc="error analysis", progress=progress),
                        strict=True):
        kept = False
        for rec in recs:
            rec.update(question=ex.question, answer=ex.answer, round=ex.meta["round"],
                       student_response=ex.meta["student_response_clean"],
                       cleaning=ex.meta["cleaning"])
            if rec["kept"] and not kept:
                entries.append(rec)
                kept = True
            elif rec["kept"]:
                rec.update(kept=False, reason="another sample of this question was kept")
                rejected.append(rec)
            else:
                rejected.append(rec)
    return entries, rejected
