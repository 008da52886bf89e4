"""Knowledge-base hygiene (kb/hygiene.py, docs/kb.md): error-analysis replies that copy the
prompt's demonstrations, and knowledge that states false arithmetic, never become KB entries.

Real replies: ``fixtures/error_analysis_replies.jsonl`` holds what SmolLM2-135M-Instruct, behind
llama.cpp's server, answered to nesyloop's own error-analysis prompt
(``fixtures/make_error_analysis_replies.py``). The KB stage is run on them through the project's
request cache, exactly as a re-run of that teacher would be. The oracle teacher's replies on
Bazaar (the main job's) must pass untouched."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from nesyloop.gen.base import Completion, GenSettings, Request
from nesyloop.gen.http import OpenAIBackend
from nesyloop.io import read_jsonl, write_jsonl
from nesyloop.kb.hygiene import (COPIED, COPY_N, FALSE_ARITHMETIC, copy_share, equations,
                                 false_equations, is_copy)
from nesyloop.kb.parse import parse_analysis
from nesyloop.kb.store import KnowledgeBase
from nesyloop.methods.nesycd.stages import kb_stage
from nesyloop.roles.error_analysis import DEMONSTRATIONS, ErrorAnalysisRole, analyse_errors
from nesyloop.roles.rationale import RationaleRole
from nesyloop.runs.cache import CachedBackend, RequestCache, request_key
from nesyloop.runs.rundir import StageContext
from nesyloop.tasks.bazaar import BazaarSettings, OracleBackend, build_world, generate_splits
from nesyloop.tasks.base import Example

FIXTURE = Path(__file__).parent / "fixtures" / "error_analysis_replies.jsonl"
ALIAS = "smollm2-135m-instruct"  # as in make_error_analysis_replies.py
SETTINGS = GenSettings(max_tokens=256, temperature=0.7, n=1, seed=0)
DEMO_SENTENCES = [s.strip().lower() for d in DEMONSTRATIONS
                  for s in re.split(r"(?<=\.)\s", parse_analysis(d["reply"]).summary or "")]


def replies() -> list[dict]:
    return list(read_jsonl(FIXTURE))


def judged(role: ErrorAnalysisRole, r: dict) -> dict:
    ex = Example(id=r["source"], question=r["question"], answer=r["answer"],
                 meta={"student_response_clean": r["student_response"]})
    return role.format_output(r["reply"], ex)


def quotes_a_demo_sentence(text: str) -> bool:
    """The independent test of a copy: a whole sentence of a demonstration's summary, verbatim."""
    return any(s in " ".join(text.lower().split()) for s in DEMO_SENTENCES)


# --- the rules on their own -------------------------------------------------------------------
def test_copy_share_of_demonstration_text_and_of_generic_phrases():
    role = ErrorAnalysisRole()
    demo = parse_analysis(DEMONSTRATIONS[1]["reply"])
    assert copy_share(demo.summary, role.demo_grams) == 1.0
    assert is_copy("**" + demo.summary.upper().replace(".", " ;") + "**", role.demo_grams)
    # the words the demonstrations share with every analysis are shorter than COPY_N
    generic = ("The student used a wrong value for the price of a glimwick. Before computing, "
               "recall how many items a jar holds; therefore, the answer is 12.")
    assert copy_share(generic, role.demo_grams) == 0.0 and COPY_N == 6
    assert copy_share("A dozen is 12 items.", role.demo_grams) == 0.0  # under 6 words
    assert not is_copy(demo.summary, ErrorAnalysisRole(demonstrations=0).demo_grams)


@pytest.mark.parametrize("text, false", [
    ("3 * 4 = 13", ["3 * 4 = 13"]), ("So, 5 x 3 = 16 coins.", ["5 x 3 = 16"]),
    ("1,000 + 200 = 1,300", ["1,000 + 200 = 1,300"]), ("7 - 10 = 3", ["7 - 10 = 3"]),
    ("10 / 4 = 3.5", ["10 / 4 = 3.5"]), ("2 \\times 6 = 11", ["2 \\times 6 = 11"]),
    ("3×4=12. $2 * 6 = $12", []), ("10 / 3 = 3.33 and 17 / 5 = 3 boxes", []),
    ("2 + 3 + 4 = 8", []), ("(2 + 3) * 4 = 21", []), ("20% * 50 = 11", []),
    ("3 * 4 = 13.5%", []), ("-3 + 5 = 1", []), ("n * 12 = 12n", []), ("x3 + 4 = 8", []),
    ("3 * 4 = 12 * 1", []), ("1/2 + 1/4 = 3/4", []),
])
def test_only_simple_false_equations_are_found(text, false):
    assert false_equations(text) == false


def test_an_equation_quoted_from_the_student_is_not_held_against_the_teacher():
    student = "Ana has 5+8=14 pencils. Therefore, the answer is 2."
    quoted = [eq for _, eq in equations(student)]
    assert false_equations("The student wrote 5 + 8 = 14 instead of 13.", quoted) == []
    assert false_equations("So 5 + 8 = 14.") == ["5 + 8 = 14"]


def oracle_wrong_answers(n: int) -> list[dict]:
    """Wrong answers to ``n`` Bazaar training problems (the oracle told to err: a wrong fact
    value or an arithmetic slip), plus the first 200 cut to 12 words."""
    train = generate_splits(BazaarSettings(train=n, dev=1, test=1, test_rare=1,
                                           test_deep=1))["train"]
    reqs = [Request.chat(RationaleRole().format_input(ex), GenSettings(max_tokens=300))
            for ex in train]
    texts = [c.text for c in OracleBackend(0, error_rate=1.0).generate(reqs)]
    wrong = [{"id": ex.id, "question": ex.question, "answer": ex.answer, "response": t}
             for ex, t in zip(train, texts, strict=True)]
    return wrong + [{**w, "id": w["id"] + "-cut", "response": " ".join(w["response"].split()[:12])}
                    for w in wrong[:200]]


def test_oracle_replies_on_bazaar_are_never_rejected_or_trimmed():
    wrong = oracle_wrong_answers(1200)
    entries, rejected = analyse_errors(OracleBackend(0), wrong, GenSettings(max_tokens=384),
                                       progress=False)
    assert len(entries) == len(wrong) == 1400 and rejected == []
    role = ErrorAnalysisRole()
    for e in entries:
        assert "dropped_knowledge" not in e
        assert e["knowledge"] == parse_analysis(e["reply"]).knowledge
        assert max(copy_share(t, role.demo_grams) for t in [e["summary"], *e["knowledge"]]) == 0
    # every fact the oracle can state as knowledge, not only those these problems needed
    facts = build_world(0).by_id.values()
    assert not any(is_copy(f.sentence, role.demo_grams) or false_equations(f.sentence)
                   for f in facts)


def test_a_copied_or_false_item_is_dropped_and_the_rest_of_the_entry_kept():
    wrong = oracle_wrong_answers(3)[:1]
    oracle_reply = analyse_errors(OracleBackend(0), wrong, GenSettings(max_tokens=384),
                                  progress=False)[0][0]["reply"]
    demo_item = parse_analysis(DEMONSTRATIONS[0]["reply"]).knowledge[0]
    reply = f"{oracle_reply}\n7. {demo_item}\n8. A crate holds 4 jars, so 3 crates hold 3 * 4 = 13."
    ex = Example(id="x", question=wrong[0]["question"], answer=wrong[0]["answer"],
                 meta={"student_response_clean": wrong[0]["response"]})
    rec = ErrorAnalysisRole().format_output(reply, ex)
    assert rec["kept"] and rec["knowledge"] == parse_analysis(oracle_reply).knowledge
    assert [(d["reason"], d.get("false_equations")) for d in rec["dropped_knowledge"]] == [
        (COPIED, None), (FALSE_ARITHMETIC, ["3 * 4 = 13"])]
    only_copies = ErrorAnalysisRole().format_output(
        f"Learning summary: Count the jars first.\nSupplementary knowledge:\n1. {demo_item}", ex)
    assert not only_copies["kept"] and only_copies["reason"] == COPIED


# --- real SmolLM2 replies ---------------------------------------------------------------------
def test_smollm2_replies_that_copy_the_demonstration_are_rejected_the_others_kept():
    role = ErrorAnalysisRole()
    recs = [judged(role, r) for r in replies()]
    parsed = [(r, rec) for r, rec in zip(replies(), recs, strict=True)
              if parse_analysis(r["reply"]).ok]
    copies = [rec for r, rec in parsed if quotes_a_demo_sentence(r["reply"])]
    others = [rec for r, rec in parsed if not quotes_a_demo_sentence(r["reply"])]
    assert len(copies) >= 5 and others, Counter(rec["reason"] for rec in recs)
    assert all(not rec["kept"] and rec["reason"] == COPIED for rec in copies)
    assert all(rec["reason"] != COPIED for rec in others)
    assert all(rec["kept"] for rec in others if not rec.get("dropped_knowledge"))
    assert all(not quotes_a_demo_sentence(" ".join([rec["summary"], *rec["knowledge"]]))
               for rec in recs if rec["kept"])


def cached_teacher(tmp_path: Path, wrong: list[dict]) -> CachedBackend:
    """The SmolLM2 teacher as a re-run sees it: every request answered from the request cache
    (the inner backend's server address is never contacted)."""
    inner = OpenAIBackend(ALIAS, "http://127.0.0.1:9/v1", max_retries=0, timeout_s=5)
    cache = RequestCache(tmp_path / "cache.sqlite")
    role = ErrorAnalysisRole()
    for w in wrong:
        ex = Example(id=w["id"], question=w["question"], answer=w["answer"],
                     meta={"student_response_clean": w["response"]})
        req = Request.chat(role.format_input(ex), SETTINGS, id=w["id"])
        key, body = request_key(inner, req)
        cache.put(key, inner, body, Completion([w["reply"]]))
    return CachedBackend(inner, cache, run="test")


def test_kb_stage_records_the_rejections_of_real_smollm2_replies(tmp_path):
    wrong = [{"id": r["source"], "question": r["question"], "answer": r["answer"],
              "response": r["student_response"], "reply": r["reply"], "correct": False}
             for r in replies()]
    write_jsonl(tmp_path / "demos" / "demos.jsonl", wrong)
    teacher = cached_teacher(tmp_path, wrong)
    out = tmp_path / "kb"
    out.mkdir()
    info = kb_stage(lambda: (teacher, dict), [(tmp_path / "demos", 0)], SETTINGS, 2, 256, 8,
                    "run", f"openai:{ALIAS}", progress=False)(
        StageContext(name="kb", out=out, work=tmp_path / "kb.work"))
    assert teacher.usage.requests_issued == 0  # every reply came from the cache
    expected = Counter(judged(ErrorAnalysisRole(), r)["reason"] for r in replies())
    assert info["rejected_reasons"] == {k: v for k, v in expected.items() if k}
    assert info["rejected_reasons"][COPIED] >= 5
    assert not any(r["reason"].startswith("teacher request failed") for r in
                   read_jsonl(out / "rejected.jsonl"))
    copied = [r for r in read_jsonl(out / "rejected.jsonl") if r["reason"] == COPIED]
    assert copied and all(quotes_a_demo_sentence(r["reply"]) for r in copied)
    with KnowledgeBase(out / "kb.sqlite") as kb:
        kept = kb.list()
    assert len(kept) == info["entries"] == expected[None]
    assert not any(quotes_a_demo_sentence(e.summary + " " + " ".join(e.knowledge)) for e in kept)
    print("\nSmolLM2 error-analysis replies:", json.dumps(dict(expected), default=str))
