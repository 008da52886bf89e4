"""Fact sheets (kb/sheets.py) and ``nesyloop kb import-facts``: formats, the same-fact rule,
dry runs, all-or-nothing imports with one-line errors, history; on real SQLite files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nesyloop.cli import app
from nesyloop.errors import DataError
from nesyloop.kb import KnowledgeBase
from nesyloop.kb.retrieve import RetrievalSettings, Retriever
from nesyloop.kb.sheets import fact_subject, read_sheet
from nesyloop.tasks.bazaar import build_world
from nesyloop.tasks.bench import data_root

OLD, YARL = "A jincloak costs 5 coins.", "1 yarl is 2 coins."
Q = "Ivo buys 2 jincloaks. How many coins does he pay?"


def cli(*args):
    return CliRunner().invoke(app, ["kb", *map(str, args)], env={"COLUMNS": "120"})


@pytest.fixture
def kbfile(tmp_path):
    path = tmp_path / "kb.sqlite"
    with KnowledgeBase(path) as kb:
        kb.add("The student used a wrong jincloak price.", [OLD, YARL], source_id="q1", round=1)
        kb.add("The student forgot the jincloak price.", [OLD], source_id="q2", round=2)
    return path


def _block(path) -> str:
    with KnowledgeBase(path) as kb:
        r = Retriever(kb, RetrievalSettings(unit="item", top_k=2, insert="knowledge"))
        return r.block(r.retrieve(Q)) or ""


def test_sheet_formats(tmp_path):
    md = tmp_path / "prices.md"
    md.write_text("# Prices, season 2\n\n- A jincloak costs 8 coins.\n* 1  yarl is 2 coins\n"
                  "3. A glimwick costs 4 coins.\n")
    assert [(x.line, x.sentence) for x in read_sheet(md)] == [
        (3, "A jincloak costs 8 coins."), (4, "1 yarl is 2 coins"), (5, "A glimwick costs 4 coins.")]
    csv = tmp_path / "prices.csv"
    csv.write_text('key,sentence\nprice:jincloak,"A jincloak costs 8 coins."\n\n,1 yarl is 3 coins.\n')
    assert [(x.line, x.key) for x in read_sheet(csv)] == [(2, "price:jincloak"), (4, None)]
    js = tmp_path / "prices.jsonl"
    js.write_text(json.dumps({"sentence": "A jincloak costs 8 coins.", "key": "j"}) + "\n")
    assert read_sheet(js)[0].key == "j"


@pytest.mark.parametrize("name,text,message", [
    ("a.md", "- A jincloak costs 8 coins.\nJincloaks got dearer.\n", r"a\.md:2: not a list item"),
    ("a.csv", "fact\nA jincloak costs 8 coins.\n", r"a\.csv:1: the header has no 'sentence'"),
    ("a.csv", "key,sentence\nk,A jincloak costs 8 coins.,extra\n", r"a\.csv:2: 3 fields"),
    ("a.jsonl", '{"sentence": "x"}\n{oops\n', r"a\.jsonl:2: not valid JSON"),
    ("a.jsonl", '{"key": "k"}\n', r"a\.jsonl:1: no sentence"),
    ("a.md", "- A jincloak costs 8 coins.\n- a jincloak costs 9 coins\n",
     r"a\.md:2: gives the fact of line 1 another value"),
    ("a.md", "# only a heading\n", r"a\.md: no facts"),
])
def test_bad_sheets_fail_in_one_line_naming_file_and_line(tmp_path, kbfile, name, text,
                                                          message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_sheet(path)
    before = kbfile.read_bytes()
    r = cli("import-facts", path, "--kb", kbfile)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert kbfile.read_bytes() == before  # all or nothing: the KB is untouched


def test_the_same_fact_is_the_sentence_with_its_numbers_masked():
    assert fact_subject("A jincloak costs 8 coins.") == fact_subject("a jincloak costs 5 coins")
    assert fact_subject("A jincloak costs 8 coins.") != fact_subject("A jincloak is 8 coins.")
    world = build_world(0)  # on Bazaar the rule is exact: one subject per fact
    subjects = [fact_subject(f.sentence) for f in world.facts]
    assert len(set(subjects)) == len(world.facts)
    assert all(fact_subject(f.say(f.value + 3)) == fact_subject(f.sentence) for f in world.facts)


def test_import_dry_run_then_import_then_again(tmp_path, kbfile):
    sheet = tmp_path / "season2.md"
    sheet.write_text("- A jincloak costs 8 coins.\n- 1 yarl is 2 coins.\n- A glimwick costs 4 "
                     "coins.\n")
    assert "costs 5" in _block(kbfile)
    before = kbfile.read_bytes()
    dry = cli("import-facts", sheet, "--kb", kbfile, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert ("season2.md:1: disable item 1 'A jincloak costs 5 coins.' (2 entries), superseded "
            "by 'A jincloak costs 8 coins.'") in dry.stdout
    assert "season2.md:3: add entry 'A glimwick costs 4 coins.'" in dry.stdout
    assert "would add 3 entries and disable 1 items; nothing written" in dry.stdout
    assert kbfile.read_bytes() == before
    r = cli("import-facts", sheet, "--kb", kbfile, "--note", "price list of May")
    assert r.exit_code == 0 and "3 entries added, 1 items disabled" in r.stdout
    assert _block(kbfile).startswith("A jincloak costs 8 coins.") and "costs 5" not in _block(
        kbfile)
    with KnowledgeBase(kbfile) as kb:
        old = kb.item_history(1)[-1]
        assert old["action"] == "disable" and old["before"]["enabled"] and not old["after"][
            "enabled"]
        assert "season2.md:1" in old["note"] and "price list of May" in old["note"]
        human = [e for e in kb.list() if e.teacher == "human"]
        assert [e.source_id for e in human] == [f"{sheet}:{i}" for i in (1, 2, 3)]
        assert human[0].summary == "A jincloak costs 8 coins."  # shown once in a block:
        whole = Retriever(kb, RetrievalSettings(top_k=1))  # summary + knowledge of entries
        assert whole.block(whole.retrieve("What does a jincloak cost now?")) == \
            "A jincloak costs 8 coins."
        first = kb.history(human[0].id)[0]
        assert first["action"] == "import" and f"{sheet}:1" in first["note"]
        assert kb.get(1).knowledge == [YARL]  # the error entry no longer states the old price
    again = cli("import-facts", sheet, "--kb", kbfile)
    assert "0 entries added, 0 items disabled, 0 enabled, 3 unchanged" in again.stdout


def test_a_key_supersedes_an_earlier_sheet_line_worded_otherwise(tmp_path, kbfile):
    first, second = tmp_path / "may.csv", tmp_path / "june.csv"
    first.write_text("key,sentence\nprice:jincloak,A jincloak costs 8 coins.\n")
    second.write_text("key,sentence\nprice:jincloak,Jincloaks now sell for 9 coins each.\n")
    assert cli("import-facts", first, "--kb", kbfile).exit_code == 0
    r = cli("import-facts", second, "--kb", kbfile)
    assert "disable item" in r.stdout and "'A jincloak costs 8 coins.'" in r.stdout
    assert "Jincloaks now sell for 9" in _block(kbfile) and "costs 8" not in _block(kbfile)


@pytest.mark.skipif(not (data_root() / "gsm8k").is_dir(),
                    reason=f"shared GSM8K not found at {data_root()} (set NESYLOOP_DATA)")
def test_the_worked_example_units_sheet_on_gsm8k(tmp_path):
    """docs/kb.md's worked example: docs/examples/units.md into a new KB; GSM8K test questions
    that use a unit get the sheet's sentence for it in their knowledge block."""
    sheet = Path(__file__).resolve().parents[1] / "docs" / "examples" / "units.md"
    kb = tmp_path / "kb.sqlite"
    dry = cli("import-facts", sheet, "--kb", kb, "--dry-run")
    assert dry.exit_code == 0 and "would add 19 entries" in dry.stdout and not kb.exists()
    assert "19 entries added" in cli("import-facts", sheet, "--kb", kb).stdout
    unit = {"quarters": "A quarter is 25 cents.", "dozen": "A dozen is 12 items.",
            "dimes": "A dime is 10 cents.", "ounces": "A pound is 16 ounces."}
    lines = (data_root() / "gsm8k" / "test.jsonl").read_text().splitlines()
    questions = [json.loads(x)["question"] for x in lines]
    checked = 0
    with KnowledgeBase(kb) as store:
        r = Retriever(store, RetrievalSettings(unit="item", top_k=3, insert="knowledge"))
        for q in questions:
            for word, sentence in unit.items():
                if f" {word} " in f" {q.lower()} ":
                    assert sentence in r.block(r.retrieve(q)), q
                    checked += 1
    assert checked >= 30
