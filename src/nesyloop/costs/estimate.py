"""What a config's teacher work will cost, before anything is spent (``nesyloop estimate``).

Stages whose prompts are known before the run are counted exactly: the rationales (and the
round-0 programs of an FDD run with programs of thought) are built from the real training
problems (the data stage runs; it is free) and the requests already in the cache are
subtracted. Later stages depend on the student's answers, so they are estimated from stated
:class:`Assumptions` (the student's error rate, how many evolved problems survive the filters,
...), printed with the table. Tokens are estimated at about 4 characters a token; completions
at ``completion_share`` of ``max_tokens`` (the worst case at all of it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..gen.base import GenSettings, Request
from .budget import Prices, prompt_tokens_estimate


@dataclass(frozen=True)
class Assumptions:
    student_error_rate: float = 0.6  # share of problems the student answers wrong (each round)
    evolve_keep_rate: float = 0.95  # evolved problems that parse and are no copies or leaks
    agreement_rate: float = 0.8  # solved problems kept (CoT and PoT, or the majority, agree)
    completion_share: float = 0.5  # a reply's length as a share of max_tokens

    def __post_init__(self) -> None:
        from ..errors import NesyloopError

        for name, v in asdict(self).items():
            if not 0.0 <= v <= 1.0:
                raise NesyloopError(f"estimate: {name} must be in [0, 1], got {v}")

    def lines(self) -> list[str]:
        return [f"student error rate {self.student_error_rate:.2f} (--error-rate)",
                f"evolved problems kept by the filters {self.evolve_keep_rate:.2f} (--keep-rate)",
                (f"solved problems kept by the agreement check {self.agreement_rate:.2f} "
                 f"(--agree-rate)"),
                f"a reply is {self.completion_share:.2f} of max_tokens long (--completion-share)"]


@dataclass
class Row:
    stage: str
    requests: int
    cached: int | None  # None: not known before the run (an assumed stage)
    samples: int  # per request
    prompt_tokens: int  # of the requests still to send
    completion_tokens: int  # expected
    cost_usd: float  # expected
    worst_usd: float  # every reply max_tokens long
    exact: bool

    @property
    def to_send(self) -> int:
        return self.requests - (self.cached or 0)


@dataclass
class Estimate:
    rows: list[Row]
    assumptions: Assumptions
    prices: Prices
    budget_usd: float | None
    notes: list[str] = field(default_factory=list)

    def row(self, stage: str) -> Row:
        return next(r for r in self.rows if r.stage == stage)

    @property
    def cost_usd(self) -> float:
        return sum(r.cost_usd for r in self.rows)

    @property
    def worst_usd(self) -> float:
        return sum(r.worst_usd for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [{**asdict(r), "to_send": r.to_send} for r in self.rows],
                "assumptions": asdict(self.assumptions), "prices": self.prices.model_dump(),
                "budget_usd": self.budget_usd, "cost_usd": round(self.cost_usd, 6),
                "worst_usd": round(self.worst_usd, 6), "notes": self.notes}

    def table(self) -> str:
        head = ("stage", "requests", "cached", "to send", "samples", "prompt tok",
                "completion tok", "cost USD", "worst USD")
        body = [(r.stage + ("" if r.exact else " *"), f"{r.requests:,}",
                 "?" if r.cached is None else f"{r.cached:,}", f"{r.to_send:,}", str(r.samples),
                 f"{r.prompt_tokens:,}", f"{r.completion_tokens:,}", f"{r.cost_usd:.4f}",
                 f"{r.worst_usd:.4f}") for r in self.rows]
        body.append(("total", f"{sum(r.requests for r in self.rows):,}", "",
                     f"{sum(r.to_send for r in self.rows):,}", "",
                     f"{sum(r.prompt_tokens for r in self.rows):,}",
                     f"{sum(r.completion_tokens for r in self.rows):,}",
                     f"{self.cost_usd:.4f}", f"{self.worst_usd:.4f}"))
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]

        def fmt(cells) -> str:
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

        lines = [fmt(head), "  ".join("-" * w for w in widths), *map(fmt, body), ""]
        lines.append(f"Prices: ${self.prices.prompt_per_mtok:g} prompt, "
                     f"${self.prices.completion_per_mtok:g} completion per million tokens.")
        if self.budget_usd is not None:
            verdict = ("fits" if self.worst_usd <= self.budget_usd else
                       "fits on the expected cost, not in the worst case"
                       if self.cost_usd <= self.budget_usd else "does NOT fit")
            lines.append(f"Budget: ${self.budget_usd:g} (teacher.budget_usd): {verdict}.")
        if any(not r.exact for r in self.rows):
            lines.append("* assumed, not counted (these stages depend on the student's answers):")
            lines += [f"  - {x}" for x in self.assumptions.lines()]
        lines += self.notes
        return "\n".join(lines)


def _identity(cfg) -> Any:
    """An object with the teacher's cache identity, made without loading a model."""
    t = cfg.teacher
    if t.backend in ("hf", "dataset"):
        return SimpleNamespace(kind=t.backend, model=str(t.model), cache_id=None)
    from ..gen.registry import make_teacher

    return make_teacher(t, world_seed=cfg.task.bazaar.seed, seed=cfg.run.seed)


class Counter:
    """The rows of an estimate, added by each method's ``estimate(counter)`` (a stage that
    several methods share is counted once). ``gen(n)``: the run's teacher settings, so cache
    keys match what a run would send; ``train``: the training examples."""

    def __init__(self, cfg, a: Assumptions, train: list, cache, ident,
                 gen: Callable[[int | None], GenSettings]):
        self.cfg, self.a, self.train, self.cache, self.ident = cfg, a, train, cache, ident
        self.prices = cfg.teacher.prices
        self.gen = gen
        self.rows: list[Row] = []

    def has(self, stage: str) -> bool:
        return any(r.stage == stage for r in self.rows)

    def exact(self, stage: str, role, examples, n: int) -> None:
        """A stage whose requests are known now: each built and looked up in the cache."""
        from ..runs.cache import request_key

        if self.has(stage):
            return
        gen = self.gen(n)
        reqs = [Request.chat(role.format_input(ex), gen) for ex in examples]
        todo = [r for r in reqs if self.cache is None
                or self.cache.get(request_key(self.ident, r)[0]) is None]
        ptok = sum(prompt_tokens_estimate(r) for r in todo)
        self._add(stage, len(reqs), len(reqs) - len(todo), n, ptok, len(todo), True)

    def assumed(self, stage: str, role, examples, count: float, n: int) -> None:
        """A stage of ``count`` requests like ``role``'s on ``examples`` (prompt length
        averaged over up to 200 of them)."""
        if self.has(stage):
            return
        count = math.ceil(count)
        gen = self.gen(n)
        sample = examples[:200]
        per = (sum(prompt_tokens_estimate(Request.chat(role.format_input(ex), gen))
                   for ex in sample) / max(1, len(sample)))
        self._add(stage, count, None, n, round(per * count), count, False)

    def analyse_role(self):
        """The teacher's error-analysis role, as the run configures it."""
        from ..roles.error_analysis import ErrorAnalysisRole

        ns = self.cfg.nesycd
        return ErrorAnalysisRole(ns.demonstrations, ns.max_response_words)

    def wrong_examples(self) -> list:
        """Up to 200 training examples with an assumed wrong student response (its length:
        ``completion_share`` of eval.max_new_tokens, in words) for error-analysis prompts."""
        from ..tasks.base import Example

        words = max(1, int(self.cfg.eval.max_new_tokens * self.a.completion_share))
        return [Example(id=ex.id, question=ex.question, answer=ex.answer,
                        meta={"student_response_clean": " ".join(["step"] * words)})
                for ex in self.train[:200]]

    def _add(self, stage, requests, cached, n, ptok, to_send, exact) -> None:
        mt = self.cfg.teacher.max_tokens
        ctok = round(to_send * n * mt * self.a.completion_share)
        worst = self.prices.cost(ptok, to_send * n * mt)
        self.rows.append(Row(stage, requests, cached, n, ptok, ctok,
                             self.prices.cost(ptok, ctok), worst, exact))


def estimate(config=None, out: str | Path | None = None, quick: bool = False,
             methods: list[str] | None = None, assumptions: Assumptions | None = None,
             log=None) -> Estimate:
    """The teacher requests, tokens and USD a config needs per teacher stage (nothing is sent):
    the rationales, then each chosen method's own teacher stages, in the registry's order.
    ``config``: a path, a loaded Config or None (the main job)."""
    from ..config import Config, load_config
    from ..errors import NesyloopError
    from ..methods import registry
    from ..methods.common import load_split
    from ..methods.shared import RATIONALES, data_stage
    from ..roles.rationale import RationaleRole
    from ..runs.cache import RequestCache
    from ..runs.context import RunContext

    cfg = config if isinstance(config, Config) else load_config(config, quick=quick)
    names = methods or list(cfg.methods)
    if (why := registry.run_error(methods, names, cfg.teacher.backend)) is not None:
        raise NesyloopError(why)
    chosen = [m for n, m in registry.methods().items() if n in names]
    ctx = RunContext.create(cfg, out, log=log or (lambda _msg: None))
    train = load_split(data_stage(ctx).path, "train")
    cache = RequestCache(ctx.cache_path) if ctx.cache_path.exists() else None
    ident = _identity(cfg)
    c = Counter(cfg, assumptions or Assumptions(), train, cache, ident, ctx.teacher_gen)
    try:
        if cfg.teacher.backend != "dataset" and any(m.needs_rationales for m in chosen):
            c.exact(RATIONALES, RationaleRole(), train, cfg.teacher.samples)  # dataset: free
        for m in chosen:
            m.estimate(c)
    finally:
        if cache is not None:
            cache.close()
        close = getattr(ident, "close", None)
        if close is not None:
            close()
    notes = []
    if cache is None:
        notes.append(f"The request cache {ctx.cache_path} does not exist yet: nothing is cached.")
    return Estimate(c.rows, c.a, cfg.teacher.prices, cfg.teacher.budget_usd, notes)
