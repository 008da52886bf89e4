"""Compose the stages of a run. ``run`` is what ``nesyloop run`` calls; ``until`` stops after a
named stage, which is how the CLI's stage commands (data, rationales, train, ...) work."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .config import Config, dataset_teacher_error, dump_without_unset, method_error
from .costs.budget import Budget, Usage
from .errors import ConfigError, DataError
from .gen.base import GenSettings
from .io import atomic_write_text, read_jsonl, write_json, write_jsonl
from .methods.common import predict_stage, score_stage, train_stage, write_examples
from .methods.registry import METHODS
from .report import plot_losses, render_report
from .roles.rationale import dataset_rationales, distill_rationales
from .runs.cache import CachedBackend, RequestCache, check_cache_path, default_cache_path
from .runs.rundir import RunDir, StageContext, StageResult, fingerprint
from .students.prompt import student_prompt
from .tasks import task_splits


FDD_METHODS = ("fdd", "nesycd+fdd")  # one metrics row per FDD round (and the joined method)


class Pipeline:
    def __init__(self, config: Config, out: str | Path | None = None, log=print):
        self.cfg = config
        self.out = Path(out or config.run.out)
        self.log = log
        self.run = RunDir(self.out, log=log)
        self.cache_path = Path(config.run.cache) if config.run.cache else default_cache_path()
        self.fdd_rounds: list = []  # set by the FDD methods, for the report
        self.fdd_stop: str | None = None  # why the FDD rounds ended early (all rejected)
        # what this invocation paid the teacher, and the cap shared by all its teacher stages
        self.budget = Budget(cap=config.teacher.budget_usd)
        self.teacher_usage = Usage()

    # --- stages --------------------------------------------------------------------------
    def data(self) -> StageResult:
        cfg = self.cfg.task

        def fn(ctx: StageContext) -> dict[str, Any]:
            splits = task_splits(cfg.name, cfg.bazaar, cfg.bench)
            return {s: write_examples(ctx.out / f"{s}.jsonl", exs) for s, exs in splits.items()}

        return self.run.stage("data", cfg.data_settings(), fn)

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

        settings = {"scratch": dump_without_unset(st.scratch, {"numbers": "digits"}),
                    "seed": self.cfg.run.seed}
        return self.run.stage("student-init", settings, fn, deps=[data])

    def teacher(self):
        """The configured teacher behind the request cache: ``(backend, close)``; ``close()``
        returns what this use of it cost (requests, tokens, USD, failures) for the stage's info.
        A stage with failed requests is recomputed by the next run (see runs/rundir.py)."""
        from .gen.registry import make_teacher

        t = self.cfg.teacher
        inner = make_teacher(t, world_seed=self.cfg.task.bazaar.seed, seed=self.cfg.run.seed)
        cache = RequestCache(self.cache_path)
        backend = CachedBackend(inner, cache, run=str(self.out), chunk_size=t.batch_size,
                                prices=t.prices, budget=self.budget)

        def close() -> dict[str, Any]:
            inner.close()
            cache.close()
            u = backend.usage
            self.teacher_usage.add(u)
            self.log(f"[cost] teacher: {u.line()} (this run so far: "
                     f"${self.teacher_usage.cost_usd:.4f})")
            info = u.to_info()
            if u.requests_failed:
                self.log(f"[warn] {u.requests_failed} teacher requests failed "
                         f"({u.first_error}); they are not cached: re-run to retry them")
                info["failed_digest"] = fingerprint(sorted(backend.failed_keys))
            return info

        return backend, close

    def teacher_gen(self, n: int | None = None) -> GenSettings:
        t = self.cfg.teacher
        return GenSettings(max_tokens=t.max_tokens, temperature=t.temperature, top_p=t.top_p,
                           n=t.samples if n is None else n, seed=self.cfg.run.seed)

    def rationales(self, data: StageResult) -> StageResult:
        t = self.cfg.teacher

        def fn(ctx: StageContext) -> dict[str, Any]:
            from .methods.common import load_split

            train = load_split(data.path, "train")
            if t.backend == "dataset":  # the data set's worked solutions, no model asked
                kept, rejected = dataset_rationales(train)
                if not kept:
                    raise DataError(f"teacher.backend 'dataset': none of the "
                                    f"{len(train)} training examples of task "
                                    f"{self.cfg.task.name!r} has a usable worked solution")
                usage: dict[str, Any] = {}
            else:
                teacher, close = self.teacher()
                try:
                    kept, rejected = distill_rationales(teacher, train, self.teacher_gen(),
                                                        t.batch_size,
                                                        progress=self.cfg.run.progress)
                finally:
                    usage = close()
            write_jsonl(ctx.out / "kept.jsonl", kept)
            write_jsonl(ctx.out / "rejected.jsonl", rejected)
            covered = len({r["id"] for r in kept})
            return {"questions": len(train), "samples": len(kept) + len(rejected),
                    "kept": len(kept), "rejected": len(rejected), "covered_questions": covered,
                    **usage}

        settings = {"backend": "dataset", "v": 1} if t.backend == "dataset" else \
            {**t.identity(), "seed": self.cfg.run.seed}  # the dataset ignores model settings
        return self.run.stage("rationales", settings, fn, deps=[data])

    def base_model(self, init: StageResult | None) -> tuple[Path | str, list, dict]:
        """The base student, the stages it depends on, and its fingerprint settings."""
        if init is not None:
            return init.path / "model", [init], {"base": "student-init"}
        return self.cfg.student.model, [], {"base": str(self.cfg.student.model)}

    def train_model(self, name: str, data: StageResult, init: StageResult | None,
                    rationales: StageResult | None) -> StageResult | None:
        """The trained student of a simple method (None for zero-shot)."""
        m = METHODS[name]
        if m.pairs is None:
            return None
        base, base_deps, base_settings = self.base_model(init)
        rat_dir = rationales.path if rationales else None
        settings = {**base_settings, "train": self.cfg.train_for(name).model_dump(mode="json")}
        return self.run.stage(
            f"train-{name}", settings,
            train_stage(base, lambda _ctx: m.pairs(data.path, rat_dir), self.cfg.train_for(name)),
            deps=[data, *base_deps, *([rationales] if m.needs_rationales else [])])

    def evaluate(self, name: str, model, data: StageResult, deps: list[StageResult],
                 settings: dict[str, Any], until: str | None = None,
                 prompt_fn=None, after=None, inference: str = "cot") -> dict[str, Any] | None:
        """predict-<name> and score-<name>: the shared tail of every method."""
        ev = self.cfg.eval
        extra = {} if inference == "cot" else {"inference": inference}
        pred = self.run.stage(
            f"predict-{name}", {**settings, "eval": ev.model_dump(mode="json"), **extra},
            predict_stage(model, data.path, ev.splits, ev.batch_size, ev.max_new_tokens,
                          self.cfg.run.progress, prompt_fn=prompt_fn, after=after,
                          inference=inference),
            deps=[data, *deps])
        if until == "predict":
            return None
        score = self.run.stage(f"score-{name}", {"splits": ev.splits},
                               score_stage(pred.path, ev.splits), deps=[pred])
        return score.info

    def method(self, name: str, data: StageResult, init: StageResult | None,
               rationales: StageResult | None, until: str | None = None) -> dict[str, Any] | None:
        if name in FDD_METHODS:
            from .methods.fdd_flow import run_fdd_method

            return run_fdd_method(self, name, data, init, rationales, until)
        if name not in METHODS:
            from .methods.flows import run_kb_method

            return run_kb_method(self, name, data, init, rationales, until)
        train = self.train_model(name, data, init, rationales)
        if until == "train":
            return None
        base, base_deps, base_settings = self.base_model(init)
        if train is None:
            return self.evaluate(name, base, data, base_deps, base_settings, until)
        return self.evaluate(name, train.path / "model", data, [train], base_settings, until)

    # --- the whole run -------------------------------------------------------------------
    def execute(self, until: str | None = None, methods: list[str] | None = None) -> dict:
        bad = method_error(methods) or dataset_teacher_error(self.cfg.teacher.backend,
                                                             methods or self.cfg.methods)
        if bad:  # methods asked for on the command line (the config's were checked)
            raise ConfigError(bad)
        check_cache_path(self.cache_path)  # before any stage: it is opened for the first request
        started = time.time()
        write_json(self.out / "config.json", self.cfg.model_dump(mode="json"))
        data = self.data()
        if until == "data":
            return {}
        methods = methods or self.cfg.methods
        need_rat = any(m not in METHODS or METHODS[m].needs_rationales for m in methods)
        rat = self.rationales(data) if need_rat or until == "rationales" else None
        if rat is not None and until != "rationales" and rat.info.get("kept") == 0:
            raise DataError(self._no_rationales(rat))
        if until == "rationales":
            return {}
        init = self.student_init(data)
        metrics: dict[str, Any] = {}
        for name in methods:
            res = self.method(name, data, init, rat, until=until)
            if res is not None and name in FDD_METHODS:
                metrics.update(res)  # one row per FDD round (and the joined method)
            elif res is not None:
                metrics[name] = res
        if until in ("train", "predict"):
            return {}
        self.write_report(metrics, time.time() - started)
        return metrics

    def _no_rationales(self, rat: StageResult) -> str:
        """Why nothing can be trained: every teacher rationale was rejected, by reason (the
        most frequent first), and where the rejected rationales are."""
        from collections import Counter

        reasons = Counter(str(r.get("reason")).split(" (")[0].split(":")[0]
                          for r in read_jsonl(rat.path / "rejected.jsonl"))
        top = ", ".join(f"{why}: {n}" for why, n in reasons.most_common(3)) or "none returned"
        t = self.cfg.teacher
        return (f"the teacher's rationales were all rejected ({rat.info.get('samples', 0)} for "
                f"{rat.info.get('questions', 0)} questions; top reasons: {top}), so there is "
                f"nothing to train on: read {rat.path / 'rejected.jsonl'} (each with its reason) "
                f"and check [teacher] ({t.backend} {t.model!r})")

    def write_report(self, metrics: dict[str, Any], wall_s: float) -> str:
        splits = self.cfg.eval.splits
        notes = [f"Run directory: `{self.out}`; this invocation took {wall_s:.1f} s."]
        rat = self.run.results.get("rationales")
        if rat is not None:
            i = rat.info
            who = ("the data set's worked solutions (`teacher.backend = \"dataset\"`)"
                   if self.cfg.teacher.backend == "dataset" else
                   f"{self.cfg.teacher.backend} `{self.cfg.teacher.model}`")
            notes.append(
                f"Teacher: {who}, "
                f"{i['samples']} rationales for {i['questions']} questions, {i['kept']} kept, "
                f"{i['rejected']} rejected; {i['covered_questions']} questions covered.")
        notes.append(self._teacher_cost_note())
        demos, kb = self.run.results.get("demos"), self.run.results.get("kb")
        if demos is not None and kb is not None:
            d, k = demos.info, kb.info
            notes.append(
                f"NesyCD: S_P answered {d['correct']} of {d['n']} training questions right; the "
                f"teacher analysed the {k['wrong_demos']} wrong ones: {k['entries']} KB entries "
                f"(`kb/kb.sqlite`), {k['rejected']} replies rejected "
                f"({', '.join(f'{r}: {c}' for r, c in k['rejected_reasons'].items()) or 'none'}); "
                f"{k['repetition_cut']} student responses had repetition cut. Read or edit the "
                f"KB with `nesyloop kb` (docs/kb.md).")
        fdd_md = self._fdd_report(metrics)
        if self.cfg.task.name == "bazaar":
            notes.append("Bazaar is a synthetic world built to exhibit sparse knowledge; real "
                         "claims come from real benchmarks.")
        curves = {name[len("train-"):]: res.info.get("losses", [])
                  for name, res in self.run.results.items() if name.startswith("train-")}
        if plot_losses(curves, self.out / "loss.png", self.cfg.train.logging_steps):
            notes.append("Training loss per method: ![loss](loss.png)")
        text = render_report(f"nesyloop run: {self.cfg.task.name}", metrics, splits,
                             self.run.results, notes, extra=fdd_md)
        write_json(self.out / "metrics.json", metrics)
        atomic_write_text(self.out / "report.md", text)
        return text


    def _teacher_cost_note(self) -> str:
        """Teacher requests, tokens and USD: of this run's stages (as each recorded when it
        ran) and of this invocation (cached replies are free)."""
        total = Usage()
        for r in self.run.results.values():
            if "requests_cached" in r.info:
                total.add(Usage.from_info(r.info))
        tok = total.prompt_tokens + total.completion_tokens
        note = (f"Teacher cost: {total.requests_issued} requests and {tok:,} tokens bought by this "
                f"run's teacher stages, ${total.cost_usd:.4f}; this invocation: "
                f"{self.teacher_usage.line()}.")
        if total.requests_failed:
            note += (f" **{total.requests_failed} teacher requests failed** (rejected with "
                     f"reason 'teacher request failed'); re-run the same command to retry them.")
        return note

    def _fdd_report(self, metrics: dict[str, Any]) -> str | None:
        """The per-round section (and ``fdd-rounds.json``, ``fdd-rounds.png``) of an FDD run."""
        if not self.fdd_rounds:
            return None
        from .report_fdd import plot_rounds, round_rows, rounds_table

        rows = round_rows(self.fdd_rounds, self.run.results)
        write_json(self.out / "fdd-rounds.json", rows)
        splits = self.cfg.eval.splits
        md = ["## FDD rounds", "", rounds_table(rows, splits), ""]
        if self.fdd_stop:
            md += [f"**{self.fdd_stop}**", ""]
        if self.cfg.fdd.thoughts == "cot":
            md.append("Round 0 is std-cot's student (CoT thoughts: the same training data).")
        kb = self.run.results.get("kb-fdd")
        if kb is not None:
            md.append(f"nesycd+fdd: every round's wrong answers went to error analysis: "
                      f"{kb.info['entries']} KB entries (`kb-fdd/kb.sqlite`) by round "
                      f"{kb.info.get('entries_per_round', {})}.")
        if plot_rounds(rows, splits, self.out / "fdd-rounds.png", metrics.get("nesycd+fdd")):
            md += ["", "Accuracy per round: ![accuracy per round](fdd-rounds.png)"]
        return "\n".join(md + [""])


def run(config: Config, out: str | Path | None = None, until: str | None = None,
        methods: list[str] | None = None, log=print) -> dict[str, Any]:
    """Run (or resume) a config; returns metrics (method -> split -> strict, flexible, n)."""
    return Pipeline(config, out, log=log).execute(until=until, methods=methods)
