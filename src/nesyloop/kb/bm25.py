"""BM25 retrieval over a KB's FTS5 index, in memory, without scoring every matching entry.

SQLite FTS5's ``bm25()`` scores every row that matches any query word and, to weigh each word,
first counts the rows that hold it by walking its whole posting list: with a question's common
words ("how", "many", "coins") that is every entry of the KB, 0.1-0.2 s a query at 10^5 entries.
This index gives the same scores and the same order (FTS5's formula, k1 = 1.2, b = 0.75, its idf
floor of 1e-6, column weights, ties by entry id), read once from the FTS5 index itself (its
``fts5vocab`` instance table, so every token is FTS5's own, porter stems included), and answers a
query by MaxScore: query words sorted by the most they can add to any entry's score; only entries
holding one of the words with the highest bounds are scored, and the set grows until the words
left out cannot lift an unscored entry above the k-th score found. Document frequencies, row
count and average length come from the whole index, as in FTS5.

A query word FTS5 splits into several tokens (a phrase) is left to FTS5 (``None`` from
:meth:`BM25Index.search`). Column weights that are not whole numbers may differ from FTS5's in the
last bit (FTS5 adds a weight once per occurrence; this multiplies).
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading

import numpy as np

K1, B = 1.2, 0.75  # FTS5's bm25() constants
IDF_FLOOR = 1e-6  # FTS5's idf for a word in half the rows or more
COLUMNS = ("summary", "knowledge", "question")  # entries_fts's columns, in order

_tok_lock = threading.Lock()
_tok_db: sqlite3.Connection | None = None
_tok_cache: dict[str, tuple[str, ...]] = {}


def phrases(text: str) -> list[str]:
    """The words of a free-text query as ``KnowledgeBase.search`` sends them to FTS5: distinct,
    lower-cased, bare numbers left out (``store._fts_query`` ORs them as phrases)."""
    return list(dict.fromkeys(w.lower() for w in re.findall(r"\w+", text) if not w.isdigit()))


def tokens(words: list[str]) -> list[tuple[str, ...]]:
    """FTS5's tokens ('porter unicode61', the KB's tokenizer) of each word, cached."""
    global _tok_db
    with _tok_lock:
        new = [w for w in dict.fromkeys(words) if w not in _tok_cache]
        if new:
            if _tok_db is None:
                _tok_db = sqlite3.connect(":memory:", check_same_thread=False)
                _tok_db.execute("CREATE VIRTUAL TABLE t USING fts5(w, tokenize='porter "
                                "unicode61')")
                _tok_db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
            _tok_db.executemany("INSERT INTO t (rowid, w) VALUES (?, ?)",
                                enumerate(new, 1))
            found: dict[int, list[tuple[int, str]]] = {}
            for term, doc, off in _tok_db.execute("SELECT term, doc, offset FROM v"):
                found.setdefault(doc, []).append((off, term))
            _tok_db.execute("DELETE FROM t")
            for i, w in enumerate(new, 1):
                _tok_cache[w] = tuple(t for _, t in sorted(found.get(i, [])))
        return [_tok_cache[w] for w in words]


class BM25Index:
    """A snapshot of a KB's FTS5 index: per token, the rows holding it (sorted) and its count
    in each column; per row, its length in tokens and whether its entry is enabled."""

    def __init__(self, db: sqlite3.Connection):
        rows = db.execute("SELECT id, enabled FROM entries ORDER BY id").fetchall()
        self.ids = np.array([r[0] for r in rows], dtype=np.int64)
        self.enabled = np.array([bool(r[1]) for r in rows], dtype=bool)
        _vocab_tables(db)
        vocab = db.execute("SELECT term, cnt FROM temp.nesy_vocab_row").fetchall()
        packed = np.fromiter(
            (r[0] for r in db.execute(
                "SELECT doc * 4 + CASE col WHEN ? THEN 0 WHEN ? THEN 1 ELSE 2 END "
                "FROM temp.nesy_vocab_inst", COLUMNS[:2])),
            dtype=np.int64, count=sum(c for _, c in vocab))
        self._build(vocab, packed)

    def _build(self, vocab: list, packed: np.ndarray) -> None:
        """Instances (row, column), grouped by token -> postings with per-column counts."""
        pos = np.searchsorted(self.ids, packed >> 2).astype(np.int32)
        col = (packed & 3).astype(np.int8)
        counts = np.array([c for _, c in vocab], dtype=np.int64)
        term_of = np.repeat(np.arange(len(vocab), dtype=np.int32), counts)
        new = np.ones(len(pos), dtype=bool)
        new[1:] = (term_of[1:] != term_of[:-1]) | (pos[1:] != pos[:-1])
        group = np.cumsum(new) - 1
        n = int(group[-1]) + 1 if len(group) else 0
        tf = np.bincount(group * 3 + col, minlength=n * 3).reshape(n, 3)
        self.tf = tf.astype(np.uint16 if tf.size == 0 or tf.max() < 1 << 16 else np.uint32)
        self.doc = pos[new]
        starts = np.searchsorted(term_of[new], np.arange(len(vocab) + 1))
        self.span = {t: (int(starts[i]), int(starts[i + 1])) for i, (t, _) in enumerate(vocab)}
        self.length = np.bincount(pos, minlength=len(self.ids)).astype(np.float64)
        self.n_rows = len(self.ids)
        self.avgdl = float(self.length.sum()) / self.n_rows if self.n_rows else 0.0
        # each row's length term of FTS5's formula, k1 * (1 - b + b * D / avgdl)
        self.norm = K1 * ((1.0 - B) + (B * self.length) / (self.avgdl or 1.0))
        self._fmax: dict[tuple, float] = {}

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (the token table adds about 100 bytes a token)."""
        return sum(a.nbytes for a in (self.ids, self.enabled, self.tf, self.doc, self.length,
                                      self.norm))

    def df(self, term: str) -> int:
        """Rows holding ``term`` (FTS5's phrase hit count)."""
        a, b = self.span.get(term, (0, 0))
        return b - a

    def idf(self, term: str) -> float:
        n = self.df(term)
        v = math.log((self.n_rows - n + 0.5) / (n + 0.5))
        return v if v > 0.0 else IDF_FLOOR

    def _freq(self, rows: np.ndarray | slice, weights: tuple[float, ...]) -> np.ndarray:
        """FTS5's phrase frequency of postings ``rows``: its count in each column, weighted."""
        tf = self.tf[rows]
        return tf[:, 0] * weights[0] + tf[:, 1] * weights[1] + tf[:, 2] * weights[2]

    def _bound(self, term: str, weights: tuple[float, ...]) -> float:
        """The most ``term`` adds to any row's score (its largest frequency, the shortest row)."""
        key = (term, weights)
        if key not in self._fmax:
            a, b = self.span.get(term, (0, 0))
            self._fmax[key] = float(self._freq(slice(a, b), weights).max()) if b > a else 0.0
        f = self._fmax[key]
        return self.idf(term) * (f * (K1 + 1.0)) / (f + K1 * (1.0 - B)) if f > 0 else 0.0

    def _score(self, cand: np.ndarray, terms: list[str], weights: tuple) -> np.ndarray:
        """FTS5's bm25 of the rows ``cand`` (sorted positions), phrase by phrase in query order."""
        score = np.zeros(len(cand))
        norm = self.norm[cand]
        for t in terms:
            a, b = self.span.get(t, (0, 0))
            if b == a:
                continue
            docs = self.doc[a:b]
            j = np.minimum(np.searchsorted(docs, cand), len(docs) - 1)
            hit = docs[j] == cand
            f = self._freq(a + j[hit], weights)
            score[hit] += self.idf(t) * ((f * (K1 + 1.0)) / (f + norm[hit]))
        return score

    def _score_all(self, terms: list[str], weights: tuple, enabled_only: bool
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Every row that holds a query word, and its score: FTS5's own plan, for a query
        whose words all occur in much of the KB (a posting list at a time, no lookups)."""
        score = np.zeros(self.n_rows)
        matched = np.zeros(self.n_rows, dtype=bool)
        for t in terms:
            a, b = self.span.get(t, (0, 0))
            docs, f = self.doc[a:b], self._freq(slice(a, b), weights)
            score[docs] += self.idf(t) * ((f * (K1 + 1.0)) / (f + self.norm[docs]))
            matched[docs] = True
        cand = np.flatnonzero(matched & self.enabled if enabled_only else matched)
        return cand, score[cand]

    def search(self, query: str, k: int, weights: tuple[float, ...], enabled_only: bool = True
               ) -> list[tuple[int, float]] | None:
        """The top ``k`` (entry id, score) pairs, best first, as FTS5's bm25 ORDER BY gives
        them; None when a query word is an FTS5 phrase of several tokens (ask FTS5)."""
        toks = tokens(phrases(query))
        if any(len(t) > 1 for t in toks):
            return None
        terms = [t[0] for t in toks if t]
        if not terms or k <= 0 or not self.n_rows:
            return []
        weights = tuple(float(w) for w in weights)
        bounds = [self._bound(t, weights) for t in terms]
        order = sorted(range(len(terms)), key=lambda i: -bounds[i])
        rest = [sum(bounds[i] for i in order[m:]) for m in range(len(order) + 1)]
        for m in range(1, len(order) + 1):
            essential = [terms[i] for i in order[:m]]
            if sum(self.df(t) for t in essential) > self.n_rows // 8:
                break  # most of the KB: score it all at once
            cand = self._candidates(essential, enabled_only)
            if len(cand) < k:
                continue
            score = self._score(cand, terms, weights)
            top = np.lexsort((self.ids[cand], -score))[:k]
            if rest[m] * (1 + 1e-9) < score[top[-1]]:
                return self._pairs(cand, score, top)
        cand, score = self._score_all(terms, weights, enabled_only)
        return self._pairs(cand, score, np.lexsort((self.ids[cand], -score))[:k])

    def _pairs(self, cand: np.ndarray, score: np.ndarray, top: np.ndarray
               ) -> list[tuple[int, float]]:
        return [(int(self.ids[cand[i]]), float(score[i])) for i in top]

    def _candidates(self, terms: list[str], enabled_only: bool) -> np.ndarray:
        parts = [self.doc[slice(*self.span[t])] for t in terms if t in self.span]
        cand = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int32)
        return cand[self.enabled[cand]] if enabled_only else cand


def _vocab_tables(db: sqlite3.Connection) -> None:
    """fts5vocab views of the KB's index in the connection's temp schema (a read-only KB too)."""
    for name, kind in (("nesy_vocab_row", "row"), ("nesy_vocab_inst", "instance")):
        db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{name} USING "
                   f"fts5vocab(main, entries_fts, '{kind}')")
