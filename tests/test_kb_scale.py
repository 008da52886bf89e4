"""The KB at scale: the in-memory BM25 index gives FTS5's entries and scores, follows every
change, and bulk writes (import, add_many) store what one-by-one writes stored."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest

from nesyloop.errors import DataError
from nesyloop.kb.bm25 import BM25Index, tokens
from nesyloop.kb.retrieve import RetrievalSettings, Retriever
from nesyloop.kb.store import INDEX_AFTER, KnowledgeBase
from nesyloop.tasks.bazaar import DESCRIPTION, BazaarSettings, build_world, generate_splits

WEIGHTS = [(1.0, 1.0, 0.0), (1.0, 1.0, 0.5), (2.0, 1.0, 1.0), (0.5, 0.25, 0.0)]


def _rows(n: int, seed: int = 0) -> list[dict]:
    """Error-analysis-shaped entries over the Bazaar world's real fact sentences."""
    world = build_world(0)
    facts = list(world.by_id.values())
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fs = rng.sample(facts, rng.choice((1, 1, 2, 3)))
        out.append(dict(summary="The student did not state the facts it needs. Recall each "
                                "fact the problem needs before computing with it.",
                        knowledge=[f.sentence for f in fs], source_id=f"train-{i}",
                        question=f"Omar has {i} coins. How many coins does Omar have?"))
    return out


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    kb = KnowledgeBase(tmp_path_factory.mktemp("kb") / "kb.sqlite")
    kb.add_many(_rows(600))
    for i in range(1, 600, 9):
        kb.set_enabled(i, False)
    yield kb
    kb.close()


@pytest.fixture(scope="module")
def questions():
    splits = generate_splits(BazaarSettings(train=0, dev=60, test=60, test_rare=30,
                                            test_deep=30))
    qs = [ex.question for name in ("dev", "test", "test-rare", "test-deep")
          for ex in splits[name]]
    return [f"{DESCRIPTION}\n{q}" for q in qs] + [
        "", "zzz unknown", "the the the", "How many coins?", "crate", "Crates of coins!"]


def _pairs(hits):
    return [(e.id, s) for e, s in hits]


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("k", [1, 5])
def test_index_gives_fts5s_entries_and_scores(kb, questions, weights, k):
    new = kb.search_many(questions, k, weights=weights)
    old = [kb._fts_search(q, k, True, weights) for q in questions]
    assert [_pairs(h) for h in new] == [_pairs(h) for h in old]  # same floats, not close ones
    assert sum(bool(h) for h in new) > len(questions) * 0.9


def test_index_with_disabled_entries_included(kb, questions):
    new = kb.search_many(questions, 3, enabled_only=False)
    old = [kb._fts_search(q, 3, False, (1.0, 1.0, 0.0)) for q in questions]
    assert [_pairs(h) for h in new] == [_pairs(h) for h in old]
    assert any(not e.enabled for hits in new for e, _ in hits)


def test_a_word_fts5_splits_into_several_tokens_is_left_to_fts5(kb):
    assert tokens(["crate_of"]) == [("crate", "of")]
    index = kb._bm25_index()
    assert index.search("crate_of zelberries", 3, (1.0, 1.0, 0.0)) is None
    assert _pairs(kb.search_many(["crate_of berries"], 3)[0]) == \
        _pairs(kb._fts_search("crate_of berries", 3, True, (1.0, 1.0, 0.0)))


def test_stemmed_tokens_are_fts5s(kb):
    assert tokens(["Crates", "holds", "berries", "Ünïcode"]) == [
        ("crate",), ("hold",), ("berri",), ("unicod",)]


def test_index_follows_edits_and_other_connections(tmp_path, questions):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    kb.add_many(_rows(80, seed=3))
    q = questions[0]
    assert kb.search_many([q], 1) and kb._bm25 is None  # a few queries: FTS5, no index
    many = [q] * INDEX_AFTER

    def top() -> int:
        return kb.search_many(many, 1)[0][0][0].id

    first = top()
    assert kb._bm25 is not None
    kb.edit(first, knowledge=["Nothing about the question here."])
    assert top() != first
    built = kb._bm25
    kb.mark_retrieved([first])  # a counter, not content: the index stays
    assert top() and kb._bm25 is built
    assert kb.search(q, 1)[0][0].id == top()  # one search reads the fresh index
    other = KnowledgeBase(tmp_path / "kb.sqlite")  # another connection removes the top entry
    best = top()
    other.remove(best)
    other.close()
    assert kb.search(q, 1)[0][0].id != best  # not the stale index
    assert top() != best and kb._bm25 is not built
    kb.close()


def test_retriever_reads_through_the_index(kb, questions):
    r = Retriever(kb, RetrievalSettings(top_k=2), DESCRIPTION)
    hits = r.retrieve_many(questions[:20], exclude=[{1, 2, 3}] * 20)
    for q, h in zip(questions[:20], hits, strict=True):
        want = [x for x in kb._fts_search(f"{DESCRIPTION}\n{q}", 5, True, (1.0, 1.0, 0.0))
                if x[0].id not in {1, 2, 3}][:2]
        assert _pairs(h) == _pairs(want)
    assert isinstance(kb._bm25[0], BM25Index)


def _dump(path) -> dict:
    db = sqlite3.connect(path)
    out = {t: db.execute(f"SELECT {cols} FROM {t} ORDER BY 1, 2").fetchall() for t, cols in (
        ("entries", "id, summary, knowledge, source_id, question, enabled"),
        ("items", "id, text, key, enabled"), ("entry_items", "entry_id, pos, item_id"),
        ("item_history", "item_id, action, json_extract(after, '$.text')"),
        ("history", "entry_id, action, json_extract(after, '$.knowledge')"),
        ("entries_fts", "rowid, knowledge"))}
    db.close()
    return out


def test_add_many_stores_what_add_stored(tmp_path):
    rows = _rows(40, seed=5)
    rows[3]["knowledge"] = rows[3]["knowledge"] + ["  " + rows[3]["knowledge"][0].upper() + " "]
    one = KnowledgeBase(tmp_path / "one.sqlite")
    for r in rows[:10]:
        one.add(**r)
    one.set_item_enabled(1, False)  # a disabled item stays out of the entries added next
    for r in rows[10:]:
        one.add(**r)
    many = KnowledgeBase(tmp_path / "many.sqlite")
    many.add_many(rows[:10])
    many.set_item_enabled(1, False)
    assert many.add_many(rows[10:]) == list(range(11, 41))
    one.close(), many.close()
    a, b = _dump(tmp_path / "one.sqlite"), _dump(tmp_path / "many.sqlite")
    assert a == b
    assert len(a["items"]) < sum(len(r["knowledge"]) for r in rows)  # items were merged


def test_bulk_import_round_trip_and_all_or_nothing(tmp_path):
    src = KnowledgeBase(tmp_path / "src.sqlite")
    src.add_many(_rows(50, seed=7))
    src.remove(4)
    src.edit(9, summary="Edited by a person.")
    src.export_jsonl(tmp_path / "kb.jsonl")
    src.close()
    dst = KnowledgeBase(tmp_path / "dst.sqlite")
    assert dst.import_jsonl(tmp_path / "kb.jsonl") == 49
    assert dst.add("After the import.", ["A new fact."]) == 51  # ids continue after the file's
    assert [h["action"] for h in dst.history(9)] == ["add", "edit"]
    lines = (tmp_path / "kb.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:30] + [lines[5]]) + "\n")  # a repeated id on line 31
    fresh = KnowledgeBase(tmp_path / "fresh.sqlite")
    with pytest.raises(DataError, match=r"bad.jsonl:31: entry id \d+ is also on line 6"):
        fresh.import_jsonl(bad)
    assert fresh.list() == [] and fresh.items() == []  # nothing half-written
    with pytest.raises(DataError, match=r"kb.jsonl:1: entry id 1 already exists"):
        dst.import_jsonl(tmp_path / "kb.jsonl")
    assert len(dst.list()) == 50
    fresh.close(), dst.close()


def test_add_many_refuses_an_unknown_field(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    with pytest.raises(DataError, match=r"unknown entry field\(s\) \['colour'\]"):
        kb.add_many([{"summary": "s", "knowledge": ["k"], "colour": "red"}])
    with pytest.raises(DataError, match="knowledge"):
        kb.add_many([{"summary": "s"}])
    assert kb.list() == []
    kb.close()


def test_export_line_is_json(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    kb.add_many(_rows(3))
    kb.export_jsonl(tmp_path / "x.jsonl")
    assert all(json.loads(line)["history"] for line in
               (tmp_path / "x.jsonl").read_text().splitlines())
    kb.close()


ODD_VALUES = [None, "", "  ", "x" * 20_001, "café", "caf\udce9", 0, 1, -1, 1.5, True, False,
              2 ** 63 - 1, 2 ** 63, -2 ** 63, -2 ** 63 - 1, 2 ** 70, 1e300, float("nan"),
              float("inf"), [], ["k"], ["k"] * 101, ["k", 2], ["", "k"], ["café"], {"a": 1}]


def test_the_fast_entry_check_accepts_only_what_every_check_accepts():
    """A bulk import checks a plain entry in one pass (store._plain) and sends anything else
    through the checks that name the fault: the fast one must never accept what they refuse,
    and must accept the ordinary entries an import is made of."""
    from nesyloop.kb.store import FIELDS, _plain, check_entry_dict

    base = {"summary": "s", "knowledge": ["k"]}
    cases = [base, {**base, "colour": "red"}, {"knowledge": ["k"]}]
    cases += [{**base, f: v} for f in FIELDS for v in ODD_VALUES]
    accepted = 0
    for d in cases:
        try:
            check_entry_dict(d)
            valid = True
        except DataError:
            valid = False
        assert valid or not _plain(d), d
        accepted += _plain(d)
        # orjson's texts are valid UTF-8 (it refuses a lone surrogate): the import's check
        # then takes non-ASCII texts too
        texts = [*d.values(), *(d["knowledge"] if isinstance(d.get("knowledge"), list) else [])]
        surrogate = any(isinstance(v, str) and not _encodes(v) for v in texts)
        assert valid or surrogate or not _plain(d, utf8=True), d
    assert accepted > 40
    assert _plain({**base, "summary": "café"}, utf8=True)
    assert not _plain({**base, "summary": "café"})
    exported = {**_rows(1)[0], "id": 7, "round": 2, "enabled": False, "created": 1.7e9,
                "updated": 1700000000, "retrieved": 3, "run": "r", "teacher": "t"}
    assert all(_plain(d) for d in (*_rows(20), exported))


def test_the_fast_line_check_accepts_only_what_every_check_accepts():
    """The same for a whole import line (an entry and its exported history)."""
    import copy

    from nesyloop.kb.store import _import_line, _plain_line

    entry = {"summary": "s", "knowledge": ["k"], "id": 1, "created": 1.0}
    ok = {"entry_id": 1, "at": 1.7e9, "action": "edit", "before": entry, "after": entry,
          "note": None}
    odd = {"at": [None, "1", 2 ** 63, 1e300, True], "action": [None, "shout", 1],
           "note": [1, "n"], "before": [1, [], {}, {**entry, "colour": 1}, {"summary": "s"}],
           "after": [None, "x", {**entry, "id": 2 ** 70}], "extra": [1]}
    cases = [{**entry, "history": h} for h in ([], None, {}, [ok], [ok, 1], [[ok]])]
    cases += [{**entry, "history": [{**ok, k: v}]} for k, vs in odd.items() for v in vs]
    cases += [{**entry, "history": [{k: v for k, v in ok.items() if k != drop}]}
              for drop in ok]
    accepted = 0
    for d in cases:
        try:
            _import_line(copy.deepcopy(d))
            valid = True
        except DataError:
            valid = False
        assert valid or not _plain_line(d), d
        accepted += _plain_line(d)
    assert accepted >= 5


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def test_a_line_the_fast_reader_misreads_is_read_again(tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_text('{"summary": "s", "knowledge": ["k"], "created": 1e300}\n'
                   '{"summary": "s", "knowledge": ["k"], "id": 9223372036854775807}\n')
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    assert kb.import_jsonl(src) == 2
    assert [e.created for e in kb.list()][0] == 1e300
    assert kb.list()[1].id == 2 ** 63 - 1
    kb.close()


def test_str_list_json_is_the_standard_librarys():
    from nesyloop.io import dumps_str_list

    for texts in ([], ["a"], ['A "q" é \u2028 \\ x\ty', "b\n", "\x00\x1f"]):
        assert dumps_str_list(texts) == json.dumps(texts, ensure_ascii=False)


def _wal(path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_bulk_import_writes_pages_once_and_keeps_the_wal(tmp_path):
    """Alone with the file, an import writes through a rollback journal (not every page to the
    WAL and again at the checkpoint) and the file is back in WAL mode after it; with another
    connection open it writes through the WAL, without waiting; a failed one writes nothing."""
    src = KnowledgeBase(tmp_path / "src.sqlite")
    src.add_many(_rows(1500, seed=3))
    src.export_jsonl(tmp_path / "kb.jsonl")
    src.close()
    mode = "PRAGMA journal_mode"
    alone = KnowledgeBase(tmp_path / "alone.sqlite")
    assert alone.import_jsonl(tmp_path / "kb.jsonl") == 1500
    size = (tmp_path / "alone.sqlite").stat().st_size
    assert size > 1_000_000 and _wal(tmp_path / "alone.sqlite") < size / 20
    assert alone._db.execute(mode).fetchone()[0] == "wal"
    alone.close()
    shared = KnowledgeBase(tmp_path / "shared.sqlite")
    reader = KnowledgeBase(tmp_path / "shared.sqlite", readonly=True)
    assert shared.import_jsonl(tmp_path / "kb.jsonl") == 1500
    assert _wal(tmp_path / "shared.sqlite") > size / 2  # the other connection kept the WAL
    assert len(reader.list()) == 1500 and shared._db.execute(mode).fetchone()[0] == "wal"
    reader.close(), shared.close()
    bad = tmp_path / "bad.jsonl"
    bad.write_text((tmp_path / "kb.jsonl").read_text() + '{"summary": ""}\n')
    fresh = KnowledgeBase(tmp_path / "fresh.sqlite")
    with pytest.raises(DataError, match=r"bad.jsonl:1501: entry: field 'summary'"):
        fresh.import_jsonl(bad)
    assert fresh.list() == [] and fresh._db.execute(mode).fetchone()[0] == "wal"
    fresh.close()
