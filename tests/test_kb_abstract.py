"""Entity abstraction (``[nesycd.retrieval] abstract``, kb/abstract.py): the names a block gives
a fact for become placeholders in the question, the block and the training rationale; the same
in the joined loop's training pairs, in feedback and at inference."""

from __future__ import annotations

import re

import pytest

from nesyloop.io import read_jsonl
from nesyloop.kb import KnowledgeBase
from nesyloop.kb.abstract import (Abstractor, apply, apply_block, placeholder, restore,
                                  same_entity)
from nesyloop.methods.fdd.settings import FddSettings
from nesyloop.methods.nesycd.settings import NesycdSettings
from nesyloop.methods.nesycd.stages import retrieval_prompts, retrieved_blocks
from nesyloop.students.prompt import student_prompt
from nesyloop.tasks.bazaar import DESCRIPTION
from nesyloop.tasks.base import Example

from test_joined_parts import _pairs, round_inputs  # noqa: F401  (a fixture)

KB_SENTENCES = ["A skelstone costs 8 coins.", "A glimwick costs 3 coins.", "1 brell is 4 coins.",
                "1 yarl is 2 coins.", "A crate of zelberries holds 6 zelberries.",
                "A keg of zelberries holds 9 zelberries.", "A crate of tibbfigs holds 5 tibbfigs.",
                "The toll at Quillbridge is 3 coins.", "The toll at Fenford is 2 coins."]


def test_entities_are_the_words_another_sentence_of_the_kb_varies():
    names = Abstractor(KB_SENTENCES)
    assert names.is_entity("A skelstone costs 8 coins.", "skelstone")
    assert names.is_entity("A crate of zelberries holds 6 zelberries.", "crate")
    assert names.is_entity("The toll at Quillbridge is 3 coins.", "Quillbridge")
    assert not names.is_entity("A skelstone costs 8 coins.", "coins")  # no other currency
    assert not names.is_entity("A skelstone costs 8 coins.", "costs")
    assert not Abstractor(["A skelstone costs 8 coins."]).is_entity(
        "A skelstone costs 8 coins.", "skelstone")  # nothing to vary against


def test_forms_of_one_name_and_placeholders():
    assert same_entity("zelberry", "zelberries") and same_entity("box", "boxes")
    assert same_entity("Skelstones", "skelstone")
    assert not same_entity("tibbfig", "tibbnut")  # two fruits of one prefix
    assert not same_entity("jar", "jarnwick")
    assert [placeholder(i) for i in (0, 1, 25, 26, 27)] == ["XA", "XB", "XZ", "XAA", "XAB"]


def test_mapping_covers_the_blocks_names_in_question_order_and_no_other():
    names = Abstractor(KB_SENTENCES)
    q = ("Arlo has 4 brells. He buys 2 skelstones and a glimwick, and 3 crates of zelberries. "
         "How many coins does Arlo have now?")
    block = "A crate of zelberries holds 6 zelberries. A skelstone costs 8 coins. 1 brell is 4 coins."
    m = names.mapping(q, block)
    # glimwick is not in the block: it keeps its name (the student may recall it)
    assert m == [("brell", "XA"), ("skelstone", "XB"), ("crate", "XC"), ("zelberries", "XD")]
    assert apply(q, m) == ("Arlo has 4 XAs. He buys 2 XBs and a glimwick, and 3 XCs of XDs. "
                           "How many coins does Arlo have now?")
    assert apply(block, m) == "A XC of XDs holds 6 XDs. A XB costs 8 coins. 1 XA is 4 coins."
    # the prompt's block states XA's fact first, as the question names them
    assert apply_block(block, m) == "1 XA is 4 coins. A XB costs 8 coins. A XC of XDs holds 6 XDs."
    assert apply_block(block + " 1 yarl is 2 coins.", m).endswith("XDs. 1 yarl is 2 coins.")
    rationale = "A skelstone costs 8 coins, so 2 skelstones cost 16 coins."
    assert restore(apply(rationale, m), m) == "A skelstone costs 8 coins, so 2 skelstone cost 16 coins."
    assert names.mapping(q, None) == [] and apply(q, []) == q


def _abstract_ns(abstract: bool = True) -> NesycdSettings:
    return NesycdSettings.model_validate({
        "train_knowledge": "own", "retrieval": {"unit": "item", "top_k": 5, "insert": "knowledge",
                                                "abstract": abstract}})


def test_joined_training_pairs_abstract_question_block_and_rationale_alike(round_inputs):  # noqa: F811
    tmp_path, pool, wrong = round_inputs
    fdd = FddSettings(retrain="continue", replay=2.0)
    pairs, know = _pairs(tmp_path, "abs", fdd, _abstract_ns())
    plain, _ = _pairs(tmp_path, "plain", fdd, _abstract_ns(False))
    log = {r["id"]: r for r in read_jsonl(know / "knowledge.jsonl")}
    questions = {r["id"]: r["question"] for r in pool}
    n_abstracted = 0
    for p, q in zip(pairs, plain, strict=True):
        m = log[p["id"]].get("abstracted", [])
        block = log[p["id"]]["knowledge"]
        assert p["task"] == q["task"]
        if not block:  # no block: nothing to read, the pair stays as FDD's
            assert p == q and not m
            continue
        n_abstracted += bool(m)
        assert p["prompt"] == student_prompt(apply(questions[p["id"]], m), apply_block(block, m))
        assert p["completion"] == apply(q["completion"], m)
        for entity, ph in m:  # no form of an abstracted name is left anywhere
            for text in (p["prompt"], p["completion"]):
                assert not any(same_entity(w, entity) for w in re.findall(r"[A-Za-z]{3,}", text))
            assert ph in p["prompt"]
    # a tiny KB: some names have no other of their kind to vary against
    assert n_abstracted >= 0.5 * sum(bool(r["knowledge"]) for r in log.values())


def test_inference_and_feedback_prompts_are_abstracted_and_records_keep_the_block(tmp_path):
    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        kb.add("prices", KB_SENTENCES[:4])
    q = "Arlo has 4 brells. He buys 2 skelstones. How many coins does Arlo have now?"
    ns = _abstract_ns()
    blocks, found, maps = retrieved_blocks(tmp_path / "kb.sqlite", ns, DESCRIPTION, [q])
    assert blocks[0] == "A skelstone costs 8 coins. 1 brell is 4 coins." and found[0]
    assert maps == [[("brell", "XA"), ("skelstone", "XB")]]  # in the question's order
    build, _ = retrieval_prompts(tmp_path / "kb.sqlite", ns, DESCRIPTION, gate=False)
    prompts, extra = build([Example(id="q", question=q, answer="0")], None)
    assert prompts == [student_prompt("Arlo has 4 XAs. He buys 2 XBs. How many coins does Arlo "
                                      "have now?", "1 XA is 4 coins. A XB costs 8 coins.")]
    assert extra[0]["knowledge"] == blocks[0] and extra[0]["abstracted"] == maps[0]
    off = _abstract_ns(False)
    assert retrieved_blocks(tmp_path / "kb.sqlite", off, DESCRIPTION, [q])[2] == [[]]
    build, _ = retrieval_prompts(tmp_path / "kb.sqlite", off, DESCRIPTION, gate=False)
    assert build([Example(id="q", question=q, answer="0")], None)[0] == [
        student_prompt(q, blocks[0])]


@pytest.mark.parametrize("abstract", [False, True])
def test_the_setting_is_part_of_what_predictions_are_keyed_on(tmp_path, abstract):
    from nesyloop.methods.nesycd.method import kb_predict_settings

    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        kb.add("prices", KB_SENTENCES[:2])
    got = kb_predict_settings(tmp_path / "kb.sqlite", _abstract_ns(abstract), DESCRIPTION)
    assert got["retrieval"]["abstract"] is abstract


def test_feedback_with_retrieval_answers_the_abstracted_prompt_and_restores_names(
        round_inputs, tmp_path_factory):  # noqa: F811
    """The joined loop's feedback (a real, tiny scratch student): the prompt it answers is the
    abstracted one; the record keeps the retrieved block, the placeholders and the rationale
    with the names put back for the teacher's error analysis."""
    from nesyloop.gen.registry import make_student
    from nesyloop.methods.fdd.stages import FEEDBACK, feedback_stage
    from nesyloop.students.scratch import ScratchSettings, create_scratch_student

    from test_joined_parts import _ctx

    tmp_path, pool, _ = round_inputs
    texts = [r["question"] + " " + r["rationales"][0] for r in pool] + ["XA XB XAs"]
    model = create_scratch_student(texts, tmp_path_factory.mktemp("fb") / "student",
                                   ScratchSettings(hidden=32, layers=1, heads=2, max_len=256,
                                                   vocab_size=400))
    ns = _abstract_ns()

    def retrieve(questions):
        return retrieved_blocks(tmp_path / "kb.sqlite", ns, DESCRIPTION, questions)

    ctx = _ctx(tmp_path, "feedback")
    info = feedback_stage(lambda m, log_path=None: make_student(m, batch_size=8, progress=False),
                          model, tmp_path / "pool", 1, FddSettings(), 8, 0, retrieve)(ctx)
    demos = read_jsonl(ctx.out / FEEDBACK)
    assert info["n"] == len(demos) == sum(r["round"] == 1 for r in pool)
    abstracted = [d for d in demos if d.get("abstracted")]
    assert abstracted, "the KB's facts name entities of round 1's problems"
    for d in abstracted:
        m = [tuple(x) for x in d["abstracted"]]
        assert d["input"] == student_prompt(apply(d["question"], m), apply_block(d["knowledge"], m))
        assert "XA" in d["input"]
        assert not any(re.search(rf"\b{ph}s?\b", d["response"]) for _, ph in m)
