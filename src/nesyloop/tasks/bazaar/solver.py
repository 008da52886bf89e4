"""Solve a Bazaar problem: the answer, the gold rationale and the program of thought.

Rationale style (compact and regular; a student training target): each step states the fact it
uses and writes one equation per arithmetic operation, e.g.
"1 drom is 7 coins, so 4 droms are 4 * 7 = 28 coins. A glimwick costs 4 coins, so 2 glimwicks
cost 2 * 4 = 8 coins. 28 - 8 = 20. The Quillbridge toll is 3 coins. 20 - 3 = 17.
Therefore, the answer is 17."

``solve`` can also perturb a solution (a wrong fact value, a misread count, an arithmetic slip),
which the oracle teacher uses to make deliberate mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .facts import CONTAINERS, World
from .grammar import Problem, Step

MAX_VALUE = 20
MAX_FACTOR = 12
_SUB_OPS = ("buy", "toll", "fee", "spend", "sell_cont", "eat", "give")
_MUL_OPS = ("have_cur", "paid_cur", "buy", "sell", "buy_cont", "buy_more", "sell_cont")


@dataclass
class Solution:
    answer: int
    rationale: str
    program: str
    values: list[int] = field(default_factory=list)  # running total after each step
    valid: bool = True  # all constraints hold (factors <= 12, values in 0..20)


def _pl(word: str, k: int, table: dict[str, str]) -> str:
    return word if k == 1 else table.get(word, word + "s")


def _ident(word: str) -> str:
    out = "".join(c for c in word.lower() if c.isalnum() or c == "_")
    return out if out and not out[0].isdigit() else "total"


def step_sign(step: Step) -> int:
    return -1 if step.op in _SUB_OPS else 1


def solve(
    world: World,
    problem: Problem,
    values: dict[int, int] | None = None,
    ks: dict[int, int] | None = None,
    slips: dict[int, int] | None = None,
) -> Solution:
    """Solve ``problem``. ``values``/``ks``/``slips`` (by step index) perturb it on purpose:
    a wrong fact value, a misread count, or an error added to that step's result."""
    values, ks, slips = values or {}, ks or {}, slips or {}
    coins = problem.family == "coins"
    unit = "coins" if coins else world.items[problem.item or ""]
    var = "coins" if coins else _ident(unit)
    cur = 0
    trace: list[int] = []
    sents: list[str] = []
    code: list[str] = []
    valid = True
    for i, st in enumerate(problem.steps):
        k = ks.get(i, st.k)
        fact = world.by_id[st.fact] if st.fact else None
        v = values.get(i, fact.value if fact else 0)
        said = fact.say(v)[:-1] if fact else ""
        slip = slips.get(i, 0)
        sign = step_sign(st)
        op = "-" if sign < 0 else "+"
        start = i == 0
        if fact is not None:
            code.append(f"# {fact.say(v)}")
        if st.op in _MUL_OPS:
            prod = k * v + (slip if start else 0)
            valid &= k <= MAX_FACTOR and v <= MAX_FACTOR and 0 <= prod <= MAX_VALUE
            parts = st.fact.split(":") if st.fact else []
            if st.op in ("have_cur", "paid_cur"):
                what = f"{k} {_pl(parts[1], k, world.currencies)} {'is' if k == 1 else 'are'}"
            elif st.op in ("buy", "sell"):
                verb = (
                    ("costs" if k == 1 else "cost")
                    if st.op == "buy"
                    else ("sells" if k == 1 else "sell") + " for"
                )
                what = f"{k} {_pl(parts[1], k, world.goods)} {verb}"
            else:
                what = f"{k} {_pl(parts[1], k, CONTAINERS)} {'holds' if k == 1 else 'hold'}"
            pu = unit if not coins else "coins"
            sents.append(f"{said}, so {what} {k} * {v} = {prod} {pu}.")
            if start:
                cur = prod
                code.append(f"{var} = {k} * {v}")
            else:
                new = cur + sign * prod + slip
                sents.append(f"{cur} {op} {prod} = {new}.")
                code.append(f"{var} = {var} {op} {k} * {v}")
                cur = new
        elif st.op in ("toll", "fee", "reward"):
            new = cur + sign * v + slip
            sents.append(f"{said}. {cur} {op} {v} = {new}.")
            code.append(f"{var} = {var} {op} {v}")
            cur = new
        elif start:  # have_coins / have_items
            cur = k + slip
            sents.append(f"{problem.name} starts with {cur} {unit}.")
            code.append(f"{var} = {k}")
        else:  # spend / find_coins / eat / give / find_items
            new = cur + sign * k + slip
            sents.append(f"{cur} {op} {k} = {new}.")
            code.append(f"{var} = {var} {op} {k}")
            cur = new
        valid &= 0 <= cur <= MAX_VALUE
        trace.append(cur)
    sents.append(f"Therefore, the answer is {cur}.")
    code.append(f"answer = {var}")
    return Solution(cur, " ".join(sents), "\n".join(code) + "\n", trace, bool(valid))


def is_valid(world: World, problem: Problem) -> bool:
    """All constraints hold: every product's factors <= 12, every value an integer in 0..20,
    and the problem uses at least one fact."""
    return bool(problem.facts) and solve(world, problem).valid
