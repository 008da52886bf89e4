"""Compose the stages of a run. ``run`` is what ``nesyloop run`` calls; ``until`` stops after a
named stage, which is how the CLI's stage commands (data, rationales, train, ...) work."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .config import Config
from .gen.base import GenSettings
from .io import atomic_write_text, read_jsonl, write_json, write_jsonl
from .methods.common import (predict_stage, score_stage, student_prompt, train_stage,
                             write_examples)
from .methods.registry import METHODS
from .report import plot_losses, render_report
from .roles.rationale import distill_rationales
from .runs.cache import CachedBackend, RequestCache, default_cache_path
from .runs.rundir import RunDir, StageContext, StageResult


class Pipeline:
    def __init__(self, config: Config, out: str | Path | None = None, log=print):
        self.cfg = config
        self.out = Path(out or config.run.out)
        self.log = log
        self.run = RunDir(self.out, log=log)
        self.cache_path = Path(config.run.cache) if config.run.cache else default_cache_path()

    # --- stages --------------------------------------------------------------------------
    def data(self) -> StageResult:
        cfg = self.cfg.task

        def fn(ctx: StageContext) -> dict[str, Any]:
            from .tasks.bazaar import generate_splits

            splits = generate_splits(cfg.bazaar)
            return {s: write_examples(ctx.out / f"{s}.jsonl", exs) for s, exs in splits.items()}

        return self.run.stage("data", cfg.model_dump(mode="json"), fn)

    def student_init(self, data: StageResult) -> StageResult | None:
        """The scratch student (tokenizer trained on the task's text, random weights)."""
        st = self.cfg.student
        if st.model != "scratch":
            return None

        def fn(ctx: StageContext) -> dict[str, Any]:
            from .students.scratch import create_scratch_student

            texts = [student_prompt(ex["question"]) + " "
                     + (ex.get("rationale") or f"The answer is {ex['answer']}.")
                     for ex in read_jsonl(data.path / "train.jsonl")]
            path = create_scratch_student(texts, ctx.out / "model", st.scratch)
            return {"path": str(path)}

        settings = {"scratch": st.scratch.model_dump(mode="json"), "seed": self.cfg.run.seed}
        return self.run.stage("student-init", settings, fn, deps=[data])

    def rationales(self, data: StageResult) -> StageResult:
        t = self.cfg.teacher
        gen = GenSettings(max_tokens=t.max_tokens, temperature=t.temperature, top_p=t.top_p,
                          n=t.samples, seed=self.cfg.run.seed)

        def fn(ctx: StageContext) -> dict[str, Any]:
            from .gen.registry import make_teacher
            from .methods.common import load_split

            inner = make_teacher(t, world_seed=self.cfg.task.bazaar.seed, seed=self.cfg.run.seed)
            cache = RequestCache(self.cache_path)
            teacher = CachedBackend(inner, cache, run=str(self.out), chunk_size=t.batch_size)
            try:
                train = load_split(data.path, "train")
                kept, rejected = distill_rationales(teacher, train, gen, t.batch_size,
                                                    progress=self.cfg.run.progress)
            finally:
                cache.close()
            write_jsonl(ctx.out / "kept.jsonl", kept)
            write_jsonl(ctx.out / "rejected.jsonl", rejected)
            covered = len({r["id"] for r in kept})
            return {"questions": len(train), "samples": len(kept) + len(rejected),
                    "kept": len(kept), "rejected": len(rejected), "covered_questions": covered,
                    "requests_issued": teacher.misses, "requests_cached": teacher.hits,
                    "prompt_tokens": teacher.prompt_tokens,
                    "completion_tokens": teacher.completion_tokens}

        settings = {**t.model_dump(mode="json"), "seed": self.cfg.run.seed}
        return self.run.stage("rationales", settings, fn, deps=[data])

    def method(self, name: str, data: StageResult, init: StageResult | None,
               rationales: StageResult | None, until: str | None = None) -> dict[str, Any] | None:
        m = METHODS[name]
        base = init.path / "model" if init else self.cfg.student.model
        model_deps = [init] if init else []
        model_settings = {"base": str(base) if not init else "student-init"}
        if m.pairs is not None:
            rat_dir = rationales.path if rationales else None
            train = self.run.stage(
                f"train-{name}",
                {**model_settings, "train": self.cfg.train.model_dump(mode="json")},
                train_stage(base, lambda: m.pairs(data.path, rat_dir), self.cfg.train),
                deps=[data, *model_deps, *([rationales] if m.needs_rationales else [])])
            model, model_deps = train.path / "model", [train]
        else:
            model = base
        if until == "train":
            return None
        ev = self.cfg.eval
        pred = self.run.stage(
            f"predict-{name}", {**model_settings, "eval": ev.model_dump(mode="json")},
            predict_stage(model, data.path, ev.splits, ev.batch_size, ev.max_new_tokens,
                          self.cfg.run.progress),
            deps=[data, *model_deps])
        if until == "predict":
            return None
        score = self.run.stage(f"score-{name}", {"splits": ev.splits},
                               score_stage(pred.path, ev.splits), deps=[pred])
        return score.info

    # --- the whole run -------------------------------------------------------------------
    def execute(self, until: str | None = None, methods: list[str] | None = None) -> dict:
        started = time.time()
        write_json(self.out / "config.json", self.cfg.model_dump(mode="json"))
        data = self.data()
        if until == "data":
            return {}
        methods = methods or self.cfg.methods
        need_rat = any(METHODS[m].needs_rationales for m in methods)
        rat = self.rationales(data) if need_rat or until == "rationales" else None
        if until == "rationales":
            return {}
        init = self.student_init(data)
        metrics: dict[str, Any] = {}
        for name in methods:
            res = self.method(name, data, init, rat, until=until)
            if res is not None:
                metrics[name] = res
        if until in ("train", "predict"):
            return {}
        self.write_report(metrics, time.time() - started)
        return metrics

    def write_report(self, metrics: dict[str, Any], wall_s: float) -> str:
        splits = self.cfg.eval.splits
        notes = [f"Run directory: `{self.out}`; this invocation took {wall_s:.1f} s."]
        rat = self.run.results.get("rationales")
        if rat is not None:
            i = rat.info
            notes.append(
                f"Teacher: {self.cfg.teacher.backend} `{self.cfg.teacher.model}`, "
                f"{i['samples']} rationales for {i['questions']} questions, {i['kept']} kept, "
                f"{i['rejected']} rejected; {i['covered_questions']} questions covered.")
        if self.cfg.task.name == "bazaar":
            notes.append("Bazaar is a synthetic world built to exhibit sparse knowledge; real "
                         "claims come from real benchmarks.")
        curves = {name[len("train-"):]: res.info.get("losses", [])
                  for name, res in self.run.results.items() if name.startswith("train-")}
        if plot_losses(curves, self.out / "loss.png", self.cfg.train.logging_steps):
            notes.append("Training loss per method: ![loss](loss.png)")
        text = render_report(f"nesyloop run: {self.cfg.task.name}", metrics, splits,
                             self.run.results, notes)
        write_json(self.out / "metrics.json", metrics)
        atomic_write_text(self.out / "report.md", text)
        return text


def run(config: Config, out: str | Path | None = None, until: str | None = None,
        methods: list[str] | None = None, log=print) -> dict[str, Any]:
    """Run (or resume) a config; returns metrics (method -> split -> strict, flexible, n)."""
    return Pipeline(config, out, log=log).execute(until=until, methods=methods)
