"""``nesyloop eval`` end to end on tiny scratch students: GSM8K and BBH (every subtask) with two
students and a comparison table, per-subtask accuracy that must equal what the gold answers
say, retrieval from a real knowledge base, BBH's 3-shot prompts, and one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
from typer.testing import CliRunner

from nesyloop import api
from nesyloop.cli import app
from nesyloop.kb.store import KnowledgeBase
from nesyloop.students.prompt import student_prompt
from nesyloop.tasks.bench import BenchSettings, data_root, load_task
from nesyloop.tasks.bench.bbh import SUBTASKS

DATA = data_root()
pytestmark = pytest.mark.skipif(
    not (DATA / "gsm8k").is_dir() or not (DATA / "bbh").is_dir(),
    reason=f"shared benchmark data not found at {DATA} (set NESYLOOP_DATA)")

YES_NO = ["web_of_lies", "navigate", "sports_understanding"]


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    """A random scratch student ("base") and one trained to always say "The answer is No."
    ("no"), so its accuracy on every subtask is known from the gold answers alone."""
    from nesyloop.students.scratch import ScratchSettings, create_scratch_student
    from nesyloop.students.train import TrainSettings, train_sft

    root = tmp_path_factory.mktemp("students")
    train = load_task("bbh", BenchSettings(subtasks=YES_NO))["train"]
    texts = [student_prompt(e.question) + " The answer is No." for e in train[:200]]
    texts += [student_prompt(e.question) + " The answer is 7." for e in
              load_task("gsm8k", BenchSettings(limit=100))["train"]]
    tiny = ScratchSettings(hidden=32, layers=1, heads=2, max_len=512, vocab_size=300)
    base = create_scratch_student(texts, root / "base", tiny)
    pairs = [{"prompt": student_prompt(e.question), "completion": " The answer is No."}
             for e in train[:96]]
    train_sft(base, pairs, root / "no", TrainSettings(max_steps=40, per_device_train_batch_size=8,
                                                      learning_rate=5e-3, max_len=512,
                                                      logging_steps=10),
              progress=False)
    return base, root / "no"


def cli(*args):
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_metrics(recs, m):
    """The reported figures are the mean verdicts of the saved predictions."""
    n = len(recs)
    assert m["n"] == n
    assert m["strict"] == pytest.approx(sum(r["strict"] for r in recs) / n)
    assert m["flexible"] == pytest.approx(sum(r["flexible"] for r in recs) / n)


def test_gsm8k_two_students_comparison_table(students, tmp_path):
    base, no = students
    out = tmp_path / "gsm8k"
    res = cli("-s", base, "-s", no, "--task", "gsm8k", "--limit", 8, "--out", out,
              "--max-new-tokens", 12)
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "gsm8k" and metrics["n"] == 8 and set(metrics["students"]) == \
        {"base", "no"}
    gold = [e.answer for e in load_task("gsm8k")["test"][:8]]
    for label in ("base", "no"):
        recs = records(out / f"{label}.jsonl")
        assert [r["gold"] for r in recs] == gold
        assert all(r["prompt"].startswith("Question: Solve the math word problem") for r in recs)
        check_metrics(recs, metrics["students"][label]["overall"])
    no_recs = records(out / "no.jsonl")
    assert all(r["output"].strip() == "The answer is No." and r["strict_pred"] is None
               for r in no_recs)
    report = (out / "report.md").read_text()
    assert "| student | strict | flexible | n |" in report and "| base |" in report \
        and "| no |" in report and "Per subtask" not in report
    assert "| no | 0.0 | 0.0 | 8 |" in res.output  # printed as well as saved


def test_bbh_every_subtask_limit_2_and_known_accuracy(students, tmp_path):
    base, no = students
    out = tmp_path / "bbh"
    res = cli("-s", base, "-s", no, "--task", "bbh", "--limit", 2, "--out", out,
              "--max-new-tokens", 12, "--batch-size", 32)
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 54
    test = load_task("bbh", BenchSettings(limits={"test": 2}))["test"]
    for label in ("base", "no"):
        recs = records(out / f"{label}.jsonl")
        subs = metrics["students"][label]["subtasks"]
        assert len(subs) == 27 and all(m["n"] == 2 for m in subs.values())
        check_metrics(recs, metrics["students"][label]["overall"])
        for sub, m in subs.items():
            check_metrics([r for r in recs if r["subtask"] == sub], m)
    # "The answer is No." is right exactly where the gold answer is No/no
    subs = metrics["students"]["no"]["subtasks"]
    for sub in subs:
        golds = [e.answer for e in test if e.meta["subtask"] == sub]
        assert subs[sub]["strict"] == sum(g.lower() == "no" for g in golds) / len(golds), sub
    assert sum(subs[s]["strict"] for s in YES_NO) > 0  # the check above is not all zeros
    report = (out / "report.md").read_text()
    assert "## Per subtask (%)" in report
    assert "| subtask | n | base strict | base flexible | no strict | no flexible |" in report
    rows = [ln.split("|")[1].strip() for ln in report.splitlines() if ln.startswith("| ")]
    assert sorted(r for r in rows if r in SUBTASKS) == sorted(SUBTASKS)


def test_kb_retrieval_on_every_question(students, tmp_path):
    _, no = students
    kb_path = tmp_path / "kb.sqlite"
    with KnowledgeBase(kb_path) as kb:
        liar = kb.add("Track who tells the truth and who lies, one person at a time.",
                      ["If a truthful person says someone lies, that person lies."])
        steps = kb.add("Add the steps forward and backward, left and right.",
                       [("You return to the start when the steps forward equal the steps "
                         "backward and left equals right.")])
    kw = {"limit": 3, "subtasks": ["web_of_lies", "navigate"], "max_new_tokens": 8,
          "progress": False, "log": lambda *_: None}
    plain = api.evaluate([no], "bbh", "test", out=tmp_path / "plain", **kw)
    with_kb = api.evaluate([no], "bbh", "test", out=tmp_path / "kb", kb=kb_path, **kw)
    assert with_kb["kb"] == str(kb_path) and plain["kb"] is None
    recs = records(tmp_path / "kb" / "no.jsonl")
    assert len(recs) == 6
    for r in recs:
        want = liar if r["subtask"] == "web_of_lies" else steps
        assert [h["id"] for h in r["retrieved"]][0] == want  # the best match first
        assert r["prompt"].startswith("Knowledge: ") and r["knowledge"] in r["prompt"]
    assert all(not r["prompt"].startswith("Knowledge") for r in
               records(tmp_path / "plain" / "no.jsonl"))
    check_metrics(recs, with_kb["students"]["no"]["overall"])
    assert "knowledge base" in with_kb["report"]


def test_bbh_three_shot_generation(students, tmp_path):
    base, _ = students
    res = api.evaluate([base], "bbh", "test", limit=1, subtasks=["boolean_expressions"],
                       shots=3, out=tmp_path / "fs", max_new_tokens=8, progress=False,
                       log=lambda *_: None)
    rec = records(tmp_path / "fs" / "base.jsonl")[0]
    exemplars = (DATA / "bbh" / "cot-prompts" / "boolean_expressions.txt").read_text()
    first_q = exemplars.split("\nQ: ", 1)[1].split("\n", 1)[0]
    assert f"Q: {first_q}\nA: Let's think step by step." in rec["prompt"]
    assert rec["prompt"].endswith("\nA: Let's think step by step.") and res["shots"] == 3
    assert "\nQ:" not in rec["output"]


@pytest.mark.parametrize("args, message", [
    (["--task", "gsm9k"], "error: --task: unknown task 'gsm9k'; valid: bazaar, gsm8k, svamp"),
    (["--task", "gsm8k", "--split", "validation"],
     "error: --split: 'validation' is not a split of gsm8k; valid: train, dev, test, all"),
    (["--task", "svamp", "--shots", "3", "--limit", "1"],
     "error: svamp: --shots 3 needs 3 training examples with gold rationales"),
    (["--task", "bbh", "--shots", "3", "--kb", "x.sqlite"],
     "error: --kb: retrieval prompts are zero-shot"),
    (["--task", "bbh", "--kb", "missing.sqlite"], "error: --kb: missing.sqlite is not a file"),
    (["--task", "gsm8k", "--shots", "2"], "error: --shots: must be 0 or 3 (got 2)"),
    (["--task", "bbh", "--subtask", "navigat"], "error: bbh: unknown subtask 'navigat'"),
])
def test_errors_are_one_line(tmp_path, args, message):
    # smollm2 resolves (its GGUF ships in a package) but is never loaded: each error comes first
    res = cli("-s", "smollm2", "--out", tmp_path / "o", *args)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), res.output


def test_predictions_made_elsewhere_real_bbh_outputs(tmp_path):
    """``--predictions``: code-davinci-002's real BBH CoT outputs (tests/fixtures/
    bbh_cot_outputs.jsonl), matched by question and subtask, score exactly the official
    verdicts under strict, per subtask and overall, and the JSON has the documented shape."""
    rows = [json.loads(line) for line in
            (Path(__file__).parent / "fixtures" / "bbh_cot_outputs.jsonl").read_text().splitlines()]
    preds = tmp_path / "davinci.jsonl"
    preds.write_text("".join(json.dumps({"subtask": r["subtask"], "question": r["question"],
                                         "prediction": r["prediction"]}) + "\n" for r in rows))
    res = cli("--task", "bbh", "--predictions", preds, "--json", tmp_path / "s" / "scores.json")
    assert res.exit_code == 0, res.output
    scores = json.loads((tmp_path / "s" / "scores.json").read_text())
    assert set(scores) == {"subtasks", "overall"}
    n = len(rows)
    assert scores["overall"] == {"strict": sum(r["official"] for r in rows) / n,
                                 "flexible": (sum(r["official"] for r in rows) + 1) / n, "n": n}
    for sub, m in scores["subtasks"].items():
        mine = [r for r in rows if r["subtask"] == sub]
        assert m["n"] == len(mine) and m["strict"] == sum(r["official"] for r in mine) / len(mine)
    assert set(scores["subtasks"]) == {r["subtask"] for r in rows}
    assert "| snarks |" in res.output and "| davinci |" in res.output
    # the same lines by id (the hedged snarks#1 is bbh-snarks-001) give the same scores
    by_id = tmp_path / "ids.jsonl"
    by_id.write_text("".join(json.dumps({"id": f"bbh-{r['subtask']}-" + r["source"].rsplit(
        "[", 1)[1].rstrip("]").zfill(3), "prediction": r["prediction"]}) + "\n" for r in rows))
    res = api.evaluate(None, "bbh", predictions=by_id, log=lambda *_: None)
    assert res["overall"] == scores["overall"] and res["subtasks"] == scores["subtasks"]
