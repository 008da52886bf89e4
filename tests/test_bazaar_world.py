"""The Bazaar world: knowledge base, problem generation, splits, gold rationales and programs."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
from pydantic import ValidationError

from nesyloop.sandbox import run_programs
from nesyloop.tasks.bazaar.solver import MAX_VALUE
from nesyloop.tasks.bazaar import (
    FACT_KINDS,
    BazaarSettings,
    build_world,
    generate_splits,
    is_valid,
    parse_question,
    render_question,
    solve,
)

EQ = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")
FINAL = re.compile(r"Therefore, the answer is (-?\d+)\.$")
SMALL = BazaarSettings(train=300, dev=40, test=40, test_rare=40, test_deep=40)


@pytest.fixture(scope="module")
def default_splits():
    t0 = time.perf_counter()
    splits = generate_splits(BazaarSettings())
    return splits, time.perf_counter() - t0


@pytest.fixture(scope="module")
def world():
    return build_world(0)


def all_examples(splits):
    return [ex for exs in splits.values() for ex in exs]


def test_knowledge_base(world):
    assert len(world.facts) >= 130
    kinds = Counter(f.kind for f in world.facts)
    assert set(kinds) == set(FACT_KINDS) and all(kinds[k] >= 10 for k in FACT_KINDS)
    assert len({f.id for f in world.facts}) == len(world.facts)
    assert len({f.sentence for f in world.facts}) == len(world.facts)
    for f in world.facts:
        assert 2 <= f.value <= 12
        assert str(f.value) in f.sentence and f.sentence.endswith(".")
        assert world.fact(f.id) is f
    assert world.fact("container:" + world.facts[0].id.split(":", 1)[1]).kind == "container"
    # a fixed function of the seed
    assert [(f.id, f.value, f.rank) for f in build_world(0).facts] == [
        (f.id, f.value, f.rank) for f in world.facts
    ]
    assert [f.sentence for f in build_world(1).facts] != [f.sentence for f in world.facts]
    assert abs(len(world.tail_ids) - 0.35 * len(world.facts)) <= 1


def test_settings_forbid_unknown_keys_and_bad_deep():
    with pytest.raises(ValidationError):
        BazaarSettings(trian=10)
    with pytest.raises(ValidationError):
        BazaarSettings(max_steps=5, deep_steps=(5, 6))


def test_deterministic():
    a = generate_splits(SMALL)
    b = generate_splits(SMALL)
    assert {k: [e.to_dict() for e in v] for k, v in a.items()} == {
        k: [e.to_dict() for e in v] for k, v in b.items()
    }
    c = generate_splits(SMALL.model_copy(update={"seed": 1}))
    assert [e.question for e in c["train"]] != [e.question for e in a["train"]]


def test_sizes_ids_and_meta(default_splits):
    splits, _ = default_splits
    assert {k: len(v) for k, v in splits.items()} == BazaarSettings().sizes()
    for name, exs in splits.items():
        for i, ex in enumerate(exs):
            assert ex.id == f"bazaar-{name}-{i:05d}" and ex.split == name
            assert ex.answer_type == "number" and ex.answer.isdigit()
            assert set(ex.meta) == {"steps", "facts", "tail_facts", "family"}
            assert ex.meta["facts"] and set(ex.meta["tail_facts"]) <= set(ex.meta["facts"])
            assert ex.meta["family"] in ("coins", "items")


def test_generation_is_fast(default_splits):
    assert default_splits[1] < 3.0


def test_long_tail_property(default_splits, world):
    splits, _ = default_splits
    uses = Counter(f for ex in splits["train"] for f in ex.meta["facts"])
    rare = sum(1 for f in world.facts if uses[f.id] <= 3)
    assert rare / len(world.facts) >= 0.30
    assert all(1 <= uses[f] <= BazaarSettings().tail_max_uses for f in world.tail_ids)
    # Zipf-like: the head is much more frequent than the tail
    top = sorted(uses.values(), reverse=True)
    assert top[0] > 20 * 3


def test_no_question_in_two_splits(default_splits):
    splits, _ = default_splits
    qs = [ex.question for ex in all_examples(splits)]
    assert len(qs) == len(set(qs))


def test_deep_and_rare_splits(default_splits, world):
    splits, _ = default_splits
    max_train = max(ex.meta["steps"] for ex in splits["train"])
    assert max_train == BazaarSettings().max_steps
    assert min(ex.meta["steps"] for ex in splits["test-deep"]) > max_train
    tail = set(world.tail_ids)
    for ex in splits["test-rare"]:
        assert ex.meta["tail_facts"] and set(ex.meta["tail_facts"]) <= tail
    # the test-rare split covers many different tail facts
    assert len({f for ex in splits["test-rare"] for f in ex.meta["tail_facts"]}) >= len(tail) // 2


def test_gold_rationale_format_and_arithmetic(default_splits, world):
    splits, _ = default_splits
    for ex in all_examples(splits):
        m = FINAL.search(ex.rationale)
        assert m and m.group(1) == ex.answer, ex.rationale
        eqs = EQ.findall(ex.rationale)
        assert eqs or ex.meta["steps"] == 1
        for a, op, b, c in eqs:
            a, b, c = int(a), int(b), int(c)
            assert {"+": a + b, "-": a - b, "*": a * b}[op] == c, ex.rationale
            if op == "*":
                assert a <= 12 and b <= 12
            assert 0 <= c <= MAX_VALUE
        for fid in ex.meta["facts"]:  # each fact used is stated
            assert world.fact(fid).sentence[:-1] in ex.rationale


def test_program_of_thought_executes(default_splits):
    splits, _ = default_splits
    exs = all_examples(splits)
    results = run_programs([ex.program for ex in exs])  # out of process
    for ex, res in zip(exs, results, strict=True):
        assert res.ok and res.answer == ex.answer, ex.program
        assert ex.program.count("#") == sum(
            1 for line in ex.program.splitlines() if line.startswith("# ")
        )


def test_round_trip_parse_resolve(default_splits, world):
    splits, _ = default_splits
    for ex in all_examples(splits):
        p = parse_question(world, ex.question)
        assert p is not None, ex.question
        assert len(p.steps) == ex.meta["steps"] and p.facts == ex.meta["facts"]
        sol = solve(world, p)
        assert (
            str(sol.answer) == ex.answer
            and sol.rationale == ex.rationale
            and sol.program == ex.program
        )
        assert is_valid(world, p)
        assert render_question(world, p) == ex.question


def test_parse_hand_written_and_garbage(world):
    cur = next(f for f in world.facts if f.kind == "currency")
    toll = next(f for f in world.facts if f.id.startswith("rule:toll:"))
    place = toll.sentence.split()[1]
    curs = world.currencies[cur.id.split(":")[1]]
    q = (
        f"Anna has 5 {curs}. Then she pays the {place} toll. She finds two coins. "
        "How many coins does Anna have now?"
    )
    p = parse_question(world, q)
    assert p is not None and [s.op for s in p.steps] == ["have_cur", "toll", "find_coins"]
    assert solve(world, p).answer == 5 * cur.value - toll.value + 2
    for bad in [
        "",
        "What is love?",
        "Anna has 5 zorblats. How many coins does Anna have now?",
        f"Anna has 5 {curs}. How many apples does Anna have now?",
        f"She has 5 {curs}.",
    ]:
        assert parse_question(world, bad) is None


def test_small_and_shallow_settings():
    tiny = BazaarSettings(
        train=40, dev=8, test=8, test_rare=8, test_deep=8, max_steps=1, deep_steps=(2, 3)
    )
    splits = generate_splits(tiny)
    assert {len(v) for v in splits.values()} == {40, 8}
    assert all(ex.meta["steps"] == 1 for ex in splits["train"])
    assert all(ex.meta["steps"] in (2, 3) for ex in splits["test-deep"])


def test_dev_deep_is_optional_and_changes_no_other_split():
    base = BazaarSettings(train=40, dev=8, test=8, test_rare=8, test_deep=8, max_steps=2,
                          deep_steps=(3, 4))
    plain = generate_splits(base)
    assert "dev-deep" not in plain
    with_dd = generate_splits(base.model_copy(update={"dev_deep": 12}))
    assert len(with_dd["dev-deep"]) == 12
    assert all(ex.meta["steps"] in (3, 4) for ex in with_dd["dev-deep"])
    for name, exs in plain.items():  # made last, from its own seed
        assert [e.question for e in with_dd[name]] == [e.question for e in exs]
    test_deep = {e.question for e in with_dd["test-deep"]}
    assert not test_deep & {e.question for e in with_dd["dev-deep"]}


def test_dev_rare_uses_tail_facts_and_changes_no_other_split():
    base = BazaarSettings(train=60, dev=8, test=8, test_rare=8, test_deep=8, dev_deep=6,
                          max_steps=2, deep_steps=(3, 4))
    plain = generate_splits(base)
    assert "dev-rare" not in plain
    with_dr = generate_splits(base.model_copy(update={"dev_rare": 10}))
    assert len(with_dr["dev-rare"]) == 10
    assert all(ex.meta["tail_facts"] for ex in with_dr["dev-rare"])
    for name, exs in plain.items():  # made last, from its own seed
        assert [e.question for e in with_dr[name]] == [e.question for e in exs]
    others = {e.question for name, exs in plain.items() for e in exs}
    assert not others & {e.question for e in with_dr["dev-rare"]}
