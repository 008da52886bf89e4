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


class _Counter:
    """``gen(n)``: the pipeline's teacher settings, so cache keys match what a run would send."""

    def __init__(self, cfg, prices: Prices, a: Assumptions, cache, ident,
                 gen: Callable[[int], GenSettings]):
        self.cfg, self.prices, self.a, self.cache, self.ident = cfg, prices, a, cache, ident
        self.gen = gen
        self.rows: list[Row] = []

    def exact(self, stage: str, role, examples, n: int) -> None:
        from ..runs.cache import request_key

        gen = self.gen(n)
        reqs = [Request.chat(role.format_input(ex), gen) for ex in examples]
        todo = [r for r in reqs if self.cache is None
                or self.cache.get(request_key(self.ident, r)[0]) is None]
        ptok = sum(prompt_tokens_estimate(r) for r in todo)
        self._add(stage, len(reqs), len(reqs) - len(todo), n, ptok, len(todo), True)

    def assumed(self, stage: str, role, examples, count: float, n: int) -> None:
        count = math.ceil(count)
        gen = self.gen(n)
        sample = examples[:200]
        per = (sum(prompt_tokens_estimate(Request.chat(role.format_input(ex), gen))
                   for ex in sample) / max(1, len(sample)))
        self._add(stage, count, None, n, round(per * count), count, False)

    def _add(self, stage, requests, cached, n, ptok, to_send, exact) -> None:
        mt = self.cfg.teacher.max_tokens
        ctok = round(to_send * n * mt * self.a.completion_share)
        worst = self.prices.cost(ptok, to_send * n * mt)
        self.rows.append(Row(stage, requests, cached, n, ptok, ctok,
                             self.prices.cost(ptok, ctok), worst, exact))


def estimate(config=None, out: str | Path | None = None, quick: bool = False,
             methods: list[str] | None = None, assumptions: Assumptions | None = None,
             log=None) -> Estimate:
    """The teacher requests, tokens and USD a config needs per teacher stage (nothing is sent).
    ``config``: a path, a loaded Config or None (the main job)."""
    from ..config import Config, load_config
    from ..methods.common import load_split
    from ..methods.flows import KB_METHODS
    from ..methods.registry import METHODS
    from ..pipeline import FDD_METHODS, Pipeline
    from ..roles.error_analysis import ErrorAnalysisRole
    from ..roles.evolve import EvolveRole
    from ..roles.pot import PotRole
    from ..roles.rationale import RationaleRole
    from ..runs.cache import RequestCache
    from ..tasks.base import Example

    cfg = config if isinstance(config, Config) else load_config(config, quick=quick)
    a = assumptions or Assumptions()
    methods = methods or list(cfg.methods)
    from ..config import dataset_teacher_error, method_error
    from ..errors import NesyloopError

    why = method_error(methods) or dataset_teacher_error(cfg.teacher.backend, methods)
    if why is not None:
        raise NesyloopError(why)
    p = Pipeline(cfg, out, log=log or (lambda _msg: None))
    train = load_split(p.data().path, "train")
    t, f, ns, err = cfg.teacher, cfg.fdd, cfg.nesycd, a.student_error_rate
    cache = RequestCache(p.cache_path) if p.cache_path.exists() else None
    ident = _identity(cfg)
    c = _Counter(cfg, t.prices, a, cache, ident, p.teacher_gen)
    try:
        if t.backend != "dataset" and any(m not in METHODS or METHODS[m].needs_rationales
                                          for m in methods):  # the dataset teacher is free
            c.exact("rationales", RationaleRole(), train, t.samples)
        fdd = [m for m in methods if m in FDD_METHODS]
        if fdd and f.thoughts != "cot":
            c.exact("programs", PotRole(), train, t.samples)
        words = max(1, int(cfg.eval.max_new_tokens * a.completion_share))
        wrong_ex = [Example(id=ex.id, question=ex.question, answer=ex.answer,
                            meta={"student_response_clean": " ".join(["step"] * words)})
                    for ex in train[:200]]
        analyse = ErrorAnalysisRole(ns.demonstrations, ns.max_response_words)
        if any(m in KB_METHODS for m in methods):
            c.assumed("kb", analyse, wrong_ex, err * len(train), 1)
        if fdd:
            seeds = min(len(train), f.max_seeds or len(train))
            pool, feedback = len(train), [seeds]
            k = f.majority_samples if f.agreement == "majority" else 1
            need_pot = f.agreement == "cot-pot" or f.thoughts != "cot"
            for rnd in range(1, f.rounds + 1):
                written = 0.0  # easy seeds get harder variants, hard ones similar problems
                for kind, share in (("harder", 1 - err), ("similar", err)):
                    n = f.n_variants(kind)
                    c.assumed(f"fdd-evolve-r{rnd} (write {kind})", EvolveRole(kind), train,
                              seeds * share, n)
                    written += seeds * share * n
                cands = written * a.evolve_keep_rate
                c.assumed(f"fdd-evolve-r{rnd} (solve CoT)", RationaleRole(), train, cands, k)
                if need_pot:
                    c.assumed(f"fdd-evolve-r{rnd} (solve PoT)", PotRole(), train, cands, 1)
                new = cands * a.agreement_rate
                pool += new
                seeds = min(new if f.seeds == "new" else pool, f.max_seeds or math.inf)
                feedback.append(seeds)
            if "nesycd+fdd" in methods:
                shared = "kb" in [r.stage for r in c.rows]
                total = sum(feedback[1 if shared else 0:]) * err
                c.assumed("kb-fdd", analyse, wrong_ex, total, 1)
                if shared:
                    c.rows[-1].stage = "kb-fdd (round 0 shared with kb)"
    finally:
        if cache is not None:
            cache.close()
        close = getattr(ident, "close", None)
        if close is not None:
            close()
    notes = []
    if cache is None:
        notes.append(f"The request cache {p.cache_path} does not exist yet: nothing is cached.")
    return Estimate(c.rows, a, t.prices, t.budget_usd, notes)
