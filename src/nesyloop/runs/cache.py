"""Every teacher request cached individually in SQLite, shared across runs.

Key: backend kind, model identity, messages or prompt, and generation settings. Value: the
completion texts and token counts. Each request is committed as soon as it returns, so a killed
run re-run from scratch issues no request twice; failed requests are not stored (a re-run
retries them). The ``issued`` table logs every request that
really reached a backend (a cache miss), which is how tests prove that nothing was asked twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..costs.budget import Budget, Prices, Usage, worst_case
from ..errors import DataError
from ..gen.base import BaseBackend, Backend, Completion, Request, run_all

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
    settings = request.settings.model_dump(mode="json")
    if settings.get("top_logprobs") is None:  # keys from before logprobs existed stay valid
        settings.pop("top_logprobs", None)
    body = {
        "messages": [list(m) for m in request.messages] if request.messages is not None else None,
        "prompt": request.prompt,
        "settings": settings,
    }
    blob = json.dumps(
        {"backend": backend.kind, "model": backend_identity(backend), **body}, sort_keys=True
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest(), json.dumps(body, sort_keys=True)


def check_cache_path(path: Path) -> None:
    """A request cache path that is a folder is refused (one line)."""
    if path.is_dir():
        raise DataError(f"request cache {path}: is a folder; run.cache (or "
                        f"$NESYLOOP_CACHE) names the SQLite file")


class RequestCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        check_cache_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            # commits reach the WAL without an fsync each: one survives a killed process (not
            # a power cut), and a reply's commit no longer stalls the requests in flight
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._db.commit()
        except sqlite3.DatabaseError as err:  # not a database, or cannot be opened
            raise DataError(f"request cache {self.path}: {err} (run.cache or "
                            f"$NESYLOOP_CACHE names it)") from None

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
    """Wraps any backend: hits come from the cache (free); misses go to the backend and each
    successful reply is stored (committed) as soon as it returns. Failed replies (``error``
    set) are returned but never cached, so a re-run retries them.

    Backends with real async I/O and a ``concurrency`` (the OpenAI-compatible one) get one task
    per miss: each reserves its worst-case cost against ``budget`` when it is issued; once the
    next one could exceed the cap nothing more is issued, the ones in flight finish and are
    cached, and :class:`BudgetExceeded` is raised. Other backends get their misses in chunks of
    ``chunk_size`` (a local model batches them), each chunk reserved as a whole."""

    def __init__(self, backend: Backend, cache: RequestCache, run: str | None = None,
                 chunk_size: int = 16, prices: Prices | None = None, budget: Budget | None = None):
        self.inner = backend
        self.kind = backend.kind
        self.model = backend.model
        self.cache_id = backend_identity(backend)
        self.cache = cache
        self.run = run
        self.chunk_size = max(1, chunk_size)
        self.prices = prices or Prices()
        self.budget = budget
        self.usage = Usage()
        self.failed_keys: list[str] = []
        self.on_done: Callable[[int], None] | None = None  # progress: n more requests answered

    def postfix(self) -> str:
        """The progress bar's live cost: ``$0.0123 (cap $1.00) 45.2k tok``."""
        u = self.usage
        cap = self.budget.cap if self.budget is not None else None
        s = f"${u.cost_usd:.4f}" + (f" (cap ${cap:.2f})" if cap is not None else "")
        s += f" {(u.prompt_tokens + u.completion_tokens) / 1000:.1f}k tok"
        return s + (f" {u.requests_failed} failed" if u.requests_failed else "")

    def _lookup(self, requests: list[Request]):
        keys = [request_key(self.inner, r) for r in requests]
        out: list[Completion | None] = [self.cache.get(k) for k, _ in keys]
        hits = sum(c is not None for c in out)
        self.usage.requests_cached += hits
        if hits and self.on_done is not None:
            self.on_done(hits)
        return keys, out, [i for i, c in enumerate(out) if c is None]

    def _worst(self, request: Request) -> float:
        return self.prices.cost(*worst_case(request))

    def _store(self, keys, out, idx, comps) -> None:
        for i, comp in zip(idx, comps, strict=True):
            out[i] = comp
            if comp.error is not None:  # not cached: a re-run asks again
                self.usage.requests_failed += 1
                self.usage.first_error = self.usage.first_error or comp.error
                self.failed_keys.append(keys[i][0])
            else:
                key, body = keys[i]
                self.cache.put(key, self.inner, body, comp, self.run)
                cost = self.prices.cost(comp.prompt_tokens, comp.completion_tokens)
                u = self.usage
                u.requests_issued += 1
                u.prompt_tokens += comp.prompt_tokens
                u.completion_tokens += comp.completion_tokens
                u.cost_usd += cost
                if self.budget is not None:
                    self.budget.spend(cost)
        if self.on_done is not None:
            self.on_done(len(idx))

    @property
    def per_request(self) -> bool:
        """Whether misses go out one request each, up to the backend's ``concurrency`` (an
        HTTP teacher), rather than in chunks: a caller then hands over all its requests at
        once (roles/base.py: run_role), so that none waits for another's batch."""
        return hasattr(self.inner, "concurrency") and hasattr(self.inner, "run_sync")

    def generate(self, requests: list[Request]) -> list[Completion]:
        if self.per_request:
            return self.inner.run_sync(self.agenerate(list(requests)))  # type: ignore[attr-defined]
        keys, out, todo = self._lookup(requests)
        for idx in self._chunks(todo):
            with self._reserved([requests[i] for i in idx]):
                comps = self.inner.generate([requests[i] for i in idx])
            self._store(keys, out, idx, comps)
        return out  # type: ignore[return-value]

    def _chunks(self, todo: list[int]) -> list[list[int]]:
        return [todo[s:s + self.chunk_size] for s in range(0, len(todo), self.chunk_size)]

    @contextmanager
    def _reserved(self, chunk: list[Request]) -> Iterator[None]:
        """Hold the chunk's worst-case cost against the budget while it is in flight (raises
        :class:`BudgetExceeded` when it does not fit under the cap)."""
        if self.budget is None:
            yield
            return
        worst = sum(self._worst(r) for r in chunk)
        if not self.budget.reserve(worst):
            raise self.budget.exceeded()
        try:
            yield
        finally:
            self.budget.release(worst)

    async def agenerate(self, requests: list[Request]) -> list[Completion]:
        keys, out, todo = self._lookup(requests)
        if not self.per_request:
            for idx in self._chunks(todo):
                with self._reserved([requests[i] for i in idx]):
                    comps = await self.inner.agenerate([requests[i] for i in idx])
                self._store(keys, out, idx, comps)
            return out  # type: ignore[return-value]
        sem = asyncio.Semaphore(max(1, int(getattr(self.inner, "concurrency", 1))))
        budget = self.budget

        async def one(i: int) -> None:
            async with sem:
                worst = self._worst(requests[i]) if budget is not None else 0.0
                if budget is not None and not budget.reserve(worst):
                    return  # over the cap: not issued
                try:
                    comps = await self.inner.agenerate([requests[i]])
                finally:
                    if budget is not None:
                        budget.release(worst)
                self._store(keys, out, [i], comps)

        await run_all([one(i) for i in todo])
        if budget is not None and budget.stopped:
            raise budget.exceeded()
        return out  # type: ignore[return-value]
