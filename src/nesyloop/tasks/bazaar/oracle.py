"""The exact oracle teacher of the Bazaar world.

It reads nesyloop's own teacher prompts (``roles/prompts.py``) as plain text, tells the roles apart
by distinctive phrases, parses the question with the world's grammar and answers in the free-text
form a real LLM would: a rationale, a ```python``` program, an error analysis with supplementary
knowledge, or an evolved "Problem: ...". With ``error_rate`` > 0 some CoT/PoT samples are wrong
on purpose (drawn per request text, seed and sample index), so teacher filtering is exercised.
"""

from __future__ import annotations

import hashlib
import random
import re

from ...gen.base import BaseBackend, Completion, Request, apply_stop
from .evolve import evolve_harder, evolve_similar
from .facts import World, build_world
from .grammar import Problem, parse_question, render_question
from .solver import solve

NON_ANSWER = "I could not work out this problem."
_PREAMBLES = (
    "",
    "Let's work through it. ",
    "Let's solve this step by step. ",
    "We go through it one step at a time. ",
)
_LABEL_LINE = re.compile(r"^[A-Z][\w ']{0,30}:")

# Fact statements a solution may contain (case-insensitive; the noun decides which fact).
_HOLDS = re.compile(
    r"\b(?:a|an|one|1|each) ([a-z]+) of ([a-z]+) (?:holds|contains|has) (\d+)", re.IGNORECASE
)
_WORTH = re.compile(
    r"\b(?:a|an|one|1|each) ([a-z]+) (?:costs|is worth|is|sells for|equals) (\d+) coins?",
    re.IGNORECASE,
)
_RULE = re.compile(r"\bthe ([a-z]+) (toll|market fee|guild reward) is (\d+)", re.IGNORECASE)
_EQ = re.compile(r"(-?\d+) ([-+*]) (-?\d+) = (-?\d+)")
_RULE_TYPE = {"toll": "toll", "market fee": "fee", "guild reward": "reward"}


def detect_role(text: str) -> str:
    """ "error", "harder", "similar", "pot" or "cot", from the template's distinctive phrases."""
    if "Student's solution:" in text or "answered the problem below incorrectly" in text:
        return "error"
    if "Write a harder variant" in text:
        return "harder"
    if "Write a new problem of similar difficulty" in text:
        return "similar"
    if "Write a Python program" in text:
        return "pot"
    return "cot"


def _after(text: str, label: str, before: int | None = None) -> str | None:
    """The text after the last ``label`` (before position ``before``) that is not a placeholder."""
    hay = text if before is None else text[:before]
    starts = [
        m.end() for m in re.finditer(re.escape(label), hay) if not hay[m.end() :].startswith("<")
    ]
    if not starts:
        return None
    body = hay[starts[-1] :].split("\n\n", 1)[0]
    lines = []
    for line in body.split("\n"):
        if lines and _LABEL_LINE.match(line):
            break
        lines.append(line)
    return " ".join(lines).strip() or None


def stated_facts(world: World, solution: str) -> dict[str, set[int]]:
    """Fact ids a solution states, with the values it gives them."""
    out: dict[str, set[int]] = {}

    def add(fid: str, v: str) -> None:
        if fid in world.by_id:
            out.setdefault(fid, set()).add(int(v))

    for cont, item, v in _HOLDS.findall(solution):
        c, it = world.nouns.get(cont.lower()), world.nouns.get(item.lower())
        if c and it and c[0] == "container" and it[0] == "item":
            add(world.container_id(c[1], it[1]), v)
    for noun, v in _WORTH.findall(solution):
        n = world.nouns.get(noun.lower())
        if n and n[0] == "good":
            add(f"price:{n[1]}", v)
        elif n and n[0] == "currency":
            add(f"currency:{n[1]}", v)
    for place, word, v in _RULE.findall(solution):
        add(f"rule:{_RULE_TYPE[word.lower()]}:{place.lower()}", v)
    return out


def describe(fact_id: str, world: World) -> str:
    """A short name for a fact ("the price of a glimwick")."""
    p = fact_id.split(":")
    if p[0] == "container":
        return f"how many {world.items[p[2]]} a {p[1]} holds"
    if p[0] == "price":
        return f"the price of a {p[1]}"
    if p[0] == "currency":
        return f"the value of a {p[1]}"
    place = world.places[p[2]][1]
    return f"the {place} " + {"toll": "toll", "fee": "market fee", "reward": "guild reward"}[p[1]]


def _join(xs: list[str]) -> str:
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def error_analysis(world: World, problem: Problem, student: str) -> str:
    gold = problem.facts
    stated = stated_facts(world, student)
    wrong = [f for f in gold if f in stated and stated[f] != {world.by_id[f].value}]
    missed = [f for f in gold if f not in stated]
    slips = [m.group(0) for m in _EQ.finditer(student) if not _eq_ok(m)]
    if wrong or missed:
        parts = []
        if wrong:
            parts.append("used a wrong value for " + _join([describe(f, world) for f in wrong]))
        if missed:
            parts.append("did not state " + _join([describe(f, world) for f in missed]))
        summary = f"The student {' and '.join(parts)}."
        if slips:
            summary += " There is also an arithmetic mistake; check every calculation."
        summary += " Recall each fact the problem needs before computing with it."
        listed = [f for f in gold if f in wrong or f in missed]
    else:
        summary = ("The student stated every fact correctly but made an arithmetic mistake; "
                   "redo each calculation carefully. The problem needs these facts.")
        listed = gold
    lines = [f"{i}. {world.by_id[f].sentence}" for i, f in enumerate(listed, 1)]
    if not lines:
        lines = ["1. Check each addition and subtraction carefully."]
    return f"Learning summary: {summary}\nSupplementary knowledge:\n" + "\n".join(lines)


def _eq_ok(m: re.Match) -> bool:
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    return {"+": a + b, "-": a - b, "*": a * b}[op] == c


def _truncate(text: str, max_tokens: int) -> str:
    words = list(re.finditer(r"\S+", text))
    return text if len(words) <= max_tokens else text[: words[max_tokens - 1].end()]


class OracleBackend(BaseBackend):
    """Answers nesyloop's teacher prompts exactly (up to ``error_rate`` deliberate mistakes)."""

    kind = "oracle"
    model = "bazaar-oracle"
    # bump when any reply changes, so cached replies and stages built on them are not reused.
    # 2: error-analysis summaries no longer quote the student's wrong equation (the prompt asks
    #    for knowledge that is general, not specific to one problem)
    # 3: harder variants add one or two steps
    version = 3

    def __init__(self, world_seed: int = 0, error_rate: float = 0.0, seed: int = 0):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        self.world = build_world(world_seed)
        self.world_seed = world_seed
        self.error_rate = error_rate
        self.seed = seed

    def generate(self, requests: list[Request]) -> list[Completion]:
        out = []
        for req in requests:
            text = req.text()
            s = req.settings
            texts = [
                apply_stop(_truncate(self.respond(text, i), s.max_tokens), s.stop)
                for i in range(s.n)
            ]
            out.append(Completion(texts, len(text.split()), sum(len(t.split()) for t in texts)))
        return out

    def _rng(self, text: str, sample: int, salt: str) -> random.Random:
        h = hashlib.sha256(f"{salt}|{self.seed}|{sample}|{text}".encode()).hexdigest()
        return random.Random(int(h[:16], 16))

    def respond(self, text: str, sample: int = 0) -> str:
        """The reply to one prompt (sample index ``sample``); never raises on odd input."""
        try:
            return self._respond(text, sample)
        except Exception:  # noqa: BLE001 - an oracle answers politely, like an LLM would
            return NON_ANSWER

    def _respond(self, text: str, sample: int) -> str:
        role = detect_role(text)
        rng = self._rng(text, sample, "draw")
        wrong = self._rng(text, sample, "error").random() < self.error_rate
        w = self.world
        if role == "error":
            cut = text.rfind("Student's solution:")
            question = _after(text, "Question: ", cut if cut >= 0 else None)
            sol_start = cut + len("Student's solution:") if cut >= 0 else -1
            student = (
                text[sol_start:].split("\n\nCorrect answer:", 1)[0].strip()
                if sol_start >= 0
                else ""
            )
            p = parse_question(w, question or "")
            return NON_ANSWER if p is None else error_analysis(w, p, student)
        if role in ("harder", "similar"):
            p = parse_question(w, _after(text, "Problem: ") or "")
            if p is None:
                return NON_ANSWER
            q = evolve_harder(w, p, rng) if role == "harder" else evolve_similar(w, p, rng)
            return NON_ANSWER if q is None else f"Problem: {render_question(w, q)}"
        p = parse_question(w, _after(text, "Question: ") or "")
        if p is None:
            return NON_ANSWER
        given = _after(text, "even where they differ from what you know: ")
        if given is not None:  # the joined loop's counterfactual pairs: the stated facts rule
            stated = {fid: min(vs) for fid, vs in stated_facts(w, given).items()}
            sol = solve(w, p, values={i: stated[s.fact] for i, s in enumerate(p.steps)
                                      if s.fact in stated})
            return rng.choice(_PREAMBLES) + sol.rationale
        if role == "pot":
            sol = self._perturbed(p, rng, pot=True) if wrong else solve(w, p)
            return f"```python\n{sol.program}```"
        sol = self._perturbed(p, rng, pot=False) if wrong else solve(w, p)
        return rng.choice(_PREAMBLES) + sol.rationale

    def _perturbed(self, p: Problem, rng: random.Random, pot: bool):
        """A wrong solution: a wrong fact value (used consistently), a misread count (PoT) or an
        arithmetic slip carried to the end (CoT). The final answer always differs from gold."""
        w = self.world
        gold = solve(w, p).answer
        for _ in range(20):
            facts = p.facts
            kind = "fact" if facts and (pot or rng.random() < 0.5) else ("count" if pot else "slip")
            if kind == "fact":
                fid = rng.choice(facts)
                v = w.by_id[fid].value
                nv = rng.choice([x for x in (v - 2, v - 1, v + 1, v + 2) if x >= 1])
                sol = solve(w, p, values={i: nv for i, s in enumerate(p.steps) if s.fact == fid})
            elif kind == "count":
                idx = [i for i, s in enumerate(p.steps) if s.k > 0]
                if not idx:
                    continue
                i = rng.choice(idx)
                sol = solve(
                    w, p, ks={i: p.steps[i].k + rng.choice((-1, 1)) if p.steps[i].k > 1 else 2}
                )
            else:
                i = rng.randrange(len(p.steps))
                sol = solve(w, p, slips={i: rng.choice((-3, -2, -1, 1, 2, 3))})
            if sol.answer != gold and sol.answer >= 0:
                return sol
        if pot:  # the first step always adds, so one more of it raises the answer
            first = p.steps[0]
            if first.k > 0:
                return solve(w, p, ks={0: first.k + 1})
            return solve(w, p, values={0: w.by_id[first.fact].value + 1})
        return solve(w, p, slips={len(p.steps) - 1: 1})
