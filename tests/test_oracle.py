"""The Bazaar oracle teacher answers nesyloop's own prompts like an exact LLM would."""

from __future__ import annotations

import re

import pytest

from nesyloop.sandbox import run_programs
from nesyloop.gen.base import GenSettings, Request
from nesyloop.roles import prompts as P
from nesyloop.tasks.bazaar import (
    NON_ANSWER,
    BazaarSettings,
    OracleBackend,
    build_world,
    generate_splits,
    is_valid,
    parse_question,
    solve,
)

FINAL = re.compile(r"Therefore, the answer is (-?\d+)\.")
CODE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def chat(system: str, user: str, **settings) -> Request:
    return Request.chat(
        [{"role": "system", "content": system}, {"role": "user", "content": user}],
        GenSettings(**settings),
    )


def cot(q: str, **kw) -> Request:
    return chat(P.RATIONALE_SYSTEM, P.RATIONALE_USER.format(question=q), **kw)


def answer_of(text: str) -> str | None:
    m = FINAL.findall(text)
    return m[-1] if m else None


@pytest.fixture(scope="module")
def splits():
    return generate_splits(BazaarSettings(train=200, dev=20, test=300, test_rare=60, test_deep=60))


@pytest.fixture(scope="module")
def world():
    return build_world(0)


def test_cot_exact_with_no_errors(splits):
    oracle = OracleBackend()
    exs = splits["test"][:150] + splits["test-rare"] + splits["test-deep"]
    outs = oracle.generate([cot(ex.question) for ex in exs])
    assert len(outs) == len(exs)
    for ex, c in zip(exs, outs):
        assert c.text.endswith(f"Therefore, the answer is {ex.answer}."), c.text
        assert ex.rationale in c.text  # the gold rationale, maybe after a short preamble


def test_cot_error_rate_and_determinism(splits):
    oracle = OracleBackend(error_rate=0.3, seed=7)
    exs = splits["test"]
    reqs = [cot(ex.question) for ex in exs]
    outs = oracle.generate(reqs)
    wrong = sum(answer_of(c.text) != ex.answer for ex, c in zip(exs, outs))
    assert 0.2 <= wrong / len(exs) <= 0.4
    assert all(answer_of(c.text) is not None for c in outs)  # wrong, but still well-formed
    assert [c.texts for c in oracle.generate(reqs[:20])] == [c.texts for c in outs[:20]]
    other = OracleBackend(error_rate=0.3, seed=8).generate(reqs)
    assert [c.text for c in other] != [c.text for c in outs]
    # n > 1: errors are drawn per sample index
    many = oracle.generate([cot(exs[0].question, n=40)])[0]
    assert len(many.texts) == 40 and 0 < sum(answer_of(t) != exs[0].answer for t in many.texts) < 40


def test_pot_program_executes_to_answer(splits):
    exs = splits["test"][:60]
    outs = OracleBackend().generate(
        [chat(P.POT_SYSTEM, P.POT_USER.format(question=ex.question)) for ex in exs]
    )
    codes = [CODE.search(c.text) for c in outs]
    assert all(codes)
    for ex, res in zip(exs, run_programs([c.group(1) for c in codes]), strict=True):
        assert res.ok and res.answer == ex.answer
    wrong_outs = OracleBackend(error_rate=1.0).generate(
        [chat(P.POT_SYSTEM, P.POT_USER.format(question=ex.question)) for ex in exs]
    )
    wrong = run_programs([CODE.search(c.text).group(1) for c in wrong_outs])
    for ex, res in zip(exs, wrong, strict=True):
        assert res.ok and res.answer != ex.answer


def _analysis(question: str, student: str, answer: str) -> str:
    req = chat(
        P.ERROR_ANALYSIS_SYSTEM,
        P.ERROR_ANALYSIS_USER.format(question=question, student_response=student, answer=answer),
    )
    return OracleBackend().generate([req])[0].text


def test_error_analysis_names_missing_and_wrong_facts(splits, world):
    ex = next(e for e in splits["test"] if len(e.meta["facts"]) >= 2)
    p = parse_question(world, ex.question)
    f_wrong, f_missing = ex.meta["facts"][:2]
    bad = solve(
        world,
        p,
        values={
            i: world.fact(f_wrong).value + 1 for i, s in enumerate(p.steps) if s.fact == f_wrong
        },
    )
    student = bad.rationale.replace(world.fact(f_missing).sentence[:-1] + ", so", "So")
    student = student.replace(world.fact(f_missing).sentence[:-1] + ".", "")
    assert world.fact(f_missing).sentence[:-1] not in student
    text = _analysis(ex.question, student, ex.answer)
    assert text.startswith("Learning summary: ")
    knowledge = text.split("Supplementary knowledge:\n", 1)[1].splitlines()
    assert (
        f"1. {world.fact(f_wrong).sentence}" in knowledge
        or f"2. {world.fact(f_wrong).sentence}" in knowledge
    )
    assert any(line.endswith(world.fact(f_missing).sentence) for line in knowledge)
    assert len(knowledge) == 2


def test_error_analysis_arithmetic_slip_and_rules(splits, world):
    ex = next(e for e in splits["test"] if any(f.startswith("rule:") for f in e.meta["facts"]))
    p = parse_question(world, ex.question)
    slip = solve(world, p, slips={len(p.steps) - 1: 2})
    text = _analysis(ex.question, slip.rationale, ex.answer)
    assert "arithmetic mistake" in text.split("\n")[0]
    listed = text.split("Supplementary knowledge:\n", 1)[1].splitlines()
    assert [line.split(". ", 1)[1] for line in listed] == [
        world.fact(f).sentence for f in ex.meta["facts"]
    ]
    rule = next(f for f in ex.meta["facts"] if f.startswith("rule:"))
    no_rule = solve(world, p).rationale.replace(world.fact(rule).sentence[:-1] + ". ", "")
    text = _analysis(ex.question, no_rule, ex.answer)
    assert re.search(
        r"The \w+ (toll|market fee|guild reward) is \d+ coins\.",
        text.split("Supplementary knowledge:")[1],
    )


def test_evolution_harder_and_similar(splits, world):
    exs = splits["test"][:40]
    oracle = OracleBackend()
    harder = oracle.generate(
        [chat(P.EVOLVE_HARDER_SYSTEM, P.EVOLVE_USER.format(question=ex.question)) for ex in exs]
    )
    similar = oracle.generate(
        [
            chat(P.EVOLVE_SIMILAR_SYSTEM, P.EVOLVE_USER.format(question=ex.question), n=2)
            for ex in exs
        ]
    )
    added = set()
    for ex, h, s in zip(exs, harder, similar):
        assert h.text.startswith("Problem: ")
        ph = parse_question(world, h.text[len("Problem: ") :])
        assert ph is not None and is_valid(world, ph)
        added.add(len(ph.steps) - ex.meta["steps"])
        assert len(ph.steps) - ex.meta["steps"] in (1, 2) and ph.steps[-1].fact is not None
        assert h.text[len("Problem: ") :].startswith(ex.question.rsplit(" How many", 1)[0])
        assert s.texts[0] != s.texts[1]
        for t in s.texts:
            ps = parse_question(world, t[len("Problem: ") :])
            assert ps is not None and is_valid(world, ps)
            assert len(ps.steps) == ex.meta["steps"] and ps.family == ex.meta["family"]
            assert t[len("Problem: ") :] != ex.question
        # the evolved problem can itself be answered by the oracle
        out = oracle.generate([cot(h.text[len("Problem: ") :])])[0].text
        assert answer_of(out) == str(solve(world, ph).answer)
    assert added == {1, 2}  # one or two more steps


def test_hand_written_question(world):
    price = next(f for f in world.facts if f.kind == "price")
    reward = next(f for f in world.facts if f.id.startswith("rule:reward:"))
    good = world.goods[price.id.split(":")[1]]
    place = reward.sentence.split()[1]
    q = (
        f"Bea has 40 coins. She buys 3 {good}. Then she gets the {place} guild reward. "
        "How many coins does Bea have left?"
    )
    text = OracleBackend().generate([cot(q)])[0].text
    assert price.sentence[:-1] in text and reward.sentence[:-1] in text
    assert answer_of(text) == str(40 - 3 * price.value + reward.value)


def test_batch_n_stop_tokens_and_non_answers(splits):
    oracle = OracleBackend(error_rate=0.5)
    q = splits["test"][0].question
    reqs = [
        cot(q, n=3),
        chat(P.POT_SYSTEM, P.POT_USER.format(question=q), n=2),
        cot("What is love?"),
        Request.raw(f"Question: {q}\nAnswer:"),
        cot(q, stop=("Therefore",)),
        cot(q, max_tokens=5),
    ]
    outs = oracle.generate(reqs)
    assert [len(c.texts) for c in outs] == [3, 2, 1, 1, 1, 1]
    assert all(c.prompt_tokens > 0 and c.completion_tokens > 0 for c in outs)
    assert outs[0].completion_tokens == sum(len(t.split()) for t in outs[0].texts)
    assert outs[2].text == NON_ANSWER
    assert answer_of(outs[3].text) is not None
    assert "Therefore" not in outs[4].text and outs[4].text
    assert len(outs[5].text.split()) == 5
    for garbage in ["", "Student's solution: x", "Problem: nonsense\n\nWrite a harder variant"]:
        assert oracle.generate([Request.raw(garbage)])[0].text == NON_ANSWER
