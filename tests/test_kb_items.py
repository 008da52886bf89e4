"""Item retrieval (``[nesycd.retrieval] unit = "item"``): distinct knowledge items, chosen
greedily to cover the question's words."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nesyloop.kb.items import ItemIndex, words
from nesyloop.kb.retrieve import RetrievalSettings, Retriever, knowledge_text
from nesyloop.kb.store import KnowledgeBase

Q = "Tariq has 4 brells. He pays the Rookpass toll. He buys 2 jincloaks. How many coins now?"


@pytest.fixture
def kb(tmp_path):
    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        ids = {
            "price": kb.add("Recall prices.", ["A jincloak costs 5 coins.",
                                               "The Larkbridge toll is 4 coins."]),
            "brell": kb.add("Recall currency values.", ["1 brell is 4 coins."]),
            "toll": kb.add("Recall tolls.", ["The Rookpass toll is 6 coins.",
                                             "A jincloak costs 5 coins."]),  # stated twice
            "jar": kb.add("Recall containers.", ["A jar of bralpears holds 3 bralpears."]),
        }
        yield kb, ids


def test_words_drop_stop_words_numbers_and_plural_s():
    assert words("How many jars of bralpears does Ines buy for 12 coins?") == \
        {"jar", "bralpear", "ine", "buy", "coin"}


def test_greedy_items_cover_each_fact_a_question_needs(kb):
    store, ids = kb
    index = ItemIndex(store)
    assert len(index.items) == 5  # the jincloak price is one item, stated by two entries
    got = [it.text for it, _ in index.search(Q, k=5)]
    assert set(got) == {"1 brell is 4 coins.", "The Rookpass toll is 6 coins.",
                        "A jincloak costs 5 coins."}  # and nothing unrelated: greedy stops
    # entry retrieval, top-1, gives one entry's items only
    entry = Retriever(store, RetrievalSettings(insert="knowledge")).retrieve(Q)
    assert len(entry) == 1 and len(entry[0][0].knowledge) <= 2


def test_item_hits_name_entries_and_honour_exclusions(kb):
    store, ids = kb
    r = Retriever(store, RetrievalSettings(unit="item", top_k=3))
    hits = r.retrieve("How many coins do 2 jincloaks cost?")
    assert [e.knowledge for e, _ in hits] == [["A jincloak costs 5 coins."]]
    assert hits[0][0].id == ids["price"]  # the oldest entry that states it
    hits = r.retrieve("How many coins do 2 jincloaks cost?", exclude=[ids["price"]])
    assert hits[0][0].id == ids["toll"]  # still stated by another entry
    hits = r.retrieve("How many coins do 2 jincloaks cost?", exclude=[ids["price"], ids["toll"]])
    assert all("jincloak" not in e.knowledge[0] for e, _ in hits)
    block = knowledge_text([e for e, _ in r.retrieve(Q)], "summary+knowledge")
    assert block is not None and "Recall" not in block  # items carry no summary
    store.set_enabled(ids["brell"], False)
    assert "brell" not in (knowledge_text([e for e, _ in
                                           Retriever(store, r.settings).retrieve(Q)]) or "")


def test_item_unit_needs_bm25():
    with pytest.raises(ValidationError, match="unit 'item'.*method must be 'bm25'"):
        RetrievalSettings(unit="item", method="dense")
