"""The knowledge-base methods: how they compose the stages of :mod:`.stages`.

``std-cot+kb``: S_P, retrieval at inference only. ``nesycd``: S_E with retrieval.
``nesycd-no-kb``: S_E without retrieval. ``kard``: a student trained and run with retrieved raw
training rationales instead of teacher knowledge. Stages shared by several methods (S_P, demos,
the KB, S_E) run once per run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ...runs.context import RunContext
from ...runs.rundir import StageContext, StageResult
from ...tasks.bazaar.generator import SEASON2_SPLITS
from .. import shared
from ..registry import KbUse, ReportPart, Rows, register
from ..simple import STD_COT
from .stages import (KB_FILE, demos_stage, kard_kb_stage, kb_stage, kb_version, retrieval_prompts,
                     se_pairs, task_description)

DEMOS = "demos"  # S_P's answers to the training questions
KB = "kb"  # the teacher's error analysis of S_P's wrong answers: kb/kb.sqlite
KARD_KB = "kard-kb"  # KARD's KB: raw training rationales


def sp_student(ctx: RunContext) -> StageResult:
    """S_P: std-cot's student (the same stage)."""
    sp = STD_COT.train(ctx)
    assert sp is not None
    return sp


def demos(ctx: RunContext, sp: StageResult) -> StageResult:
    """S_P's answers to the training questions (NesyCD's demonstrations; FDD's round-0
    feedback when the student thinks in CoT)."""
    ev, data = ctx.cfg.eval, shared.data(ctx)
    return ctx.stage(DEMOS, {"batch_size": ev.batch_size, "max_new_tokens": ev.max_new_tokens},
                     demos_stage(ctx.student, sp.path / "model", data.path, ev.max_new_tokens),
                     deps=[data, sp])


def error_kb(ctx: RunContext, name: str, feedback: list[StageResult],
             start_from: StageResult | None = None) -> StageResult:
    """Teacher error analysis of the wrong answers in ``feedback`` (each stage's ``round`` in
    its info, 0 if absent) into ``<name>/kb.sqlite``, added to a copy of ``start_from``'s KB
    when given."""
    ns, t = ctx.cfg.nesycd, ctx.cfg.teacher
    settings = {**ctx.teacher_settings(), "demonstrations": ns.demonstrations,
                "max_response_words": ns.max_response_words}
    return ctx.stage(name, settings, kb_stage(
        ctx.teacher, [(fb.path, fb.info.get("round", 0)) for fb in feedback], ctx.teacher_gen(n=1),
        ns.demonstrations, ns.max_response_words, t.batch_size, run_name=ctx.out.name,
        teacher_name=f"{t.backend}:{t.model}", previous=ctx.run.path(name) / KB_FILE,
        progress=ctx.cfg.run.progress,
        start_from=start_from.path / KB_FILE if start_from else None),
        deps=[*feedback, *([start_from] if start_from else [])])


def nesycd_kb(ctx: RunContext) -> StageResult:
    """demos (S_P on train) -> kb (teacher error analysis into kb/kb.sqlite)."""
    return error_kb(ctx, KB, [demos(ctx, sp_student(ctx))])


def trained_with_kb(ctx: RunContext, name: str, kb: StageResult,
                    exclude_own: bool = False) -> StageResult:
    """S_E (or the KARD student): multi-task training with knowledge from ``kb``."""
    ns, data, rat = ctx.cfg.nesycd, shared.data(ctx), shared.rationales(ctx)
    dem = ctx.result(DEMOS)
    assert dem is not None, "the demos stage runs before S_E"
    base = None
    if ns.init == "sp":
        sp = sp_student(ctx)
        base = (sp.path / "model", [sp], {"base": "std-cot"})
    settings = {"seed": ctx.cfg.run.seed,
                "nesycd": ns.model_dump(mode="json", include={"retrieval", "train_knowledge",
                                                              "augment", "mix", "init",
                                                              "task_description"}),
                **({"rename": ns.rename} if ns.rename else {})}
    pairs = se_pairs(data.path / "train.jsonl", rat.path / "kept.jsonl",
                     [dem.path / "demos.jsonl"], kb.path / KB_FILE, ns,
                     task_description(ctx.cfg), ctx.cfg.run.seed, exclude_own=exclude_own)
    return shared.train_student(ctx, name, pairs, deps=[data, rat, dem, kb], base=base,
                                settings=settings)


def kb_predict_settings(kb_path: Path, ns, description: str) -> dict[str, Any]:
    """What a prediction with retrieval depends on besides the model: the KB's content version
    (so an edit reruns prediction, and nothing upstream), retrieval and gate settings."""
    return {"kb_version": kb_version(kb_path), "retrieval": ns.retrieval.model_dump(mode="json"),
            "task_description": description,
            "gate": ns.model_dump(include={"gate", "gate_threshold", "gate_tokens"})
            if ns.gate else False}


def evaluate_with_kb(ctx: RunContext, name: str, model: StageResult, kb: StageResult,
                     until: str | None, inference: str = "cot",
                     splits: list[str] | None = None) -> dict[str, Any] | None:
    """predict-<name>/score-<name> of ``model``'s student with knowledge retrieved from ``kb``
    (on ``splits``, default all). Season 2's splits are answered with the KB updated by its
    fact sheet (:func:`updated_kb`; predict-<name>-season2), the metrics merged."""
    splits = splits or ctx.cfg.eval.splits
    later = _season2(ctx, splits)
    now = [s for s in splits if s not in later]
    out = _with_kb(ctx, name, model, kb, until, inference, now) if now else {}
    if later:
        upd = _with_kb(ctx, f"{name}-season2", model, updated_kb(ctx, kb), until, inference,
                       later)
        out = None if out is None or upd is None else {**out, **upd}
    return out


def stale_kb_row(ctx: RunContext, name: str, model: StageResult, kb: StageResult,
                 until: str | None, inference: str = "cot") -> dict[str, Any]:
    """``{"<name>/stale-kb": metrics}``: the same student on season 2's splits with the KB as
    it was before the fact sheet (predict-<name>-stale-kb); {} without season-2 splits."""
    later = _season2(ctx, ctx.cfg.eval.splits)
    if not later:
        return {}
    got = _with_kb(ctx, f"{name}-stale-kb", model, kb, until, inference, later)
    return {} if got is None else {f"{name}/stale-kb": got}


def _season2(ctx: RunContext, splits: list[str]) -> list[str]:
    """Those of ``splits`` that are season 2's (made by the run's data-season2 stage)."""
    return [s for s in splits if s in SEASON2_SPLITS and ctx.season2 is not None]


def updated_kb(ctx: RunContext, kb: StageResult) -> StageResult:
    """``<kb>-season2``: a copy of ``kb`` with season 2's fact sheet imported (the original
    stays as it was; kb/sheets.py)."""
    from ...kb.sheets import apply_import, plan_import, read_sheet
    from ...kb.store import KnowledgeBase, copy_kb
    from ...tasks.bazaar.season import SHEET_FILE

    season = ctx.season2
    assert season is not None, "season 2's splits come with their stage"

    def fn(sc: StageContext) -> dict[str, Any]:
        copy_kb(kb.path / KB_FILE, sc.out / KB_FILE)
        sheet = season.path / SHEET_FILE
        with KnowledgeBase(sc.out / KB_FILE) as store:
            return apply_import(store, sheet, plan_import(store, read_sheet(sheet)))

    return ctx.stage(f"{kb.name}-season2", {"sheet": SHEET_FILE}, fn, deps=[kb, season])


def _with_kb(ctx: RunContext, name: str, model: StageResult, kb: StageResult,
             until: str | None, inference: str, splits: list[str]) -> dict[str, Any] | None:
    ns, description = ctx.cfg.nesycd, task_description(ctx.cfg)
    kb_path = kb.path / KB_FILE
    prompt_fn, after = retrieval_prompts(kb_path, ns, description, ns.gate)
    settings = {"model": model.name, **kb_predict_settings(kb_path, ns, description)}
    return shared.evaluate(ctx, name, model.path / "model", [model, kb], settings, until,
                           prompt_fn=prompt_fn, after=after, inference=inference, splits=splits)


def knowledge_section(ctx: RunContext, name: str, kb: StageResult | None,
                      scored_as: str | None = None) -> str | None:
    """Bazaar only: per eval split, how many questions' needed facts the KB states (coverage),
    how many blocks ``name``'s student was given state them (hit), and its accuracy on hits and
    misses; also written to ``knowledge-<name>.json``. ``scored_as``: the name of its
    score- stage when not ``name``."""
    score = ctx.result(f"score-{scored_as or name}")
    if ctx.cfg.task.name != "bazaar" or kb is None or score is None:
        return None
    from ...io import read_jsonl, write_json
    from ...kb.store import KnowledgeBase
    from ...tasks.bazaar import build_world
    from ...tasks.bazaar.coverage import coverage, coverage_table

    s = ctx.cfg.task.bazaar
    world = build_world(s.seed, s.tail_fraction)
    with KnowledgeBase(kb.path / KB_FILE) as store:
        items = [k for e in store.list(enabled_only=True) for k in e.knowledge]
    rows = {}
    for split in ctx.cfg.eval.splits:
        if split in SEASON2_SPLITS:  # answered with another KB: the knowledge update section
            continue
        facts = {r["id"]: r.get("meta", {}).get("facts", [])
                 for r in read_jsonl(shared.data(ctx).path / f"{split}.jsonl")}
        rows[split] = coverage(world, items, read_jsonl(score.path / f"{split}.jsonl"), facts)
    write_json(ctx.out / f"knowledge-{name}.json", rows)
    return "\n".join([
        f"## Where {name}'s errors come from", "",
        f"Coverage: the questions whose needed facts the KB (`{kb.name}/kb.sqlite`, "
        f"{len(items)} knowledge items) states; hit: those whose retrieved block states them "
        f"all. Low coverage: more error analysis; covered but missed: retrieval; wrong on "
        f"hits: reading (the rationale does not restate a fact its block gives: the last "
        f"column) or reasoning (it restates them all).", "", coverage_table(rows), ""])


@dataclass(frozen=True)
class KBMethod:
    """A method on NesyCD's KB: whose student (S_P, S_E or KARD's) and whether it retrieves."""

    name: str
    student: Literal["sp", "se", "kard"]
    retrieve: bool = True
    needs_rationales: bool = True
    teacher_use: str | None = "error analysis"

    def kb_use(self, cfg) -> KbUse | None:
        if not self.retrieve:
            return None
        model = {"sp": f"train-{STD_COT.name}", "se": "train-nesycd", "kard": "train-kard"}
        return KbUse(model[self.student], KARD_KB if self.student == "kard" else KB)

    def run(self, ctx: RunContext, until: str | None = None) -> Rows | None:
        kb = nesycd_kb(ctx)
        if self.student == "sp":
            model = sp_student(ctx)
        elif self.student == "kard":
            kb = ctx.stage(KARD_KB, {}, kard_kb_stage(shared.rationales(ctx).path),
                           deps=[shared.rationales(ctx)])
            model = trained_with_kb(ctx, "kard", kb, exclude_own=True)
        else:
            model = trained_with_kb(ctx, "nesycd", kb)
        if until == "train":
            return None
        if self.retrieve:
            res = evaluate_with_kb(ctx, self.name, model, kb, until)
        else:
            res = shared.evaluate(ctx, self.name, model.path / "model", [model],
                                  {"model": model.name}, until)
        return None if res is None else {self.name: res}

    def estimate(self, counter) -> None:
        if counter.has(KB):  # the joined loop's round 0 counted it
            return
        counter.assumed(KB, counter.analyse_role(), counter.wrong_examples(),
                        counter.a.student_error_rate * len(counter.train), 1)

    def report(self, ctx: RunContext, metrics: Rows) -> ReportPart | None:
        dem, kb = ctx.result(DEMOS), ctx.result(KB)
        if dem is None or kb is None:
            return None
        d, k = dem.info, kb.info
        reasons = ", ".join(f"{r}: {c}" for r, c in k["rejected_reasons"].items()) or "none"
        use = self.kb_use(ctx.cfg)
        section = use and knowledge_section(ctx, self.name, ctx.result(use.kb_stage))
        return ReportPart(sections=[section] if section else [], notes=[
            f"NesyCD: S_P answered {d['correct']} of {d['n']} training questions right; the "
            f"teacher analysed the {k['wrong_demos']} wrong ones: {k['entries']} KB entries "
            f"(`kb/kb.sqlite`), {k['rejected']} replies rejected ({reasons}); "
            f"{k['repetition_cut']} student responses had repetition cut. Read or edit the "
            f"KB with `nesyloop kb` (docs/kb.md)."])


register(KBMethod("std-cot+kb", student="sp"))
register(KBMethod("nesycd", student="se"))
register(KBMethod("nesycd-no-kb", student="se", retrieve=False))
register(KBMethod("kard", student="kard"))
