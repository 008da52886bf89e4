"""``nesycd+fdd``: one loop, FDD's rounds with knowledge inside them.

Round 0 is FDD's (std-cot's student S_P; its feedback is NesyCD's demonstrations; the teacher's
analysis of its errors is NesyCD's KB; round 1's pool is FDD's): shared stages. A round r >=
``[joined] from_round``:

1. train ``nesycd+fdd-r<r>`` (the last round: ``nesycd+fdd``) from the previous round's
   student on the round's pool: exactly FDD's pairs, each carrying a knowledge block from the
   current KB (its own entry when the problem was answered wrong before, else retrieved; some
   counterfactual: :mod:`.stages`);
2. feedback: the new student, with retrieval, on the problems its round added;
3. the teacher analyses its wrong answers: the KB grows (a copy, ``kb-fdd-r<r>``);
4. evaluation with retrieval from the grown KB;
5. the teacher evolves the next pool from this feedback (easy: harder variants; hard: similar).

A round before ``from_round`` is fdd's own (the same stages, computed once); its wrong answers
still grow the KB. The student of the last round is the joined student (row ``nesycd+fdd``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...runs.context import RunContext
from ...runs.rundir import StageResult
from .. import shared
from ..fdd import method as fdd
from ..fdd.method import FddMethod, Round, Rounds
from ..nesycd.method import (KB, error_kb, evaluate_with_kb, kb_predict_settings,
                             knowledge_section, stale_kb_row)
from ..nesycd.stages import KB_FILE, retrieved_blocks, task_description
from ..registry import KbUse, ReportPart, Rows, register
from .stages import knowledge_round_pairs, knowledge_stage

NAME = "nesycd+fdd"


def row(rnd: int, cfg) -> str:
    """Round ``rnd``'s name: its train-, predict- and score- stages and its metrics row; the
    last planned round's is the method's own (``train-nesycd+fdd``, ...)."""
    return NAME if rnd == cfg.fdd.rounds else f"{NAME}-r{rnd}"


def _kb_round(cfg) -> int:
    """The round whose errors complete the KB the last planned round answers with."""
    return cfg.fdd.rounds if cfg.joined.final_feedback else cfg.fdd.rounds - 1


def kb_name(rnd: int, cfg) -> str:
    """The KB after round ``rnd``'s errors, ``kb-fdd-r<r>``; round 0's is NesyCD's ``kb``
    when its feedback is NesyCD's demonstrations."""
    return KB if rnd == 0 and fdd.shares_demos(cfg.fdd) else f"kb-fdd-r{rnd}"


def _knowledge(ctx: RunContext, rnd: int, pool: StageResult, kb: StageResult) -> StageResult:
    """The round's blocks (and counterfactual pairs): ``nesycd+fdd-knowledge-r<r>``."""
    f, ns, t, j = ctx.cfg.fdd, ctx.cfg.nesycd, ctx.cfg.teacher, ctx.cfg.joined
    teacher = j.counterfactual > 0 and j.counterfactual_by == "value"
    settings = {"round": rnd, "seed": ctx.cfg.run.seed,
                **f.model_dump(mode="json", include={"thoughts", "retrain", "replay"}),
                "nesycd": ns.model_dump(mode="json", include={"retrieval", "train_knowledge",
                                                              "task_description"}),
                "joined": j.model_dump(mode="json", include={"counterfactual",
                                                             "counterfactual_by"}),
                **(ctx.teacher_settings() if teacher else {})}
    return ctx.stage(f"{NAME}-knowledge-r{rnd}", settings, knowledge_stage(
        ctx.teacher, pool.path, rnd, f, ctx.cfg.run.seed, kb.path / KB_FILE, ns,
        task_description(ctx.cfg), j, ctx.teacher_gen(1), t.batch_size,
        ctx.cfg.run.progress), deps=[pool, kb])


def _train(ctx: RunContext, rnd: int, pool: StageResult, prev: StageResult, kb: StageResult
           ) -> StageResult:
    f = ctx.cfg.fdd
    know = _knowledge(ctx, rnd, pool, kb)
    base = (prev.path / "model", [prev], {"base": prev.name}) if f.retrain == "continue" \
        else None
    add = ctx.cfg.joined.counterfactual_pairs == "add"
    pairs = knowledge_round_pairs(pool.path, rnd, f, ctx.cfg.run.seed, know.path, add)
    return shared.train_student(ctx, row(rnd, ctx.cfg), pairs, deps=[pool, know], base=base,
                                settings={"round": rnd, "seed": ctx.cfg.run.seed,
                                          **({"counterfactual_pairs": "add"} if add else {})},
                                train_as=("fdd", NAME))


def _feedback(ctx: RunContext, rnd: int, model: StageResult, pool: StageResult,
              kb: StageResult) -> StageResult:
    ns, description, kb_path = ctx.cfg.nesycd, task_description(ctx.cfg), kb.path / KB_FILE

    def retrieve(questions: list[str]):
        return retrieved_blocks(kb_path, ns, description, questions)

    return fdd.feedback(ctx, rnd, model, pool, name=f"{NAME}-feedback-r{rnd}",
                        retrieve=retrieve,
                        knowledge=(kb, kb_predict_settings(kb_path, ns, description)))


def _round0(ctx: RunContext, until: str | None) -> tuple[Round, StageResult]:
    """FDD's round 0 (shared stages) and the KB of its errors."""
    pool = fdd.pool0(ctx)
    r0 = Round(0, pool, fdd.train(ctx, 0, pool, None))
    if until != "train":
        r0.metrics = fdd.evaluate(ctx, 0, r0.model, until)
    r0.feedback = fdd.feedback(ctx, 0, r0.model, pool)
    r0.kb = error_kb(ctx, kb_name(0, ctx.cfg), [r0.feedback])
    return r0, r0.kb


def _fdd_round(ctx: RunContext, rnd: int, pool: StageResult, prev: Round, kb: StageResult
               ) -> Round:
    """A round before ``[joined] from_round``: fdd's own stages; its errors grow the KB."""
    cur = Round(rnd, pool, fdd.train(ctx, rnd, pool, prev.model))
    cur.feedback = fdd.feedback(ctx, rnd, cur.model, pool)
    cur.kb = error_kb(ctx, kb_name(rnd, ctx.cfg), [cur.feedback], start_from=kb)
    return cur


def _knowledge_round(ctx: RunContext, rnd: int, pool: StageResult, prev: Round,
                     kb: StageResult) -> Round:
    """A round with knowledge: train, feedback with retrieval, the KB grows."""
    cur = Round(rnd, pool, _train(ctx, rnd, pool, prev.model, kb))
    cur.kb = kb
    if rnd < ctx.cfg.fdd.rounds or ctx.cfg.joined.final_feedback:
        cur.feedback = _feedback(ctx, rnd, cur.model, pool, kb)
        cur.kb = error_kb(ctx, kb_name(rnd, ctx.cfg), [cur.feedback], start_from=kb)
    return cur


def joined_rounds(ctx: RunContext, until: str | None) -> Rounds:
    """Rounds 0..R of the joined loop (see the module's docstring)."""
    f, start = ctx.cfg.fdd, ctx.cfg.joined.from_round
    out = Rounds()
    r0, kb = _round0(ctx, until)
    out.rounds.append(r0)
    for rnd in range(1, f.rounds + 1):
        prev = out.rounds[-1]
        assert prev.feedback is not None
        # a round grown from fdd's feedback is fdd's stage
        pool = fdd.evolve(ctx, rnd, prev.pool, prev.feedback,
                          name=None if rnd <= start else f"{NAME}-evolve-r{rnd}")
        if fdd.stopped(ctx, out, rnd, pool):
            break
        if rnd < start:
            cur = _fdd_round(ctx, rnd, pool, prev, kb)
            if until != "train":
                cur.metrics = fdd.evaluate(ctx, rnd, cur.model, until)
        else:
            cur = _knowledge_round(ctx, rnd, pool, prev, kb)
            if until != "train":
                cur.metrics = evaluate_with_kb(ctx, row(rnd, ctx.cfg), cur.model, cur.kb,
                                               until, inference=f.inference,
                                               splits=fdd.round_splits(ctx.cfg, rnd))
        kb = cur.kb or kb
        out.rounds.append(cur)
        if fdd.stop_early(ctx, prev, cur):
            break
    ctx.state.setdefault("loops", {})[NAME] = out
    return out


@dataclass(frozen=True)
class JoinedMethod(FddMethod):
    """The joined loop; its rounds' rows, the last round's student as ``nesycd+fdd``."""

    name: str = NAME

    def run(self, ctx: RunContext, until: str | None = None) -> Rows | None:
        done = joined_rounds(ctx, until)
        if until in ("train", "predict"):
            return None
        start = ctx.cfg.joined.from_round  # the rounds before: fdd's (rows of its own)
        rows = Rounds(done.rounds[:start]).rows(ctx.cfg.fdd.thoughts)
        rows.update((row(r.index, ctx.cfg), r.metrics) for r in done.rounds[start:]
                    if r.metrics is not None)
        last = row(done.rounds[-1].index, ctx.cfg)
        if last in rows and last != self.name:  # the rounds ended early
            rows[self.name] = rows.pop(last)
        end = done.rounds[-1]
        if end.kb is not None and end.model is not None and self.name in rows:
            # season 2: the same student with the KB before the fact sheet
            rows.update(stale_kb_row(ctx, self.name, end.model, end.kb, until,
                                     ctx.cfg.fdd.inference))
        return rows

    def estimate(self, counter) -> None:
        f, err = counter.cfg.fdd, counter.a.student_error_rate
        # the evolution of rounds grown from fdd's feedback is fdd's: counted once
        start = counter.cfg.joined.from_round
        fed = fdd.estimate_rounds(counter, lambda r: fdd.evolve_name(r) if r <= start
                                  else f"{NAME}-evolve-r{r}")
        if not counter.has(KB):  # round 0's errors: NesyCD's KB, analysed once
            counter.assumed(KB, counter.analyse_role(), counter.wrong_examples(),
                            fed[0] * err, 1)
        last = _kb_round(counter.cfg)
        if last > 0:
            counter.assumed(f"kb-fdd (rounds 1-{last})", counter.analyse_role(),
                            counter.wrong_examples(), sum(fed[1:last + 1]) * err, 1)
        share = counter.cfg.joined.counterfactual
        if share and counter.cfg.joined.counterfactual_by == "value":
            # about the size of a rationale request (the changed block is short)
            from ...roles.rationale import RationaleRole

            per_round = [n * (1 + f.replay) if f.retrain == "continue" else sum(fed[:r + 1])
                         for r, n in enumerate(fed) if r > 0]
            counter.assumed(f"{NAME}-knowledge (counterfactual)", RationaleRole(),
                            counter.train, share * sum(per_round), 1)

    def report(self, ctx: RunContext, metrics: Rows) -> ReportPart | None:
        part = super().report(ctx, metrics) or ReportPart()
        done: Rounds | None = ctx.state.get("loops", {}).get(NAME)
        if done is None or len(done.rounds) < 2:
            return part
        last = done.rounds[-1]
        section = knowledge_section(ctx, self.name, last.kb,
                                    scored_as=row(last.index, ctx.cfg))
        return ReportPart(part.notes, part.sections + ([section] if section else []))

    def kb_use(self, cfg) -> KbUse:
        return KbUse(f"train-{self.name}", kb_name(_kb_round(cfg), cfg), cfg.fdd.inference)


JOINED = register(JoinedMethod())
