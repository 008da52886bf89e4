"""``kb export`` / ``kb import`` keep the items' own state: a disabled item, an edited one, their
histories (notes, times, before/after), and every entry's links, disabled ones included; an
export without items (an older nesyloop's) still imports as before; a bad item line names the
file and line and changes nothing."""

from __future__ import annotations

import copy
import json

import pytest
from typer.testing import CliRunner

from nesyloop.cli import app
from nesyloop.errors import DataError
from nesyloop.kb import KnowledgeBase

PRICE = "A jincloak costs 5 coins."
YARL = "1 yarl is 2 coins."
TOLL = "The bridge toll is 3 coins."
DROM = "A drom is 4 miles long."


def _source(path):
    """A KB with a disabled item (stated by two entries), an edited one (with a note), an item
    an entry edit added later, and a removed entry."""
    kb = KnowledgeBase(path)
    a = kb.add("The student used a wrong jincloak price.", [PRICE, TOLL], source_id="q1")
    b = kb.add("The student forgot the toll.", [TOLL, YARL, DROM], source_id="q2", round=2)
    c = kb.add("Gone.", ["A fact only a removed entry states."])
    kb.add("The student forgot the yarl.", [YARL])
    kb.remove(c)
    kb.set_item_enabled(kb.item_of(TOLL), False, note="the toll was abolished")
    kb.edit_item(kb.item_of(DROM), "A drom is 5 miles long.", note="new map")
    kb.edit(a, knowledge=[PRICE, TOLL, "Jincloaks come in bundles of 2."], note="more")
    kb.set_enabled(b, False, note="misleading")
    return kb


def _links(kb):
    """Each entry's linked items, (text, enabled) in link order."""
    out: dict[int, list] = {}
    for r in kb._db.execute("SELECT l.entry_id, i.text, i.enabled FROM entry_items l JOIN "
                            "items i ON i.id = l.item_id ORDER BY l.entry_id, l.pos"):
        out.setdefault(r[0], []).append((r[1], bool(r[2])))
    return out


def _items(kb):
    """Every item by text: its row and its history, the item's id in both left out (an item
    keeps its text, not its id, from one KB to another)."""
    out = {}
    for it in kb.items():
        history = []
        for h in kb.item_history(it["id"]):
            for side in ("before", "after"):
                if h[side] is not None:
                    assert h[side].pop("id") == it["id"]
            history.append({k: v for k, v in h.items() if k != "item_id"})
        out[it["text"]] = ({k: v for k, v in it.items() if k != "id"}, history)
    return out


def _dump(kb):
    return ([(e.to_dict(), kb.history(e.id)) for e in kb.list()], _links(kb), _items(kb))


def test_round_trip_keeps_disabled_and_edited_items_and_their_history(tmp_path):
    src = _source(tmp_path / "src.sqlite")
    assert src.export_jsonl(tmp_path / "kb.jsonl") == 3
    dst = KnowledgeBase(tmp_path / "dst.sqlite")
    assert dst.import_jsonl(tmp_path / "kb.jsonl") == 3
    assert _dump(dst) == _dump(src)
    toll = dst.items(query="toll")[0]
    assert (toll["text"], toll["enabled"], toll["entries"]) == (TOLL, False, 2)
    assert [(h["action"], h["note"]) for h in dst.item_history(toll["id"])] == [
        ("add", None), ("disable", "the toll was abolished")]
    drom = dst.item(dst.item_of("A drom is 5 miles long."))
    assert [(h["action"], h["note"], h["before"] and h["before"]["text"])
            for h in dst.item_history(drom["id"])] == [
        ("add", None, None), ("edit", "new map", DROM)]
    assert TOLL not in dst.get(1).knowledge
    # the disabled item is linked: enabling it states it again, where the entries stated it
    for kb in (src, dst):
        kb.set_item_enabled(kb.item_of(TOLL), True, note="back")
    assert dst.get(1).knowledge == [PRICE, TOLL, "Jincloaks come in bundles of 2."]
    assert dst.get(2).knowledge == [TOLL, YARL, "A drom is 5 miles long."]
    assert [e.knowledge for e in dst.list()] == [e.knowledge for e in src.list()]
    src.close(), dst.close()


def test_export_states_each_items_state_and_an_unchanged_kb_needs_no_item_lines(tmp_path):
    src = _source(tmp_path / "src.sqlite")
    src.export_jsonl(tmp_path / "kb.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "kb.jsonl").read_text().splitlines()]
    assert [x.get("id") for x in lines] == [1, 2, 4, None, None, None]
    assert lines[0]["items"] == [{"text": PRICE, "enabled": True},
                                 {"text": TOLL, "enabled": False},
                                 {"text": "Jincloaks come in bundles of 2.", "enabled": True}]
    assert lines[0]["knowledge"] == [PRICE, "Jincloaks come in bundles of 2."]
    # an entry whose items are all enabled has no "items": its knowledge states them
    assert all("items" not in x or any(not i["enabled"] for i in x["items"]) for x in lines[:3])
    # item lines: the disabled item, the edited one, the one an edit added after its entry
    assert [(x["item"]["text"], x["item"]["enabled"], [h["action"] for h in x["history"]])
            for x in lines[3:]] == [(TOLL, False, ["add", "disable"]),
                                    ("A drom is 5 miles long.", True, ["add", "edit"]),
                                    ("Jincloaks come in bundles of 2.", True, ["add"])]
    assert all("item_id" not in h for x in lines[3:] for h in x["history"])
    # the import makes an item never changed again from its entry lines: no item line
    plain = KnowledgeBase(tmp_path / "plain.sqlite")
    plain.add_many([{"summary": "s", "knowledge": [PRICE, YARL]}, {"summary": "t",
                                                                  "knowledge": [YARL]}])
    plain.export_jsonl(tmp_path / "plain.jsonl")
    assert [set(json.loads(x)) & {"items", "item"} for x in
            (tmp_path / "plain.jsonl").read_text().splitlines()] == [set(), set()]
    again = KnowledgeBase(tmp_path / "again.sqlite")
    again.import_jsonl(tmp_path / "plain.jsonl")
    assert _dump(again) == _dump(plain)
    src.close(), plain.close(), again.close()


def test_an_export_without_items_still_imports(tmp_path):
    """A file of an older nesyloop: no ``items``, no item lines; its entries' knowledge makes
    the items, all enabled, each with its "add" history row."""
    src = _source(tmp_path / "src.sqlite")
    src.export_jsonl(tmp_path / "kb.jsonl")
    old = [json.loads(x) for x in (tmp_path / "kb.jsonl").read_text().splitlines()]
    old = [{k: v for k, v in x.items() if k != "items"} for x in old if "item" not in x]
    old.append({"summary": "Without history.", "knowledge": [YARL, "A new fact."]})
    (tmp_path / "old.jsonl").write_text("".join(json.dumps(x) + "\n" for x in old))
    dst = KnowledgeBase(tmp_path / "dst.sqlite")
    assert dst.import_jsonl(tmp_path / "old.jsonl") == 4
    assert [e.to_dict() for e in dst.list()][:3] == [e.to_dict() for e in src.list()]
    assert [h["action"] for h in dst.history(5)] == ["import"]
    assert dst.get(5).knowledge == [YARL, "A new fact."]
    assert all(it["enabled"] for it in dst.items()) and dst.item_of(TOLL) is None
    assert all([h["action"] for h in dst.item_history(it["id"])] == ["add"]
               for it in dst.items())
    src.close(), dst.close()


def test_an_item_the_kb_has_keeps_its_row_and_gets_the_imported_history(tmp_path):
    src = _source(tmp_path / "src.sqlite")
    src.export_jsonl(tmp_path / "kb.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "kb.jsonl").read_text().splitlines()]
    for x in lines:
        x.pop("id", None)  # new entries here, not a clash of ids
    (tmp_path / "new.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    dst = KnowledgeBase(tmp_path / "dst.sqlite")
    dst.add("Already here.", [TOLL])
    toll = dst.item_of(TOLL)
    row, history = dst.item(toll), dst.item_history(toll)
    assert dst.import_jsonl(tmp_path / "new.jsonl") == 3
    after = dst.item(toll)
    assert {k: after[k] for k in ("text", "enabled", "created", "updated")} == \
        {k: row[k] for k in ("text", "enabled", "created", "updated")}
    assert len(after["entries"]) == 3
    added = dst.item_history(toll)[len(history):]
    assert dst.item_history(toll)[:len(history)] == history
    assert [(h["action"], h["note"]) for h in added] == [
        ("add", None), ("disable", "the toll was abolished")]
    assert all(h["after"]["id"] == toll for h in added)
    assert TOLL in dst.get(2).knowledge  # enabled here: this KB's item decides
    src.close(), dst.close()


ENTRY = {"summary": "s", "knowledge": ["k"], "items": [{"text": "k", "enabled": True},
                                                      {"text": "off", "enabled": False}]}
ITEM = {"item": {"text": "off", "enabled": False, "created": 1.0, "updated": 2.0},
        "history": [{"at": 1.0, "action": "add", "before": None, "after": None, "note": None},
                    {"at": 2.0, "action": "disable", "before": None, "after": None,
                     "note": "n"}]}
BAD_LINES = {
    "no text": ({"item": {"enabled": False}}, "item: field 'text' must be a non-empty string"),
    "text not a string": ({"item": {"text": 5}}, "item: field 'text' must be a non-empty"),
    "enabled not bool": ({"item": {**ITEM["item"], "enabled": "no"}},
                         "item: field 'enabled' must be true or false"),
    "created not a number": ({"item": {**ITEM["item"], "created": "monday"}},
                             "item: field 'created' must be a finite number"),
    "item not an object": ({"item": "off"}, "item line: field 'item' must be an object"),
    "unknown item field": ({"item": {**ITEM["item"], "colour": 1}},
                           "item: unknown field 'colour'"),
    "unknown line field": ({**ITEM, "extra": 1}, "item line: unknown field 'extra'"),
    "history not a list": ({**ITEM, "history": {}}, "field 'history' must be a list"),
    "entry action": ({**ITEM, "history": [{"at": 1.0, "action": "remove"}]},
                     "history[0].action must be one of add, edit, disable, enable"),
    "history without time": ({**ITEM, "history": [{"action": "add"}]},
                             "history[0].at must be a finite number"),
    "no entry states it": ({"item": {"text": "Nobody says this."}},
                           "item 'Nobody says this.': no entry line states it"),
    "enabled here": ({**ITEM, "item": {"text": "off", "enabled": True}},
                     "item 'off' is disabled here but enabled on line 3"),
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_a_bad_item_line_names_file_and_line_and_changes_nothing(tmp_path, case):
    line, message = BAD_LINES[case]
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    kb.add("Here before.", ["k", "off"])
    kb.set_item_enabled(kb.item_of("off"), False)
    before = _dump(kb)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(x) + "\n" for x in (ENTRY, {"summary": "t",
                                                               "knowledge": ["k"]}, line)))
    with pytest.raises(DataError) as err:
        kb.import_jsonl(bad)
    where = 1 if case == "enabled here" else 3  # the entry line contradicts the item line
    assert f"bad.jsonl:{where}: {message}" in str(err.value), str(err.value)
    assert _dump(kb) == before
    # the same file with a good item line imports
    bad.write_text("".join(json.dumps(x) + "\n" for x in (ENTRY, ITEM)))
    fresh = KnowledgeBase(tmp_path / "fresh.sqlite")
    assert fresh.import_jsonl(bad) == 1
    off = fresh.item(fresh.item_of("off"))
    assert (off["enabled"], off["created"], off["updated"]) == (False, 1.0, 2.0)
    assert [h["note"] for h in fresh.item_history(off["id"])] == [None, "n"]
    kb.close(), fresh.close()


@pytest.mark.parametrize("lines, where, message", [
    ([{**ENTRY, "knowledge": ["k", "off"]}], 1, "field 'knowledge' must be the texts of the "
                                                "enabled items of field 'items'"),
    ([{**ENTRY, "items": [{"text": ""}]}], 1, "entry: field 'items' item 1: field 'text'"),
    ([{**ENTRY, "items": [{"text": "k", "on": True}]}], 1,
     "entry: field 'items' item 1: unknown field 'on'"),
    ([{**ENTRY, "items": "k"}], 1, "entry: field 'items' must be a list of objects"),
    ([ENTRY, {"summary": "t", "knowledge": ["off."]}], 2,
     "item 'off.' is enabled here but disabled on line 1"),
    ([ENTRY, ITEM, ITEM], 3, "item 'off' is also on line 2"),
])
def test_a_bad_entry_line_or_contradiction_is_refused(tmp_path, lines, where, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(x) + "\n" for x in lines))
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    with pytest.raises(DataError, match=f"bad.jsonl:{where}: .*{message}"):
        kb.import_jsonl(bad)
    assert kb.list() == [] and kb.items() == []
    kb.close()


def test_the_fast_line_check_agrees_with_every_check_on_items():
    """An entry line's items take the fast path only when every check would pass them, and
    then give the same entry."""
    from nesyloop.kb.store import _import_line, _plain_line

    odd = [None, [], "k", [None], [{}], [{"text": ""}], [{"text": " "}], [{"text": 1}],
           [{"text": "k"}], [{"text": "k", "enabled": 1}], [{"text": "k", "enabled": None}],
           [{"text": "k", "x": 1}], [{"text": "x" * 20_001}], [{"text": "k"}] * 101,
           [{"text": "k", "enabled": True}, {"text": "off", "enabled": False}],
           [{"text": "off", "enabled": False}, {"text": "k"}], [{"text": "K"}]]
    accepted = 0
    for items in odd:
        d = {"summary": "s", "knowledge": ["k"], "items": items}

        def outcome(checked):
            try:
                e, h, off = _import_line(copy.deepcopy(d), checked=checked)
                return e.to_dict(), h, off
            except DataError as err:
                return str(err)
        if _plain_line(d):
            accepted += 1
            assert outcome(True) == outcome(False), items
        elif items is not None:
            assert isinstance(outcome(False), str), items
    assert accepted >= 5


def test_cli_round_trip_keeps_a_disabled_item(tmp_path):
    src = _source(tmp_path / "src.sqlite")
    src.close()
    run = CliRunner().invoke
    out = run(app, ["kb", "export", str(tmp_path / "kb.jsonl"), "--kb",
                    str(tmp_path / "src.sqlite")])
    assert out.exit_code == 0 and "exported 3 entries" in out.output
    out = run(app, ["kb", "import", str(tmp_path / "kb.jsonl"), "--kb",
                    str(tmp_path / "dst.sqlite")])
    assert out.exit_code == 0, out.output
    with KnowledgeBase(tmp_path / "dst.sqlite") as dst, \
            KnowledgeBase(tmp_path / "src.sqlite") as src:
        assert _dump(dst) == _dump(src)
