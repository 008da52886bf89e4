"""Knowledge items stated once (kb/itemstore.py): duplicates merge, an item edit or disable
reaches every entry and block that states it, history records it once, version-1 files
migrate; through the API and the ``nesyloop kb`` commands, on real SQLite files."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from nesyloop.cli import app
from nesyloop.errors import DataError, NesyloopError
from nesyloop.kb import KnowledgeBase
from nesyloop.kb.itemstore import item_key
from nesyloop.kb.retrieve import RetrievalSettings, Retriever
from nesyloop.kb.store import SCHEMA, open_kb

PRICE = "A jincloak costs 5 coins."
YARL = "1 yarl is 2 coins."


def _kb(path):
    kb = KnowledgeBase(path)
    a = kb.add("The student used a wrong jincloak price.", [PRICE, YARL], source_id="q1", round=1)
    b = kb.add("The student forgot the jincloak price.", ["a jincloak  costs 5 coins"],
               source_id="q2", round=2)
    c = kb.add("The student forgot the yarl.", [YARL, YARL], source_id="q3", round=2)
    return kb, (a, b, c)


def cli(*args):
    return CliRunner().invoke(app, ["kb", *map(str, args)], env={"COLUMNS": "100"})


def test_item_key_ignores_case_spacing_and_final_period():
    assert item_key("A jincloak  costs 5 coins.") == item_key("a jincloak costs 5 coins")
    assert item_key("A jincloak costs 5 coins.") != item_key("A jincloak costs 6 coins.")


def test_duplicates_merge_with_their_provenance(tmp_path):
    kb, (a, b, c) = _kb(tmp_path / "kb.sqlite")
    with kb:
        # 4 links (the repeat inside one entry is dropped) to 2 items
        assert kb.item_counts() == {"items": 2, "merged": 2}
        assert kb.get(b).knowledge == [PRICE]  # the first wording is the item's text
        assert kb.get(c).knowledge == [YARL]  # stated twice in one entry: once
        price = kb.item(kb.item_of(PRICE))
        assert [(e["id"], e["source_id"], e["round"]) for e in price["entries"]] == [
            (a, "q1", 1), (b, "q2", 2)]
        assert "jincloak price" in price["entries"][0]["summary"]
        assert [i["text"] for i in kb.items(query="JINCLOAK")] == [PRICE]


def test_an_item_edit_reaches_every_entry_and_block_and_is_logged_once(tmp_path):
    kb, (a, b, c) = _kb(tmp_path / "kb.sqlite")
    with kb:
        ret = Retriever(kb, RetrievalSettings(top_k=2, insert="knowledge"))
        q = "Ivo buys 2 jincloaks. How many coins does he pay?"
        assert PRICE in ret.block(ret.retrieve(q))
        before = kb.version()
        entry_history = [len(kb.history(i)) for i in (a, b, c)]
        pid = kb.item_of(PRICE)
        kb.edit_item(pid, "A jincloak costs 8 coins.", note="new season")
        assert kb.get(a).knowledge == ["A jincloak costs 8 coins.", YARL]
        assert kb.get(b).knowledge == ["A jincloak costs 8 coins."]
        ret = Retriever(kb, RetrievalSettings(top_k=2, insert="knowledge"))
        assert "costs 8 coins" in ret.block(ret.retrieve(q)) and "costs 5" not in ret.block(
            ret.retrieve(q))
        items = Retriever(kb, RetrievalSettings(unit="item", top_k=2, insert="knowledge"))
        assert items.block(items.retrieve(q)).startswith("A jincloak costs 8 coins.")
        assert kb.version() != before  # predictions keyed on the KB rerun
        assert [len(kb.history(i)) for i in (a, b, c)] == entry_history  # not per entry
        assert [h["action"] for h in kb.item_history(pid)] == ["add", "edit"]
        assert kb.item_history(pid)[-1]["before"]["text"] == PRICE
        with pytest.raises(DataError, match=f"already states .*disable item {pid}"):
            kb.edit_item(pid, YARL)
        kb.set_item_enabled(pid, False)
        assert kb.get(a).knowledge == [YARL] and kb.get(b).knowledge == []
        assert "jincloak" not in (ret.block(ret.retrieve(q)) or "")
        kb.set_item_enabled(pid, True)
        assert kb.get(b).knowledge == ["A jincloak costs 8 coins."]


def test_an_entry_edit_relinks_its_items(tmp_path):
    kb, (a, b, c) = _kb(tmp_path / "kb.sqlite")
    with kb:
        kb.edit(a, knowledge=["1 yarl is 2 coins", "A brell is 4 coins."])
        assert kb.get(a).knowledge == [YARL, "A brell is 4 coins."]
        assert [e["id"] for e in kb.item(kb.item_of(PRICE))["entries"]] == [b]
        pid = kb.item_of(PRICE)
        kb.remove(b)  # no entry states the price any more: the item goes, its history stays
        assert kb.item_of(PRICE) is None and kb.item_history(pid)[0]["action"] == "add"
        assert kb.item_counts() == {"items": 2, "merged": 1}


def _v1(path, rows):
    db = sqlite3.connect(path)
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            db.execute(stmt)
    for i, knowledge in enumerate(rows, 1):
        db.execute("INSERT INTO entries (summary, knowledge, enabled, created, updated) "
                   "VALUES (?,?,1,?,?)", (f"error {i}", json.dumps(knowledge), i, i))
        db.execute("INSERT INTO entries_fts (rowid, summary, knowledge, question) VALUES "
                   "(?,?,?,'')", (i, f"error {i}", "\n".join(knowledge)))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()


def test_a_version_1_file_migrates_when_opened_for_writing(tmp_path):
    path = tmp_path / "old.sqlite"
    _v1(path, [[PRICE, YARL], ["a jincloak costs 5 coins."], [YARL]])
    with pytest.raises(NesyloopError, match="schema version 1 .* nesyloop kb migrate --kb"):
        open_kb(path)  # read-only: never written, so it says how to migrate
    r = cli("stats", "--kb", path)
    assert r.exit_code == 2 and "nesyloop kb migrate" in r.stderr and "\n" not in r.stderr.strip()
    r = cli("migrate", "--kb", path)
    assert r.exit_code == 0 and "items: 2 distinct (2 duplicates merged)" in r.stdout
    with open_kb(path) as kb:
        assert [e.knowledge for e in kb.list()] == [[PRICE, YARL], [PRICE], [YARL]]
        assert kb.search("jincloak", k=3)[0][0].id in (1, 2)
    assert "items: 2 distinct (2 duplicates merged)" in cli("stats", "--kb", path).stdout


def test_item_commands(tmp_path):
    path = tmp_path / "kb.sqlite"
    kb, (a, b, c) = _kb(path)
    kb.close()
    out = cli("items", "--kb", path).stdout
    assert PRICE in out and "2x" in out and len(out.splitlines()) == 2
    pid = json.loads(cli("items", "jincloak", "--kb", path, "--json").stdout)[0]["id"]
    r = cli("item-edit", pid, "--text", "A jincloak costs 8 coins.", "--note", "price list",
            "--kb", path)
    assert r.exit_code == 0 and "2 entries state it" in r.stdout
    shown = cli("item", pid, "--kb", path).stdout
    assert "costs 8 coins" in shown and "source_id q2 round 2" in shown
    assert "'A jincloak costs 5 coins.' -> 'A jincloak costs 8 coins.'" in shown
    assert "note: price list" in shown
    assert cli("item-disable", pid, "--kb", path).stdout.startswith(f"disabled item {pid}")
    assert "costs 8" not in cli("items", "--kb", path).stdout
    assert "off" in cli("items", "--kb", path, "--all").stdout
    assert cli("show", b, "--kb", path, "--json").stdout.count("costs 8") == 0
    r = cli("item-edit", 999, "--text", "x", "--kb", path)
    assert r.exit_code == 2 and "no item 999" in r.stderr


def test_item_retrieval_prefers_the_item_that_names_more_of_the_question(tmp_path):
    """After the bundle of brinmelons covers "brinmelon", "keg" is covered by the keg *of
    brinmelons*; the plain greedy cover (``item_shared = 0``) takes whichever keg item comes
    first, here the keg of bralgourds, so the block misses a fact the question needs."""
    bundle = "A bundle of brinmelons holds 4 brinmelons."
    other_keg = "A keg of bralgourds holds 2 bralgourds."
    own_keg = "A keg of brinmelons holds 6 brinmelons."
    q = "Priya buys 4 bundles of brinmelons. She sells 2 kegs of brinmelons. How many now?"
    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        kb.add("e1", [bundle])
        kb.add("e2", [other_keg])
        kb.add("e3", [own_keg])
        kb.add("e4", ["A jar of bralgourds holds 5 bralgourds."])  # "bralgourd" is not rare

        def block(shared):
            r = Retriever(kb, RetrievalSettings(unit="item", top_k=2, insert="knowledge",
                                                item_shared=shared))
            return r.block(r.retrieve(q))

        assert block(0.5) == f"{bundle} {own_keg}"
        assert block(0.0) == f"{bundle} {other_keg}"


@pytest.mark.parametrize("plural, single", [("jars", "jar"), ("boxes", "box"),
                                            ("pouches", "pouch"), ("zelberries", "zelberry"),
                                            ("glasses", "glass"), ("horses", "horse")])
def test_item_retrieval_finds_a_fact_stated_in_the_singular(tmp_path, plural, single):
    """A question's plural finds the item that names the thing in the singular ("2 boxes of
    nibgourds": "A box of nibgourds holds 8 nibgourds."). Dropping only a final "s" made
    "boxes" "boxe" and "zelberries" "zelberrie", and retrieval took another item."""
    from nesyloop.kb.items import singular

    assert singular(plural) == singular(single) == single
    fact = f"A {single} of nibgourds holds 8 nibgourds."
    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        kb.add("e1", ["A tray of nibgourds holds 3 nibgourds."])
        kb.add("e2", [fact])
        kb.add("e3", [f"A {single} of tibbnuts holds 2 tibbnuts."])
        r = Retriever(kb, RetrievalSettings(unit="item", top_k=1, insert="knowledge"))
        assert r.block(r.retrieve(f"Dario buys 2 {plural} of nibgourds. How many now?")) == fact


_TIE = r'''
import sys
from nesyloop.kb.items import Item, ItemIndex
ix = ItemIndex.__new__(ItemIndex)
# two items whose words' weights add up to the same score in exact arithmetic; a float sum in
# set order gives 0.6 or 0.6000000000000001 depending on the order the set is walked in
ix.idf = {"alpha": 0.1, "bravo": 0.2, "charlie": 0.3, "delta": 0.3, "echo": 0.2, "foxtrot": 0.1}
ix.items = [Item("first", frozenset({"alpha", "bravo", "charlie"}), [1]),
            Item("second", frozenset({"delta", "echo", "foxtrot"}), [2])]
print(ix.search("alpha bravo charlie delta echo foxtrot", k=1)[0][0].text)
'''


def test_item_ties_do_not_depend_on_the_hash_seed():
    """Retrieval gave other blocks in another process (Python salts string hashes, so a set of
    words is walked in another order and a float sum rounds otherwise): a run's blocks, and
    the students trained on them, did not reproduce. Ties now go to the item listed first."""
    import os
    import subprocess
    import sys

    picks = set()
    for seed in range(12):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        out = subprocess.run([sys.executable, "-c", _TIE], env=env, capture_output=True,
                             text=True, check=True)
        picks.add(out.stdout.strip())
    assert picks == {"first"}
