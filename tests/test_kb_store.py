"""The NesyCD knowledge base store, on real SQLite files."""

from __future__ import annotations

import json
import threading

import pytest

from nesyloop.errors import DataError, NesyloopError
from nesyloop.kb import Entry, KnowledgeBase

QUESTION = "Mira buys 3 crates of zelberries. How many zelberries does she have now?"


def _bazaar(kb: KnowledgeBase) -> dict[str, int]:
    return {
        "crate": kb.add("Count fruit per crate before multiplying.",
                        ["A crate of zelberries holds 6 zelberries."], source_id="q1",
                        question="Tom has 2 crates of zelberries.", teacher="t-big", run="r1",
                        round=1),
        "drom": kb.add("Convert droms to coins first.", ["1 drom is 7 coins."], source_id="q2",
                       teacher="t-big", run="r1", round=1),
        "toll": kb.add("Add the bridge toll to the trip cost.",
                       ["The Quillbridge toll is 3 coins."], source_id="q3", teacher="t-small",
                       run="r2", round=2),
    }


def test_add_get_list_and_stats(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    ids = _bazaar(kb)
    e = kb.get(ids["crate"])
    assert e.knowledge == ["A crate of zelberries holds 6 zelberries."]
    assert (e.source_id, e.teacher, e.run, e.round, e.enabled) == ("q1", "t-big", "r1", 1, True)
    assert Entry.from_dict(e.to_dict()) == e
    assert [x.id for x in kb.list()] == sorted(ids.values())
    with pytest.raises(NesyloopError, match=r"kb .*kb\.sqlite: no entry 999"):
        kb.get(999)
    with pytest.raises(DataError, match="knowledge"):
        kb.add("s", "not a list")  # type: ignore[arg-type]
    kb.mark_retrieved([ids["drom"], ids["drom"], ids["toll"]])
    assert kb.stats() == {"entries": 3, "enabled": 3, "items": 3, "merged": 0,
                          "by_run": {"r1": 2, "r2": 1},
                          "by_teacher": {"t-big": 2, "t-small": 1}, "retrievals": 3}
    # the file is a plain, reopenable SQLite file with a schema version
    kb.close()
    again = KnowledgeBase(tmp_path / "kb.sqlite")
    assert again.get(ids["drom"]).retrieved == 2


def test_edit_records_history_and_disable_remove(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    ids = _bazaar(kb)
    eid = ids["drom"]
    kb.edit(eid, knowledge=["1 drom is 8 coins."], note="teacher was wrong")
    assert kb.get(eid).knowledge == ["1 drom is 8 coins."]
    hist = kb.history(eid)
    assert [h["action"] for h in hist] == ["add", "edit"]
    assert hist[1]["before"]["knowledge"] == ["1 drom is 7 coins."]
    assert hist[1]["after"]["knowledge"] == ["1 drom is 8 coins."]
    assert hist[1]["note"] == "teacher was wrong" and hist[0]["before"] is None
    assert kb.search("8 coins drom", k=3)[0][0].id == eid  # FTS follows the edit

    kb.set_enabled(eid, False)
    assert eid not in [e.id for e, _ in kb.search("drom coins", k=3)]
    assert eid in [e.id for e, _ in kb.search("drom coins", k=3, enabled_only=False)]
    assert [e.id for e in kb.list(enabled_only=True)] == [ids["crate"], ids["toll"]]
    kb.set_enabled(eid, True)
    assert kb.search("drom", k=1)[0][0].id == eid

    kb.remove(eid)
    with pytest.raises(NesyloopError, match="no entry"):
        kb.get(eid)
    assert kb.search("drom", k=3) == []
    assert [h["action"] for h in kb.history(eid)] == ["add", "edit", "disable", "enable", "remove"]
    with pytest.raises(NesyloopError, match="no entry"):
        kb.edit(eid, summary="x")


def test_search_ranks_right_fact_first_and_survives_punctuation(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    ids = _bazaar(kb)
    hits = kb.search(QUESTION, k=3)
    assert hits[0][0].id == ids["crate"]
    assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:]))  # higher score = better
    assert kb.search("toll at the Quillbridge?", k=1)[0][0].id == ids["toll"]
    for q in ['"crate', "(zelberries", 'a "b" OR (c) NEAR*? -drom: ^x', "AND", "NOT OR",
              "crate's price?!", "{zel}berries [3]"]:
        kb.search(q, k=3)
    assert kb.search("", k=3) == [] and kb.search("?!() \"'", k=3) == []


def test_export_import_roundtrip_is_lossless(tmp_path):
    kb = KnowledgeBase(tmp_path / "a.sqlite")
    ids = _bazaar(kb)
    kb.edit(ids["crate"], summary="Multiply crates by 6. «ü»", note="n")
    kb.set_enabled(ids["toll"], False)
    kb.mark_retrieved([ids["crate"]])
    kb.remove(ids["drom"])
    assert kb.export_jsonl(tmp_path / "kb.jsonl") == 2

    kb2 = KnowledgeBase(tmp_path / "b.sqlite")
    assert kb2.import_jsonl(tmp_path / "kb.jsonl") == 2

    def dump(k):
        return [(e.to_dict(), k.history(e.id)) for e in k.list()]
    assert dump(kb2) == dump(kb)
    assert kb2.search(QUESTION)[0][0].id == ids["crate"]
    # importing the same entries again clashes on ids and changes nothing
    with pytest.raises(DataError, match=r"kb\.jsonl:1: entry id"):
        kb2.import_jsonl(tmp_path / "kb.jsonl")
    assert dump(kb2) == dump(kb)


def test_malformed_import_names_file_and_line_and_changes_nothing(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    _bazaar(kb)
    before = [e.to_dict() for e in kb.list()]
    good = json.dumps({"summary": "new", "knowledge": ["k"]})
    cases = {
        "bad_json.jsonl": [good, "", "{not json"],
        "bad_field.jsonl": [good, "", json.dumps({"summary": "s", "knowledge": "oops"})],
        "bad_hist.jsonl": [good, json.dumps({"summary": "s", "knowledge": [],
                                             "history": [{"action": "zap", "at": 1}]})],
    }
    expect = {"bad_json.jsonl": 3, "bad_field.jsonl": 3, "bad_hist.jsonl": 2}
    for name, lines in cases.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        with pytest.raises(DataError) as err:
            kb.import_jsonl(tmp_path / name)
        assert f"{name}:{expect[name]}:" in str(err.value) and "\n" not in str(err.value)
        assert [e.to_dict() for e in kb.list()] == before
    # a line without history is imported with an "import" history row
    (tmp_path / "ok.jsonl").write_text(good + "\n")
    assert kb.import_jsonl(tmp_path / "ok.jsonl") == 1
    new = kb.list()[-1]
    assert new.summary == "new" and [h["action"] for h in kb.history(new.id)] == ["import"]


def test_concurrent_reader_sees_old_or_new_never_partial(tmp_path):
    path = tmp_path / "kb.sqlite"
    kb = KnowledgeBase(path)
    eid = kb.add("alpha 0", ["alpha fact 0"])
    reader = KnowledgeBase(path)  # a second connection, as another process would have
    stop, errors, seen = threading.Event(), [], set()

    def read():
        try:
            while not stop.is_set():
                for word in ("alpha", "beta"):
                    for e, _ in reader.search(word, k=1):
                        s_word, n = e.summary.split()
                        assert s_word == word, "FTS index and entry out of sync"
                        assert e.knowledge == [f"{word} fact {n}"], "partial edit seen"
                        seen.add(int(n))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    t = threading.Thread(target=read)
    t.start()
    for n in range(1, 41):
        word = "alpha" if n % 2 == 0 else "beta"
        kb.edit(eid, summary=f"{word} {n}", knowledge=[f"{word} fact {n}"])
    stop.set()
    t.join(5)
    assert not errors, errors
    assert reader.get(eid).summary == "alpha 40"  # the last edit is visible immediately
    assert seen


def test_markdown_export(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    ids = _bazaar(kb)
    kb.set_enabled(ids["toll"], False)
    kb.export_markdown(tmp_path / "kb.md")
    md = (tmp_path / "kb.md").read_text()
    assert "Count fruit per crate before multiplying." in md
    assert "1. A crate of zelberries holds 6 zelberries." in md
    assert f"## Entry {ids['toll']} (disabled)" in md and "run `r2`" in md


def test_not_a_kb_file(tmp_path):
    (tmp_path / "junk.sqlite").write_text("this is not sqlite" * 100)
    with pytest.raises(NesyloopError, match="junk.sqlite: not a knowledge base"):
        KnowledgeBase(tmp_path / "junk.sqlite")


def test_open_kb_reads_only_and_refuses_what_is_not_a_kb(tmp_path):
    import sqlite3

    from nesyloop.kb.store import open_kb

    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        kb.add("A dozen is 12 items.", ["Multiply dozens by 12."])
    with open_kb(tmp_path / "kb.sqlite") as kb:
        assert [e.id for e in kb.list()] == [1]
        with pytest.raises(NesyloopError, match="opened read-only"):
            kb.add("s", ["k"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kb.sqlite"]  # no -wal/-shm left
    with pytest.raises(NesyloopError, match="no such knowledge base file"):
        open_kb(tmp_path / "new.sqlite")
    assert not (tmp_path / "new.sqlite").exists()
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.close()
    data = other.read_bytes()
    for opener in (open_kb, KnowledgeBase):  # a writable open never adds our tables either
        with pytest.raises(NesyloopError, match="other tables: t"):
            opener(other)
        assert other.read_bytes() == data


def test_entry_limits_hold_for_the_store_and_the_teacher_parser(tmp_path):
    from nesyloop.kb.parse import parse_analysis
    from nesyloop.kb.store import MAX_TEXT_CHARS

    huge = "y" * (MAX_TEXT_CHARS + 1)
    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        for summary, knowledge, needle in (
                ("s", ["ok", " "], "'knowledge' item 2 must be a non-empty string"),
                ("s", [huge], "'knowledge' item 1 is 20,001 characters long"),
                (huge, [], "'summary' is 20,001 characters long"),
                ("caf\udce9", [], "'summary' is not valid UTF-8")):
            with pytest.raises(DataError, match=needle):
                kb.add(summary, knowledge)
        assert kb.list() == []
    reply = parse_analysis(f"Learning summary: check units.\nSupplementary knowledge:\n1. {huge}")
    assert reply.reason == f"a text longer than {MAX_TEXT_CHARS} characters"
    assert parse_analysis("Learning summary: check units.\nSupplementary knowledge:\n1. x").ok
