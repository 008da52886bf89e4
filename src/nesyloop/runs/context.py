"""What a method gets to run with: :class:`RunContext`.

The config, the run directory, the log, the teacher factory (behind the request cache, with the
run's cost accounting and budget cap), the student-engine factory, the usage totals, and the
shared stages the pipeline ran first (data, rationales, student-init). Methods receive it and
never see the pipeline; this module imports nothing above ``runs/``, ``gen/`` and ``costs/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..costs.budget import Budget, Usage
from ..gen.base import Backend, GenSettings
from .cache import CachedBackend, RequestCache, default_cache_path
from .rundir import RunDir, StageFn, StageResult, fingerprint

if TYPE_CHECKING:
    from ..config import Config

Log = Callable[[str], None]


@dataclass
class RunContext:
    cfg: Config
    out: Path
    run: RunDir
    log: Log
    cache_path: Path
    budget: Budget  # the cap shared by all this invocation's teacher stages
    teacher_usage: Usage = field(default_factory=Usage)  # what this invocation paid
    # the shared stages, set by the pipeline before any method runs
    data: StageResult | None = None
    rationales: StageResult | None = None
    init: StageResult | None = None  # the scratch student's init (None for a named model)
    season2: StageResult | None = None  # Bazaar's season-2 splits and fact sheet, when asked
    # what a method hands to its own report section (method name -> its object)
    state: dict[str, Any] = field(default_factory=dict)
    # the stages each method asked for, shared ones included (method name -> stage names)
    traces: dict[str, list[str]] = field(default_factory=dict)
    tracing: str | None = None  # the method now running

    @classmethod
    def create(cls, cfg: Config, out: str | Path | None = None, log: Log = print) -> RunContext:
        out = Path(out or cfg.run.out)
        cache = Path(cfg.run.cache) if cfg.run.cache else default_cache_path()
        return cls(cfg=cfg, out=out, run=RunDir(out, log=log), log=log, cache_path=cache,
                   budget=Budget(cap=cfg.teacher.budget_usd))

    # --- stages ----------------------------------------------------------------------------
    def stage(self, name: str, settings: Any, fn: StageFn,
              deps: list[StageResult] | tuple[StageResult, ...] = ()) -> StageResult:
        """Run (or reuse) the stage ``name``: its fingerprint follows from ``settings`` and the
        fingerprints of ``deps`` (the stages it reads)."""
        if self.tracing is not None:
            self.traces.setdefault(self.tracing, []).append(name)
        return self.run.stage(name, settings, fn, deps=deps)

    def result(self, name: str) -> StageResult | None:
        """A stage this invocation has run or reused."""
        return self.run.results.get(name)

    # --- the teacher -----------------------------------------------------------------------
    def teacher(self) -> tuple[Backend, Callable[[], dict[str, Any]]]:
        """The configured teacher behind the request cache: ``(backend, close)``; ``close()``
        returns what this use of it cost (requests, tokens, USD, failures) for the stage's info.
        A stage with failed requests is recomputed by the next run (see runs/rundir.py)."""
        from ..gen.registry import make_teacher

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
        """The teacher's generation settings (``n`` samples; default ``teacher.samples``)."""
        t = self.cfg.teacher
        return GenSettings(max_tokens=t.max_tokens, temperature=t.temperature, top_p=t.top_p,
                           n=t.samples if n is None else n, seed=self.cfg.run.seed)

    def teacher_settings(self) -> dict[str, Any]:
        """The teacher part of a teacher stage's fingerprint settings."""
        from ..tasks.bazaar import OracleBackend

        t = self.cfg.teacher
        return {"teacher": t.identity(), "seed": self.cfg.run.seed,
                # the oracle's replies changed across versions (see OracleBackend.version)
                "teacher_version": OracleBackend.version if t.backend == "oracle" else None}

    # --- the student -----------------------------------------------------------------------
    def student(self, model: str | Path, log_path: Path | None = None) -> Backend:
        """The configured engine (``student.engine``) running a student checkpoint
        (``gen.registry.make_student``), batched as ``eval.batch_size``; a server it starts
        writes its output to ``log_path``. Close it when done."""
        from ..gen.registry import make_student

        st = self.cfg.student
        return make_student(model, engine=st.engine, batch_size=self.cfg.eval.batch_size,
                            progress=self.cfg.run.progress, server=st.server, log_path=log_path)
