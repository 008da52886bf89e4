"""Answer extraction and scoring: hand-written edge cases and real SmolLM2-135M outputs.

The real outputs live in ``tests/fixtures/real_outputs.jsonl`` (made by
``tests/fixtures/make_real_outputs.py``); the expected extractions below were labelled by hand
by reading those outputs. Regenerating the fixture means relabelling them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nesyloop.scoring import (
    RULES,
    Extraction,
    answers_match,
    extract,
    normalize_number,
    score_output,
    summarize,
)

FIXTURE = Path(__file__).parent / "fixtures" / "real_outputs.jsonl"
DATE_OPTS = ["12/11/1937", "12/25/1937", "01/04/1938", "12/04/1937", "12/25/2006", "07/25/1937"]
FRUIT_OPTS = ["apple pie", "banana", "cherry tart", "apple"]


def _records() -> dict[str, dict]:
    with FIXTURE.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {r["source"]: r for r in rows}


RECORDS = _records()


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    "raw, want",
    [
        ("18", "18"), ("18.0", "18"), ("18.50", "18.5"), ("$1,234.0", "1234"), ("1,234", "1234"),
        ("-5", "-5"), ("-$5", "-5"), ("$-5", "-5"), ("€5", "5"), ("£3.25", "3.25"), ("18.", "18"),
        ("18 coins", "18"), ("50%", "50"), ("**18**", "18"), ("3/4", "0.75"), ("-3/4", "-0.75"),
        (".5", "0.5"), ("0.1", "0.1"), ("1,000,000", "1000000"), ("1/3", "0.333333333333"),
        ("abc", None), ("", None), ("1/0", None), ("twelve", None), ("3 and 4", None),
    ],
)
def test_normalize_number(raw, want):
    assert normalize_number(raw) == want


@pytest.mark.parametrize(
    "text, mode, value, rule",
    [
        ("Therefore, the answer is 18.", "strict", "18", "therefore"),
        ("#### 18", "strict", "18", "hash"),
        ("The answer is $1,234.", "strict", "1234", "answer_is"),
        ("The answer is: 18 coins.", "strict", "18", "answer_is"),
        ("So the final answer is -3.50", "strict", "-3.5", "therefore"),
        ("the answer is 3/4", "strict", "0.75", "answer_is"),
        ("We get $\\boxed{18}$.", "strict", "18", "boxed"),
        ("\\boxed{\\$1,234}", "strict", "1234", "boxed"),
        ("Thus \\(\\boxed{42}\\)", "strict", "42", "boxed"),
        ("The answer is **18**.", "strict", "18", "answer_is"),
        ("The answer is \\(18\\).", "strict", "18", "answer_is"),
        ("The answer is €5", "strict", "5", "answer_is"),
        ("Answer: 18", "strict", None, "none"),
        ("Answer: 18", "flexible", "18", "answer_colon"),
        ("She makes **18** dollars, not 20.", "flexible", "18", "bold"),
        ("16 - 3 - 4 = 9 eggs, 9 * 2 = $18.", "flexible", "18", "last_number"),
        ("16-3-4=9", "flexible", "9", "last_number"),
        ("It costs 1,234 dollars", "flexible", "1234", "last_number"),
        ("The temperature fell to -7.", "flexible", "-7", "last_number"),
        ("No number here at all.", "strict", None, "none"),
        ("No number here at all.", "flexible", None, "none"),
        ("", "flexible", None, "none"),
    ],
)
def test_extract_number(text, mode, value, rule):
    assert extract(text, "number", mode=mode) == Extraction(value, rule)


def test_strict_takes_explicit_answer_not_last_number():
    text = ("Janet has 16 eggs, eats 3 and bakes 4, so 16 - 3 - 4 = 9 remain. 9 * 2 = 18.\n"
            "Therefore, the answer is 18.\nThat took 5 minutes and 2 steps.")
    assert extract(text, "number") == Extraction("18", "therefore")
    assert extract(text, "number", mode="flexible") == Extraction("18", "therefore")
    no_final = "Janet has 16 eggs, eats 3 and bakes 4, so 9 remain; 9 * 2 = 18 dollars."
    assert extract(no_final, "number") == Extraction(None, "none")
    assert extract(no_final, "number", mode="flexible") == Extraction("18", "last_number")


def test_last_explicit_answer_wins_and_rule_priority():
    assert extract("The answer is 5. Wait, the answer is 6.", "number").value == "6"
    # "therefore" is tried before "answer_is", "answer_is" before "hash"
    assert extract("The answer is 7.\nTherefore, the answer is 8.", "number") == Extraction("8", "therefore")
    assert extract("#### 3\nThe answer is 4", "number") == Extraction("4", "answer_is")
    assert extract("The answer is N.\n#### 12", "number") == Extraction("12", "hash")


@pytest.mark.parametrize(
    "pred, gold, ok",
    [
        ("18", "18", True), ("18.0", "18", True), ("18.50", "18.5", True), ("$18", "18", True),
        ("1,234", "1234", True), ("0.75", "3/4", True), ("18.0000001", "18", True),
        ("18.01", "18", False), ("-18", "18", False), (None, "18", False), ("abc", "18", False),
    ],
)
def test_answers_match_number(pred, gold, ok):
    assert answers_match(pred, gold, "number") is ok


# ------------------------------------------------------------------ multiple choice


@pytest.mark.parametrize(
    "text, mode, value, rule",
    [
        ("Looking at the dates, the answer is (B).", "strict", "B", "answer_is"),
        ("The answer is B.", "strict", "B", "answer_is"),
        ("the answer is (b)", "strict", "B", "answer_is"),
        ("The correct answer is option C", "strict", "C", "answer_is"),
        ("So the answer is (D) 12/04/1937", "strict", "D", "therefore"),
        ("\\boxed{E}", "strict", "E", "boxed"),
        ("The answer is a tricky one.", "strict", None, "none"),
        ("The answer is a tricky one.", "flexible", None, "none"),
        ("(B) is plausible.", "strict", None, "none"),
        ("Answer: C", "flexible", "C", "answer_colon"),
        ("I would pick option F here", "flexible", "F", "option_letter"),
        ("(A) is wrong but (B) is right", "flexible", "B", "paren_letter"),
        ("Clearly B) fits.", "flexible", "B", "paren_letter"),
        ("The date tomorrow is 12/25/1937.", "flexible", "B", "option_text"),
        ("The answer is 12/25/2006", "flexible", "E", "option_text"),
        ("Maybe 12/25/1937 or 01/04/1938, not sure.", "flexible", None, "none"),  # two options occur
        ("Maybe 12/25/1937 or 01/04/1938.", "flexible", "C", "option_text"),  # ends with one
        ("B", "flexible", "B", "last_line"),
        ("Tomorrow.\nB.", "flexible", "B", "last_line"),
        ("The answer is (G).", "strict", None, "invalid"),  # only six options: G is no option here
    ],
)
def test_extract_choice(text, mode, value, rule):
    assert extract(text, "choice", DATE_OPTS, mode=mode) == Extraction(value, rule)


def test_option_text_prefers_longest_and_ending():
    assert extract("I like apple pie best", "choice", FRUIT_OPTS, "flexible") == Extraction("A", "option_text")
    assert extract("Banana is good, but I'd say apple", "choice", FRUIT_OPTS, "flexible").value == "D"
    assert extract("the answer is cherry tart, surely", "choice", FRUIT_OPTS, "flexible").value == "C"
    assert extract("some apple pie and a banana", "choice", FRUIT_OPTS, "flexible").value == "B"  # ends with
    assert extract("apple pie, banana, we ate", "choice", FRUIT_OPTS, "flexible").value is None  # two occur


def test_choice_without_options():
    assert extract("The answer is (H).", "choice") == Extraction("H", "answer_is")
    assert extract("The date is 12/25/1937", "choice", None, "flexible") == Extraction(None, "none")


@pytest.mark.parametrize(
    "pred, gold, ok",
    [
        ("B", "(B)", True), ("b", "B", True), ("(B)", "B", True), ("B", "b", True), ("B", "(C)", False),
        ("12/25/1937", "(B)", True), ("B", "12/25/1937", True), (None, "B", False),
    ],
)
def test_answers_match_choice(pred, gold, ok):
    assert answers_match(pred, gold, "choice", DATE_OPTS) is ok


# ------------------------------------------------------------------ exact-match text


@pytest.mark.parametrize(
    "text, mode, value, rule",
    [
        ("not ( True ) is False. So the answer is False.", "strict", "False", "therefore"),
        ("The answer is valid.", "strict", "valid", "answer_is"),
        ('The answer is "apple banana cherry".', "strict", "apple banana cherry", "answer_is"),
        ("The answer is: Yes", "strict", "Yes", "answer_is"),
        ('The answer is "The answer is X."', "strict", "X", "answer_is"),
        ("#### ] ) }", "strict", "] ) }", "hash"),
        ("It evaluates to True.", "strict", None, "none"),
        ("It evaluates to True.", "flexible", "True", "label_word"),
        ("Answer: invalid", "flexible", "invalid", "answer_colon"),
        ("Sorted:\napple banana cherry.", "flexible", "apple banana cherry", "last_line"),
        ("", "strict", None, "none"),
    ],
)
def test_extract_text(text, mode, value, rule):
    assert extract(text, "text", mode=mode) == Extraction(value, rule)


@pytest.mark.parametrize(
    "pred, gold, ok",
    [
        ("True", "True", True), ("true", "True", True), ("False.", "False", True), ("valid", "invalid", False),
        ('"apple  banana\ncherry."', "apple banana cherry", True), ("Apple Banana Cherry", "apple banana cherry", True),
        ("apple cherry banana", "apple banana cherry", False), ("24.0", "24", True), ("Yes", "No", False),
        ("", "True", False), (None, "True", False),
    ],
)
def test_answers_match_text(pred, gold, ok):
    assert answers_match(pred, gold, "text") is ok


# ------------------------------------------------------------------ API shape


def test_score_output_and_summarize():
    row = score_output("16 - 3 - 4 = 9; 9 * 2 = 18", "18", "number")
    assert row == {"strict": False, "flexible": True, "strict_pred": None, "strict_rule": "none",
                   "flexible_pred": "18", "flexible_rule": "last_number"}
    rows = [row, score_output("#### 18", "18", "number"), score_output("nothing", "18", "number")]
    assert summarize(rows) == {"strict": 1 / 3, "flexible": 2 / 3, "n": 3}
    assert summarize([]) == {"strict": 0.0, "flexible": 0.0, "n": 0}


def test_rule_names_and_bad_arguments():
    for t in ("number", "choice", "text"):
        strict, flexible = RULES[(t, "strict")], RULES[(t, "flexible")]
        assert flexible[: len(strict)] == strict and len(flexible) > len(strict)
        assert strict == ("therefore", "answer_is", "hash", "boxed")
    assert RULES[("number", "flexible")][-1] == "last_number"
    assert "option_text" in RULES[("choice", "flexible")] and "paren_letter" in RULES[("choice", "flexible")]
    with pytest.raises(ValueError):
        extract("x", "date")
    with pytest.raises(ValueError):
        extract("x", "number", mode="lenient")


# ------------------------------------------------------------------ real model outputs

# (source, mode, expected value, expected rule): hand-labelled by reading the outputs.
REAL_LABELS = [
    ("gsm8k-0", "strict", None, "none"),  # trails off at "Therefore, Janet makes"
    ("gsm8k-0", "flexible", "624", "last_number"),
    ("gsm8k-1", "strict", "4", "therefore"),  # "So, the answer is 4."
    ("gsm8k-3", "strict", None, "none"),
    ("gsm8k-3", "flexible", "1600", "last_number"),
    ("gsm8k-7", "strict", "0", "answer_is"),  # "#### N\nThe answer is: 0#### N"
    ("gsm8k-8", "strict", "24", "answer_is"),  # "The answer is 24 hours * 60 minutes / 1 hour = 120"
    ("gsm8k-9", "strict", "520", "therefore"),
    ("gsm8k-11", "strict", None, "none"),  # 'The answer is "#### N"': template echoed
    ("gsm8k-11", "flexible", "96", "last_number"),
    ("svamp-1", "flexible", "1", "last_number"),  # right by luck
    ("svamp-3", "strict", "12", "answer_is"),  # "#### 12\nThe answer is: 12"
    ("svamp-5", "flexible", "9", "last_number"),  # "Step 3: 536 + 49 = 9" (truncated)
    ("svamp-6", "strict", None, "none"),  # dozens of "#### N" lines
    ("svamp-6", "flexible", "11", "last_number"),
    ("svamp-7", "strict", "122", "answer_is"),
    ("bbh-boolean_expressions-1", "strict", "10", "answer_is"),
    ("bbh-boolean_expressions-2", "strict", None, "none"),  # the output is just "False"
    ("bbh-boolean_expressions-2", "flexible", "False", "label_word"),
    ("bbh-date_understanding-0", "strict", "C", "answer_is"),  # letter C, text of option B
    ("bbh-date_understanding-1", "flexible", "D", "answer_is"),
    ("bbh-word_sorting-0", "flexible", "Sylvina", "last_line"),
    ("bbh-word_sorting-1", "strict", "X", "answer_is"),  # 'The answer is "The answer is X."'
    ("aqua-0", "strict", "C", "answer_is"),
    ("aqua-1", "strict", "B", "answer_is"),
    ("aqua-2", "strict", None, "none"),  # "(C) 17"
    ("aqua-2", "flexible", "C", "paren_letter"),
    ("aqua-3", "flexible", None, "none"),  # rambles, never answers
    ("aqua-4", "strict", "B", "answer_is"),
    ("aqua-5", "flexible", "C", "paren_letter"),
]

# sources scored correct: (strict, flexible)
REAL_CORRECT = {"aqua-4": (True, True), "svamp-1": (False, True), "bbh-boolean_expressions-2": (False, True)}


def test_fixture_is_real_and_varied():
    srcs = list(RECORDS)
    assert len(srcs) >= 30
    for prefix, n in (("gsm8k-", 12), ("svamp-", 8), ("bbh-", 8), ("aqua-", 6)):
        assert sum(s.startswith(prefix) for s in srcs) >= n
    assert {r["answer_type"] for r in RECORDS.values()} == {"number", "choice", "text"}
    assert len({r["prompt_style"] for r in RECORDS.values()}) >= 3
    assert all(r["output"].strip() for r in RECORDS.values())


@pytest.mark.parametrize("source, mode, value, rule", REAL_LABELS)
def test_real_output_labels(source, mode, value, rule):
    r = RECORDS[source]
    assert extract(r["output"], r["answer_type"], r["options"], mode=mode) == Extraction(value, rule)


def test_real_outputs_scores_and_flexible_dominates():
    scored = {}
    for src, r in RECORDS.items():
        row = score_output(r["output"], r["gold"], r["answer_type"], r["options"])
        assert set(row) == {"strict", "flexible", "strict_pred", "strict_rule", "flexible_pred", "flexible_rule"}
        # flexible = strict rules first, then fallbacks: never worse, same answer when strict found one
        assert row["flexible"] >= row["strict"], src
        if row["strict_pred"] is not None:
            assert (row["flexible_pred"], row["flexible_rule"]) == (row["strict_pred"], row["strict_rule"])
        assert row["strict_rule"] in RULES[(r["answer_type"], "strict")] + ("none",)
        assert row["flexible_rule"] in RULES[(r["answer_type"], "flexible")] + ("none",)
        scored[src] = row
    correct = {s: (row["strict"], row["flexible"]) for s, row in scored.items() if row["flexible"]}
    assert correct == REAL_CORRECT
    n = len(RECORDS)
    assert summarize(list(scored.values())) == {"strict": 1 / n, "flexible": 3 / n, "n": n}


def test_fixture_outputs_perturbed_never_crash_and_flexible_dominates():
    """Cheap property check: truncations and decorations of real outputs keep flexible >= strict."""
    for r in RECORDS.values():
        out = r["output"]
        for text in (out[: len(out) // 2], out[len(out) // 3:], out.upper(), f"**{out}**",
                     out + "\nThe answer is " + r["gold"], out.replace("\n", " ")):
            row = score_output(text, r["gold"], r["answer_type"], r["options"])
            assert row["flexible"] >= row["strict"]
        last = score_output(out + "\nTherefore, the answer is " + r["gold"] + ".", r["gold"],
                            r["answer_type"], r["options"])
        assert last["strict"] and last["flexible"], r["source"]


# ------------------------------------------------------------------ hedged and invalid final answers

AB = ["he is kind", "he is cruel"]


@pytest.mark.parametrize(
    "text, answer_type, options, rule",
    [
        ("So the answer is (A) or (B).", "choice", AB, "hedged"),
        ("So the answer is (A) and (B).", "choice", AB, "hedged"),
        ("So the answer is either (B) or (A).", "choice", AB, "hedged"),
        ("The answer is A or B.", "choice", AB, "hedged"),
        ("The answer is (A)/(B).", "choice", AB, "hedged"),
        ("... the answer is 12 or 13.", "number", None, "hedged"),
        ("The answer is either 12 or 13", "number", None, "hedged"),
        ("So the answer is 12 (or 13).", "number", None, "hedged"),
        ("#### 12 or 13", "number", None, "hedged"),
        ("We get \\boxed{12 or 13}.", "number", None, "hedged"),
        ("So the answer is True or False.", "text", None, "hedged"),
        ("So the answer is: Yes, or maybe No.", "text", None, "hedged"),
        ("If we look at (B), it works. So the answer is (C).", "choice", AB, "invalid"),
        ("Neither is sarcastic. So the answer is (None of the above).", "choice", AB, "invalid"),
        ("So the answer is neither.", "choice", AB, "invalid"),
        ("The answer is G.", "choice", AB, "invalid"),
    ],
)
def test_hedged_or_invalid_final_answer_is_no_answer_in_every_mode(text, answer_type, options, rule):
    """A final answer naming two different candidates, or a choice that is no option, is no
    answer: strict finds none and flexible does not fall back to an earlier letter or number."""
    for mode in ("strict", "flexible"):
        assert extract(text, answer_type, options, mode=mode) == Extraction(None, rule), mode


@pytest.mark.parametrize(
    "text, answer_type, options, value",
    [
        ("So the answer is (A), and (B) is wrong.", "choice", AB, "A"),  # (B) is not an answer
        ("So the answer is (B) or, in words, he is cruel.", "choice", AB, "B"),
        ("So the answer is (B) and (B) only.", "choice", AB, "B"),
        ("So the answer is 12 (or 12.0).", "number", None, "12"),  # the same number twice
        ("So the answer is 12 hours or 720 minutes.", "number", None, "12"),  # one answer, units
        ("The answer is 18, or so I think.", "number", None, "18"),
        ("So the answer is No, or rather no.", "text", None, "No, or rather no"),
        ("The answer is (A) he is kind.", "choice", AB, "A"),
    ],
)
def test_one_answer_stated_twice_is_no_hedge(text, answer_type, options, value):
    assert extract(text, answer_type, options).value == value


@pytest.mark.parametrize(
    "text, answer_type, options, rule",
    [
        ("It is 12 or 13.", "number", None, "hedged"),  # the last number joined to another
        ("Answer: 12 or 13", "number", None, "hedged"),
        ("Both (A) or (B) fit.", "choice", AB, "hedged"),
        ("Answer: (A) or (B)", "choice", AB, "hedged"),
        ("Answer: (C)", "choice", AB, "invalid"),  # not the earlier paren letter
        ("Either True or False.", "text", None, "hedged"),
    ],
)
def test_flexible_fallbacks_refuse_a_hedge_or_invalid_answer(text, answer_type, options, rule):
    assert extract(text, answer_type, options, "strict") == Extraction(None, "none")
    assert extract(text, answer_type, options, "flexible") == Extraction(None, rule)


# ------------------------------------------------------------------ real large-model BBH outputs

BBH_FIXTURE = Path(__file__).parent / "fixtures" / "bbh_cot_outputs.jsonl"
BBH_ROWS = [json.loads(line) for line in BBH_FIXTURE.read_text(encoding="utf-8").splitlines()]
# source index -> (strict rule, flexible rule): hand-labelled by reading the predictions
BBH_LABELS = {
    "hyperbaton#142": ("hedged", "hedged"),  # "So the answer is (A) or (B)." (target (A))
    "ruin_names#42": ("hedged", "hedged"),  # "(A) or (D)" (target (A))
    "snarks#1": ("hedged", "hedged"),
    "snarks#98": ("hedged", "hedged"),  # "So the answer is (A) and (B)."
    "snarks#158": ("hedged", "hedged"),
    "hyperbaton#23": ("hedged", "hedged"),  # "(A) or (B)" with target (B): was never credited
    "snarks#16": ("invalid", "invalid"),  # "(C)" of two options; flexible took the earlier (B)
    "snarks#3": ("invalid", "invalid"),  # "(None of the above)"
    "ruin_names#13": ("invalid", "invalid"),  # "(E)" of four
    "salient_translation_error_detection#20": ("invalid", "invalid"),  # "(G)" of six
    "logical_deduction_seven_objects#213": ("none", "option_text"),  # cut off: format, not answer
    "snarks#0": ("therefore", "therefore"),
    "object_counting#0": ("therefore", "therefore"),
    "web_of_lies#0": ("therefore", "therefore"),
    "date_understanding#0": ("therefore", "therefore"),
}


def _bbh(row):
    from nesyloop.tasks.bench.bbh import bbh_example

    sub = row["subtask"]
    idx = int(row["source"].rsplit("[", 1)[1].rstrip("]"))
    return f"{sub}#{idx}", bbh_example(sub, {"input": row["question"], "target": row["target"]},
                                       idx, row["source"], "")


def test_real_bbh_outputs_strict_equals_official_verdict():
    """code-davinci-002's BBH CoT outputs (the BBH authors' release): strict agrees with the
    official scorer on every record, hedges and invalid finals included, and flexible never
    credits a hedged or invalid final answer."""
    assert len(BBH_ROWS) == len(BBH_LABELS)
    for row in BBH_ROWS:
        key, ex = _bbh(row)
        got = score_output(row["prediction"], ex.answer, ex.answer_type, ex.options)
        assert (got["strict_rule"], got["flexible_rule"]) == BBH_LABELS[key], key
        assert got["strict"] is row["official"], key
        if got["strict_rule"] in ("hedged", "invalid"):
            assert not got["flexible"] and got["flexible_pred"] is None, key
    flexible_only = [_bbh(r)[0] for r in BBH_ROWS
                     if score_output(r["prediction"], *_args(r))["flexible"] and not r["official"]]
    assert flexible_only == ["logical_deduction_seven_objects#213"]  # no final answer at all


def _args(row):
    ex = _bbh(row)[1]
    return ex.answer, ex.answer_type, ex.options


def test_teacher_filter_rejects_hedged_rationales():
    """The rationale filter uses the same extractor: a hedging teacher's rationale whose first
    candidate is the gold answer is rejected, not kept."""
    from nesyloop.roles.rationale import RationaleRole

    role = RationaleRole()
    for key in ("ruin_names#42", "snarks#1", "snarks#98", "snarks#16"):
        row = next(r for r in BBH_ROWS if _bbh(r)[0] == key)
        rec = role.format_output(row["prediction"], _bbh(row)[1])
        assert rec["kept"] is False and rec["pred"] is None, key
        assert rec["reason"].startswith(("hedged", "final answer is not a valid")), rec["reason"]
    row = next(r for r in BBH_ROWS if _bbh(r)[0] == "date_understanding#0")
    assert role.format_output(row["prediction"], _bbh(row)[1])["kept"] is True


# ------------------------------------------------------------------ real SmolLM2 final answers

SMOL = [json.loads(line) for line in (Path(__file__).parent / "fixtures" / "smollm2_finals.jsonl")
        .read_text(encoding="utf-8").splitlines()]
# source -> (strict rule, flexible rule, flexible value): hand-labelled by reading the outputs
SMOL_LABELS = {
    "smollm2-bbh-snarks-0": ("invalid", "invalid", None),  # only "The answer is (X)."
    # "(A) You are mistaken ...\n\nThe answer is (X).": flexible used to take the earlier (A)
    "smollm2-bbh-snarks-3": ("invalid", "invalid", None),
    # "... Step 2: The answer is (X).\n\nSo the answer is (X).": it used to take (A) as well
    "smollm2-bbh-hyperbaton-7": ("invalid", "invalid", None),
    "smollm2-bbh-snarks-12": ("answer_is", "answer_is", "B"),  # an option, wrong
    "smollm2-bbh-ruin_names-5": ("answer_is", "answer_is", "B"),  # an option, right
    # "The sentence is (B) rectangular ...": no final-answer marker, its format is off
    "smollm2-bbh-hyperbaton-3": ("none", "paren_letter", "B"),
}


@pytest.mark.parametrize("row", SMOL, ids=[r["source"] for r in SMOL])
def test_real_smollm2_placeholder_final_answer_is_invalid(row):
    from nesyloop.tasks.bench.bbh import bbh_example

    ex = bbh_example(row["subtask"], {"input": row["question"], "target": row["target"]}, 0,
                     row["source"], "")
    got = score_output(row["output"], ex.answer, ex.answer_type, ex.options)
    srule, frule, fvalue = SMOL_LABELS[row["source"]]
    assert (got["strict_rule"], got["flexible_rule"], got["flexible_pred"]) == \
        (srule, frule, fvalue)
    assert got["flexible"] is (fvalue == ex.answer)
