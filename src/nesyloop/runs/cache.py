"""Every teacher request cached individually in SQLite, shared across runs.

Key: backend kind, model identity, messages or prompt, and generation settings. Value: the
completion texts and token counts. Each request is committed as soon as it returns, so a killed
run re-run from scratch issues no request twice. The ``issued`` table logs every request that
really reached a backend (a cache miss), which is how tests prove that nothing was asked twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from ..gen.base import BaseBackend, Backend, Completion, Request

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
  key TEXT PRIMARY KEY, backend TEXT NOT NULL, model TEXT NOT NULL, request TEXT NOT NULL,
  texts TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
  created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS issued (key TEXT NOT NULL, run TEXT, at REAL NOT NULL);
"""


def default_cache_path() -> Path:
    env = os.environ.get("NESYLOOP_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nesyloop" / "requests.sqlite"


def backend_identity(backend: Backend) -> str:
    return getattr(backend, "cache_id", None) or backend.model


def request_key(backend: Backend, request: Request) -> tuple[str, str]:
    body = {
        "messages": [list(m) for m in request.messages] if request.messages is not None else None,
        "prompt": request.prompt,
        "settings": request.settings.model_dump(mode="json"),
    }
    blob = json.dumps(
        {"backend": backend.kind, "model": backend_identity(backend), **body}, sort_keys=True
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest(), json.dumps(body, sort_keys=True)


class RequestCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._db.commit()

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT texts, prompt_tokens, completion_tokens FROM requests WHERE key=?", (key,)
            ).fetchone()
        if row is None:
            return None
        return Completion(texts=json.loads(row[0]), prompt_tokens=row[1],
                          completion_tokens=row[2], cached=True)

    def put(self, key: str, backend: Backend, request_json: str, comp: Completion,
            run: str | None = None) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO requests VALUES (?,?,?,?,?,?,?,?)",
                (key, backend.kind, backend_identity(backend), request_json,
                 json.dumps(comp.texts, ensure_ascii=False), comp.prompt_tokens,
                 comp.completion_tokens, now),
            )
            self._db.execute("INSERT INTO issued VALUES (?,?,?)", (key, run, now))
            self._db.commit()

    def issued_counts(self) -> dict[str, int]:
        """How many times each key really reached a backend (should be 1 for every key)."""
        with self._lock:
            rows = self._db.execute("SELECT key, COUNT(*) FROM issued GROUP BY key").fetchall()
        return dict(rows)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedBackend(BaseBackend):
    """Wraps any backend: hits come from the cache; misses go to the backend in chunks and are
    stored one request at a time as soon as their chunk returns."""

    def __init__(self, backend: Backend, cache: RequestCache, run: str | None = None,
                 chunk_size: int = 16):
        self.inner = backend
        self.kind = backend.kind
        self.model = backend.model
        self.cache_id = backend_identity(backend)
        self.cache = cache
        self.run = run
        self.chunk_size = max(1, chunk_size)
        self.hits = 0
        self.misses = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def _lookup(self, requests: list[Request]):
        keys = [request_key(self.inner, r) for r in requests]
        out: list[Completion | None] = [self.cache.get(k) for k, _ in keys]
        return keys, out

    def _store(self, keys, out, idx, comps) -> None:
        for i, comp in zip(idx, comps, strict=True):
            key, body = keys[i]
            self.cache.put(key, self.inner, body, comp, self.run)
            out[i] = comp
            self.misses += 1
            self.prompt_tokens += comp.prompt_tokens
            self.completion_tokens += comp.completion_tokens

    def generate(self, requests: list[Request]) -> list[Completion]:
        keys, out = self._lookup(requests)
        todo = [i for i, c in enumerate(out) if c is None]
        self.hits += len(requests) - len(todo)
        for s in range(0, len(todo), self.chunk_size):
            idx = todo[s:s + self.chunk_size]
            comps = self.inner.generate([requests[i] for i in idx])
            self._store(keys, out, idx, comps)
        return out  # type: ignore[return-value]

    async def agenerate(self, requests: list[Request]) -> list[Completion]:
        keys, out = self._lookup(requests)
        todo = [i for i, c in enumerate(out) if c is None]
        self.hits += len(requests) - len(todo)
        for s in range(0, len(todo), self.chunk_size):
            idx = todo[s:s + self.chunk_size]
            comps = await self.inner.agenerate([requests[i] for i in idx])
            self._store(keys, out, idx, comps)
        return out  # type: ignore[return-value]
