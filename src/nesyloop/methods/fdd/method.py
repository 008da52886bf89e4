"""``fdd``: how it composes the stages of :mod:`.stages` into rounds.

Round 0 is the initial student on the initial pool (with CoT thoughts it *is* std-cot's S_P and
its feedback *is* NesyCD's demonstration stage: the stages are shared; with mixed thoughts and
``retrain = "continue"`` it is S_P taught the programs, with replayed CoT). Round r >= 1:
feedback of S_{r-1} on the seed problems -> evolve (pool r) -> train S_r -> evaluate.
:func:`fdd_rounds` is also the first half of the joined loop (``methods/joined``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...runs.context import RunContext
from ...runs.rundir import StageResult
from .. import shared
from ..nesycd.method import demos, sp_student
from ..registry import ReportPart, Rows, register
from ..simple import STD_COT
from .stages import (Retrieve, evolve_stage, feedback_stage, pool0_stage, programs_stage,
                     round_pairs)

PROGRAMS = "programs"  # the teacher's programs of thought for the training problems
POOL0 = "fdd-pool-r0"


def row(rnd: int) -> str:
    """Round ``rnd``'s name: its train-, predict- and score- stages and its metrics row."""
    return f"fdd-r{rnd}"


def feedback_name(rnd: int) -> str:
    return f"fdd-feedback-r{rnd}"


def evolve_name(rnd: int) -> str:
    return f"fdd-evolve-r{rnd}"


@dataclass
class Round:
    index: int
    pool: StageResult
    model: StageResult
    metrics: dict[str, Any] | None = None
    feedback: StageResult | None = None
    kb: StageResult | None = None  # the joined loop: the KB this round's student answers with

    def dev(self) -> float | None:
        m = (self.metrics or {}).get("dev")
        return None if m is None else 100.0 * m["strict"]


@dataclass
class Rounds:
    """What the rounds produced (kept in ``ctx.state["loops"][<method>]`` for the report)."""

    rounds: list[Round] = field(default_factory=list)
    stop: str | None = None  # why the rounds ended early (all rejected)

    def rows(self, thoughts: str) -> Rows:
        return {("std-cot" if r.index == 0 and thoughts == "cot" else row(r.index)): r.metrics
                for r in self.rounds if r.metrics is not None}

    def final(self) -> Round:
        """The FDD student handed on: the best round on dev (the last one without dev
        scores)."""
        scored = [r for r in self.rounds if r.dev() is not None]
        return max(scored, key=lambda r: (r.dev(), r.index)) if scored else self.rounds[-1]


def pool0(ctx: RunContext) -> StageResult:
    f, t, data, rat = ctx.cfg.fdd, ctx.cfg.teacher, shared.data(ctx), shared.rationales(ctx)
    prog = None
    if f.thoughts != "cot":
        prog = ctx.stage(PROGRAMS, {**t.identity(), "seed": ctx.cfg.run.seed},
                         programs_stage(ctx.teacher, data.path, ctx.teacher_gen(), t.batch_size,
                                        ctx.cfg.run.progress), deps=[data])
    return ctx.stage(POOL0, {"programs": prog is not None},
                     pool0_stage(data.path, rat.path, prog.path if prog else None),
                     deps=[data, rat, *([prog] if prog else [])])


def train(ctx: RunContext, rnd: int, pool: StageResult, prev: StageResult | None
           ) -> StageResult:
    f = ctx.cfg.fdd
    if rnd == 0 and f.thoughts == "cot":
        return sp_student(ctx)
    if f.retrain == "continue" and rnd == 0:  # mixed thoughts: S_P learns the programs
        prev = sp_student(ctx)
    base = (prev.path / "model", [prev], {"base": prev.name}) \
        if f.retrain == "continue" and prev is not None else None
    settings = {"round": rnd, "seed": ctx.cfg.run.seed,
                **f.model_dump(mode="json", include={"thoughts", "retrain", "replay"})}
    pairs = round_pairs(pool.path, f.thoughts, rnd, f.retrain, f.replay, ctx.cfg.run.seed)
    return shared.train_student(ctx, row(rnd), pairs, deps=[pool], base=base,
                                settings=settings, train_as=("fdd",))


def evaluate(ctx: RunContext, rnd: int, model: StageResult, until: str | None):
    if rnd == 0 and ctx.cfg.fdd.thoughts == "cot":  # std-cot's own evaluation (the same stages)
        rows = STD_COT.run(ctx, until)
        return None if rows is None else rows[STD_COT.name]
    return shared.evaluate(ctx, row(rnd), model.path / "model", [model], {"model": model.name},
                           until, inference=ctx.cfg.fdd.inference,
                           splits=round_splits(ctx.cfg, rnd))


def round_splits(cfg, rnd: int) -> list[str] | None:
    """The splits round ``rnd`` is scored on: those of ``fdd.round_splits`` in ``[eval]
    splits`` before the last planned round (all when none is), every split (None) for the
    last."""
    if rnd >= cfg.fdd.rounds or not cfg.fdd.round_splits:
        return None
    return [s for s in cfg.fdd.round_splits if s in cfg.eval.splits] or None


def shares_demos(f) -> bool:
    """Whether round 0's feedback is NesyCD's demonstration stage (S_P, greedy, every
    training problem)."""
    return f.thoughts == "cot" and f.feedback_samples == 1 and f.max_seeds is None


def feedback(ctx: RunContext, rnd: int, model: StageResult, pool: StageResult,
             name: str | None = None, retrieve: Retrieve | None = None,
             knowledge: tuple[StageResult, dict[str, Any]] | None = None) -> StageResult:
    """The round's student on its seed problems (easy or hard per problem); the joined loop
    gives its stage ``name``, the ``retrieve`` function and ``knowledge``: the KB stage and
    what retrieval depends on."""
    f, ev = ctx.cfg.fdd, ctx.cfg.eval
    if rnd == 0 and shares_demos(f):
        return demos(ctx, model)  # S_P on the training problems: shared with nesycd
    settings = {"round": rnd, "eval": {"batch_size": ev.batch_size,
                                       "max_new_tokens": ev.max_new_tokens},
                "seed": ctx.cfg.run.seed,
                **f.model_dump(mode="json", include={"seeds", "max_seeds", "inference",
                                                     "feedback_samples", "feedback_min_correct",
                                                     "feedback_temperature"}),
                **({"knowledge": knowledge[1]} if knowledge else {})}
    return ctx.stage(name or feedback_name(rnd), settings,
                     feedback_stage(ctx.student, model.path / "model", pool.path, rnd, f,
                                    ev.max_new_tokens, ctx.cfg.run.seed, retrieve),
                     deps=[pool, model, *([knowledge[0]] if knowledge else [])])


def evolve(ctx: RunContext, rnd: int, pool: StageResult, fb: StageResult,
           name: str | None = None) -> StageResult:
    """Round ``rnd``'s pool: ``pool`` grown from the feedback ``fb`` (stage ``name``)."""
    f, t, data = ctx.cfg.fdd, ctx.cfg.teacher, shared.data(ctx)
    settings = {**ctx.teacher_settings(), "round": rnd, **f.evolve_settings()}
    return ctx.stage(name or evolve_name(rnd), settings,
                     evolve_stage(ctx.teacher, pool.path, fb.path, data.path, rnd, f,
                                  ctx.teacher_gen, t.batch_size, ctx.cfg.run.progress),
                     deps=[pool, fb, data])


def stopped(ctx: RunContext, out: Rounds, rnd: int, pool: StageResult) -> bool:
    """Whether round ``rnd``'s evolution kept no problem (the rounds end; ``out.stop`` says
    why)."""
    if pool.info["new"] > 0:
        return False
    from .report import stop_note

    out.stop = stop_note(rnd, pool.name, pool.info)
    ctx.log(f"[fdd ] {out.stop}")
    return True


def stop_early(ctx: RunContext, prev: Round, cur: Round) -> bool:
    gain = ctx.cfg.fdd.min_dev_gain
    if gain is None or cur.dev() is None or prev.dev() is None:
        return False
    if cur.dev() - prev.dev() < gain:
        ctx.log(f"[fdd ] stop after round {cur.index}: dev gain {cur.dev() - prev.dev():+.1f} "
                f"< {gain}")
        return True
    return False


def fdd_rounds(ctx: RunContext, until: str | None) -> Rounds:
    """Rounds 0..R (fewer when the dev gain falls under ``min_dev_gain``)."""
    out = Rounds()
    pool = pool0(ctx)
    out.rounds.append(Round(0, pool, train(ctx, 0, pool, None)))
    scored = until != "train"  # ``nesyloop train``: the rounds' data and students only
    if scored:
        out.rounds[0].metrics = evaluate(ctx, 0, out.rounds[0].model, until)
    for rnd in range(1, ctx.cfg.fdd.rounds + 1):
        prev = out.rounds[-1]
        prev.feedback = feedback(ctx, prev.index, prev.model, prev.pool)
        pool = evolve(ctx, rnd, prev.pool, prev.feedback)
        if stopped(ctx, out, rnd, pool):
            break
        cur = Round(rnd, pool, train(ctx, rnd, pool, prev.model))
        if scored:
            cur.metrics = evaluate(ctx, rnd, cur.model, until)
        out.rounds.append(cur)
        if stop_early(ctx, prev, cur):
            break
    ctx.state.setdefault("loops", {})["fdd"] = out
    return out


def estimate_rounds(counter, name: Callable[[int], str] = evolve_name) -> list[float]:
    """Add the rows of FDD's teacher stages to ``counter`` (round ``r``'s evolution as
    ``name(r)``; a stage already counted, shared by another loop, is not counted again);
    returns the assumed number of seed problems whose feedback each round produces (round 0
    first)."""
    from ...roles.evolve import EvolveRole
    from ...roles.pot import PotRole
    from ...roles.rationale import RationaleRole

    cfg, a, train = counter.cfg, counter.a, counter.train
    f, t, err = cfg.fdd, cfg.teacher, a.student_error_rate
    if f.thoughts != "cot" and not counter.has(PROGRAMS):
        counter.exact(PROGRAMS, PotRole(), train, t.samples)
    seeds = min(len(train), f.max_seeds or len(train))
    pool, fed = len(train), [float(seeds)]
    k = f.majority_samples if f.agreement == "majority" else 1
    for rnd in range(1, f.rounds + 1):
        stage = name(rnd)
        count = not any(r.stage.startswith(f"{stage} (") for r in counter.rows)
        written = 0.0  # easy seeds get harder variants, hard ones similar problems
        for kind, share in (("harder", 1 - err), ("similar", err)):
            n = f.n_variants(kind)
            if count:
                counter.assumed(f"{stage} (write {kind})", EvolveRole(kind), train,
                                seeds * share, n)
            written += seeds * share * n
        cands = written * a.evolve_keep_rate
        if count:
            counter.assumed(f"{stage} (solve CoT)", RationaleRole(), train, cands, k)
            if f.agreement == "cot-pot" or f.thoughts != "cot":
                counter.assumed(f"{stage} (solve PoT)", PotRole(), train, cands, 1)
        new = cands * a.agreement_rate
        pool += new
        seeds = min(new if f.seeds == "new" else pool, f.max_seeds or math.inf)
        fed.append(seeds)
    return fed


def rounds_report(ctx: RunContext, metrics: Rows) -> ReportPart | None:
    """The per-round section of every loop that ran (fdd, nesycd+fdd): a table each,
    ``<loop>-rounds.json`` and one plot with the loops side by side (``fdd-rounds.png``)."""
    loops: dict[str, Rounds] = {k: v for k, v in ctx.state.get("loops", {}).items()
                                if v.rounds}
    if not loops:
        return None
    from ...io import write_json
    from .report import loop_notes, plot_rounds, round_rows, rounds_table

    splits, md, rows = ctx.cfg.eval.splits, ["## FDD rounds", ""], {}
    for name, done in loops.items():
        rows[name] = round_rows(done.rounds, ctx.run.results)
        write_json(ctx.out / f"{name}-rounds.json", rows[name])
        md += [f"**{name}**", "", rounds_table(rows[name], splits), ""]
        md += [f"**{n}**" if n == done.stop else n for n in loop_notes(name, done, ctx.cfg)]
        md.append("")
    if plot_rounds(rows, splits, ctx.out / "fdd-rounds.png"):
        md += ["Accuracy per round: ![accuracy per round](fdd-rounds.png)"]
    return ReportPart(sections=["\n".join(md + [""])])


@dataclass(frozen=True)
class FddMethod:
    name: str = "fdd"
    needs_rationales: bool = True
    teacher_use: str | None = "problem evolution and solving"

    def run(self, ctx: RunContext, until: str | None = None) -> Rows | None:
        rows = fdd_rounds(ctx, until).rows(ctx.cfg.fdd.thoughts)
        return rows if until not in ("train", "predict") else None

    def estimate(self, counter) -> None:
        estimate_rounds(counter)

    def report(self, ctx: RunContext, metrics: Rows) -> ReportPart | None:
        return rounds_report(ctx, metrics)

    def kb_use(self, cfg) -> None:
        return None


FDD = register(FddMethod())
