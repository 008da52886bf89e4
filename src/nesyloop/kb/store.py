"""NesyCD knowledge base storage: one SQLite file per student, copyable and inspectable.

Each entry is what the teacher wrote after analysing a wrong student answer: a learning summary
plus a short list of supplementary knowledge, with provenance. Every change is one transaction
that also writes the FTS5 index and a ``history`` row, so readers on other connections (WAL)
see the old or the new entry, never a mix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import DataError, NesyloopError
from ..io import atomic_write_text, iter_jsonl

SCHEMA_VERSION = 1
ACTIONS = ("add", "edit", "disable", "enable", "remove", "import")
SCHEMA = """
CREATE TABLE entries (
  id INTEGER PRIMARY KEY AUTOINCREMENT, summary TEXT NOT NULL, knowledge TEXT NOT NULL,
  source_id TEXT, question TEXT, student_response TEXT, teacher TEXT, run TEXT, round INTEGER,
  enabled INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
  retrieved INTEGER NOT NULL DEFAULT 0);
CREATE TABLE history (entry_id INTEGER NOT NULL, at REAL NOT NULL, action TEXT NOT NULL,
  before TEXT, after TEXT, note TEXT);
CREATE INDEX history_entry ON history(entry_id);
CREATE VIRTUAL TABLE entries_fts USING fts5(summary, knowledge, question,
  tokenize='porter unicode61');
"""
# BM25 column weights (summary, knowledge, source question): by default the source question is
# searchable (FTS5 ``question:`` filters) but does not rank, so a shared name ("Omar has ...")
# cannot outrank the entry that states the right fact.
BM25_WEIGHTS = (1.0, 1.0, 0.0)
_OPTIONAL_STR = ("source_id", "question", "student_response", "teacher", "run")


@dataclasses.dataclass
class Entry:
    summary: str
    knowledge: list[str]
    id: int | None = None
    source_id: str | None = None
    question: str | None = None
    student_response: str | None = None
    teacher: str | None = None
    run: str | None = None
    round: int | None = None
    enabled: bool = True
    created: float = 0.0
    updated: float = 0.0
    retrieved: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Entry:
        """Validated construction; raises DataError naming the offending field."""
        if not isinstance(d, dict):
            raise DataError("entry: expected a JSON object")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise DataError(f"entry: unknown field {unknown[0]!r}")
        _check_text("summary", d.get("summary"))
        _check_knowledge(d.get("knowledge"))
        for name in _OPTIONAL_STR:
            if d.get(name) is not None and not isinstance(d[name], str):
                raise DataError(f"entry: field {name!r} must be a string or null")
        for name, types, what in (("id", int, "an integer"), ("round", int, "an integer"),
                                  ("retrieved", int, "an integer"), ("created", (int, float),
                                  "a number"), ("updated", (int, float), "a number")):
            v = d.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, types)):
                raise DataError(f"entry: field {name!r} must be {what}")
        if not isinstance(d.get("enabled", True), bool):
            raise DataError("entry: field 'enabled' must be true or false")
        kw = {k: v for k, v in d.items() if v is not None}
        kw["knowledge"] = list(d["knowledge"])
        return cls(**kw)


def _check_text(field: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"entry: field {field!r} must be a non-empty string")


def _check_knowledge(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise DataError("entry: field 'knowledge' must be a list of strings")


def _as_list(knowledge: Any) -> Any:
    """Any iterable of strings -> a list; a bare string is left for validation to reject."""
    return knowledge if isinstance(knowledge, (str, bytes)) else list(knowledge)


def _fts_query(text: str) -> str:
    """Free text -> an FTS5 query that ORs the words; punctuation can't break the syntax.
    Bare numbers are left out: a question's quantities say nothing about which fact it needs."""
    words = dict.fromkeys(w.lower() for w in re.findall(r"\w+", text) if not w.isdigit())
    return " OR ".join(f'"{w}"' for w in words)


class KnowledgeBase:
    """The knowledge base in one SQLite file. Thread-safe; other processes may open it too."""

    def __init__(self, path: str | os.PathLike):
        """Open the file, creating it and the schema if missing."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60,
                                       isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            with self._write():
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    for stmt in SCHEMA.split(";"):
                        if stmt.strip():
                            self._db.execute(stmt)
                    self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                elif version > SCHEMA_VERSION:
                    raise NesyloopError(f"kb {self.path}: schema version {version} is newer "
                                        f"than this nesyloop supports ({SCHEMA_VERSION})")
        except sqlite3.DatabaseError as err:
            raise NesyloopError(f"kb {self.path}: not a knowledge base file ({err})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _row(self, entry_id: int) -> Entry:
        with self._lock:
            row = self._db.execute("SELECT * FROM entries WHERE id=?", (entry_id,)).fetchone()
        if row is None:
            raise DataError(f"kb {self.path}: no entry {entry_id}")
        return _entry(row)

    def _put(self, db: sqlite3.Connection, e: Entry) -> int:
        row = {**e.to_dict(), "knowledge": json.dumps(e.knowledge, ensure_ascii=False),
               "enabled": int(e.enabled)}
        cur = db.execute(f"INSERT INTO entries ({', '.join(FIELDS)}) VALUES "
                         f"({', '.join('?' * len(FIELDS))})", [row[f] for f in FIELDS])
        e.id = cur.lastrowid
        self._index(db, e)
        return e.id

    @staticmethod
    def _index(db: sqlite3.Connection, e: Entry) -> None:
        db.execute("DELETE FROM entries_fts WHERE rowid=?", (e.id,))
        db.execute("INSERT INTO entries_fts (rowid, summary, knowledge, question) VALUES (?,?,?,?)",
                   (e.id, e.summary, "\n".join(e.knowledge), e.question or ""))

    @staticmethod
    def _log(db, entry_id: int, action: str, before: Entry | dict | None,
             after: Entry | dict | None, note: str | None, at: float | None = None) -> None:
        def blob(x):
            x = x.to_dict() if isinstance(x, Entry) else x
            return None if x is None else json.dumps(x, ensure_ascii=False)
        db.execute("INSERT INTO history VALUES (?,?,?,?,?,?)", (
            entry_id, time.time() if at is None else at, action, blob(before), blob(after), note))

    # -- public API ---------------------------------------------------------------------------
    def add(self, summary: str, knowledge: Iterable[str], *, source_id: str | None = None,
            question: str | None = None, student_response: str | None = None,
            teacher: str | None = None, run: str | None = None, round: int | None = None,
            enabled: bool = True, note: str | None = None) -> int:
        now = time.time()
        e = Entry.from_dict(dict(
            summary=summary, knowledge=_as_list(knowledge), source_id=source_id, question=question,
            student_response=student_response, teacher=teacher, run=run, round=round,
            enabled=enabled, created=now, updated=now))
        with self._write() as db:
            self._put(db, e)
            self._log(db, e.id, "add", None, e, note, at=now)
        return e.id

    def get(self, entry_id: int) -> Entry:
        return self._row(entry_id)

    def list(self, enabled_only: bool = False) -> list[Entry]:
        sql = f"SELECT * FROM entries {'WHERE enabled=1' if enabled_only else ''} ORDER BY id"
        with self._lock:
            return [_entry(r) for r in self._db.execute(sql).fetchall()]

    def _change(self, entry_id: int, action: str, note: str | None, **changes) -> Entry:
        with self._write() as db:
            before = self._row(entry_id)
            after = dataclasses.replace(before, **changes, updated=time.time())
            after.knowledge = list(after.knowledge)
            db.execute("UPDATE entries SET summary=?, knowledge=?, enabled=?, updated=? WHERE id=?",
                       (after.summary, json.dumps(after.knowledge, ensure_ascii=False),
                        int(after.enabled), after.updated, entry_id))
            if "summary" in changes or "knowledge" in changes:
                self._index(db, after)
            self._log(db, entry_id, action, before, after, note, at=after.updated)
        return after

    def edit(self, entry_id: int, summary: str | None = None,
             knowledge: Iterable[str] | None = None, note: str | None = None) -> Entry:
        changes: dict[str, Any] = {}
        if summary is not None:
            _check_text("summary", summary)
            changes["summary"] = summary
        if knowledge is not None:
            changes["knowledge"] = _as_list(knowledge)
            _check_knowledge(changes["knowledge"])
        if not changes:
            raise NesyloopError(f"kb {self.path}: edit of entry {entry_id} changes nothing")
        return self._change(entry_id, "edit", note, **changes)

    def set_enabled(self, entry_id: int, enabled: bool, note: str | None = None) -> Entry:
        current = self._row(entry_id)
        if current.enabled == bool(enabled):
            return current
        return self._change(entry_id, "enable" if enabled else "disable", note,
                            enabled=bool(enabled))

    def remove(self, entry_id: int, note: str | None = None) -> None:
        with self._write() as db:
            before = self._row(entry_id)
            db.execute("DELETE FROM entries WHERE id=?", (entry_id,))
            db.execute("DELETE FROM entries_fts WHERE rowid=?", (entry_id,))
            self._log(db, entry_id, "remove", before, None, note)

    def history(self, entry_id: int) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM history WHERE entry_id=? ORDER BY rowid",
                                    (entry_id,)).fetchall()
        return [{**dict(r), "before": _loads(r["before"]), "after": _loads(r["after"])}
                for r in rows]

    def search(self, query: str, k: int = 1, enabled_only: bool = True,
               weights: tuple[float, float, float] = BM25_WEIGHTS,
               ) -> list[tuple[Entry, float]]:
        """BM25 over summary, knowledge and source question (column ``weights``, in that
        order); higher score is better."""
        match = _fts_query(query)
        if not match or k <= 0:
            return []
        rank = f"bm25(entries_fts, {', '.join(str(float(w)) for w in weights)})"
        sql = (f"SELECT e.*, -{rank} AS score FROM entries_fts"
               " JOIN entries e ON e.id = entries_fts.rowid WHERE entries_fts MATCH ?"
               + (" AND e.enabled=1" if enabled_only else "")
               + f" ORDER BY {rank}, e.id LIMIT ?")
        with self._lock:
            rows = self._db.execute(sql, (match, k)).fetchall()
        return [(_entry(r), r["score"]) for r in rows]

    def version(self) -> str:
        """A hash of what retrieval and prompts can see (ids, texts, enabled flags): it changes
        with every edit, so a prediction stage keyed on it reruns after an edit, and only then."""
        import hashlib

        with self._lock:
            rows = self._db.execute("SELECT id, summary, knowledge, enabled FROM entries "
                                    "ORDER BY id").fetchall()
        blob = json.dumps([list(r) for r in rows], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def mark_retrieved(self, ids: Iterable[int]) -> None:
        with self._write() as db:
            db.executemany("UPDATE entries SET retrieved = retrieved + 1 WHERE id=?",
                           [(i,) for i in ids])

    def stats(self) -> dict[str, Any]:
        """Counts of entries, enabled entries, entries by run and teacher, total retrievals."""
        entries = self.list()
        return {"entries": len(entries), "enabled": sum(e.enabled for e in entries),
                "by_run": dict(Counter(e.run or "(none)" for e in entries)),
                "by_teacher": dict(Counter(e.teacher or "(none)" for e in entries)),
                "retrievals": sum(e.retrieved for e in entries)}

    def export_jsonl(self, path: str | os.PathLike) -> int:
        """One entry per line with its full history; lossless (see import_jsonl)."""
        with self._lock:  # one read transaction: a consistent snapshot of entries and history
            self._db.execute("BEGIN")
            try:
                lines = [json.dumps({**e.to_dict(), "history": self.history(e.id)},
                                    ensure_ascii=False) for e in self.list()]
            finally:
                self._db.execute("COMMIT")
        atomic_write_text(path, "".join(line + "\n" for line in lines))
        return len(lines)

    def import_jsonl(self, path: str | os.PathLike, note: str | None = None) -> int:
        """Import an export_jsonl file, all or nothing. Entries keep their ids and history; a line
        without history gets an "import" history row. Errors name the file and line."""
        path = Path(path)
        linenos = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                   if line.strip()] if path.exists() else []
        count = 0
        with self._write() as db:
            for lineno, obj in zip(linenos, iter_jsonl(path)):
                try:
                    history = obj.pop("history", None)
                    e = Entry.from_dict(obj)
                    if history is not None:
                        _check_history(history)
                    if e.id is not None and db.execute(
                            "SELECT 1 FROM entries WHERE id=?", (e.id,)).fetchone():
                        raise DataError(f"entry id {e.id} already exists in kb {self.path}")
                except DataError as err:
                    raise DataError(f"{path}:{lineno}: {err}") from None
                now = time.time()
                e.created, e.updated = e.created or now, e.updated or now
                self._put(db, e)
                if history is None:
                    self._log(db, e.id, "import", None, e, note or f"from {path}", at=now)
                for h in history or []:
                    self._log(db, e.id, h["action"], h.get("before"), h.get("after"),
                              h.get("note"), at=h["at"])
                count += 1
        return count

    def export_markdown(self, path: str | os.PathLike) -> int:
        entries = self.list()
        out = [f"# Knowledge base `{self.path.name}`", "",
               f"{len(entries)} entries, {sum(e.enabled for e in entries)} enabled.", ""]
        for e in entries:
            out += [f"## Entry {e.id}" + ("" if e.enabled else " (disabled)"), "",
                    f"**Enabled:** {'yes' if e.enabled else 'no'}", "",
                    f"**Summary:** {e.summary}", "", "**Knowledge:**", ""]
            out += [f"{i}. {k}" for i, k in enumerate(e.knowledge, 1)] or ["(none)"]
            prov = ", ".join(f"{name} `{v}`" for name, v in (
                ("source", e.source_id), ("run", e.run), ("round", e.round),
                ("teacher", e.teacher)) if v is not None) or "unknown"
            out += ["", f"**Provenance:** {prov}; created "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e.created))}; "
                        f"retrieved {e.retrieved} times.", ""]
            for title, text in (("Question", e.question), ("Student response",
                                                           e.student_response)):
                if text:
                    out += [f"**{title}:**", ""] + [f"> {ln}" for ln in text.splitlines()] + [""]
        atomic_write_text(path, "\n".join(out).rstrip() + "\n")
        return len(entries)


FIELDS = [f.name for f in dataclasses.fields(Entry)]


def _entry(row: sqlite3.Row) -> Entry:
    d = {f: row[f] for f in FIELDS}
    return Entry(**{**d, "knowledge": json.loads(d["knowledge"]), "enabled": bool(d["enabled"])})


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _check_history(history: Any) -> None:
    if not isinstance(history, list):
        raise DataError("field 'history' must be a list")
    for i, h in enumerate(history):
        if not isinstance(h, dict):
            raise DataError(f"history[{i}] must be an object")
        at, opt = h.get("at"), lambda k, t: h.get(k) is None or isinstance(h[k], t)
        for ok, key, what in (
                (h.get("action") in ACTIONS, "action", f"one of {', '.join(ACTIONS)}"),
                (isinstance(at, (int, float)) and not isinstance(at, bool), "at", "a number"),
                (opt("before", dict), "before", "an object or null"),
                (opt("after", dict), "after", "an object or null"),
                (opt("note", str), "note", "a string or null")):
            if not ok:
                raise DataError(f"history[{i}].{key} must be {what}")
