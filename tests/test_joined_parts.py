"""The joined loop's training mixture (methods/joined/stages.py): a round's FDD pairs, each with
a knowledge block — the problem's own entry when it was answered wrong before, otherwise what
retrieval finds — and nothing more (compute-matched with FDD's round)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nesyloop.io import read_jsonl, write_jsonl
from nesyloop.kb.store import KnowledgeBase
from nesyloop.methods.fdd.settings import FddSettings
from nesyloop.kb.counterfactual import change_number, rename_entity
from nesyloop.methods.fdd.stages import round_pairs
from nesyloop.methods.joined.stages import knowledge_round_pairs, knowledge_stage
from nesyloop.methods.nesycd.settings import NesycdSettings
from nesyloop.runs.rundir import StageContext
from nesyloop.students.prompt import student_prompt
from nesyloop.tasks.bazaar import DESCRIPTION, build_world
from nesyloop.tasks.bazaar.generator import BazaarSettings, generate_splits

LEAK = "The answer to this very question is 987."  # a summary that must never reach a block


def _ctx(tmp_path: Path, name: str) -> StageContext:
    out = tmp_path / name
    out.mkdir()
    return StageContext(name=name, out=out, work=tmp_path / f"{name}.work")


def _pairs(tmp_path: Path, name: str, fdd, ns, kb: str = "kb.sqlite", counterfactual: float = 0.0,
           teacher=None, by: str = "value") -> tuple[list[dict], Path]:
    """The round's knowledge stage, then its pairs (round 1 of the pool in ``tmp_path``)."""
    from nesyloop.gen.base import GenSettings
    from nesyloop.methods.joined.settings import JoinedSettings

    know = _ctx(tmp_path, f"{name}-knowledge")
    joined = JoinedSettings(counterfactual=counterfactual, counterfactual_by=by)
    info = knowledge_stage(teacher, tmp_path / "pool", 1, fdd, 0, tmp_path / kb, ns, DESCRIPTION,
                           joined, GenSettings(max_tokens=256), 16, progress=False)(know)
    assert info["problems"] == len(read_jsonl(know.out / "knowledge.jsonl"))
    ctx = _ctx(tmp_path, name)
    return knowledge_round_pairs(tmp_path / "pool", 1, fdd, 0, know.out)(ctx), know.out


@pytest.fixture
def round_inputs(tmp_path):
    """A pool of 40 round-0 problems and 20 round-1 ones; the student got every third round-0
    problem wrong and the teacher wrote an entry for each (its facts, and a summary that gives
    the answer away)."""
    splits = generate_splits(BazaarSettings(train=60, dev=4, test=4, test_rare=4, test_deep=4))
    world = build_world(0)
    pool = [{**ex.to_dict(), "rationales": [ex.rationale], "programs": [], "origin": "train",
             "round": 0 if i < 40 else 1, "parent": None}
            for i, ex in enumerate(splits["train"])]
    write_jsonl(tmp_path / "pool" / "pool.jsonl", pool)
    wrong = {r["id"] for r in pool[:40:3]}
    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        for ex in splits["train"][:40]:
            if ex.id in wrong:
                kb.add(LEAK, [world.by_id[f].sentence for f in ex.meta["facts"]],
                       source_id=ex.id, question=ex.question)
    return tmp_path, pool, wrong


@pytest.mark.parametrize("mode", ["own", "retrieved"])
def test_every_pair_carries_a_block_and_only_wrong_problems_their_own(round_inputs, mode):
    tmp_path, pool, wrong = round_inputs
    fdd = FddSettings(retrain="continue", replay=2.0)  # every old problem replayed
    ns = NesycdSettings.model_validate({
        "train_knowledge": mode, "retrieval": {"unit": "item", "top_k": 5,
                                               "insert": "knowledge"}})
    plain = round_pairs(tmp_path / "pool", "cot", 1, "continue", 2.0, 0)(_ctx(tmp_path, "p"))
    pairs, know = _pairs(tmp_path, "train", fdd, ns)
    # FDD's pairs, the same targets in the same order: no pair added, none dropped
    assert [(p["id"], p["completion"]) for p in pairs] == \
        [(p["id"], p["completion"]) for p in plain]
    assert {p["id"] for p in pairs} == {r["id"] for r in pool}
    log = {r["id"]: r for r in read_jsonl(know / "knowledge.jsonl")}
    questions = {r["id"]: r["question"] for r in pool}
    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        own = {e.source_id: e for e in kb.list()}
    stated = {k for e in own.values() for k in e.knowledge}
    for p in pairs:  # a block whenever retrieval finds one; only knowledge items inserted
        block = log[p["id"]]["knowledge"]
        assert block is None or LEAK not in block
        assert p["prompt"] == student_prompt(questions[p["id"]], block)
        assert p["task"] == ("kb-cot" if block else "cot")
    assert sum(p["task"] == "kb-cot" for p in pairs) >= 0.8 * len(pairs)
    for i, r in log.items():
        if not r["knowledge"]:
            assert i not in wrong or mode == "retrieved"
            continue
        if mode == "own" and i in wrong:  # exactly its own entry's facts
            assert r["entries"] == [own[i].id] and r["own_entry"]
            assert r["knowledge"] == " ".join(own[i].knowledge)
        else:  # retrieved items, each a sentence some entry states; never flagged as own
            assert all(s + "." in stated for s in r["knowledge"].rstrip(".").split(". "))
            if i not in wrong:
                assert not r["own_entry"]
    if mode == "own":
        assert sum(r["own_entry"] for r in log.values()) == len(wrong)


def test_new_problems_never_carry_an_own_entry_and_an_empty_kb_leaves_pairs_plain(round_inputs):
    tmp_path, pool, wrong = round_inputs
    fdd = FddSettings(retrain="continue", replay=0.0)  # round 1's new problems only
    ns = NesycdSettings.model_validate({"train_knowledge": "own",
                                        "retrieval": {"unit": "item", "top_k": 3,
                                                      "insert": "knowledge"}})
    pairs, know = _pairs(tmp_path, "new", fdd, ns)
    assert {p["id"] for p in pairs} == {r["id"] for r in pool if r["round"] == 1}
    assert not any(r["own_entry"] for r in read_jsonl(know / "knowledge.jsonl"))
    with KnowledgeBase(tmp_path / "empty.sqlite"):
        pass
    pairs, _ = _pairs(tmp_path, "empty", fdd, ns, kb="empty.sqlite")
    assert pairs and all(p["task"] == "cot" and not p["prompt"].startswith("Knowledge")
                         for p in pairs)


def test_mixed_thoughts_pairs_carry_the_block_before_the_program_prompt(round_inputs):
    """A mixed-thoughts round (CoT and PoT targets): program pairs get the same block as the
    problem's reasoning pairs, before a ``Program:`` prompt (task ``kb-pot``)."""
    tmp_path, pool, wrong = round_inputs
    for r in pool:
        r["programs"] = [f"ans = {r['answer']}"]
    write_jsonl(tmp_path / "pool" / "pool.jsonl", pool)
    fdd = FddSettings(thoughts="both", retrain="base")  # the whole pool, both thoughts
    ns = NesycdSettings.model_validate({"train_knowledge": "own",
                                        "retrieval": {"unit": "item", "top_k": 5,
                                                      "insert": "knowledge"}})
    pairs, know = _pairs(tmp_path, "both", fdd, ns)
    blocks = {r["id"]: r["knowledge"] for r in read_jsonl(know / "knowledge.jsonl")}
    by_task: dict[str, int] = {}
    for p in pairs:
        by_task[p["task"]] = by_task.get(p["task"], 0) + 1
        if p["task"].endswith("pot"):
            assert p["prompt"].endswith("\nProgram:") and p["completion"].startswith("\nans = ")
        block = blocks[p["id"]]
        assert p["prompt"].startswith(f"Knowledge: {block}\n") == bool(block)
    assert by_task.get("kb-pot", 0) + by_task.get("pot", 0) == len(pool)
    assert by_task.get("kb-cot", 0) + by_task.get("cot", 0) == len(pool)
    assert by_task["kb-pot"] == by_task["kb-cot"] >= 0.8 * len(pool)


def test_change_number_changes_one_sentence_last_number():
    import random

    block = "1 yarl is 2 coins. A crate of zelberries holds 6 zelberries."
    seen = set()
    for seed in range(40):
        new, sentence = change_number(block, random.Random(seed))
        kept = [s for s in ("1 yarl is 2 coins.", "A crate of zelberries holds 6 zelberries.")
                if s in new]
        assert len(kept) == 1 and sentence in new and sentence not in block
        assert sentence.startswith(("1 yarl is ", "A crate of zelberries holds "))
        value = int(sentence.split()[-2])
        assert value >= 1 and value != (2 if sentence.startswith("1 yarl") else 6)
        seen.add(value)
    assert len(seen) > 3
    assert change_number("No number here.", random.Random(0)) is None


def test_change_number_prefers_a_sentence_the_question_names():
    """With the question: a sentence naming one of its words that no other sentence has
    ("brell" for "brells"), not one that only shares "coins"."""
    import random

    block = "1 brell is 4 coins. The Kessford toll is 2 coins. A jincloak costs 5 coins."
    question = "Sana has 3 brells. She pays the Kessford toll. How many coins does Sana have now?"
    changed = {change_number(block, random.Random(seed), question)[1].split()[1]
               for seed in range(40)}
    assert changed == {"brell", "Kessford"}
    anywhere = {change_number(block, random.Random(seed))[1].split()[1] for seed in range(40)}
    assert "jincloak" in anywhere
    # no sentence named: any sentence with a number, as without a question
    assert change_number(block, random.Random(0), "How many coins?") is not None


def test_change_number_prefers_a_sentence_with_a_twin_of_its_shape():
    """Of the sentences the question names, one with another of its shape in the block (two
    prices), whose values a student confuses, is changed."""
    import random

    block = "1 brell is 4 coins. A jincloak costs 5 coins. A zarncharm costs 4 coins."
    question = "Sana has 3 brells. She buys 2 jincloaks. She sells 1 zarncharm. How many coins?"
    changed = {change_number(block, random.Random(seed), question)[1].split()[1]
               for seed in range(40)}
    assert changed == {"jincloak", "zarncharm"}
    # no twin among them: any named sentence
    alone = {change_number("1 brell is 4 coins. A jincloak costs 5 coins.", random.Random(seed),
                           question)[1].split()[1] for seed in range(40)}
    assert alone == {"brell", "jincloak"}


def test_counterfactual_pairs_are_abstracted_like_their_true_pairs(round_inputs):
    """``[retrieval] abstract``: a counterfactual pair's question, block and rationale take the
    placeholders of its problem's true pair, so the student meets it as it meets every block."""
    from nesyloop.kb.abstract import apply, apply_prompt
    from nesyloop.tasks.bazaar.oracle import OracleBackend

    tmp_path, pool, wrong = round_inputs
    fdd = FddSettings(retrain="continue", replay=2.0)
    ns = NesycdSettings.model_validate({"train_knowledge": "own",
                                        "retrieval": {"unit": "item", "top_k": 5,
                                                      "insert": "knowledge", "abstract": True}})

    def teacher():
        return OracleBackend(), lambda: {"requests_issued": 1}

    pairs, know = _pairs(tmp_path, "cf", fdd, ns, counterfactual=0.5, teacher=teacher)
    kept = {c["id"]: c for c in read_jsonl(know / "counterfactual.jsonl")}
    maps = {b["id"]: b.get("abstracted", []) for b in read_jsonl(know / "knowledge.jsonl")}
    cf = [p for p in pairs if p["task"] == "cf-cot"]
    assert len(cf) == len(kept) >= 10
    assert sum(bool(maps[p["id"]]) for p in cf) >= len(cf) / 2
    for p in cf:
        c, m = kept[p["id"]], maps[p["id"]]
        assert p["prompt"] == student_prompt(*apply_prompt(c["question"], c["knowledge"], m))
        assert p["completion"] == apply(" " + c["rationale"], m)
        assert all(name not in p["prompt"] + p["completion"] for name, _ in m)
        assert (" XA" in p["prompt"]) == bool(m)


def test_counterfactual_pairs_replace_cot_pairs_with_the_teachers_new_solution(round_inputs):
    """With the exact oracle: a share of the problems get a block with one changed number and
    the teacher's solution under it; kept only when the changed fact changed the answer and the
    rationale states it; each replaces its problem's CoT pair (no pair added)."""
    from nesyloop.tasks.bazaar.oracle import OracleBackend
    from nesyloop.tasks.bazaar.grammar import parse_question
    from nesyloop.tasks.bazaar.oracle import stated_facts
    from nesyloop.tasks.bazaar.solver import solve

    tmp_path, pool, wrong = round_inputs
    fdd = FddSettings(retrain="continue", replay=2.0)
    ns = NesycdSettings.model_validate({"train_knowledge": "own",
                                        "retrieval": {"unit": "item", "top_k": 5,
                                                      "insert": "knowledge"}})

    def teacher():
        return OracleBackend(), lambda: {"requests_issued": 1}

    plain, _ = _pairs(tmp_path, "plain", fdd, ns)
    pairs, know = _pairs(tmp_path, "cf", fdd, ns, counterfactual=0.5, teacher=teacher)
    kept = {c["id"]: c for c in read_jsonl(know / "counterfactual.jsonl")}
    rejected = read_jsonl(know / "rejected.jsonl")
    assert len(kept) >= 10 and all(r["reason"] for r in rejected)
    assert len(pairs) == len(plain)  # replaced, not added
    world = build_world(0)
    for p in pairs:
        if p["task"] != "cf-cot":
            continue
        c = kept[p["id"]]
        assert p["prompt"] == student_prompt(c["question"], c["knowledge"])
        assert p["completion"] == " " + c["rationale"] and c["changed"] in c["knowledge"]
        assert c["changed"].rstrip(".").lower() in c["rationale"].lower()
        assert c["answer"] != c["gold"]
        # the new answer is the world's answer with the stated (changed) value
        prob = parse_question(world, c["question"])
        given = {f: min(v) for f, v in stated_facts(world, c["knowledge"]).items()}
        values = {i: given[s.fact] for i, s in enumerate(prob.steps) if s.fact in given}
        assert str(solve(world, prob, values=values).answer) == c["answer"]
    assert sum(p["task"] == "cf-cot" for p in pairs) == len(kept)
    # counterfactual_pairs = "add": each comes just before its problem's own pair, which stays
    added = knowledge_round_pairs(tmp_path / "pool", 1, fdd, 0, know, add=True)(
        _ctx(tmp_path, "cf-add"))
    assert len(added) == len(plain) + len(kept)
    assert [p for p in added if p["task"] != "cf-cot"] == plain
    for a, b in zip(added, added[1:]):
        if a["task"] == "cf-cot":
            assert a["id"] == b["id"] and b["task"] == "kb-cot"


def test_rename_entity_renames_every_form_to_an_entity_of_the_same_kind():
    import random

    items = ["A skelstone costs 8 coins.", "A zarndrum costs 4 coins.", "1 brell is 4 coins.",
             "1 yarl is 2 coins.", "A crate of zelberries holds 6 zelberries.",
             "A crate of fenmelons holds 3 fenmelons."]
    q = "Arlo has 4 brells. He buys 2 skelstones. How many coins does Arlo have now?"
    b = "1 brell is 4 coins. A skelstone costs 8 coins."
    r = "1 brell is 4 coins, so 4 brells are 16 coins. A skelstone costs 8 coins, so 2 skelstones..."
    seen = set()
    for seed in range(20):
        q2, b2, r2, (old, new) = rename_entity(q, b, r, items, random.Random(seed))
        assert (old, new) in {("brell", "yarl"), ("skelstone", "zarndrum")}
        assert all(old not in t and new in t for t in (q2, b2, r2))
        assert q2 == q.replace(old, new) and r2 == r.replace(old, new)  # numbers unchanged
        seen.add(old)
    assert seen == {"brell", "skelstone"}
    # a problem naming another form of the entity (singular here) is not renamed: that form
    # would keep the old name
    q = "Priya buys 2 crates of zelberries. She eats a zelberry."
    b = "A crate of zelberries holds 6 zelberries."
    assert rename_entity(q, b, "...", items, random.Random(0)) is None
    assert rename_entity(q.split(" She")[0], b, "...", items, random.Random(0))[3] == \
        ("zelberries", "fenmelons")
    assert rename_entity(q, "No entity here.", "...", items, random.Random(0)) is None


def test_renamed_counterfactuals_state_a_value_the_renamed_entity_does_not_have(round_inputs):
    """No teacher: the renamed problem keeps its numbers, so its rationale is the old one with
    the new name, and the block gives the new entity the old one's value."""
    tmp_path, pool, wrong = round_inputs
    fdd = FddSettings(retrain="continue", replay=2.0)
    ns = NesycdSettings.model_validate({"train_knowledge": "own",
                                        "retrieval": {"unit": "item", "top_k": 5,
                                                      "insert": "knowledge"}})
    plain, _ = _pairs(tmp_path, "plain", fdd, ns)
    pairs, know = _pairs(tmp_path, "rn", fdd, ns, counterfactual=0.5, by="rename")
    kept = {c["id"]: c for c in read_jsonl(know / "counterfactual.jsonl")}
    assert len(kept) >= 10 and len(pairs) == len(plain)
    by_id = {r["id"]: r for r in pool}
    world = build_world(0)
    from nesyloop.tasks.bazaar.oracle import stated_facts

    moved = 0
    for p in pairs:
        if p["task"] != "cf-cot":
            continue
        c, old = kept[p["id"]], by_id[p["id"]]
        a, b = c["renamed"]
        assert p["prompt"] == student_prompt(c["question"], c["knowledge"])
        assert c["question"] == old["question"].replace(a, b)
        assert p["completion"] == " " + old["rationales"][0].replace(a, b)
        # the renamed fact's value in the block is not the new entity's true value (mostly)
        for fid, values in stated_facts(world, c["knowledge"]).items():
            if b.lower() in fid and world.by_id[fid].value not in values:
                moved += 1
    assert moved >= len(kept) // 2
