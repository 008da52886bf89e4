"""Problem evolution for the oracle teacher (FDD): a harder variant (one or two more steps that
use facts) or a similar problem (same family, step kinds and count; new person, numbers, and facts of
similar rarity)."""

from __future__ import annotations

import random

from .facts import World
from .generator import Sampler, fill_step, propose, sample_problem
from .grammar import Problem, Step
from .solver import is_valid, solve

EVOLVE_ZIPF = 1.2


def evolve_harder(world: World, p: Problem, rng: random.Random) -> Problem | None:
    """The same problem plus one or two more steps, each using a fact (None if no step fits;
    one step when a second does not fit)."""
    S = Sampler(world, EVOLVE_ZIPF)
    want = rng.choice((1, 2))
    out = p
    for _ in range(want):
        cur = solve(world, out).answer
        for _ in range(40):
            got = propose(world, rng, S, out.family, out.item, len(out.steps), cur, out.name,
                          p_fact=1.0)
            if got is not None and got[0].fact:
                out = Problem(out.family, out.name, out.pronoun, out.steps + (got[0],), out.item)
                break
        else:
            break
    return out if out is not p else None


def _similar_fact(world: World, rng: random.Random, fact_id: str, pool: list[str]) -> str:
    """A fact from ``pool`` whose Zipf rank is close to ``fact_id``'s (preferring another fact)."""
    r = world.by_id[fact_id].rank
    cands = sorted(pool, key=lambda f: (abs(world.by_id[f].rank - r), f))
    near = [f for f in cands if f != fact_id][:4] or cands[:1]
    return rng.choice(near)


def evolve_similar(world: World, p: Problem, rng: random.Random) -> Problem | None:
    """A new problem of the same family and step count: new person, numbers, and facts of
    similar rarity (the same step kinds where possible)."""
    name, pronoun = rng.choice([x for x in world.people if x[0] != p.name] or world.people)
    item = p.item
    first_cont = next((s.fact for s in p.steps if s.fact and s.fact.startswith("container:")), None)
    for attempt in range(30):
        if p.family == "items":
            pool = [f.id for f in world.of_kind("container")]
            if first_cont and attempt < 20:
                item = _similar_fact(world, rng, first_cont, pool).split(":")[2]
            else:
                item = rng.choice(sorted(world.items))
        steps: list[Step] = []
        cur = 0
        for i, st in enumerate(p.steps):
            fact = None
            if st.fact:
                kind = st.fact.split(":")[0]
                if kind == "container":
                    pool = [
                        world.container_id(c, item or "") for c in world.item_containers[item or ""]
                    ]
                elif kind == "rule":
                    pool = [f.id for f in world.of_kind("rule") if f.id.split(":")[1] == st.op]
                else:
                    pool = [f.id for f in world.of_kind(kind)]
                fact = _similar_fact(world, rng, st.fact, pool)
            other = rng.choice([x for x, _ in world.people if x != name])
            got = fill_step(world, rng, cur, st.op, fact, i == 0, other)
            if got is None and st.op in ("buy", "sell", "buy_more", "sell_cont"):
                flip = {
                    "buy_more": "sell_cont",
                    "sell_cont": "buy_more",
                    "buy": "sell",
                    "sell": "buy",
                }[st.op]
                got = fill_step(world, rng, cur, flip, fact, i == 0, other)
            if got is None:
                break
            steps.append(got[0])
            cur = got[1]
        else:
            q = Problem(
                p.family, name, pronoun, tuple(steps), item if p.family == "items" else None
            )
            if is_valid(world, q):
                return q
    S = Sampler(world, EVOLVE_ZIPF)
    return sample_problem(world, rng, S, len(p.steps), family=p.family)
