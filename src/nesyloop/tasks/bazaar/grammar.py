"""Sentence templates of Bazaar problems, and the regexes that invert them.

A problem is a person and a list of steps; each step is one sentence. ``render_question`` writes
the question text; ``parse_question`` reads it back (also problems the generator never wrote, as
long as they use the same sentence forms), returning ``None`` when a sentence is not understood.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .facts import CONTAINERS, World

COIN_OPS = (
    "have_cur",
    "have_coins",
    "buy",
    "sell",
    "paid_cur",
    "toll",
    "fee",
    "reward",
    "spend",
    "find_coins",
)
ITEM_OPS = ("buy_cont", "have_items", "buy_more", "sell_cont", "eat", "give", "find_items")
START_OPS = ("have_cur", "have_coins", "buy_cont", "have_items")
FACT_OPS = (
    "have_cur",
    "buy",
    "sell",
    "paid_cur",
    "toll",
    "fee",
    "reward",
    "buy_cont",
    "buy_more",
    "sell_cont",
)


@dataclass(frozen=True)
class Step:
    op: str  # one of COIN_OPS or ITEM_OPS
    k: int = 0  # the count in the sentence (0 for rules)
    fact: str | None = None  # the fact id the step uses
    other: str | None = None  # who receives a gift ("give")


@dataclass(frozen=True)
class Problem:
    family: str  # "coins" or "items"
    name: str
    pronoun: str  # "She" / "He"
    steps: tuple[Step, ...]
    item: str | None = None  # the counted item (items family)

    @property
    def facts(self) -> list[str]:
        """Distinct fact ids in order of first use."""
        out: list[str] = []
        for s in self.steps:
            if s.fact and s.fact not in out:
                out.append(s.fact)
        return out


def _n(world: World, k: int, sg: str, table: dict[str, str] | None = None) -> str:
    pl = (table or CONTAINERS).get(sg, sg + "s")
    return f"{k} {sg if k == 1 else pl}"


def render_sentence(world: World, problem: Problem, i: int, step: Step) -> str:
    subj = problem.name if i == 0 or problem.pronoun not in ("She", "He") else problem.pronoun
    op, k = step.op, step.k
    parts = step.fact.split(":") if step.fact else []
    item = problem.item or ""
    if op == "have_cur":
        return f"{subj} has {_n(world, k, parts[1], world.currencies)}."
    if op == "paid_cur":
        return f"{subj} is paid {_n(world, k, parts[1], world.currencies)}."
    if op == "have_coins":
        return f"{subj} has {_n(world, k, 'coin', {'coin': 'coins'})}."
    if op in ("buy", "sell"):
        return f"{subj} {op}s {_n(world, k, parts[1], world.goods)}."
    if op in ("toll", "fee", "reward"):
        place = world.places[parts[2]][1]
        verb, word = {
            "toll": ("pays", "toll"),
            "fee": ("pays", "market fee"),
            "reward": ("gets", "guild reward"),
        }[op]
        return f"{subj} {verb} the {place} {word}."
    if op == "spend":
        return f"{subj} spends {_n(world, k, 'coin', {'coin': 'coins'})}."
    if op == "find_coins":
        return f"{subj} finds {_n(world, k, 'coin', {'coin': 'coins'})}."
    items = world.items[item]
    if op in ("buy_cont", "buy_more", "sell_cont"):
        verb = {"buy_cont": "buys", "buy_more": "buys", "sell_cont": "sells"}[op]
        more = "more " if op == "buy_more" else ""
        return f"{subj} {verb} {k} {more}{parts[1] if k == 1 else CONTAINERS[parts[1]]} of {items}."
    if op == "have_items":
        return f"{subj} has {_n(world, k, item, world.items)}."
    if op == "eat":
        return f"{subj} eats {_n(world, k, item, world.items)}."
    if op == "give":
        return f"{subj} gives {_n(world, k, item, world.items)} to {step.other}."
    if op == "find_items":
        return f"{subj} finds {k} more {item if k == 1 else items}."
    raise ValueError(f"unknown step op {op!r}")


def target_noun(world: World, problem: Problem) -> str:
    return "coins" if problem.family == "coins" else world.items[problem.item or ""]


def render_question(world: World, problem: Problem) -> str:
    sents = [render_sentence(world, problem, i, s) for i, s in enumerate(problem.steps)]
    sents.append(f"How many {target_noun(world, problem)} does {problem.name} have now?")
    return " ".join(sents)


# --- parsing --------------------------------------------------------------------------------
_NUM_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}
_N = r"(?P<k>\d+|" + "|".join(_NUM_WORDS) + r")"
_W = r"[A-Za-z]+"
_PATTERNS = [  # (kind, regex over the sentence after its subject)
    ("has", re.compile(rf"^(?:has|had|starts with|begins with) {_N} (?P<noun>{_W})$")),
    ("buy_more", re.compile(rf"^buys {_N} more (?P<cont>{_W}) of (?P<item>{_W})$")),
    ("buy_cont", re.compile(rf"^buys {_N} (?P<cont>{_W}) of (?P<item>{_W})$")),
    ("sell_cont", re.compile(rf"^sells {_N} (?P<cont>{_W}) of (?P<item>{_W})$")),
    ("buy", re.compile(rf"^buys {_N} (?P<noun>{_W})$")),
    ("sell", re.compile(rf"^sells {_N} (?P<noun>{_W})$")),
    ("paid", re.compile(rf"^(?:is paid|receives|earns|gets) {_N} (?P<noun>{_W})$")),
    (
        "rule",
        re.compile(
            rf"^(?:pays|gets|receives|wins) the (?P<place>{_W}) "
            r"(?P<word>toll|market fee|guild reward)$"
        ),
    ),
    ("spend", re.compile(rf"^(?:spends|loses) {_N} (?P<noun>coins?)$")),
    ("eat", re.compile(rf"^eats {_N} (?P<noun>{_W})$")),
    ("give", re.compile(rf"^gives (?:away )?{_N} (?P<noun>{_W})(?: to (?P<other>{_W}))?$")),
    ("find", re.compile(rf"^finds {_N} (?:more )?(?P<noun>{_W})$")),
]
_SUBJ = re.compile(
    rf"^(?:(?:then|next|after that|later|finally),?\s+)?(?P<subj>{_W})\s+(?P<rest>.+?)[.!]?$",
    re.IGNORECASE,
)
_QUESTION = re.compile(
    rf"^how many (?P<noun>{_W}) (?:does|do|did) (?P<subj>{_W}) (?:have|own|hold)"
    r"(?: now| left| in the end| at the end| in total)?\??$",
    re.IGNORECASE,
)
_PRONOUNS = {"she": "She", "he": "He", "they": "They"}
_RULE_WORD_TYPE = {"toll": "toll", "market fee": "fee", "guild reward": "reward"}


def _num(s: str) -> int:
    return int(s) if s.isdigit() else _NUM_WORDS[s.lower()]


def _split_sentences(text: str) -> list[str]:
    text = " ".join(text.strip().split())
    return [s for s in re.split(r"(?<=[.?!])\s+", text) if s]


def _parse_step(
    world: World, kind: str, m: re.Match, first: bool, item: list[str | None]
) -> tuple[str, Step] | None:
    """Return (family, step) or None. ``item`` is a one-slot list holding the items-family item."""
    g = m.groupdict()
    k = _num(g["k"]) if g.get("k") else 0
    noun = world.nouns.get((g.get("noun") or "").lower())

    def with_item(key: str) -> bool:
        if item[0] is None:
            item[0] = key
        return item[0] == key

    if kind in ("buy_more", "buy_cont", "sell_cont"):
        cont = world.nouns.get(g["cont"].lower())
        it = world.nouns.get(g["item"].lower())
        if not cont or not it or cont[0] != "container" or it[0] != "item" or not with_item(it[1]):
            return None
        fid = world.container_id(cont[1], it[1])
        if fid not in world.by_id:
            return None
        op = kind if kind != "buy_cont" else ("buy_cont" if first else "buy_more")
        if op == "buy_more" and first:
            op = "buy_cont"
        return "items", Step(op, k, fid)
    if kind == "rule":
        place = world.places.get(g["place"].lower())
        rtype = _RULE_WORD_TYPE[g["word"]]
        if not place or place[0] != rtype or first:
            return None
        return "coins", Step(rtype, 0, f"rule:{rtype}:{g['place'].lower()}")
    if noun is None:
        return None
    nkind, key = noun
    if kind == "has" and first:
        if nkind == "currency":
            return "coins", Step("have_cur", k, f"currency:{key}")
        if nkind == "coin":
            return "coins", Step("have_coins", k)
        if nkind == "item" and with_item(key):
            return "items", Step("have_items", k)
        return None
    if first:
        return None
    if kind in ("buy", "sell") and nkind == "good":
        return "coins", Step(kind, k, f"price:{key}")
    if kind == "paid":
        if nkind == "currency":
            return "coins", Step("paid_cur", k, f"currency:{key}")
        if nkind == "coin":
            return "coins", Step("find_coins", k)
        return None
    if kind == "spend":
        return "coins", Step("spend", k)
    if kind == "find" and nkind == "coin":
        return "coins", Step("find_coins", k)
    if nkind == "item" and with_item(key):
        if kind == "eat":
            return "items", Step("eat", k)
        if kind == "give":
            return "items", Step("give", k, other=g.get("other") or "a friend")
        if kind == "find":
            return "items", Step("find_items", k)
    return None


def parse_question(world: World, text: str) -> Problem | None:
    """Invert ``render_question``: the structured problem, or None if a sentence is unknown."""
    try:
        return _parse(world, text)
    except (KeyError, ValueError, IndexError, AttributeError):
        return None


def _parse(world: World, text: str) -> Problem | None:
    sents = _split_sentences(text)
    if not sents:
        return None
    qm = _QUESTION.match(sents[-1])
    if qm is None:
        return None
    name: str | None = None
    pronoun: str | None = None
    family: str | None = None
    item: list[str | None] = [None]
    steps: list[Step] = []
    for i, sent in enumerate(sents[:-1]):
        m = _SUBJ.match(sent)
        if m is None:
            return None
        subj, rest = m.group("subj"), m.group("rest")
        if i == 0:
            if subj.lower() in _PRONOUNS:
                return None
            name = subj
        elif subj.lower() in _PRONOUNS:
            pronoun = pronoun or _PRONOUNS[subj.lower()]
        elif subj != name:
            return None
        parsed = None
        for kind, rx in _PATTERNS:
            pm = rx.match(rest)
            if pm:
                parsed = _parse_step(world, kind, pm, i == 0, item)
                if parsed:
                    break
        if parsed is None:
            return None
        fam, step = parsed
        if family not in (None, fam):
            return None
        family = fam
        steps.append(step)
    if not steps or name is None or steps[0].op not in START_OPS:
        return None
    if qm.group("subj") not in (name, pronoun) and qm.group("subj").lower() not in _PRONOUNS:
        return None
    target = world.nouns.get(qm.group("noun").lower())
    if family == "coins" and (target is None or target[0] != "coin"):
        return None
    if family == "items" and (target is None or target != ("item", item[0])):
        return None
    if pronoun is None:
        pronoun = dict(world.people).get(name, "She")
    return Problem(
        family or "coins", name, pronoun, tuple(steps), item[0] if family == "items" else None
    )
