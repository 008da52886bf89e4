"""NesyCD's parts: cleaning student responses, parsing teacher replies (malformed ones too), the
error-analysis role over the oracle teacher, and BM25 retrieval of the right fact on Bazaar."""

from __future__ import annotations

import json
import random

import pytest

from nesyloop.gen.base import GenSettings
from nesyloop.kb.parse import clean_response, cut_repetition, parse_analysis
from nesyloop.kb.retrieve import RetrievalSettings, Retriever, knowledge_text
from nesyloop.kb.store import KnowledgeBase
from nesyloop.roles.error_analysis import DEMONSTRATIONS, ErrorAnalysisRole, analyse_errors
from nesyloop.tasks.bazaar import (DESCRIPTION, BazaarSettings, OracleBackend, build_world,
                                   generate_splits, parse_question, solve)
from nesyloop.tasks.base import Example

# --- cleaning ------------------------------------------------------------------------------


def test_repetition_loop_is_cut_and_marked():
    text = "A crate holds 4 pears, so 2 crates hold 8 pears. " + "The answer is 5. " * 12
    out, what = clean_response(text)
    assert what["repetition_cut"] and not what["truncated"]
    assert out.count("The answer is 5.") == 1 and out.endswith("[...]")


def test_long_block_repeated_twice_is_cut():
    block = "A basket of vintpears holds 7 vintpears, so 2 baskets hold 2 * 7 = 14 vintpears."
    words, cut = cut_repetition(f"Start. {block} {block}".split())
    assert cut and " ".join(words) == f"Start. {block}"


def test_legit_rationale_is_untouched():
    text = ("1 yarl is 2 coins, so 2 yarls are 2 * 2 = 4 coins. A jincloak costs 5 coins, so 2 "
            "jincloaks sell for 2 * 5 = 10 coins. 4 + 10 = 14. A jincloak costs 5 coins, so 2 "
            "jincloaks cost 2 * 5 = 10 coins. 14 - 10 = 4. Therefore, the answer is 4.")
    out, what = clean_response(text)
    assert out == text and not what["repetition_cut"]


def test_truncation_to_max_words():
    text = " ".join(f"w{i}" for i in range(600))
    out, what = clean_response(text, max_words=256)
    assert what["truncated"] and what["words"] == 256
    assert out.split()[255] == "w255" and out.endswith("[...]")


# --- parsing teacher replies ---------------------------------------------------------------


def test_parse_plain_reply():
    p = parse_analysis("Learning summary: Recall container sizes.\nSupplementary knowledge:\n"
                       "1. A crate of pears holds 6 pears.\n2. Multiply before adding.")
    assert p.ok and p.summary == "Recall container sizes."
    assert p.knowledge == ["A crate of pears holds 6 pears.", "Multiply before adding."]


def test_parse_markdown_bullets_wrapped_items_and_reversed_order():
    p = parse_analysis("**Supplementary Knowledge:**\n- A dozen is\n  12 items.\n* A score is "
                       "20.\n\n**Learning Summary:** Check units first.")
    assert p.ok and p.summary == "Check units first."
    assert p.knowledge == ["A dozen is 12 items.", "A score is 20."]


def test_parse_unnumbered_knowledge_lines():
    p = parse_analysis("Learning summary: x y.\nSupplementary knowledge: \nA toll is 3 coins.")
    assert p.ok and p.knowledge == ["A toll is 3 coins."]


@pytest.mark.parametrize("reply,reason", [
    ("", "empty reply"),
    ("I could not work out this problem.", "no 'Learning summary:' section"),
    ("Learning summary: fine.\n1. a fact", "no 'Supplementary knowledge:' section"),
    ("Learning summary:\nSupplementary knowledge:\n1. a", "empty learning summary"),
    ("Learning summary: ok.\nSupplementary knowledge:\n", "no supplementary knowledge items"),
    ("Learning summary: <one or two sentences on what the student should learn>\n"
     "Supplementary knowledge:\n1. <a fact or rule the student needs>", "template placeholder"),
    ("Learning summary: ok.\nSupplementary knowledge:\n" + "\n".join(
        f"{i}. fact {i}" for i in range(1, 12)), "more than 8"),
    ("Learning summary: " + "word " * 200 + "\nSupplementary knowledge:\n1. a",
     "longer than 120 words"),
])
def test_malformed_replies_are_rejected_with_a_reason(reply, reason):
    p = parse_analysis(reply)
    assert not p.ok and reason in p.reason and p.summary is None


# --- the role over the oracle teacher ----------------------------------------------------


def _wrong_demo(world, ex: Example, wrong_value: bool = True) -> dict:
    """A student response that uses a wrong value for the question's first fact."""
    p = parse_question(world, ex.question)
    fid = p.facts[0]
    v = world.by_id[fid].value
    sol = solve(world, p, values={i: v + 1 for i, s in enumerate(p.steps) if s.fact == fid})
    return {"id": ex.id, "question": ex.question, "answer": ex.answer, "response": sol.rationale,
            "fact": fid}


def test_prompt_carries_demonstrations_and_the_cleaned_response():
    role = ErrorAnalysisRole(demonstrations=2)
    ex = Example(id="x", question="Q?", answer="3",
                 meta={"student_response_clean": "cleaned response"})
    msgs = role.format_input(ex)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant",
                                         "user"]
    assert "cleaned response" in msgs[-1]["content"] and "Correct answer: 3" in msgs[-1]["content"]
    assert all(parse_analysis(d["reply"]).ok for d in DEMONSTRATIONS)
    assert len(ErrorAnalysisRole(demonstrations=0).format_input(ex)) == 2


def test_oracle_error_analysis_becomes_entries_naming_the_wrong_fact():
    splits = generate_splits(BazaarSettings(train=60, dev=4, test=4, test_rare=4, test_deep=4))
    world = build_world(0)
    demos = [_wrong_demo(world, ex) for ex in splits["train"][:20]]
    demos.append({"id": "odd", "question": "What is the meaning of life?", "answer": "42",
                  "response": "It is 41. " * 40})
    entries, rejected = analyse_errors(OracleBackend(0), demos, GenSettings(max_tokens=300))
    assert len(entries) == 20 and len(rejected) == 1
    assert rejected[0]["id"] == "odd" and "Learning summary" in rejected[0]["reason"]
    assert rejected[0]["cleaning"]["repetition_cut"]
    for e, d in zip(entries, demos, strict=False):
        assert world.by_id[d["fact"]].sentence in e["knowledge"]
        assert "wrong value" in e["summary"]


# --- retrieval -----------------------------------------------------------------------------


def test_bm25_ranks_the_entry_of_the_right_fact_first_on_bazaar_questions(tmp_path):
    """A KB with one oracle-written entry per training error; each test question whose facts
    all have an entry must retrieve, first, an entry that states one of its facts."""
    splits = generate_splits(BazaarSettings(train=800, dev=4, test=200, test_rare=4,
                                            test_deep=4))
    world = build_world(0)
    rng = random.Random(0)
    train = splits["train"][:]
    rng.shuffle(train)
    demos = [_wrong_demo(world, ex) for ex in train[:300]]
    entries, _ = analyse_errors(OracleBackend(0), demos, GenSettings(max_tokens=300),
                                progress=False)
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    covered: set[str] = set()
    for e, d in zip(entries, demos, strict=True):
        kb.add(e["summary"], e["knowledge"], source_id=e["id"], question=e["question"])
        covered.add(d["fact"])
    retriever = Retriever(kb, RetrievalSettings(top_k=1), DESCRIPTION)
    checked = right = 0
    for ex in splits["test"]:
        facts = ex.meta["facts"]
        if len(facts) != 1 or facts[0] not in covered:
            continue
        hit = retriever.retrieve(ex.question)
        checked += 1
        right += bool(hit) and world.by_id[facts[0]].sentence in hit[0][0].knowledge
    kb.close()
    assert checked >= 30
    assert right / checked >= 0.9, (right, checked)


def test_knowledge_block_of_entries():
    from nesyloop.kb.store import Entry

    e = Entry(summary="Recall sizes.", knowledge=["A crate holds 6.", "Add last."])
    assert knowledge_text([e]) == "Recall sizes. A crate holds 6. Add last."
    assert knowledge_text([e], "knowledge") == "A crate holds 6. Add last."
    assert knowledge_text([]) is None


# --- S_E's training mixture ----------------------------------------------------------------


def _mixture_inputs(tmp_path):
    from nesyloop.io import write_jsonl
    from nesyloop.methods.common import write_examples

    splits = generate_splits(BazaarSettings(train=40, dev=4, test=4, test_rare=4, test_deep=4))
    train = splits["train"]
    data, rat, demos = tmp_path / "data", tmp_path / "rat", tmp_path / "demos"
    write_examples(data / "train.jsonl", train)
    write_jsonl(rat / "kept.jsonl", [{"id": ex.id, "question": ex.question,
                                      "rationale": ex.rationale} for ex in train])
    wrong = {ex.id for ex in train[::2]}  # S_P got every other question wrong
    write_jsonl(demos / "demos.jsonl", [{"id": ex.id, "correct": ex.id not in wrong}
                                        for ex in train])
    return train, data, rat, demos, wrong


def _facts_kb(path, train, wrong) -> None:
    """A KB with an entry per wrong example stating the world's facts it needs."""
    world = build_world(0)
    with KnowledgeBase(path) as kb:
        for ex in train:
            if ex.id in wrong:
                kb.add("Recall the fact.", [world.by_id[f].sentence for f in ex.meta["facts"]],
                       source_id=ex.id, question=ex.question)


def _ctx(tmp_path, name):
    from nesyloop.runs.rundir import StageContext

    out = tmp_path / name
    out.mkdir()
    return StageContext(name=name, out=out, work=tmp_path / f"{name}.work")


@pytest.mark.parametrize("mode", ["own", "retrieved"])
def test_mixture_counts_and_knowledge_only_on_wrong_examples(tmp_path, mode):
    from nesyloop.methods.nesycd.settings import NesycdSettings
    from nesyloop.io import read_jsonl
    from nesyloop.methods.nesycd.stages import se_pairs

    train, data, rat, demos, wrong = _mixture_inputs(tmp_path)
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    world = build_world(0)
    for ex in train:
        if ex.id in wrong:
            fid = ex.meta["facts"][0]
            kb.add("Recall the fact.", [world.by_id[fid].sentence], source_id=ex.id,
                   question=ex.question)
    kb.close()
    ns = NesycdSettings.model_validate({"train_knowledge": mode,
                                       "mix": {"kb_cot": 2.0, "cot": 1.0, "answer": 0.5}})
    ctx = _ctx(tmp_path, "train")
    pairs = se_pairs(data / "train.jsonl", rat / "kept.jsonl", [demos / "demos.jsonl"],
                     tmp_path / "kb.sqlite", ns, DESCRIPTION, 0)(ctx)
    tasks = [p["task"] for p in pairs]
    assert tasks.count("cot") == 40 and tasks.count("kb-cot") == 2 * len(wrong) == 40
    assert 10 <= tasks.count("answer") <= 30  # 0.5 per question, sampled
    by_q = {ex.question: ex for ex in train}
    for p in pairs:
        if p["task"] == "kb-cot":
            q = p["prompt"].split("Question: ")[1].split("\nAnswer:")[0]
            assert by_q[q].id in wrong and p["prompt"].startswith("Knowledge: ")
        else:
            assert not p["prompt"].startswith("Knowledge: ")
    log = read_jsonl(ctx.out / "knowledge.jsonl")
    if mode == "own":
        assert all(r["own_entry"] for r in log)
    mix = json.loads((ctx.out / "mixture.json").read_text())
    assert mix["pairs_per_task"]["kb-cot"] == 40 and mix["with_knowledge"] == len(wrong)


@pytest.mark.parametrize("mode", ["own", "retrieved"])
def test_augment_all_gives_every_example_a_block_and_only_wrong_ones_their_own(tmp_path, mode):
    """``augment = "all"``: examples S_P got right get knowledge-augmented copies too, with a
    retrieved block; with ``train_knowledge = "own"`` a wrong example still carries its own
    entry, and a right one (which has none) never carries another example's own entry by
    design, only what retrieval finds for its question."""
    from nesyloop.io import read_jsonl
    from nesyloop.methods.nesycd.settings import NesycdSettings
    from nesyloop.methods.nesycd.stages import se_pairs

    train, data, rat, demos, wrong = _mixture_inputs(tmp_path)
    _facts_kb(tmp_path / "kb.sqlite", train, wrong)
    ns = NesycdSettings.model_validate({
        "train_knowledge": mode, "augment": "all",
        "retrieval": {"unit": "item", "top_k": 5, "insert": "knowledge"},
        "mix": {"kb_cot": 1.0, "cot": 1.0, "answer": 0.0}})
    ctx = _ctx(tmp_path, "train")
    pairs = se_pairs(data / "train.jsonl", rat / "kept.jsonl", [demos / "demos.jsonl"],
                     tmp_path / "kb.sqlite", ns, DESCRIPTION, 0)(ctx)
    log = {r["id"]: r for r in read_jsonl(ctx.out / "knowledge.jsonl")}
    assert set(log) == {ex.id for ex in train}  # every example, not only the wrong ones
    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        own = {e.source_id: e for e in kb.list()}
    for ex in train:
        r = log[ex.id]
        if mode == "own" and ex.id in wrong:  # exactly its own entry's knowledge
            assert r["entries"] == [own[ex.id].id] and r["own_entry"]
            assert r["knowledge"] == " ".join(own[ex.id].knowledge)
        elif r["knowledge"]:  # retrieved items: each a sentence that some entry states
            stated = {k for e in own.values() for k in e.knowledge}
            assert not r["own_entry"]
            assert all(s + "." in stated for s in r["knowledge"].rstrip(".").split(". "))
    with_block = [i for i, r in log.items() if r["knowledge"]]
    assert len(set(with_block) - wrong) >= len(train) // 4  # right answers carry blocks too
    kb_cot = [p for p in pairs if p["task"] == "kb-cot"]
    assert len(kb_cot) == len(with_block) and all(p["prompt"].startswith("Knowledge: ")
                                                  for p in kb_cot)


def test_kard_never_retrieves_an_examples_own_rationale(tmp_path):
    from nesyloop.methods.nesycd.settings import NesycdSettings
    from nesyloop.io import read_jsonl
    from nesyloop.methods.nesycd.stages import kard_kb_stage, se_pairs

    train, data, rat, demos, wrong = _mixture_inputs(tmp_path)
    kctx = _ctx(tmp_path, "kard-kb")
    assert kard_kb_stage(rat)(kctx)["entries"] == 40
    ctx = _ctx(tmp_path, "train")
    ns = NesycdSettings(train_knowledge="own")  # the main job's setting: kard still retrieves
    pairs = se_pairs(data / "train.jsonl", rat / "kept.jsonl", [demos / "demos.jsonl"],
                     kctx.out / "kb.sqlite", ns, DESCRIPTION, 0, exclude_own=True)(ctx)
    log = read_jsonl(ctx.out / "knowledge.jsonl")
    assert len(log) == len(wrong) and not any(r["own_entry"] for r in log)
    with KnowledgeBase(kctx.out / "kb.sqlite") as kb:  # the inserted rationale is another's
        for r in log:
            assert r["entries"] and all(kb.get(e).source_id != r["id"] for e in r["entries"])
    assert sum(p["task"] == "kb-cot" for p in pairs) == len(wrong)


def test_rebuilding_an_edited_kb_backs_it_up_first(tmp_path):
    from nesyloop.io import write_jsonl
    from nesyloop.methods.nesycd.stages import kb_stage

    splits = generate_splits(BazaarSettings(train=20, dev=4, test=4, test_rare=4, test_deep=4))
    world = build_world(0)
    demos = tmp_path / "demos"
    write_jsonl(demos / "demos.jsonl", [{**_wrong_demo(world, ex), "correct": False}
                                        for ex in splits["train"][:5]])
    run = tmp_path / "run"
    old = run / "kb" / "kb.sqlite"
    with KnowledgeBase(old) as kb:
        kb.edit(kb.add("s", ["k"]), knowledge=["k2"], note="human")

    def teacher():
        return OracleBackend(0), dict

    def build(name):
        return kb_stage(teacher, [(demos, 0)], GenSettings(max_tokens=300), 2, 256, 8, "run",
                        "oracle", previous=old, progress=False)(_ctx(tmp_path, name))

    info = build("kb-new")
    backup = info["backup_of_edited_kb"]
    with KnowledgeBase(backup) as kb:
        assert kb.list()[0].knowledge == ["k2"]  # the human edit survives in the copy
    assert info["entries"] == 5 and (tmp_path / "kb-new" / "kb.sqlite").exists()
    old.unlink()  # a KB with only teacher-written entries is not copied
    with KnowledgeBase(old) as kb:
        kb.add("s", ["k"])
    assert "backup_of_edited_kb" not in build("kb-again")


def test_rename_turns_a_share_of_augmented_pairs_counterfactual(tmp_path):
    """``rename``: some knowledge-augmented pairs get an entity renamed in question, block and
    rationale (the block then gives the new entity another's value); the rest of the mixture
    is the same as without it."""
    from nesyloop.methods.nesycd.settings import NesycdSettings
    from nesyloop.methods.nesycd.stages import se_pairs

    train, data, rat, demos, wrong = _mixture_inputs(tmp_path)
    _facts_kb(tmp_path / "kb.sqlite", train, wrong)
    base = {"train_knowledge": "own", "augment": "all",
            "retrieval": {"unit": "item", "top_k": 5, "insert": "knowledge"},
            "mix": {"kb_cot": 2.0, "cot": 1.0, "answer": 0.25}}
    plain = se_pairs(data / "train.jsonl", rat / "kept.jsonl", [demos / "demos.jsonl"],
                     tmp_path / "kb.sqlite", NesycdSettings.model_validate(base), DESCRIPTION,
                     0)(_ctx(tmp_path, "plain"))
    renamed = se_pairs(data / "train.jsonl", rat / "kept.jsonl", [demos / "demos.jsonl"],
                       tmp_path / "kb.sqlite", NesycdSettings.model_validate(
                           {**base, "rename": 0.5}), DESCRIPTION, 0)(_ctx(tmp_path, "renamed"))
    assert len(renamed) == len(plain)
    changed = [(a, b) for a, b in zip(plain, renamed, strict=True) if a != b]
    assert len(changed) >= 10
    for a, b in changed:
        assert a["task"] == "kb-cot" and b["task"] == "cf-kb-cot"
        assert b["prompt"].startswith("Knowledge: ") and b["prompt"] != a["prompt"]
        # the same numbers: the rationale is the old one with one name replaced
        digits = [c for c in a["completion"] if c.isdigit()]
        assert digits == [c for c in b["completion"] if c.isdigit()]
