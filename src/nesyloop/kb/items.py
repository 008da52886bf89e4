"""Retrieval of knowledge *items* instead of whole entries (``[nesycd.retrieval] unit =
"item"``).

An entry carries the facts of the error it came from, not of the question asked; a question that
needs three facts rarely finds them in one entry. Here every distinct enabled knowledge item is
a document (case and spacing ignored; it remembers the entries that state it), and a question
gets up to ``k`` items chosen greedily: each pick is the item whose words cover the most of the
question's words not yet covered, weighted by inverse document frequency, so a second item adds
what the first did not (a currency after a price). Among items that cover the same new words,
the one that also names more of the question's other words wins (those count ``shared``, the
``item_shared`` retrieval setting): after "A bundle of brinmelons holds 4 brinmelons.", the word
"keg" of "2 kegs of brinmelons" is covered by the keg *of brinmelons*, not by "A keg of
bralgourds holds 2 bralgourds." (on Bazaar's dev-rare, blocks stated every needed fact for 85.5%
of the questions without this, 97.5% with). Words are lower-cased and plurals made singular
(:func:`singular`: "jars" finds "jar", "boxes" "box", "zelberries" "zelberry").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .store import Entry, KnowledgeBase

STOP = frozenset("a an the of is are was to and or in on at by for from with how many much does "
                 "do did have has had now what which who he she they it its his her their more "
                 "than then each every after before there this that be".split())


def singular(w: str) -> str:
    """An English plural's singular, by its ending: "-ies" is "-y", "-es" after ss, x, z, ch or
    sh is dropped, else a final "s" (not "ss") of a word over three letters. Until 2026-12-02
    only the final "s" was dropped, so "boxes" did not find "box" nor "zelberries" "zelberry":
    blocks stated every needed fact for 97.0% of Bazaar's dev questions and 90.5% of
    dev-drift's, 100.0% of both with this (the main job's seed-0 joined KB)."""
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("es") and w[:-2].endswith(("ss", "x", "z", "ch", "sh")):
        return w[:-2]
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


def words(text: str) -> set[str]:
    return {singular(w) for w in re.findall(r"[a-z0-9]+", text.lower())
            if w not in STOP and not w.isdigit()}


@dataclass
class Item:
    text: str
    words: frozenset[str]
    entry_ids: list[int]  # the entries that state it (first: the oldest)


class ItemIndex:
    """The distinct knowledge items of a KB's enabled entries, for greedy item retrieval."""

    def __init__(self, kb: KnowledgeBase):
        seen: dict[str, Item] = {}
        for e in kb.list(enabled_only=True):
            assert e.id is not None  # stored entries have ids
            for raw in e.knowledge:
                text = " ".join(raw.split())
                if not text:
                    continue
                if text.lower() not in seen:
                    seen[text.lower()] = Item(text, frozenset(words(text)), [])
                seen[text.lower()].entry_ids.append(e.id)
        self.items = list(seen.values())
        df: dict[str, int] = {}
        for it in self.items:
            for w in it.words:
                df[w] = df.get(w, 0) + 1
        n = max(1, len(self.items))
        self.idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}

    def search(self, query: str, k: int, exclude: Iterable[int] = (),
               shared: float = 0.5) -> list[tuple[Item, float]]:
        """Up to ``k`` items, each covering the most idf-weighted query words left uncovered
        (among equal scores, the item listed first); items stated only by ``exclude``d entries
        are left out."""
        asked = {w for w in words(query) if w in self.idf}
        left = set(asked)
        banned = set(exclude)
        pool = [it for it in self.items if not set(it.entry_ids) <= banned] if banned \
            else self.items
        picked: list[tuple[Item, float]] = []
        while left and len(picked) < k:
            best, score = None, 0.0
            for it in pool:
                new = it.words & left
                if not new:
                    continue
                # fsum: exactly rounded, so the score does not depend on the order a set of
                # words is walked in (it changes with PYTHONHASHSEED) and ties stay ties
                s = math.fsum(self.idf[w] for w in new) \
                    + shared * math.fsum(self.idf[w] for w in (it.words & asked) - new)
                if s > score:
                    best, score = it, s
            if best is None:
                break
            picked.append((best, score))
            left -= best.words
        return picked

    def search_many(self, queries: Sequence[str], k: int, exclude: Sequence[set[int]],
                    shared: float = 0.5) -> list[list[tuple[Entry, float]]]:
        """:meth:`search` per query, each item as an :class:`Entry` holding it alone (the id of
        the oldest entry that states it, so retrieval counts and attribution name entries)."""
        return [[(Entry(summary="", knowledge=[it.text],
                        id=next(i for i in it.entry_ids if i not in ex)), s)
                 for it, s in self.search(q, k, ex, shared)]
                for q, ex in zip(queries, exclude, strict=True)]
