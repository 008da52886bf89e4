"""A run: the shared stages, then each method from the registry, then the report.

``run`` is what ``nesyloop run`` calls; ``until`` stops after a named step, which is how the
CLI's stage commands (data, rationales, train, predict) work. Methods get the
:class:`~nesyloop.runs.context.RunContext` and never see this module.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .config import Config
from .costs.budget import Usage
from .errors import ConfigError, DataError
from .io import atomic_write_text, write_json
from .methods import registry
from .evaluation.update import update_section
from .methods.shared import (RATIONALES, data_stage, no_rationales, rationales_stage,
                             season2_stage,
                             student_init_stage)
from .report import plot_losses, render_report, training_table
from .runs.cache import check_cache_path
from .runs.context import Log, RunContext


class Pipeline:
    def __init__(self, config: Config, out: str | Path | None = None, log: Log = print):
        self.cfg = config
        self.ctx = RunContext.create(config, out, log)
        self.out, self.run = self.ctx.out, self.ctx.run

    def execute(self, until: str | None = None, methods: list[str] | None = None) -> dict:
        """Run (or resume) ``methods`` (default: the config's); their metrics rows."""
        names = methods or self.cfg.methods
        bad = registry.run_error(methods, names, self.cfg.teacher.backend)
        if bad:  # methods asked for on the command line (the config's were checked)
            raise ConfigError(bad)
        chosen = [registry.get(n) for n in names]
        ctx = self.ctx
        check_cache_path(ctx.cache_path)  # before any stage: opened for the first request
        started = time.time()
        write_json(self.out / "config.json", self.cfg.model_dump(mode="json"))
        ctx.data = data_stage(ctx)
        ctx.season2 = season2_stage(ctx, ctx.data)
        if until == "data":
            return {}
        if any(m.needs_rationales for m in chosen) or until == "rationales":
            ctx.rationales = rationales_stage(ctx, ctx.data)
            if until == "rationales":
                return {}
            if ctx.rationales.info.get("kept") == 0:
                raise DataError(no_rationales(ctx, ctx.rationales))
        ctx.init = student_init_stage(ctx, ctx.data)
        metrics: dict[str, Any] = {}
        for m in chosen:
            ctx.tracing = m.name
            metrics.update(m.run(ctx, until=until) or {})
        ctx.tracing = None
        if until in ("train", "predict"):
            return {}
        write_report(ctx, chosen, metrics, time.time() - started)
        return metrics


def _teacher_cost_note(ctx: RunContext) -> str:
    """Teacher requests, tokens and USD: of this run's stages (as each recorded when it ran)
    and of this invocation (cached replies are free)."""
    total = Usage()
    for r in ctx.run.results.values():
        if "requests_cached" in r.info:
            total.add(Usage.from_info(r.info))
    tok = total.prompt_tokens + total.completion_tokens
    note = (f"Teacher cost: {total.requests_issued} requests and {tok:,} tokens bought by this "
            f"run's teacher stages, ${total.cost_usd:.4f}; this invocation: "
            f"{ctx.teacher_usage.line()}.")
    if total.requests_failed:
        note += (f" **{total.requests_failed} teacher requests failed** (rejected with "
                 f"reason 'teacher request failed'); re-run the same command to retry them.")
    return note


def _teacher_note(ctx: RunContext) -> str | None:
    rat = ctx.result(RATIONALES)
    if rat is None:
        return None
    i, t = rat.info, ctx.cfg.teacher
    who = ("the data set's worked solutions (`teacher.backend = \"dataset\"`)"
           if t.backend == "dataset" else f"{t.backend} `{t.model}`")
    return (f"Teacher: {who}, {i['samples']} rationales for {i['questions']} questions, "
            f"{i['kept']} kept, {i['rejected']} rejected; {i['covered_questions']} questions "
            f"covered.")


def write_report(ctx: RunContext, chosen: list, metrics: dict[str, Any], wall_s: float) -> str:
    """report.md (the run's notes, then each method's), metrics.json and loss.png."""
    notes = [f"Run directory: `{ctx.out}`; this invocation took {wall_s:.1f} s.",
             *filter(None, [_teacher_note(ctx)]), _teacher_cost_note(ctx)]
    sections: list[str] = []
    for m in chosen:
        part = m.report(ctx, metrics)
        for note in part.notes if part else []:
            notes += [note] if note not in notes else []
        sections += [s for s in part.sections if s not in sections] if part else []
    if ctx.cfg.task.name == "bazaar":
        notes.append("Bazaar is a synthetic world built to exhibit sparse knowledge; real "
                     "claims come from real benchmarks.")
    curves = {name[len("train-"):]: res.info.get("losses", [])
              for name, res in ctx.run.results.items() if name.startswith("train-")}
    if plot_losses(curves, ctx.out / "loss.png", ctx.cfg.train.logging_steps):
        notes.append("Training loss per method: ![loss](loss.png)")
    sections.insert(0, training_table(ctx.run.results, ctx.traces))
    update = update_section(ctx, metrics)
    if update:
        sections.insert(1, update)
    text = render_report(f"nesyloop run: {ctx.cfg.task.name}", metrics, ctx.cfg.eval.splits,
                         ctx.run.results, notes, extra="\n".join(sections) or None)
    write_json(ctx.out / "metrics.json", metrics)
    atomic_write_text(ctx.out / "report.md", text)
    return text


def run(config: Config, out: str | Path | None = None, until: str | None = None,
        methods: list[str] | None = None, log: Log = print) -> dict[str, Any]:
    """Run (or resume) a config; returns metrics (method -> split -> strict, flexible, n)."""
    return Pipeline(config, out, log=log).execute(until=until, methods=methods)
