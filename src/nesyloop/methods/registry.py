"""The methods of this release, each a thin composition of shared stages.

A method says how its student is trained: ``zero-shot`` not at all (the student as it is),
``answer-ft`` on question -> answer, ``std-cot`` on question -> filtered teacher rationale (the
NesyCD stage-1 student S_P). Prediction and scoring are the same for all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..io import read_jsonl
from ..students.prompt import answer_target, student_prompt
from .common import load_split


@dataclass(frozen=True)
class Method:
    name: str
    needs_rationales: bool
    # (data_dir, rationale_dir) -> list of {"prompt", "completion"}; None = no training
    pairs: Callable[[Path, Path | None], list[dict[str, str]]] | None


def answer_pairs(data_dir: Path, _rationales: Path | None) -> list[dict[str, str]]:
    return [{"prompt": student_prompt(ex.question), "completion": answer_target(ex.answer)}
            for ex in load_split(data_dir, "train")]


def cot_pairs(_data_dir: Path, rationale_dir: Path | None) -> list[dict[str, str]]:
    assert rationale_dir is not None
    return [{"prompt": student_prompt(r["question"]), "completion": " " + r["rationale"]}
            for r in read_jsonl(rationale_dir / "kept.jsonl")]


METHODS: dict[str, Method] = {
    "zero-shot": Method("zero-shot", needs_rationales=False, pairs=None),
    "answer-ft": Method("answer-ft", needs_rationales=False, pairs=answer_pairs),
    "std-cot": Method("std-cot", needs_rationales=True, pairs=cot_pairs),
}
