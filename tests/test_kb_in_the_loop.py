"""The knowledge base at prediction time, with a real pretrained student (SmolLM2-135M-Instruct):
an edit to the entry a question retrieves changes the student's answer at the next prediction,
with no retraining; the confidence gate; leave-one-out attribution."""

from __future__ import annotations

import pytest

from nesyloop.methods.nesycd.settings import NesycdSettings
from nesyloop.io import read_jsonl
from nesyloop.kb.store import KnowledgeBase
from nesyloop.methods.attribute import attribute_entries
from nesyloop.methods.common import predict_stage, write_examples
from nesyloop.methods.nesycd.method import kb_predict_settings
from nesyloop.methods.nesycd.stages import retrieval_prompts
from nesyloop.runs.rundir import RunDir
from nesyloop.scoring import score_output
from nesyloop.tasks.base import Example

GLIM_Q = "How many glimwicks does a crate of glimwicks hold?"
BRELL_Q = "How many coins is 1 brell worth?"


def settings(**gate) -> NesycdSettings:
    return NesycdSettings.model_validate({"retrieval": {"insert": "knowledge"}, **gate})


@pytest.fixture()
def kb_and_data(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    ids = {
        "glim7": kb.add("Recall crate sizes.", ["A crate of glimwicks holds 7 glimwicks."]),
        "glim5": kb.add("Recall crate sizes.", ["A crate of glimwicks holds 5 glimwicks."]),
        "brell6": kb.add("Recall currency values.", ["1 brell is 6 coins."]),
        "brell4": kb.add("Recall currency values.", ["1 brell is 4 coins."]),
        "yarl": kb.add("Recall currency values.", ["1 yarl is 2 coins."]),
    }
    kb.close()
    data = tmp_path / "data"
    write_examples(data / "test-rare.jsonl", [
        Example(id="q-glim", question=GLIM_Q, answer="7"),
        Example(id="q-brell", question=BRELL_Q, answer="4")])
    return tmp_path / "kb.sqlite", data, ids


def student(model, log_path=None):  # a student factory (methods.common.StudentFactory)
    from nesyloop.gen.registry import make_student

    return make_student(model, batch_size=8, progress=False, log_path=log_path)


def predict(root, model, kb_path, data, ns):
    """One ``nesyloop predict`` invocation's prediction stage over run directory ``root``."""
    run = RunDir(root)
    prompt_fn, after = retrieval_prompts(kb_path, ns, "", ns.gate)
    res = run.stage("predict-nesycd", {"model": "m", **kb_predict_settings(kb_path, ns, "")},
                    predict_stage(student, model, data, ["test-rare"], 24, prompt_fn, after))
    recs = {r["id"]: r for r in read_jsonl(res.path / "test-rare.jsonl")}
    preds = {i: score_output(r["output"], r["gold"], "number")["flexible_pred"]
             for i, r in recs.items()}
    return res, recs, preds


def test_editing_the_retrieved_entry_changes_the_answer(smollm2_dir, kb_and_data, tmp_path):
    kb_path, data, ids = kb_and_data
    run = tmp_path / "run"
    ns = settings()
    res, recs, preds = predict(run, smollm2_dir, kb_path, data, ns)
    assert recs["q-glim"]["retrieved"][0]["id"] == ids["glim7"]
    assert "holds 7 glimwicks" in recs["q-glim"]["prompt"]
    assert preds["q-glim"] == "7"

    again, _, _ = predict(run, smollm2_dir, kb_path, data, ns)
    assert again.skipped  # nothing changed: the stage is reused

    with KnowledgeBase(kb_path) as kb:
        kb.edit(ids["glim7"], knowledge=["A crate of glimwicks holds 9 glimwicks."],
                note="the teacher was wrong")
        assert kb.get(ids["glim7"]).retrieved == 1  # counted by the one prediction that ran
    res2, recs2, preds2 = predict(run, smollm2_dir, kb_path, data, ns)
    assert not res2.skipped  # the edit changed the KB version: prediction reruns
    assert recs2["q-glim"]["retrieved"][0]["id"] == ids["glim7"]
    assert preds2["q-glim"] == "9"  # the student's answer follows the edited knowledge


def test_disabling_an_entry_changes_what_is_retrieved(smollm2_dir, kb_and_data, tmp_path):
    kb_path, data, ids = kb_and_data
    run = tmp_path / "run"
    ns = settings()
    _, recs, preds = predict(run, smollm2_dir, kb_path, data, ns)
    assert recs["q-brell"]["retrieved"][0]["id"] == ids["brell6"] and preds["q-brell"] == "6"
    with KnowledgeBase(kb_path) as kb:
        kb.set_enabled(ids["brell6"], False)
    _, recs, preds = predict(run, smollm2_dir, kb_path, data, ns)
    assert recs["q-brell"]["retrieved"][0]["id"] == ids["brell4"] and preds["q-brell"] == "4"


def test_confidence_gate(smollm2_dir, kb_and_data, tmp_path):
    kb_path, data, _ = kb_and_data
    _, never, _ = predict(tmp_path / "a", smollm2_dir, kb_path, data,
                          settings(gate=True, gate_threshold=1.0))
    _, always, _ = predict(tmp_path / "b", smollm2_dir, kb_path, data,
                           settings(gate=True, gate_threshold=0.0))
    for r in never.values():
        assert 0.0 <= r["confidence"] < 1.0 and not r["gated"] and r["knowledge"]
    for r in always.values():  # every gap is >= 0: the student is always "confident"
        assert r["gated"] and r["knowledge"] is None and r["retrieved"] == []
        assert not r["prompt"].startswith("Knowledge:")
    # the same confidence either way: computed on the question alone
    assert [r["confidence"] for r in never.values()] == pytest.approx(
        [r["confidence"] for r in always.values()])


def test_attribution_finds_helpful_and_harmful_entries(smollm2_dir, kb_and_data):
    kb_path, data, ids = kb_and_data
    examples = [Example.from_dict(d) for d in read_jsonl(data / "test-rare.jsonl")]
    res = attribute_entries(smollm2_dir, kb_path, examples, settings(), "", batch_size=8,
                            max_new_tokens=24, progress=False, mode="flexible")
    rows = {r["entry"]: r for r in res["entries"]}
    assert set(rows) == {ids["glim7"], ids["brell6"]}  # the top-1 entries of the two questions
    # glim7 makes the glimwick answer right: without it the student reads "holds 5"
    assert rows[ids["glim7"]]["helped"] == 1
    assert rows[ids["glim7"]]["net"] == 1 and rows[ids["glim7"]]["changed"] == 1
    # brell6 is wrong: without it the student finds "1 brell is 4 coins" and gets it right
    assert rows[ids["brell6"]]["hurt"] == 1 and rows[ids["brell6"]]["net"] == -1
    assert res["entries"][0]["entry"] == ids["glim7"] and res["entries"][-1]["entry"] == ids["brell6"]
    assert res["baseline"] == {"n": 2, "mode": "flexible", "accuracy": 0.5, "with_knowledge": 2}
    assert rows[ids["glim7"]]["changes"] == [{"id": "q-glim", "gold": "7", "with": "7",
                                              "without": "5"}]
