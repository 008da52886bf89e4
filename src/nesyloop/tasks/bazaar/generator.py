"""Seeded problem sampling, the dataset splits, and problem evolution (harder / similar).

Facts are drawn with a Zipf-like weight (rank ** -zipf, ranks shuffled per world seed). The rarest
``tail_fraction`` of facts is the *tail*: in ``train`` each tail fact is used by at most
``tail_max_uses`` questions, so at least that fraction of the facts is seen at most that often.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..base import Example
from .facts import World, build_world
from .grammar import Problem, Step, render_question
from .solver import MAX_FACTOR, MAX_VALUE, is_valid, solve, step_sign

SPLITS = ("train", "dev", "test", "test-rare", "test-deep", "dev-deep", "dev-rare")
# season 2 (tasks/bazaar/season.py): problems that hinge on a changed fact, solved with its new
# value, and problems that use a held-out fact
SEASON2_SPLITS = ("dev-drift", "test-drift", "dev-novel", "test-novel")
SEASON2_KEYS = ("drift", "held_out", "dev_drift", "test_drift", "dev_novel", "test_novel")


class BazaarSettings(BaseModel):
    """Sizes and shape of the Bazaar splits."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    train: int = Field(3000, ge=0)
    dev: int = Field(300, ge=0)
    test: int = Field(500, ge=0)
    test_rare: int = Field(300, ge=0)
    test_deep: int = Field(300, ge=0)
    # dev-deep and dev-rare: problems like test-deep's and test-rare's to choose settings on (the
    # test splits are only ever reported); made last, each from its own seed, so adding them
    # changes no other split
    dev_deep: int = Field(0, ge=0)
    dev_rare: int = Field(0, ge=0)
    max_steps: int = Field(4, ge=1, le=10)
    deep_steps: tuple[int, int] = (5, 6)
    zipf: float = Field(1.2, ge=0.0)
    tail_fraction: float = Field(0.35, ge=0.0, le=1.0)
    tail_max_uses: int = Field(3, ge=0)
    # season 2: the share of every kind's facts that take a new value, and the share held out of
    # season 1 altogether (no problem of any split, nor any evolved one, uses them)
    drift: float = Field(0.25, ge=0.0, le=1.0)
    held_out: float = Field(0.0, ge=0.0, lt=1.0)
    dev_drift: int = Field(0, ge=0)
    test_drift: int = Field(0, ge=0)
    dev_novel: int = Field(0, ge=0)
    test_novel: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check_deep(self) -> BazaarSettings:
        lo, hi = self.deep_steps
        if not (self.max_steps < lo <= hi):
            raise ValueError(
                f"deep_steps {self.deep_steps} must satisfy max_steps ({self.max_steps}) < lo <= hi"
            )
        if (self.dev_novel or self.test_novel) and not self.held_out:
            raise ValueError("dev_novel/test_novel need held-out facts: set held_out > 0")
        if (self.dev_drift or self.test_drift) and not self.drift:
            raise ValueError("dev_drift/test_drift need changed facts: set drift > 0")
        return self

    def sizes(self) -> dict[str, int]:
        """Split name -> number of problems (dev-deep and dev-rare only when asked for)."""
        sizes = {"train": self.train, "dev": self.dev, "test": self.test,
                 "test-rare": self.test_rare, "test-deep": self.test_deep}
        extra = {"dev-deep": self.dev_deep, "dev-rare": self.dev_rare,
                 "dev-drift": self.dev_drift, "test-drift": self.test_drift,
                 "dev-novel": self.dev_novel, "test-novel": self.test_novel}
        return {**sizes, **{k: n for k, n in extra.items() if n}}


class Sampler:
    """Zipf-weighted fact choice, with facts that can be blocked (the train tail cap)."""

    def __init__(self, world: World, zipf: float):
        self.world = world
        self.weights = {f.id: world.weight(f.id, zipf) for f in world.facts}
        self.blocked: set[str] = set()
        self.groups: dict[str, list[str]] = {"coin": [], "currency": []}
        for f in world.facts:
            if f.kind == "container":
                self.groups.setdefault("item:" + f.id.split(":")[2], []).append(f.id)
            else:
                self.groups["coin"].append(f.id)
                if f.kind == "currency":
                    self.groups["currency"].append(f.id)
        self._cache: dict[str, tuple[list[str], list[float]]] = {}

    def block(self, fact_id: str) -> None:
        self.blocked.add(fact_id)
        self._cache.clear()

    def _w(self, fid: str) -> float:
        return 0.0 if fid in self.blocked else self.weights[fid]

    def _cum(self, group: str) -> tuple[list[str], list[float]]:
        if group not in self._cache:
            if group == "items":
                keys = sorted(self.world.items)
                ws = [sum(self._w(f) for f in self.groups["item:" + it]) for it in keys]
            else:
                keys = self.groups[group]
                ws = [self._w(f) for f in keys]
            self._cache[group] = (keys, list(itertools.accumulate(ws)))
        return self._cache[group]

    def pick(self, rng: random.Random, group: str) -> str | None:
        """A fact id of ``group`` ("coin", "currency", "item:<item>") or an item ("items")."""
        keys, cum = self._cum(group)
        if not keys or cum[-1] <= 0:
            return None
        i = bisect.bisect_right(cum, rng.random() * cum[-1])
        return keys[min(i, len(keys) - 1)]

    def items_share(self) -> float:
        items = self._cum("items")[1]
        coin = self._cum("coin")[1]
        tot = (items[-1] if items else 0) + (coin[-1] if coin else 0)
        return items[-1] / tot if tot else 0.5


# --- step construction ----------------------------------------------------------------------
def _result(cur: int, step: Step, v: int, start: bool) -> int | None:
    """The running total after ``step`` (None if it breaks a constraint)."""
    if step.op in ("toll", "fee", "reward"):
        delta = v
    elif step.fact:
        if step.k > MAX_FACTOR or v > MAX_FACTOR or step.k * v > MAX_VALUE:
            return None
        delta = step.k * v
    else:
        delta = step.k
    new = delta if start else cur + step_sign(step) * delta
    return new if 0 <= new <= MAX_VALUE else None


def fill_step(
    world: World,
    rng: random.Random,
    cur: int,
    op: str,
    fact: str | None,
    start: bool,
    other: str | None = None,
) -> tuple[Step, int] | None:
    """Choose a count for ``op`` so that every constraint holds; (step, new total) or None."""
    v = world.by_id[fact].value if fact else 0
    if op in ("toll", "fee", "reward"):
        ks = [0]
    elif fact:
        ks = list(range(2, 10))
    elif op in ("have_coins", "have_items"):
        ks = list(range(5, 41))
    else:
        ks = list(range(2, 13))
    rng.shuffle(ks)
    for k in ks:
        st = Step(op, k, fact, other if op == "give" else None)
        new = _result(cur, st, v, start)
        if new is not None:
            return st, new
    return None


def _op_for(fact_id: str, start: bool, rng: random.Random, items: bool) -> str | None:
    kind = fact_id.split(":")[0]
    if kind == "container":
        return "buy_cont" if start else rng.choice(("buy_more", "sell_cont"))
    if kind == "currency":
        return "have_cur" if start else "paid_cur"
    if start:
        return None
    if kind == "price":
        return "buy" if rng.random() < 0.6 else "sell"
    return fact_id.split(":")[1]  # rule: toll / fee / reward


def propose(
    world: World,
    rng: random.Random,
    S: Sampler,
    family: str,
    item: str | None,
    i: int,
    cur: int,
    name: str,
    forced: str | None = None,
    p_fact: float | None = None,
) -> tuple[Step, int] | None:
    """Propose step ``i`` of a problem (forced to use fact ``forced`` if given)."""
    start = i == 0
    items = family == "items"
    if p_fact is None:
        p_fact = 0.85 if (start or not items) else 0.7
    fact = forced
    if fact is None and rng.random() < p_fact:
        fact = S.pick(rng, ("item:" + str(item)) if items else ("currency" if start else "coin"))
    if fact is None:
        if start:
            op = "have_items" if items else "have_coins"
        else:
            op = rng.choice(("eat", "give", "find_items") if items else ("spend", "find_coins"))
        other = rng.choice([p for p, _ in world.people if p != name])
        return fill_step(world, rng, cur, op, None, start, other)
    op = _op_for(fact, start, rng, items)
    if op is None:
        return None
    got = fill_step(world, rng, cur, op, fact, start)
    if got is None and op in ("buy_more", "sell_cont", "buy", "sell"):
        flip = {"buy_more": "sell_cont", "sell_cont": "buy_more", "buy": "sell", "sell": "buy"}[op]
        got = fill_step(world, rng, cur, flip, fact, start)
    return got


def sample_problem(
    world: World,
    rng: random.Random,
    S: Sampler,
    nsteps: int,
    must: str | None = None,
    family: str | None = None,
    tries: int = 40,
) -> Problem | None:
    """A random valid problem of ``nsteps`` steps (using fact ``must`` if given)."""
    for _ in range(tries):
        fam, item = family, None
        if must is not None:
            fam = "items" if must.startswith("container:") else "coins"
        if fam is None:
            fam = "items" if rng.random() < S.items_share() else "coins"
        if fam == "items":
            item = must.split(":")[2] if must else S.pick(rng, "items")
            if item is None:
                continue
        slot = -1
        if must is not None:
            slots = (
                range(nsteps)
                if must.split(":")[0] in ("container", "currency")
                else range(1, nsteps)
            )
            if not slots:
                return None
            slot = rng.choice(list(slots))
        name, pronoun = rng.choice(world.people)
        steps: list[Step] = []
        cur = 0
        for i in range(nsteps):
            got = None
            for _ in range(12):
                got = propose(world, rng, S, fam, item, i, cur, name, must if i == slot else None)
                if got:
                    break
            if got is None:
                break
            steps.append(got[0])
            cur = got[1]
        else:
            p = Problem(fam, name, pronoun, tuple(steps), item)
            if is_valid(world, p):
                return p
    return None


def to_example(world: World, p: Problem, split: str, index: int) -> Example:
    sol = solve(world, p)
    tail = set(world.tail_ids)
    facts = p.facts
    return Example(
        id=f"bazaar-{split}-{index:05d}",
        question=render_question(world, p),
        answer=str(sol.answer),
        answer_type="number",
        rationale=sol.rationale,
        program=sol.program,
        split=split,
        meta={
            "steps": len(p.steps),
            "facts": facts,
            "tail_facts": [f for f in facts if f in tail],
            "family": p.family,
        },
    )


def generate_splits(settings: BazaarSettings | None = None) -> dict[str, list[Example]]:
    """All season-1 splits (dev-deep and dev-rare only when asked for; season 2's are
    :func:`.season.season2_splits`); deterministic in ``settings``; no question text appears
    twice."""
    s = settings or BazaarSettings()
    from .season import held_out_ids

    world = build_world(s.seed, s.tail_fraction)
    held = held_out_ids(world, s.held_out)
    tail = [f for f in world.tail_ids if f not in held]
    tail_set = set(tail)
    sizes = s.sizes()
    seen: set[str] = set()
    out: dict[str, list[Example]] = {}
    for split in SPLITS:
        if split not in sizes:
            continue  # dev-deep, dev-rare: only made when asked for
        rng = random.Random(f"bazaar-{s.seed}-{split}")
        S = Sampler(world, s.zipf)
        for f in held:
            S.block(f)
        uses: Counter[str] = Counter()
        if split == "train" and s.tail_max_uses == 0:
            for f in tail:
                S.block(f)
        rare_order = list(tail)
        rng.shuffle(rare_order)
        # train: every tail fact is seen at least once (at random positions), when room allows
        seeded: dict[int, str] = {}
        if split == "train" and s.tail_max_uses > 0:
            k = min(len(rare_order), sizes[split] // 4)
            seeded = dict(zip(rng.sample(range(sizes[split]), k), rare_order[:k], strict=True))
        exs: list[Example] = []
        budget = 60 * sizes[split] + 2000
        while len(exs) < sizes[split]:
            budget -= 1
            if budget < 0:
                raise ValueError(
                    f"bazaar: could not generate {sizes[split]} distinct {split} problems"
                )
            must = None
            if split in ("test-deep", "dev-deep"):
                n = rng.randint(*s.deep_steps)
            else:
                n = rng.randint(1, s.max_steps)
            if len(exs) in seeded and uses[seeded[len(exs)]] == 0:
                must = seeded[len(exs)]
            if split in ("test-rare", "dev-rare"):
                if not rare_order:
                    raise ValueError(f"bazaar: {split} needs tail facts (tail_fraction > 0)")
                must = rare_order[len(exs) % len(rare_order)]
            if must and n == 1 and not must.startswith(("container:", "currency:")):
                if split == "train" and s.max_steps == 1:
                    must = None  # a price or rule needs a second step
                else:
                    n = 2  # a price or rule needs a second step
            p = sample_problem(world, rng, S, n, must=must)
            if p is None:
                continue
            q = render_question(world, p)
            if q in seen:
                continue
            if split == "train" and any(
                uses[f] >= s.tail_max_uses for f in p.facts if f in tail_set
            ):
                continue
            seen.add(q)
            exs.append(to_example(world, p, split, len(exs)))
            if split == "train":
                for f in p.facts:
                    if f in tail_set:
                        uses[f] += 1
                        if uses[f] >= s.tail_max_uses:
                            S.block(f)
        out[split] = exs
    return out
