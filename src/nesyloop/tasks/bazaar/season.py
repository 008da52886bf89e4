"""Knowledge that changes: Bazaar's second season and its fact sheet.

Season 2 is a deterministic update of a world (:func:`season2`): in every kind of fact
(container sizes, prices, currencies, rules) a share ``drift`` takes a new value. **Held-out
facts** (:func:`held_out_ids`) are a share of every kind that no season-1 problem uses — not
train, dev, test, nor any problem the teacher evolves (the generator blocks them, FDD's
evolution filter rejects any problem that names them) — so they are new to every student. The
**fact sheet** (:func:`fact_sheet`) states season 2's changed facts and the held-out ones, one
plain sentence each, with the fact id as its key: the file a shop owner would write.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import replace

from ...kb.abstract import restore
from .facts import CONTAINERS, FACT_KINDS, VALUE_RANGE, World, plural


def held_out_ids(world: World, share: float) -> list[str]:
    """``share`` of the facts of every kind (rounded up, when above 0), the rarest of their kind
    by frequency rank: facts no season-1 problem uses. Sorted ids."""
    if share <= 0:
        return []
    out = []
    for kind in FACT_KINDS:
        facts = sorted(world.of_kind(kind), key=lambda f: (-f.rank, f.id))
        out += [f.id for f in facts[:math.ceil(share * len(facts))]]
    return sorted(out)


def season2(world: World, drift: float, held_out: list[str]) -> tuple[World, dict[str, tuple]]:
    """The world of season 2: ``drift`` of every kind's facts (rounded up; never a held-out
    one) with a new value in the value range. Returns it and {fact id: (old, new)}."""
    rng = random.Random(f"bazaar-season2-{world.seed}")
    banned = set(held_out)
    lo, hi = VALUE_RANGE
    changes: dict[str, tuple[int, int]] = {}
    for kind in FACT_KINDS:
        pool = sorted(f.id for f in world.of_kind(kind) if f.id not in banned)
        want = math.ceil(drift * len(world.of_kind(kind)))  # of the whole kind
        for fid in rng.sample(pool, min(len(pool), want)):
            old = world.by_id[fid].value
            changes[fid] = (old, rng.choice([v for v in range(lo, hi + 1) if v != old]))
    facts = [replace(f, value=changes[f.id][1], sentence=f.say(changes[f.id][1]))
             if f.id in changes else f for f in world.facts]
    new = World(seed=world.seed, facts=facts, items=world.items, goods=world.goods,
                currencies=world.currencies, places=world.places,
                item_containers=world.item_containers, tail_fraction=world.tail_fraction,
                people=world.people)
    return new, dict(sorted(changes.items()))


def fact_sheet(world2: World, changes: dict[str, tuple], held_out: list[str]
               ) -> list[tuple[str, str]]:
    """Season 2's fact sheet: (key = fact id, sentence) per changed and held-out fact, in key
    order."""
    return sorted((f, world2.fact(f).sentence) for f in [*changes, *held_out])


def fact_phrases(world: World, fact_id: str) -> list[str]:
    """The words a question must contain to use a fact (lower case): the good, currency or
    place, or "<container(s)> of <items>"."""
    kind, *rest = fact_id.split(":")
    if kind == "container":
        cont, item = rest
        return [f"{cont} of {plural(item)}", f"{CONTAINERS[cont]} of {plural(item)}"]
    if kind == "rule":
        return [world.places[rest[1]][1].lower()]
    return [rest[0]]


def season2_split(world: World, world2: World, changes: dict[str, tuple], held: list[str],
                  settings, split: str, n: int, seen: set[str]) -> list:
    """``n`` problems of a season-2 split, solved in season 2: ``*-drift`` each hinge on a
    changed fact (its answer differs from season 1's; no held-out fact), ``*-novel`` each use a
    held-out fact (no changed one). ``seen``: question texts of every other split (extended)."""
    from .generator import Sampler, sample_problem, to_example
    from .grammar import render_question
    from .solver import is_valid, solve

    rng = random.Random(f"bazaar-{settings.seed}-{split}")
    drift = split.endswith("-drift")
    S = Sampler(world2, settings.zipf)
    for f in (held if drift else changes):
        S.block(f)
    order = sorted(changes) if drift else list(held)
    rng.shuffle(order)
    exs: list = []
    budget = 200 * n + 2000
    while len(exs) < n:
        budget -= 1
        if budget < 0:
            raise ValueError(f"bazaar: could not generate {n} distinct {split} problems")
        must = order[len(exs) % len(order)]
        steps = rng.randint(1, settings.max_steps)
        if steps == 1 and not must.startswith(("container:", "currency:")):
            steps = 2  # a price or rule needs a second step
        p = sample_problem(world2, rng, S, steps, must=must)
        if p is None or not is_valid(world, p):
            continue
        q = render_question(world2, p)
        stale = solve(world, p).answer
        if q in seen or (drift and stale == solve(world2, p).answer):
            continue
        seen.add(q)
        ex = to_example(world2, p, split, len(exs))
        ex.meta.update({"season": 2, "changed_facts": [f for f in p.facts if f in changes],
                        "held_out_facts": [f for f in p.facts if f in set(held)],
                        "season1_answer": str(stale)})
        exs.append(ex)
    return exs


HELD_OUT_FILE, SHEET_FILE = "held-out.json", "season2-facts.csv"


def held_out_file(settings) -> dict[str, str]:
    """The data stage's :data:`HELD_OUT_FILE` (the held-out facts and the phrases that name
    them, for FDD's evolution filter) when ``settings`` (a BazaarSettings) holds facts out."""
    import json

    from .facts import build_world

    if not settings.held_out:
        return {}
    world = build_world(settings.seed, settings.tail_fraction)
    held = held_out_ids(world, settings.held_out)
    phrases = sorted({p for f in held for p in fact_phrases(world, f)})
    return {HELD_OUT_FILE: json.dumps({"facts": held, "phrases": phrases}, indent=1) + "\n"}


def season2_splits(settings) -> tuple[dict[str, list], str]:
    """Season 2's splits that ``settings`` asks for (none of their questions is a season-1
    one) and its fact sheet as CSV text (key, sentence)."""
    import csv
    import io

    from .facts import build_world
    from .generator import SEASON2_SPLITS, generate_splits

    world = build_world(settings.seed, settings.tail_fraction)
    held = held_out_ids(world, settings.held_out)
    world2, changes = season2(world, settings.drift, held)
    sizes = settings.sizes()
    seen = {e.question for exs in generate_splits(settings).values() for e in exs}
    out = {split: season2_split(world, world2, changes, held, settings, split, sizes[split],
                                seen)
           for split in SEASON2_SPLITS if split in sizes}
    sheet = io.StringIO()
    writer = csv.writer(sheet, lineterminator="\n")
    writer.writerow(["key", "sentence"])
    writer.writerows(fact_sheet(world2, changes, held))
    return out, sheet.getvalue()


def _stated_value(sentence: str, value: str, text: str) -> bool:
    """Whether ``text`` states ``sentence``'s fact with ``value``: the sentence up to its last
    number, then ``value`` ("the kessford toll is 2"; what follows the number, a unit the
    student may miscopy, is not read)."""
    last = list(re.finditer(r"\d+", sentence))[-1]
    return re.search(re.escape(sentence[:last.start()]) + value + r"\b", text) is not None


def block_following(world: World, world2: World, examples: list[dict], records: list[dict]
                    ) -> dict[str, int]:
    """On a drift split: the conflicts (a changed fact whose new sentence is in the record's
    knowledge block) whose rationale states the fact with the block's value (``followed``) or
    the season-1 value (``stale``); ``neither``: with neither. ``sentence``: the conflicts
    whose rationale states the block's whole sentence word for word. A rationale written with
    placeholders (``abstracted``) is read with its names put back."""
    meta = {e["id"]: e.get("meta", {}) for e in examples}
    out = {"conflicts": 0, "followed": 0, "stale": 0, "neither": 0, "sentence": 0}
    for r in records:
        block = (r.get("knowledge") or "").lower()
        text = restore(r.get("output") or "", r.get("abstracted") or []).lower()
        for fid in meta.get(r["id"], {}).get("changed_facts", []):
            new = world2.fact(fid).sentence.rstrip(".").lower()
            if new not in block:
                continue
            old = world.fact(fid).sentence.rstrip(".").lower()
            out["conflicts"] += 1
            out["sentence"] += new in text
            key = "followed" if _stated_value(new, _value(new), text) else \
                "stale" if _stated_value(new, _value(old), text) else "neither"
            out[key] += 1
    return out


def _value(sentence: str) -> str:
    return re.findall(r"\d+", sentence)[-1]
