"""``nesyloop kb``: the command group over real SQLite knowledge bases (no mocks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nesyloop.cli import app
from nesyloop.kb import KnowledgeBase
from nesyloop.kb.retrieve import RetrievalSettings, Retriever
from nesyloop.tasks.bazaar import DESCRIPTION

GLIMWICK_Q = "Mira buys 3 glimwicks and pays the bridge toll. What does one glimwick cost?"


def _build(path: Path) -> dict[str, int]:
    with KnowledgeBase(path) as kb:
        ids = {
            "glimwick": kb.add("The student used a wrong value for the price of a glimwick.",
                               ["A glimwick costs 7 coins."], source_id="q1",
                               question="Tom buys 2 glimwicks. How many coins does he pay?",
                               student_response="2 x 5 = 10 coins.\nThe answer is 10.",
                               teacher="t-big", run="r1", round=1),
            "drom": kb.add("The student forgot to convert droms to coins.", ["1 drom is 7 coins."],
                           source_id="q2", teacher="t-big", run="r1", round=1),
            "toll": kb.add("The student left out the bridge toll.",
                           ["The Quillbridge toll is 3 coins."], source_id="q3",
                           teacher="t-small", run="r2", round=2),
            "crate": kb.add("The student miscounted the zelberries in a crate.",
                            ["A crate of zelberries holds 6 zelberries."], source_id="q1",
                            teacher="t-small", run="r2", round=2),
        }
        kb.mark_retrieved([ids["drom"], ids["drom"], ids["toll"]])
    return ids


@pytest.fixture
def kbfile(tmp_path) -> Path:
    return tmp_path / "kb.sqlite"


@pytest.fixture
def ids(kbfile) -> dict[str, int]:
    return _build(kbfile)


def cli(*args, input: str | None = None, env: dict | None = None):
    return CliRunner().invoke(app, ["kb", *map(str, args)], input=input,
                              env={"COLUMNS": "100", **(env or {})})


def ok(*args, **kw) -> str:
    r = cli(*args, **kw)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return r.stdout


def fails(*args, **kw) -> str:
    """The one-line error of a command that must exit 2."""
    r = cli(*args, **kw)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_list_and_show(kbfile, ids):
    lines = ok("list", "--kb", kbfile).splitlines()
    assert len(lines) == 4 and all(len(ln) <= 100 for ln in lines)
    assert lines[1].split()[:3] == [str(ids["drom"]), "on", "2"]
    assert lines[1].endswith("The student forgot to convert droms to coins.")
    assert len(ok("list", "--kb", kbfile, "--limit", 2).splitlines()) == 2
    listed = json.loads(ok("list", "--kb", kbfile, "--json"))
    with KnowledgeBase(kbfile) as kb:
        assert listed == [e.to_dict() for e in kb.list()]
        entry = kb.get(ids["glimwick"]).to_dict()
    assert json.loads(ok("show", ids["glimwick"], "--kb", kbfile, "--json")) == entry
    text = ok("show", ids["glimwick"], "--kb", kbfile)
    for part in ("summary: The student used a wrong value for the price of a glimwick.",
                 "  1. A glimwick costs 7 coins.", "source_id:        q1",
                 "teacher:          t-big",
                 "round:            1", "Tom buys 2 glimwicks.", "The answer is 10.",
                 "(enabled, retrieved 0 times)"):
        assert part in text
    assert any(ln.strip().startswith("created:") and ln.count(":") == 3 for ln in text.splitlines())


def test_search_is_the_students_retrieval(kbfile, ids, tmp_path):
    # whole entries, top 1, knowledge only (the main job before it retrieved items)
    cfg = tmp_path / "entries.toml"
    cfg.write_text('[nesycd.retrieval]\ninsert = "knowledge"\n')
    out = ok("search", GLIMWICK_Q, "--kb", kbfile, "--k", 3, "--config", cfg)
    first = out.splitlines()[0]
    assert first.startswith(f" 1. entry {ids['glimwick']}  score ")
    assert "price of a glimwick" in first
    assert "student's knowledge block (bm25, top_k=1):" in out
    # the knowledge items only are inserted (nesycd.retrieval.insert = "knowledge")
    assert out.rstrip().endswith("knowledge block (bm25, top_k=1):\nA glimwick costs 7 coins.")
    got = json.loads(ok("search", GLIMWICK_Q, "--kb", kbfile, "--k", 3, "--json", "--config",
                        cfg))
    with KnowledgeBase(kbfile) as kb:
        r = Retriever(kb, RetrievalSettings(insert="knowledge"), DESCRIPTION)
        want = r.retrieve(GLIMWICK_Q, 3)
        assert got["block"] == r.block(want[:1])
        assert kb.get(ids["glimwick"]).retrieved == 0  # searching is not retrieving
    assert [(h["id"], h["score"]) for h in got["hits"]] == [(e.id, s) for e, s in want]
    scores = [h["score"] for h in got["hits"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    # default k is the config's top_k
    assert len(json.loads(ok("search", GLIMWICK_Q, "--kb", kbfile, "--json", "--config",
                             cfg))["hits"]) == 1
    assert "--method" in fails("search", "x", "--kb", kbfile, "--method", "magic")


def test_disable_hides_from_search_and_enable_restores(kbfile, ids):
    g = ids["glimwick"]
    assert ok("disable", g, "--kb", kbfile, "--note", "wrong price") == f"disabled entry {g}\n"
    assert "already disabled" in ok("disable", g, "--kb", kbfile)
    hits = json.loads(ok("search", GLIMWICK_Q, "--kb", kbfile, "--k", 4, "--json"))["hits"]
    assert g not in [h["id"] for h in hits]
    assert str(g) not in [ln.split()[0] for ln in ok("list", "--kb", kbfile).splitlines()]
    assert ok("list", "--kb", kbfile, "--disabled").split()[:2] == [str(g), "off"]
    assert len(ok("list", "--kb", kbfile, "--all").splitlines()) == 4
    ok("enable", g, "--kb", kbfile)
    hits = json.loads(ok("search", GLIMWICK_Q, "--kb", kbfile, "--json"))["hits"]
    assert hits[0]["id"] == g
    hist = json.loads(ok("history", g, "--kb", kbfile, "--json"))
    assert [(h["action"], h["note"]) for h in hist] == [
        ("add", None), ("disable", "wrong price"), ("enable", None)]
    assert hist[1]["changes"] == {"enabled": [True, False]}


def test_edit_then_history_shows_the_diff(kbfile, ids):
    d = ids["drom"]
    out = ok("edit", d, "--kb", kbfile, "--knowledge", "1 drom is 8 coins.",
             "--note", "teacher was wrong")
    assert '-"1 drom is 7 coins." +"1 drom is 8 coins."' in out
    ok("edit", d, "--kb", kbfile, "--summary", "Convert droms to coins first.")
    text = ok("history", d, "--kb", kbfile)
    assert "edit     note: teacher was wrong" in text
    assert '    knowledge: -"1 drom is 7 coins." +"1 drom is 8 coins."' in text
    assert ('    summary: "The student forgot to convert droms to coins." -> '
            '"Convert droms to coins first."') in text
    hist = json.loads(ok("history", d, "--kb", kbfile, "--json"))
    assert [h["action"] for h in hist] == ["add", "edit", "edit"]
    assert hist[1]["changes"] == {"knowledge": [["1 drom is 7 coins."], ["1 drom is 8 coins."]]}
    assert "changes nothing" in fails("edit", d, "--kb", kbfile)
    assert "summary" in fails("edit", d, "--kb", kbfile, "--summary", " ")


def test_edit_in_editor(kbfile, ids, tmp_path):
    script = tmp_path / "ed.py"
    script.write_text("import json, sys\np = sys.argv[1]\nd = json.load(open(p))\n"
                      "d['knowledge'].append('A toll is paid once per crossing.')\n"
                      "json.dump(d, open(p, 'w'))\n")
    ok("edit", ids["toll"], "--kb", kbfile, "--editor",
       env={"EDITOR": f"{sys.executable} {script}", "VISUAL": ""})
    with KnowledgeBase(kbfile) as kb:
        assert kb.get(ids["toll"]).knowledge == ["The Quillbridge toll is 3 coins.",
                                                 "A toll is paid once per crossing."]
    assert "--editor" in fails("edit", ids["toll"], "--kb", kbfile, "--editor", "--summary", "x")


def test_add_and_remove(kbfile, ids, tmp_path):
    new = tmp_path / "new" / "kb.sqlite"
    assert ok("add", "--kb", new, "--summary", "Rewards are paid in droms.",
              "--knowledge", "A delivery reward is 2 droms.", "--knowledge", "1 drom is 7 coins.",
              "--note", "by hand") == "1\n"
    assert json.loads(ok("show", 1, "--kb", new, "--json"))["knowledge"] == [
        "A delivery reward is 2 droms.", "1 drom is 7 coins."]
    bad = tmp_path / "bad.sqlite"
    assert "summary" in fails("add", "--kb", bad, "--summary", "")
    assert not bad.exists()  # a failed add leaves no new file behind
    c = ids["crate"]
    r = cli("remove", c, "--kb", kbfile, input="n\n")
    assert r.exit_code == 1 and "remove entry" in r.stdout
    assert str(c) in ok("list", "--kb", kbfile)
    assert ok("remove", c, "--kb", kbfile, "--note", "dup", input="y\n").endswith(
        f"removed entry {c}\n")
    ok("remove", ids["toll"], "--kb", kbfile, "--yes")
    assert len(ok("list", "--kb", kbfile, "--all").splitlines()) == 2
    assert "remove   note: dup" in ok("history", c, "--kb", kbfile)  # history outlives the entry


def test_stats(kbfile, ids):
    s = json.loads(ok("stats", "--kb", kbfile, "--json"))
    assert s == {"entries": 4, "enabled": 4, "items": 4, "merged": 0,
                 "by_run": {"r1": 2, "r2": 2},
                 "by_teacher": {"t-big": 2, "t-small": 2}, "retrievals": 3, "sources": 3,
                 "top_retrieved": [
                     {"id": ids["drom"], "retrieved": 2,
                      "summary": "The student forgot to convert droms to coins."},
                     {"id": ids["toll"], "retrieved": 1,
                      "summary": "The student left out the bridge toll."}]}
    text = ok("stats", "--kb", kbfile)
    assert "entries:     4 (4 enabled)" in text and "by teacher:  t-big 2, t-small 2" in text
    assert "3 distinct source examples" in text and "most retrieved:" in text
    assert "items: 4 distinct (0 duplicates merged)" in text


def test_export_import_round_trip_and_markdown(kbfile, ids, tmp_path):
    ok("edit", ids["drom"], "--kb", kbfile, "--knowledge", "1 drom is 8 coins.")
    ok("disable", ids["toll"], "--kb", kbfile)
    dump = tmp_path / "kb.jsonl"
    assert ok("export", dump, "--kb", kbfile) == f"exported 4 entries to {dump}\n"
    copy = tmp_path / "copy" / "kb.sqlite"
    assert "imported 4 entries" in ok("import", dump, "--kb", copy)
    for args in (("list", "--all", "--json"), ("stats", "--json")):
        assert ok(*args, "--kb", copy) == ok(*args, "--kb", kbfile)
    for i in ids.values():
        for cmd in ("show", "history"):
            assert ok(cmd, i, "--kb", copy, "--json") == ok(cmd, i, "--kb", kbfile, "--json")
    md = tmp_path / "kb.md"
    assert ok("markdown", md, "--kb", kbfile) == f"wrote 4 entries to {md}\n"
    text = md.read_text(encoding="utf-8")
    assert f"## Entry {ids['toll']} (disabled)" in text and "1. A glimwick costs 7 coins." in text


def test_corrupt_import_is_all_or_nothing(kbfile, ids, tmp_path):
    dump = tmp_path / "kb.jsonl"
    ok("export", dump, "--kb", kbfile)
    first = json.loads(dump.read_text().splitlines()[0])
    good = json.dumps({**first, "id": 100, "history": None})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good + "\n" + '{"summary": "x", "knowledge": \n')
    msg = fails("import", bad, "--kb", kbfile)
    assert f"{bad}:2" in msg and "invalid JSON" in msg
    bad.write_text(good + "\n\n" + json.dumps({"summary": "x", "knowledge": "not a list"}) + "\n")
    assert f"{bad}:3" in fails("import", bad, "--kb", kbfile) and "knowledge" in fails(
        "import", bad, "--kb", kbfile)
    assert len(ok("list", "--kb", kbfile, "--all").splitlines()) == 4  # nothing was imported
    fresh = tmp_path / "fresh.sqlite"
    assert f"{bad}:3" in fails("import", bad, "--kb", fresh)
    assert not fresh.exists()
    assert "already exists" in fails("import", dump, "--kb", kbfile)
    assert "missing.jsonl: file not found" in fails("import", tmp_path / "missing.jsonl",
                                                    "--kb", kbfile)


def test_bad_ids_and_missing_files(kbfile, ids, tmp_path):
    for args in (("show", 999), ("edit", 999, "--summary", "s"), ("disable", 999),
                 ("enable", 999), ("remove", 999, "--yes"), ("history", 999)):
        msg = fails(*args, "--kb", kbfile)
        assert "no entry 999" in msg and str(kbfile) in msg
    nowhere = tmp_path / "nowhere.sqlite"
    assert str(nowhere) in fails("list", "--kb", nowhere)
    assert not nowhere.exists()
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database " * 100)
    assert "not a knowledge base file" in fails("list", "--kb", junk)
    assert "not both" in fails("list", "--kb", kbfile, "--run", tmp_path)
    assert str(kbfile) in fails("export", kbfile / "x.jsonl", "--kb", kbfile)  # an OSError


def test_run_dir_resolves_its_kb(tmp_path):
    run = tmp_path / "run"
    ids = _build(run / "kb" / "kb.sqlite")
    assert len(ok("list", "--run", run).splitlines()) == 4
    assert str(ids["glimwick"]) in ok("search", GLIMWICK_Q, "--run", run).split()
    assert str(tmp_path / "other" / "kb" / "kb.sqlite") in fails("stats", "--run",
                                                                 tmp_path / "other")
    # an add through --run needs an existing KB: it does not create one in a wrong place
    assert "no such knowledge base" in fails("add", "--run", tmp_path / "other", "--summary", "s")
    # without --kb/--run: the config's run.out
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\nout = "{run.as_posix()}"\n', encoding="utf-8")
    assert ok("list", "--config", cfg) == ok("list", "--run", run)
