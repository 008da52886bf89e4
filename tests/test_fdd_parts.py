"""FDD's parts: evolution replies parsed (malformed ones rejected with reasons), the filters
(duplicates, leakage), the agreement rule, PoT answers run in the sandbox, training pairs, and the
evolve stage end to end with the oracle solving and a scripted problem writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from nesyloop.methods.fdd.settings import FddSettings
from nesyloop.gen.base import BaseBackend, Completion, GenSettings
from nesyloop.io import read_json, read_jsonl, write_jsonl
from nesyloop.methods.fdd.stages import _agree, evolve_stage, round_pairs, write_pool
from nesyloop.methods.thoughts import thought_pairs
from nesyloop.roles.base import run_role
from nesyloop.roles.evolve import EvolveRole, parse_problem
from nesyloop.roles.pot import distill_programs
from nesyloop.runs.cache import CachedBackend, RequestCache
from nesyloop.runs.rundir import RunDir
from nesyloop.sandbox import ProgramResult
from nesyloop.scoring.program import extract_program, program_answers, value_of
from nesyloop.students.prompt import pot_prompt
from nesyloop.synth.filters import LeakageIndex, NearDuplicateIndex
from nesyloop.tasks.base import Example
from nesyloop.tasks.bazaar import OracleBackend, build_world, parse_question

SRC = "Mira has 2 brells. She is paid 2 brells. How many coins does Mira have now?"


@pytest.mark.parametrize("reply,reason", [
    ("Sure! Here is one: Ada has 3 coins. How many?", "no 'Problem:' in the reply"),
    ("Problem: <the new problem>", "placeholder instead of a problem"),
    ("Problem:   ", "empty problem"),
    ("Problem: How many coins?", "problem too short (3 words)"),
    (f"Problem: {SRC}", "the same problem as its source"),
    ("Problem: " + "word " * 300, "problem too long (300 words)"),
    ("I could not work out this problem.", "no 'Problem:' in the reply"),
])
def test_malformed_evolution_replies_are_rejected_with_a_reason(reply, reason):
    assert parse_problem(reply, SRC) == (None, reason)


def test_evolution_reply_parsing_keeps_only_the_problem():
    reply = ("Here is a harder one.\n\n**Problem:** Ada has 3 brells. She finds 4 coins. How "
             "many coins does Ada have now?\nSolution: 3 * 4 = 12...")
    q, reason = parse_problem(reply, SRC)
    assert reason is None
    assert q == "Ada has 3 brells. She finds 4 coins. How many coins does Ada have now?"


def test_oracle_writes_harder_and_similar_problems_that_parse():
    world = build_world(0)
    oracle = OracleBackend(0)
    src = Example("s", SRC, "16")
    settings = GenSettings(n=2, temperature=0.7)
    for kind in ("harder", "similar"):
        recs = run_role(oracle, EvolveRole(kind), [src], settings, progress=False)[0]
        assert len(recs) == 2 and all(r["reason"] is None for r in recs)
        base = parse_question(world, SRC)
        for r in recs:
            p = parse_question(world, r["question"])
            assert p is not None
            if kind == "harder":
                assert len(p.steps) in (len(base.steps) + 1, len(base.steps) + 2)
            else:
                assert len(p.steps) == len(base.steps)


def test_near_duplicates_and_exact_copies_are_found():
    ix = NearDuplicateIndex(0.8)
    ix.add_all([SRC, "Oskar has 2 brells. He is paid 3 yarls. How many coins does Oskar have now?"])
    assert ix.find("  mira HAS 2 brells; she is paid 2 brells. How many coins does Mira have now")\
        == ("exact", 0)
    long = ("Bruno has 10 coins. He finds 10 coins. He buys 2 vintcombs. He spends 2 coins. He "
            "sells 3 jincloaks. He pays the Quillbridge toll. How many coins does Bruno have now?")
    ix.add(long)
    assert ix.find(long.replace("He spends 2 coins", "He spends 3 coins")) == ("near", 2)
    assert ix.find("Zora has 5 binks. She buys 4 rumrings. How many coins does Zora have?") is None


def test_leakage_check_drops_copies_of_evaluation_items_only():
    test_item = ("Bruno has 10 coins. He finds 10 coins. He buys 2 vintcombs. He spends 2 coins. "
                 "He sells 3 jincloaks. How many coins does Bruno have now?")
    leak = LeakageIndex([("test-deep/t1", test_item), ("dev/d1", SRC)], n=8, threshold=0.8)
    assert leak.overlap(test_item.upper()) == ("test-deep/t1", 1.0)
    edited = test_item + " Show your work."
    label, frac = leak.overlap(edited)
    assert label == "test-deep/t1" and 0.8 <= frac < 1.0
    # shares its template with the test item, but is another problem
    other = ("Nadia has 3 brells. She is paid 2 binks. She buys 3 jincloaks. She finds 9 coins. "
             "How many coins does Nadia have now?")
    assert leak.overlap(other) is None
    with pytest.raises(ValueError, match="threshold"):
        LeakageIndex([], threshold=0.0)


def _cands(n):
    return [{"id": str(i), "answer_type": "number", "options": None} for i in range(n)]


def test_agreement_cot_pot_and_majority():
    cands = _cands(4)
    cot = [[{"pred": "5", "rationale": "a"}], [{"pred": "5", "rationale": "b"}],
           [{"pred": None, "rationale": "c"}], [{"pred": "5", "rationale": "d"}]]
    pot = [[{"value": "5", "verdict": "ok", "program": "answer = 5"}],
           [{"value": "6", "verdict": "ok", "program": "answer = 6"}],
           [{"value": "5", "verdict": "ok", "program": "answer = 5"}],
           [{"value": None, "verdict": "timeout", "program": "while True: pass"}]]
    _agree(cands, cot, pot, FddSettings())
    assert cands[0]["answer"] == "5" and cands[0]["programs"] == ["answer = 5"]
    assert cands[1]["reason"] == "CoT and PoT disagree (5 vs 6)"
    assert cands[2]["reason"] == "teacher CoT gave no final answer"
    assert cands[3]["reason"] == "teacher program gave no answer (timeout)"
    maj = _cands(2)
    votes = [[{"pred": p, "rationale": p} for p in ("7", "7", "8")],
             [{"pred": p, "rationale": p} for p in ("7", "8", None)]]
    _agree(maj, votes, None, FddSettings(agreement="majority"))
    assert maj[0]["answer"] == "7" and maj[0]["rationales"] == ["7"]
    assert maj[1]["reason"].startswith("no majority among 3")


def test_program_answers_run_in_the_sandbox():
    texts = ["```python\n# a crate holds 6\nanswer = 2 * 6\n```",
             "x = 3\nans = x / 2\n",
             "```python\nimport os\nanswer = os.getcwd()\n```",
             "The answer is 4.",
             "```python\nfrom fractions import Fraction\nanswer = Fraction(6, 3)\n```"]
    got = program_answers(texts)
    assert [a.value for a in got] == ["12", "1.5", None, None, "2"]
    assert got[2].result.verdict == "forbidden" and got[3].result is None
    assert extract_program("just words here") is None
    assert value_of(ProgramResult("ok", "True")) is None


def test_teacher_programs_kept_only_when_they_return_the_gold_answer():
    from nesyloop.tasks.bazaar import BazaarSettings, generate_splits

    train = generate_splits(BazaarSettings(train=30, dev=0, test=0, test_rare=0,
                                           test_deep=0))["train"]
    kept, rejected = distill_programs(OracleBackend(0, error_rate=0.5), train,
                                      GenSettings(n=1, temperature=0.7), progress=False)
    assert kept and rejected and len(kept) + len(rejected) == 30
    assert all(r["verdict"] == "ok" and r["value"] == r["answer"] for r in kept)
    assert all(r["reason"].startswith("wrong answer") for r in rejected)


def test_mixed_thought_pairs_and_continue_with_replay(tmp_path: Path):
    pool = [{"id": f"p{i}", "question": f"Q{i}?", "answer": "1", "rationales": [f"R{i}"],
             "programs": [f"answer = {i}\n"], "origin": "train", "round": 0 if i < 6 else 1}
            for i in range(8)]
    pairs = thought_pairs(pool[:1], "both")
    assert [p["task"] for p in pairs] == ["cot", "pot"]
    assert pairs[1]["prompt"] == pot_prompt("Q0?") and pairs[1]["prompt"].endswith("Program:")
    assert pairs[1]["completion"] == "\nanswer = 0\n"
    assert thought_pairs(pool[:1], "cot")[0]["completion"] == " R0"
    write_pool(tmp_path, pool)
    got = round_pairs(tmp_path, "cot", 1, "continue", 1.0, 0)(None)
    assert len(got) == 4 and {p["completion"] for p in got[:2]} == {" R6", " R7"}
    assert len(round_pairs(tmp_path, "cot", 1, "base", 1.0, 0)(None)) == 8
    # round 0 continuing from S_P (mixed thoughts): every program, half as many replayed CoT
    got = round_pairs(tmp_path, "both", 0, "continue", 0.5, 0)(None)
    assert [p["task"] for p in got] == ["pot"] * 8 + ["cot"] * 4
    assert [p["task"] for p in round_pairs(tmp_path, "pot", 0, "continue", 0.5, 0)(None)
            ] == ["pot"] * 8
    assert len(round_pairs(tmp_path, "both", 0, "base", 0.5, 0)(None)) == 16


class WriterThenOracle(BaseBackend):
    """Scripted replies to evolution prompts (a problem writer that also misbehaves); every
    other prompt (solving in CoT and PoT) goes to the exact oracle."""

    kind = "scripted"

    def __init__(self, replies: dict[str, str]):
        self.replies, self.oracle = replies, OracleBackend(0)

    def generate(self, requests):
        out = []
        for req in requests:
            text = req.text()
            if "Write a harder variant" in text or "Write a new problem of similar" in text:
                src = text.split("Problem: ", 1)[1].split("\n\n")[0]
                reply = self.replies[src]
                out.append(Completion([reply] * req.settings.n, 1, 1))
            else:
                out.extend(self.oracle.generate([req]))
        return out


def test_evolve_stage_filters_and_grows_the_pool(tmp_path: Path):
    from nesyloop.tasks.bazaar import BazaarSettings, generate_splits

    splits = generate_splits(BazaarSettings(train=5, dev=3, test=3, test_rare=0, test_deep=0))
    data = tmp_path / "data"
    for name, exs in splits.items():
        write_jsonl(data / f"{name}.jsonl", (e.to_dict() for e in exs))
    train = splits["train"]
    fresh = "Milo has 3 brells. He finds 4 coins. How many coins does Milo have now?"
    replies = {train[0].question: f"Problem: {fresh}",
               train[1].question: f"Problem: {splits['dev'][0].question}",  # an eval item
               train[2].question: "I would rather not.",  # malformed
               train[3].question: f"Problem: {train[4].question.upper()}",  # in the pool
               train[4].question: f"Problem: {fresh}"}  # a copy of an earlier new problem
    pool_dir = tmp_path / "pool"
    write_pool(pool_dir, [{"id": e.id, "question": e.question, "answer": e.answer,
                           "answer_type": "number", "options": None, "rationales": [e.rationale],
                           "programs": [], "origin": "train", "round": 0, "parent": None}
                          for e in train])
    fb = tmp_path / "fb"
    write_jsonl(fb / "demos.jsonl", ({"id": e.id, "correct": i % 2 == 0, "easy": i % 2 == 0}
                                     for i, e in enumerate(train)))
    cache = RequestCache(tmp_path / "cache.sqlite")

    def make_teacher():
        b = CachedBackend(WriterThenOracle(replies), cache, run="t")
        u = b.usage
        return b, lambda: {"requests_issued": u.requests_issued, "requests_cached": u.requests_cached,
                           "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}

    fdd = FddSettings()
    res = RunDir(tmp_path / "run").stage(
        "fdd-evolve-r1", {}, evolve_stage(make_teacher, pool_dir, fb, data, 1, fdd,
                                          lambda n: GenSettings(n=n, temperature=0.7), 8,
                                          progress=False))
    info = res.info
    assert info["generated"] == 5 and info["new"] == 1 and info["pool"] == 6
    assert info["easy"] == 3 and info["hard"] == 2
    reasons = {r["parent"]: r["reason"] for r in read_jsonl(res.path / "rejected.jsonl")}
    assert reasons[train[1].id].startswith("overlaps an evaluation item (dev/")
    assert reasons[train[2].id] == "no 'Problem:' in the reply"
    assert reasons[train[3].id].startswith("exact duplicate of the pool")
    assert reasons[train[4].id].startswith("exact duplicate of the pool")  # of the new one
    # duplicates and leaks are dropped before the teacher is asked to solve them
    assert info["requests_issued"] == 5 + 2
    new = read_jsonl(res.path / "new.jsonl")[0]
    assert new["question"] == fresh and new["answer"] == "16" and new["origin"] == "harder"
    assert new["rationales"] and new["programs"] and new["round"] == 1
    assert len(read_jsonl(res.path / "pool.jsonl")) == 6
    assert read_json(res.path / "manifest.json")["info"]["requests_issued"] > 0


def test_harder_and_similar_variant_counts_are_separate_settings(tmp_path: Path):
    from nesyloop.tasks.bazaar import BazaarSettings, generate_splits

    splits = generate_splits(BazaarSettings(train=6, dev=2, test=2, test_rare=0, test_deep=0,
                                            max_steps=2, deep_steps=(3, 4)))
    data = tmp_path / "data"
    for name, exs in splits.items():
        write_jsonl(data / f"{name}.jsonl", (e.to_dict() for e in exs))
    train = splits["train"]
    pool_dir, fb = tmp_path / "pool", tmp_path / "fb"
    write_pool(pool_dir, [{"id": e.id, "question": e.question, "answer": e.answer,
                           "answer_type": "number", "options": None, "rationales": [e.rationale],
                           "programs": [], "origin": "train", "round": 0, "parent": None}
                          for e in train])
    write_jsonl(fb / "demos.jsonl", ({"id": e.id, "correct": i < 4, "easy": i < 4}
                                     for i, e in enumerate(train)))  # 4 easy, 2 hard
    cache = RequestCache(tmp_path / "cache.sqlite")

    def make_teacher():
        return CachedBackend(OracleBackend(), cache, run="t"), dict

    fdd = FddSettings(harder_variants=3, similar_variants=1)
    assert (fdd.n_variants("harder"), fdd.n_variants("similar")) == (3, 1)
    res = RunDir(tmp_path / "run").stage(
        "fdd-evolve-r1", {}, evolve_stage(make_teacher, pool_dir, fb, data, 1, fdd,
                                          lambda n: GenSettings(n=n, temperature=0.7), 8,
                                          progress=False))
    assert res.info["generated"] == 4 * 3 + 2 * 1
    made = read_jsonl(res.path / "new.jsonl") + read_jsonl(res.path / "rejected.jsonl")
    easy_ids = {e.id for e in train[:4]}
    harder = [r for r in made if r["parent"] in easy_ids]
    assert {r["id"].rsplit("~", 1)[1] for r in harder} == {"r1h0", "r1h1", "r1h2"}
    for r in read_jsonl(res.path / "new.jsonl"):
        if r["origin"] == "harder":  # more steps than its seed
            seed = next(e for e in train if e.id == r["parent"])
            assert r["question"].count(". ") > seed.question.count(". ")
    # both counts are part of what the evolve stage's output depends on
    assert FddSettings().evolve_settings()["harder_variants"] == 1
    assert fdd.evolve_settings()["harder_variants"] == 3
