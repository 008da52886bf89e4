"""Simple methods: a student trained on pairs built from the shared stages, then evaluated.

``zero-shot`` is not trained (the student as it is), ``answer-ft`` is trained on question ->
answer, ``std-cot`` on question -> filtered teacher rationale (NesyCD's stage-1 student S_P, and
FDD's round 0). A new simple method is one :class:`SimpleMethod` passed to ``register``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..io import read_jsonl
from ..runs.context import RunContext
from ..runs.rundir import StageResult
from ..students.prompt import answer_target, student_prompt
from . import shared
from .common import load_split
from .registry import ReportPart, Rows, register

# (data dir, rationale dir or None) -> training pairs {"prompt", "completion"}
Pairs = Callable[[Path, Path | None], list[dict[str, str]]]


@dataclass(frozen=True)
class SimpleMethod:
    name: str
    needs_rationales: bool
    pairs: Pairs | None  # None: no training (the base student is evaluated)
    teacher_use: str | None = None

    def train(self, ctx: RunContext) -> StageResult | None:
        """``train-<name>`` (None when the method trains nothing)."""
        if self.pairs is None:
            return None
        pairs, data = self.pairs, shared.data(ctx)
        rat = shared.rationales(ctx) if self.needs_rationales else None
        return shared.train_student(
            ctx, self.name, lambda _sc: pairs(data.path, rat.path if rat else None),
            deps=[data, *([rat] if rat else [])])

    def run(self, ctx: RunContext, until: str | None = None) -> Rows | None:
        trained = self.train(ctx)
        if until == "train":
            return None
        base, base_deps, base_settings = shared.base_model(ctx)
        if trained is None:
            res = shared.evaluate(ctx, self.name, base, base_deps, base_settings, until)
        else:
            res = shared.evaluate(ctx, self.name, trained.path / "model", [trained],
                                  base_settings, until)
        return None if res is None else {self.name: res}

    def estimate(self, counter) -> None:
        return None  # no teacher work beyond the shared rationales

    def report(self, ctx: RunContext, metrics: Rows) -> ReportPart | None:
        return None

    def kb_use(self, cfg) -> None:
        return None


def answer_pairs(data_dir: Path, _rationales: Path | None) -> list[dict[str, str]]:
    return [{"prompt": student_prompt(ex.question), "completion": answer_target(ex.answer)}
            for ex in load_split(data_dir, "train")]


def cot_pairs(_data_dir: Path, rationale_dir: Path | None) -> list[dict[str, str]]:
    assert rationale_dir is not None
    return [{"prompt": student_prompt(r["question"]), "completion": " " + r["rationale"]}
            for r in read_jsonl(rationale_dir / "kept.jsonl")]


ZERO_SHOT = register(SimpleMethod("zero-shot", needs_rationales=False, pairs=None))
ANSWER_FT = register(SimpleMethod("answer-ft", needs_rationales=False, pairs=answer_pairs))
STD_COT = register(SimpleMethod("std-cot", needs_rationales=True, pairs=cot_pairs))
