"""Filters for synthesised problems: exact and near duplicates of the pool, and n-gram overlap
with the evaluation splits (so no test item leaks into training).

Texts are compared as lower-cased word sequences (punctuation dropped, numbers kept).
Near duplicates: Jaccard similarity of word 3-gram sets at or above a threshold, found with
MinHash and banding (numpy), then confirmed exactly. Leakage: an exact copy of an evaluation
item, or a text most of whose word n-grams occur in one evaluation item (see
:class:`LeakageIndex`); a text shorter than n words is one n-gram of its own.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_PRIME = (1 << 61) - 1


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    return " ".join(words(text))


def ngrams(text: str, n: int) -> set[str]:
    w = words(text)
    if len(w) < n:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


def _h(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") % _PRIME


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDuplicateIndex:
    """Exact and near-duplicate lookup over a growing set of texts."""

    def __init__(self, threshold: float = 0.8, shingle: int = 3, hashes: int = 64, seed: int = 0):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold, self.shingle = threshold, shingle
        # bands x rows: a pair with Jaccard s becomes a candidate with prob 1 - (1 - s^r)^b
        self.rows = 4 if threshold >= 0.7 else 2
        self.bands = hashes // self.rows
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _PRIME, size=self.bands * self.rows, dtype=np.uint64)
        self.b = rng.integers(0, _PRIME, size=self.bands * self.rows, dtype=np.uint64)
        self.exact: dict[str, int] = {}
        self.shingles: list[set[str]] = []
        self.buckets: dict[tuple[int, bytes], list[int]] = {}

    def _signature(self, sh: set[str]) -> np.ndarray:
        x = np.array([_h(s) for s in sh] or [0], dtype=np.uint64)
        # (a * x + b) mod p on uint64 wraps; fine for hashing (not a universal family proof)
        return ((x[:, None] * self.a[None, :] + self.b[None, :]) % np.uint64(_PRIME)).min(0)

    def _keys(self, sig: np.ndarray) -> list[tuple[int, bytes]]:
        r = self.rows
        return [(i, sig[i * r:(i + 1) * r].tobytes()) for i in range(self.bands)]

    def find(self, text: str) -> tuple[str, int] | None:
        """``("exact", idx)`` or ``("near", idx)`` of an indexed text it duplicates, or None."""
        norm = normalize(text)
        if norm in self.exact:
            return "exact", self.exact[norm]
        sh = ngrams(text, self.shingle)
        seen: set[int] = set()
        for key in self._keys(self._signature(sh)):
            for j in self.buckets.get(key, ()):
                if j not in seen:
                    seen.add(j)
                    if jaccard(sh, self.shingles[j]) >= self.threshold:
                        return "near", j
        return None

    def add(self, text: str) -> int:
        idx = len(self.shingles)
        self.exact.setdefault(normalize(text), idx)
        sh = ngrams(text, self.shingle)
        self.shingles.append(sh)
        for key in self._keys(self._signature(sh)):
            self.buckets.setdefault(key, []).append(idx)
        return idx

    def add_all(self, texts: Iterable[str]) -> None:
        for t in texts:
            self.add(t)


class LeakageIndex:
    """Word n-grams of every evaluation item, for the contamination check.

    A text leaks when it equals an evaluation item (after normalisation) or when at least
    ``threshold`` of its n-grams occur in one evaluation item. Candidate items are found through
    n-grams shared by at most ``common`` items (template phrases shared by many items identify
    none), then the overlap is computed exactly against each candidate's n-grams."""

    def __init__(self, items: Iterable[tuple[str, str]], n: int = 8, threshold: float = 0.8,
                 common: int = 50):
        """``items``: (label, text) pairs, e.g. ("test-deep/bazaar-test-deep-00042", question)."""
        if n < 1:
            raise ValueError(f"leakage n-gram length must be >= 1, got {n}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"leakage threshold must be in (0, 1], got {threshold}")
        self.n, self.threshold, self.common = n, threshold, common
        self.labels: list[str] = []
        self.grams: list[set[str]] = []
        self.exact: dict[str, int] = {}
        self.index: dict[str, list[int]] = {}
        for label, text in items:
            i = len(self.labels)
            self.labels.append(label)
            self.grams.append(ngrams(text, n))
            self.exact.setdefault(normalize(text), i)
            for g in self.grams[i]:
                self.index.setdefault(g, []).append(i)

    def overlap(self, text: str) -> tuple[str, float] | None:
        """``(label, fraction of the text's n-grams in that item)`` of the evaluation item the
        text leaks, or None."""
        norm = normalize(text)
        if norm in self.exact:
            return self.labels[self.exact[norm]], 1.0
        gs = ngrams(text, self.n)
        if not gs:
            return None
        cands = {i for g in gs for i in self.index.get(g, ()) if len(self.index[g]) <= self.common}
        best = max(((len(gs & self.grams[i]) / len(gs), i) for i in cands), default=(0.0, -1))
        if best[0] >= self.threshold:
            return self.labels[best[1]], round(best[0], 3)
        return None
