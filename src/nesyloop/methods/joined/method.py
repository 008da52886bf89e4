"""``nesycd+fdd``: FDD's rounds, then NesyCD on what they produced.

Every round's wrong answers go to the teacher's error analysis (one KB, ``kb-fdd``, each entry
with its round; with ``fdd.final_feedback`` the last round's student answers its own round's
problems too), and the final student is trained NesyCD-style (multi-task, with retrieved
knowledge) from the best FDD student on the final pool, then evaluated with retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...runs.context import RunContext
from .. import shared
from ..fdd.method import FddMethod, Rounds, estimate_rounds, fdd_rounds
from ..fdd.stages import COT, FEEDBACK, POOL
from ..nesycd.method import KB, error_kb, evaluate_with_kb, knowledge_section
from ..nesycd.stages import KB_FILE, se_pairs, task_description
from ..registry import KbUse, ReportPart, Rows, register

KB_FDD = "kb-fdd"  # the error analysis of every round's wrong answers


def joined_student(ctx: RunContext, name: str, done: Rounds, until: str | None
                   ) -> dict[str, Any] | None:
    """kb-fdd, then train-<name> from the best round's student on the last pool, evaluated
    with retrieval from kb-fdd."""
    ns, thoughts = ctx.cfg.nesycd, ctx.cfg.fdd.thoughts
    fbs = [r.feedback for r in done.rounds if r.feedback is not None]
    kb = error_kb(ctx, KB_FDD, fbs)
    done.joined, done.kb = name, kb
    final, last_pool = done.final(), done.rounds[-1].pool
    settings = {"seed": ctx.cfg.run.seed,
                "nesycd": ns.model_dump(mode="json", include={"retrieval", "train_knowledge",
                                                              "augment", "mix",
                                                              "task_description"}),
                **({"thoughts": thoughts} if thoughts != "cot" else {})}
    pairs = se_pairs(last_pool.path / POOL, last_pool.path / COT,
                     [fb.path / FEEDBACK for fb in fbs], kb.path / KB_FILE, ns,
                     task_description(ctx.cfg), ctx.cfg.run.seed, thoughts=thoughts)
    base = (final.model.path / "model", [final.model], {"base": final.model.name})
    model = shared.train_student(ctx, name, pairs, deps=[last_pool, kb, *fbs], base=base,
                                 settings=settings)
    if until == "train":
        return None
    return evaluate_with_kb(ctx, name, model, kb, until, inference=ctx.cfg.fdd.inference)


@dataclass(frozen=True)
class JoinedMethod(FddMethod):
    """FDD's rounds (and their report section), then the joined student."""

    name: str = "nesycd+fdd"

    def run(self, ctx: RunContext, until: str | None = None) -> Rows | None:
        """One metrics row per FDD round and one for the joined student."""
        done = fdd_rounds(ctx, until, feedback_last=ctx.cfg.fdd.final_feedback)
        rows = done.rows(ctx.cfg.fdd.thoughts)
        res = joined_student(ctx, self.name, done, until)
        if res is not None:
            rows[self.name] = res
        return rows if until not in ("train", "predict") else None

    def estimate(self, counter) -> None:
        fed = estimate_rounds(counter)
        shared_r0 = counter.has(KB)  # round 0's feedback is S_P's demos: analysed once
        total = sum(fed[1 if shared_r0 else 0:]) * counter.a.student_error_rate
        counter.assumed(KB_FDD + (" (round 0 shared with kb)" if shared_r0 else ""),
                        counter.analyse_role(), counter.wrong_examples(), total, 1)

    def report(self, ctx: RunContext, metrics: Rows) -> ReportPart | None:
        part = super().report(ctx, metrics) or ReportPart()
        section = knowledge_section(ctx, self.name, ctx.result(KB_FDD))
        return ReportPart(part.notes, part.sections + ([section] if section else []))

    def kb_use(self, cfg) -> KbUse:
        return KbUse(f"train-{self.name}", KB_FDD, cfg.fdd.inference)


JOINED = register(JoinedMethod())
