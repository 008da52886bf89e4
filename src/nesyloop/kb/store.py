"""NesyCD knowledge base storage: one SQLite file per student, copyable and inspectable.

Each entry is what the teacher wrote after analysing a wrong student answer: a learning summary
plus a short list of supplementary knowledge, with provenance. Every change is one transaction
that also writes the FTS5 index and a ``history`` row, so readers on other connections (WAL)
see the old or the new entry, never a mix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import operator
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from ..errors import DataError, NesyloopError
from ..io import atomic_write_text, dumps_json, dumps_str_list, loads_json
from .itemstore import (ITEM_ACTIONS, ITEM_TABLES, ItemsMixin, create_tables, drop_orphans,
                        item_key, link, link_new, migrate_v1, next_id, unlink)

SCHEMA_VERSION = 2  # 2: knowledge items stated once (kb/itemstore.py); 1 migrates on open
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
# Limits on what a person (or an import file) can put into an entry: its summary and knowledge
# are inserted into the student's prompt, so a runaway paste is refused rather than stored.
MAX_TEXT_CHARS = 20_000  # the summary, and each knowledge item
MAX_KNOWLEDGE_ITEMS = 100
_INT64 = 1 << 63
INDEX_AFTER = 20  # queries in one search_many call that pay for building the BM25 index
V1_TABLES = ("entries", "history", "entries_fts")  # schema 1's (migrated on a writable open)
REQUIRED_TABLES = (*V1_TABLES, *ITEM_TABLES)
CHECKS = {"quick": "quick_check", "full": "integrity_check"}


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
        # dataclasses.asdict deep-copies every field: 20x slower on a bulk import
        return {**self.__dict__, "knowledge": list(self.knowledge)}

    @classmethod
    def from_dict(cls, d: Any) -> Entry:
        """Validated construction; raises DataError naming the offending field."""
        if not (type(d) is dict and _plain(d)):  # _plain: the common case, in one pass
            check_entry_dict(d)
        return cls._of(d)

    @classmethod
    def _of(cls, d: dict[str, Any]) -> Entry:
        """The entry of a checked dict (None for a field's default)."""
        kw = {k: v for k, v in d.items() if v is not None}
        kw["knowledge"] = list(d["knowledge"])
        return cls(**kw)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off during a bulk write: it builds about ten objects
    per entry, none in a cycle, and the collector would rescan them all again and again
    (a fifth of a 100k-entry import's time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check_entry_dict(d: Any) -> None:
    """Every check of an entry's fields; a DataError names the first fault."""
    if not isinstance(d, dict):
        raise DataError("entry: expected a JSON object")
    unknown = sorted(d.keys() - _FIELD_SET)
    if unknown:
        raise DataError(f"entry: unknown field {unknown[0]!r}")
    _check_text("summary", d.get("summary"))
    _check_knowledge(d.get("knowledge"))
    for name in _OPTIONAL_STR:
        if d.get(name) is not None:
            if not isinstance(d[name], str):
                raise DataError(f"entry: field {name!r} must be a string or null")
            check_utf8(f"entry: field {name!r}", d[name])
    for name, types, what in (("id", int, "an integer"), ("round", int, "an integer"),
                              ("retrieved", int, "an integer"), ("created", (int, float),
                              "a number"), ("updated", (int, float), "a number")):
        _check_number(name, d.get(name), types, what)
    if not isinstance(d.get("enabled", True), bool):
        raise DataError("entry: field 'enabled' must be true or false")


def _plain(d: dict, utf8: bool = False, keys: frozenset[str] | None = None) -> bool:
    """Whether ``d`` passes every check of :func:`check_entry_dict`, checked fast (the bulk
    of an import); False sends it through those checks, which name a fault
    (tests/test_kb_scale.py holds the two to agreeing). Its texts must be ASCII unless
    ``utf8`` says they are valid UTF-8 already (orjson refuses a lone surrogate); its keys
    must be among ``keys`` (an entry's fields)."""
    if not d.keys() <= (keys or _FIELD_SET):
        return False
    k = d.get("knowledge")
    if type(k) is not list or len(k) > MAX_KNOWLEDGE_ITEMS:
        return False
    for t in (d.get("summary"), *k):
        if type(t) is not str or not t or t.isspace() or len(t) > MAX_TEXT_CHARS \
                or not (utf8 or t.isascii()):
            return False
    for name in _OPTIONAL_STR:
        v = d.get(name)
        if v is not None and (type(v) is not str or not (utf8 or v.isascii())):
            return False
    for name in ("id", "round", "retrieved"):
        v = d.get(name)
        if v is not None and (type(v) is not int or not -_INT64 <= v < _INT64):
            return False
    for name in ("created", "updated"):  # (orjson reads an integer beyond 64 bits as a
        v = d.get(name)                    # float: such magnitudes take the slow path)
        if v is not None and not (type(v) in (int, float) and -_INT64 <= v < _INT64):
            return False
    return type(d.get("enabled", True)) is bool


def _plain_line(d: dict) -> bool:
    """:func:`_plain` for an import line read by orjson, its history included: a list of
    change records whose entries (before, after) are plain too; and its items (texts that
    are plain knowledge, enabled true or false). (An item line is never plain.)"""
    history, items = d.get("history", []), d.get("items")
    if type(history) is not list or not _plain(d, True, _LINE_KEYS):
        return False
    if items is not None:
        if type(items) is not list or len(items) > MAX_KNOWLEDGE_ITEMS:
            return False
        for i in items:
            if type(i) is not dict or not i.keys() <= _ITEM_KEYS:
                return False
            t = i.get("text")
            if type(t) is not str or not t or t.isspace() or len(t) > MAX_TEXT_CHARS \
                    or type(i.get("enabled", True)) is not bool:
                return False
    for h in history:
        if type(h) is not dict or not h.keys() <= _HISTORY_KEYS or h.get("action") not in ACTIONS:
            return False
        at, note = h.get("at"), h.get("note")
        if type(at) not in (int, float) or not -_INT64 <= at < _INT64 \
                or note is not None and type(note) is not str:
            return False
        for x in (h.get("before"), h.get("after")):
            if x is not None and not (type(x) is dict and _plain(x, True)):
                return False
    return True


def check_utf8(what: str, value: str) -> None:
    """Refuse text that cannot be stored as UTF-8 (undecodable bytes in a command-line value
    reach Python as lone surrogates)."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{what} is not valid UTF-8 text") from None


def check_length(what: str, value: str) -> None:
    """A text longer than :data:`MAX_TEXT_CHARS` is a one-line error naming ``what``."""
    if len(value) > MAX_TEXT_CHARS:
        raise DataError(f"{what} is {len(value):,} characters long; at most "
                        f"{MAX_TEXT_CHARS:,} are allowed")


def _check_text(field: str, value: Any, what: str | None = None) -> None:
    what = what or f"entry: field {field!r}"
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{what} must be a non-empty string")
    check_length(what, value)
    check_utf8(what, value)


def _items_field(items: list[dict]) -> dict[str, list[dict]]:
    """An export line's ``items``: only when one is disabled (``knowledge`` holds the rest)."""
    return {"items": items} if any(not i["enabled"] for i in items) else {}


def _check_list(field: str, value: Any, kind: type, what: str) -> None:
    """An entry line's list field: a list of ``kind`` (``what``), at most
    MAX_KNOWLEDGE_ITEMS long."""
    if not isinstance(value, list) or not all(isinstance(k, kind) for k in value):
        raise DataError(f"entry: field {field!r} must be a list of {what}")
    if len(value) > MAX_KNOWLEDGE_ITEMS:
        raise DataError(f"entry: field {field!r} has {len(value)} items; at most "
                        f"{MAX_KNOWLEDGE_ITEMS} are allowed")


def _check_knowledge(value: Any) -> None:
    _check_list("knowledge", value, str, "strings")
    for i, item in enumerate(value, 1):
        _check_text("knowledge", item, f"entry: field 'knowledge' item {i}")


def _check_number(name: str, v: Any, types: Any, what: str) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, types):
        raise DataError(f"entry: field {name!r} must be {what}")
    if isinstance(v, int) and not -_INT64 <= v < _INT64:
        raise DataError(f"entry: field {name!r} is out of range")
    if isinstance(v, float) and not math.isfinite(v):
        raise DataError(f"entry: field {name!r} must be a finite number")


def _as_list(knowledge: Any) -> Any:
    """Any iterable of strings -> a list; a bare string is left for validation to reject."""
    return knowledge if isinstance(knowledge, (str, bytes)) else list(knowledge)


def _fts_query(text: str) -> str:
    """Free text -> an FTS5 query that ORs the words; punctuation can't break the syntax.
    Bare numbers are left out: a question's quantities say nothing about which fact it needs."""
    words = dict.fromkeys(w.lower() for w in re.findall(r"\w+", text) if not w.isdigit())
    return " OR ".join(f'"{w}"' for w in words)


def db_error(path: str | os.PathLike, err: sqlite3.Error) -> NesyloopError:
    """A one-line error for an SQLite failure on the KB file ``path``."""
    msg = " ".join(str(err).split())
    msg = msg if len(msg) <= 160 else msg[:159] + "…"
    low = msg.lower()
    if "not a database" in low:
        return NesyloopError(f"kb {path}: not a knowledge base file ({msg})")
    if "malformed" in low or "corrupt" in low or "decode" in low:
        return NesyloopError(f"kb {path}: the file is damaged ({msg}); restore it from a backup "
                             "(runs/<run>/kb-backups) or from an export")
    if "readonly" in low or "read-only" in low:
        return NesyloopError(f"kb {path}: cannot write to it: the file or its folder is "
                             f"read-only ({msg})")
    return NesyloopError(f"kb {path}: SQLite error ({msg})")


def copy_kb(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """A consistent copy of the KB file ``src`` at ``dst`` (SQLite's online backup: what a
    write-ahead log holds is included)."""
    source = sqlite3.connect(f"file:{Path(src)}?mode=ro", uri=True)
    target = sqlite3.connect(str(dst))
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def side_files(path: Path) -> list[Path]:
    return [Path(f"{path}-wal"), Path(f"{path}-shm")]


def existing_file(path: Path) -> None:
    """Refuse a KB path that is missing, not a regular file, or empty (0 bytes)."""
    if not path.exists():
        raise NesyloopError(f"kb {path}: no such knowledge base file")
    if not path.is_file():
        raise NesyloopError(f"kb {path}: not a file")
    if path.stat().st_size == 0:
        raise NesyloopError(f"kb {path}: empty file (0 bytes), not a knowledge base")


class KnowledgeBase(ItemsMixin):
    """The knowledge base in one SQLite file. Thread-safe; other processes may open it too."""

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False,
                 check: str | None = None):
        """Open the file, creating it and the schema if missing. ``readonly``: open an
        existing KB without ever writing to it (see :func:`open_kb`). ``check``: "quick" or
        "full" runs SQLite's quick_check or integrity_check first and refuses a damaged file."""
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._new_side: list[Path] = []
        self._changes = 0  # content changes made through this object (see _bm25_index)
        self._bm25: tuple[Any, tuple[int, int]] | None = None  # (BM25Index, its stamp)
        try:
            if readonly:
                existing_file(self.path)
                self._new_side = [p for p in side_files(self.path) if not p.exists()]
                uri = self.path.absolute().as_uri() + "?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=60,
                                           isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60,
                                           isolation_level=None)
            self._db.row_factory = sqlite3.Row
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if readonly or version != 0 or self._tables():  # before anything is written
                self._check_schema(version)
            if check is not None:
                self.check(check)
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                with self._write():
                    self._init_schema()
        except (NesyloopError, sqlite3.Error) as err:
            self.close()
            if isinstance(err, sqlite3.Error):
                raise db_error(self.path, err) from None
            raise

    def _tables(self) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")]

    def _init_schema(self) -> None:
        """Create the schema in a new (empty) database; check it in an existing one."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and not self._tables():
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            create_tables(self._db)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version == 1:  # each entry held its own copy of its sentences: make the items
            self._check_schema(version)
            migrate_v1(self._db)
            self._refresh(self._db, [r[0] for r in self._db.execute("SELECT id FROM entries")])
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        else:
            self._check_schema(version)

    def _check_schema(self, version: int) -> None:
        """Refuse a file whose schema is not this nesyloop's knowledge base."""
        if version == 0:
            tables = self._tables()
            other = f"other tables: {', '.join(tables[:5])}" if tables else "no tables"
            raise NesyloopError(f"kb {self.path}: not a knowledge base (an SQLite file with "
                                f"{other})")
        if version == 1 and self.readonly:
            raise NesyloopError(f"kb {self.path}: schema version 1 (each entry keeps its own "
                                f"copy of its knowledge); open it for writing once to merge "
                                f"its items: nesyloop kb migrate --kb {self.path}")
        if version not in (1, SCHEMA_VERSION):
            what = "newer than" if version > SCHEMA_VERSION else "unknown to"
            raise NesyloopError(f"kb {self.path}: schema version {version} is {what} this "
                                f"nesyloop (it reads version {SCHEMA_VERSION})")
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(entries)")}
        required = REQUIRED_TABLES if version == SCHEMA_VERSION else V1_TABLES
        missing = [t for t in required if t not in tables]
        missing += [f"entries.{c}" for c in FIELDS if "entries" in tables and c not in cols]
        if missing:
            raise NesyloopError(f"kb {self.path}: not a knowledge base (missing "
                                f"{', '.join(missing)})")

    def check(self, kind: str = "quick") -> None:
        """SQLite's quick_check ("quick": structure, cheap) or integrity_check ("full": also
        every index); a damaged file raises a one-line NesyloopError."""
        if kind not in CHECKS:
            raise ValueError(f"check: {kind!r} is not one of {', '.join(CHECKS)}")
        with self._lock:
            try:
                rows = [r[0] for r in self._db.execute(f"PRAGMA {CHECKS[kind]}(3)")]
            except sqlite3.DatabaseError as err:
                raise db_error(self.path, err) from None
        if rows != ["ok"]:
            found = "; ".join(" ".join(str(r).split()) for r in rows)[:200]
            raise NesyloopError(f"kb {self.path}: the file is damaged (SQLite {CHECKS[kind]}: "
                                f"{found}); restore it from a backup (runs/<run>/kb-backups) "
                                "or from an export")

    def close(self) -> None:
        with self._lock:
            if self._db is None:
                return
            self._db.close()
            self._db = None
        if self.readonly and any(p.exists() for p in self._new_side):
            self._removeside_files()

    def _removeside_files(self) -> None:
        """A read-only connection to a WAL database leaves the -wal and -shm files it had to
        create; a brief writable connection lets SQLite remove them as it does on every close
        (only when no other connection uses them, and without writing to the KB file)."""
        if not os.access(self.path, os.W_OK) or not os.access(self.path.parent, os.W_OK):
            return
        try:
            db = sqlite3.connect(self.path, timeout=1)
            try:
                db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            finally:
                db.close()
        except sqlite3.Error:
            pass

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _write(self, content: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``content``: it may change what retrieval sees (not only
        counters or caches), so the in-memory BM25 index is rebuilt before the next search."""
        if self.readonly:
            raise NesyloopError(f"kb {self.path}: opened read-only; this change needs a "
                                "writable knowledge base")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._changes += content
            self._db.execute("COMMIT")

    @contextmanager
    def _bulk_write(self) -> Iterator[sqlite3.Connection]:
        """:meth:`_write` for a bulk write: with a rollback journal in place of the WAL while
        no other connection has the file open (each page is written once, not to the WAL
        and again at the checkpoint: a 100k-entry import in about 70% of the time), else as
        is.
        The WAL comes back when the transaction ends, committed or not."""
        with self._lock:
            try:
                self._db.execute("PRAGMA busy_timeout=0")  # another connection: no waiting
                swapped = self._db.execute("PRAGMA journal_mode=DELETE").fetchone()[0] \
                    == "delete"
            except sqlite3.OperationalError:  # "database is locked": others have it open
                swapped = False
            finally:
                self._db.execute("PRAGMA busy_timeout=60000")
            try:
                with self._write() as db:
                    yield db
            finally:
                if swapped:  # a failure here is not the write's: the next open sets WAL
                    with contextlib.suppress(sqlite3.OperationalError):
                        self._db.execute("PRAGMA journal_mode=WAL")

    def _to_entry(self, row: sqlite3.Row) -> Entry:
        try:
            return _entry(row)
        except DataError as err:
            raise DataError(f"kb {self.path}: {err}") from None

    def _row(self, entry_id: int) -> Entry:
        row = None
        if -_INT64 <= entry_id < _INT64:
            with self._lock:
                row = self._db.execute("SELECT * FROM entries WHERE id=?",
                                       (entry_id,)).fetchone()
        if row is None:
            raise DataError(f"kb {self.path}: no entry {entry_id}")
        return self._to_entry(row)

    def _put(self, db: sqlite3.Connection, e: Entry) -> int:
        self._put_many(db, [e])
        return e.id

    def _put_many(self, db: sqlite3.Connection, entries: list[Entry],
                  given: dict[str, dict] | None = None) -> None:
        """Insert new entries in a few statements: ids as AUTOINCREMENT gives them (an entry
        may bring its own), their items linked (``given``: see link_new), rows and FTS rows
        written."""
        nxt = next_id(db, "entries")
        for e in entries:
            if e.id is None:
                e.id = nxt
            nxt = max(nxt, e.id + 1)
        texts = link_new(db, [(e.id, e.knowledge, e.created) for e in entries], given)
        rows = []
        for e, t in zip(entries, texts, strict=True):
            e.knowledge = t
            row = list(_FIELD_VALUES(e))
            row[_KNOWLEDGE_AT], row[_ENABLED_AT] = dumps_str_list(t), int(e.enabled)
            rows.append(row)
        db.executemany(f"INSERT INTO entries ({', '.join(FIELDS)}) VALUES "
                       f"({', '.join('?' * len(FIELDS))})", rows)
        db.executemany("INSERT INTO entries_fts (rowid, summary, knowledge, question) "
                       "VALUES (?,?,?,?)", [(e.id, e.summary, "\n".join(e.knowledge),
                                             e.question or "") for e in entries])

    def _set_knowledge(self, db: sqlite3.Connection, e: Entry, texts: list[str]) -> None:
        """Store the entry's knowledge column as its items' texts (the FTS row too)."""
        e.knowledge = texts
        db.execute("UPDATE entries SET knowledge=? WHERE id=?",
                   (dumps_str_list(texts), e.id))
        self._index(db, e)

    def _refresh(self, db: sqlite3.Connection, entry_ids: Iterable[int]) -> None:
        """Rewrite these entries' knowledge from their enabled items (after an item change)."""
        from .itemstore import entry_texts

        for entry_id in entry_ids:
            row = db.execute("SELECT * FROM entries WHERE id=?", (entry_id,)).fetchone()
            e = Entry(**{f: row[f] for f in FIELDS if f != "knowledge"}, knowledge=[])
            self._set_knowledge(db, e, entry_texts(db, entry_id))

    @staticmethod
    def _index(db: sqlite3.Connection, e: Entry) -> None:
        db.execute("DELETE FROM entries_fts WHERE rowid=?", (e.id,))
        db.execute("INSERT INTO entries_fts (rowid, summary, knowledge, question) VALUES (?,?,?,?)",
                   (e.id, e.summary, "\n".join(e.knowledge), e.question or ""))

    @staticmethod
    def _log(db, entry_id: int, action: str, before: Entry | dict | None,
             after: Entry | dict | None, note: str | None, at: float | None = None) -> None:
        KnowledgeBase._log_many(db, [(entry_id, action, before, after, note, at)])

    @staticmethod
    def _log_many(db, rows: list[tuple]) -> None:
        """History rows (entry id, action, before, after, note, at: now when None)."""
        def blob(x):
            x = x.__dict__ if isinstance(x, Entry) else x
            return None if x is None else dumps_json(x)
        now = time.time()
        db.executemany("INSERT INTO history VALUES (?,?,?,?,?,?)", [
            (i, now if at is None else at, action, blob(b), blob(a), note)
            for i, action, b, a, note, at in rows])

    # -- public API ---------------------------------------------------------------------------
    def add(self, summary: str, knowledge: Iterable[str], *, source_id: str | None = None,
            question: str | None = None, student_response: str | None = None,
            teacher: str | None = None, run: str | None = None, round: int | None = None,
            enabled: bool = True, note: str | None = None) -> int:
        return self.add_many([dict(
            summary=summary, knowledge=knowledge, source_id=source_id, question=question,
            student_response=student_response, teacher=teacher, run=run, round=round,
            enabled=enabled)], note)[0]

    def add_many(self, rows: Iterable[dict[str, Any]], note: str | None = None) -> list[int]:
        """:meth:`add` for many entries (dicts of its keyword arguments, summary and knowledge
        required) in one transaction; their ids, in order."""
        with _gc_paused():
            return self._add_many(rows, note)

    def _add_many(self, rows: Iterable[dict[str, Any]], note: str | None) -> list[int]:
        now = time.time()
        entries = []
        for r in rows:
            extra = set(r) - {"summary", "knowledge", *_OPTIONAL_STR, "round", "enabled"}
            if extra:
                raise DataError(f"kb {self.path}: unknown entry field(s) {sorted(extra)}")
            knowledge = r.get("knowledge")
            entries.append(Entry.from_dict({**r, "knowledge": None if knowledge is None
                                            else _as_list(knowledge),
                                            "enabled": r.get("enabled", True),
                                            "created": now, "updated": now}))
        with self._write() as db:
            self._put_many(db, entries)
            self._log_many(db, [(e.id, "add", None, e, note, now) for e in entries])
        return [e.id for e in entries]

    def get(self, entry_id: int) -> Entry:
        return self._row(entry_id)

    def list(self, enabled_only: bool = False) -> list[Entry]:
        sql = f"SELECT * FROM entries {'WHERE enabled=1' if enabled_only else ''} ORDER BY id"
        with self._lock:
            return [self._to_entry(r) for r in self._db.execute(sql).fetchall()]

    def _change(self, entry_id: int, action: str, note: str | None, **changes) -> Entry:
        with self._write() as db:
            before = self._row(entry_id)
            after = dataclasses.replace(before, **changes, updated=time.time())
            after.knowledge = list(after.knowledge)
            db.execute("UPDATE entries SET summary=?, enabled=?, updated=? WHERE id=?",
                       (after.summary, int(after.enabled), after.updated, entry_id))
            if "knowledge" in changes:
                self._set_knowledge(db, after, link(db, entry_id, after.knowledge, after.updated))
            elif "summary" in changes:
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
            drop_orphans(db, unlink(db, entry_id))
            self._log(db, entry_id, "remove", before, None, note)

    def history(self, entry_id: int) -> list[dict]:
        if not -_INT64 <= entry_id < _INT64:
            return []
        with self._lock:
            rows = self._db.execute("SELECT * FROM history WHERE entry_id=? ORDER BY rowid",
                                    (entry_id,)).fetchall()
        try:
            return [{**dict(r), "before": _loads(r["before"]), "after": _loads(r["after"])}
                    for r in rows]
        except ValueError as err:
            raise DataError(f"kb {self.path}: the history of entry {entry_id} is damaged "
                            f"({err})") from None

    def search(self, query: str, k: int = 1, enabled_only: bool = True,
               weights: tuple[float, float, float] = BM25_WEIGHTS,
               ) -> list[tuple[Entry, float]]:
        """BM25 over summary, knowledge and source question (column ``weights``, in that
        order); higher score is better. The in-memory index answers if a :meth:`search_many`
        built it and the KB has not changed since, else FTS5 itself (the same entries and
        scores, see kb/bm25.py)."""
        return self.search_many([query], k, enabled_only, weights)[0]

    def search_many(self, queries: Iterable[str], k: int = 1, enabled_only: bool = True,
                    weights: tuple[float, float, float] = BM25_WEIGHTS,
                    ) -> list[list[tuple[Entry, float]]]:
        """:meth:`search` for each query. From :data:`INDEX_AFTER` queries on, or once it is
        built, through the in-memory BM25 index (kb/bm25.py; built again after the KB changes):
        a query in about a millisecond where FTS5 scores every entry that shares a common word;
        building it costs about as much as 20 FTS5 queries."""
        queries = list(queries)
        fresh = self._bm25 is not None and self._bm25[1] == self._stamp()
        if not fresh and len(queries) < INDEX_AFTER:
            return [self._fts_search(q, k, enabled_only, weights) for q in queries]
        index = self._bm25_index()
        out = []
        for q in queries:
            found = index.search(q, min(k, _INT64 - 1), weights, enabled_only)
            out.append(self._fts_search(q, k, enabled_only, weights) if found is None
                       else self._with_entries(found))
        return out

    def _stamp(self) -> tuple[int, int]:
        with self._lock:
            return self._changes, self._db.execute("PRAGMA data_version").fetchone()[0]

    def _bm25_index(self):
        from .bm25 import BM25Index

        with self._lock:
            stamp = self._stamp()
            if self._bm25 is None or self._bm25[1] != stamp:
                outer = self._db.in_transaction
                if not outer:
                    self._db.execute("BEGIN")  # one snapshot of entries and index
                try:
                    self._bm25 = (BM25Index(self._db), stamp)
                finally:
                    if not outer:
                        self._db.execute("COMMIT")
            return self._bm25[0]

    def _with_entries(self, found: list[tuple[int, float]]) -> list[tuple[Entry, float]]:
        if not found:
            return []
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM entries WHERE id IN "
                                    f"({','.join('?' * len(found))})",
                                    [i for i, _ in found]).fetchall()
        by_id = {r["id"]: r for r in rows}
        return [(self._to_entry(by_id[i]), score) for i, score in found]

    def _fts_search(self, query: str, k: int, enabled_only: bool,
                    weights: tuple[float, float, float]) -> list[tuple[Entry, float]]:
        """FTS5's own ``bm25()``: every matching row scored and sorted."""
        match = _fts_query(query)
        if not match or k <= 0:
            return []
        k = min(k, _INT64 - 1)
        rank = f"bm25(entries_fts, {', '.join(str(float(w)) for w in weights)})"
        sql = (f"SELECT e.*, -{rank} AS score FROM entries_fts"
               " JOIN entries e ON e.id = entries_fts.rowid WHERE entries_fts MATCH ?"
               + (" AND e.enabled=1" if enabled_only else "")
               + f" ORDER BY {rank}, e.id LIMIT ?")
        with self._lock:
            rows = self._db.execute(sql, (match, k)).fetchall()
        return [(self._to_entry(r), r["score"]) for r in rows]

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
        with self._write(content=False) as db:
            db.executemany("UPDATE entries SET retrieved = retrieved + 1 WHERE id=?",
                           [(i,) for i in ids])

    def stats(self) -> dict[str, Any]:
        """Counts of entries, enabled entries, distinct items and the statements merged into
        them, entries by run and teacher, total retrievals."""
        entries = self.list()
        return {"entries": len(entries), "enabled": sum(e.enabled for e in entries),
                **self.item_counts(),
                "by_run": dict(Counter(e.run or "(none)" for e in entries)),
                "by_teacher": dict(Counter(e.teacher or "(none)" for e in entries)),
                "retrievals": sum(e.retrieved for e in entries)}

    def export_jsonl(self, path: str | os.PathLike) -> int:
        """One entry per line with its items when one of them is disabled (``"items"``: every
        item it links, ``{"text", "enabled"}`` in order; otherwise its ``knowledge`` states
        them all) and its full history; then one line per item
        whose state the entry lines cannot carry (disabled, edited, or with notes or times of
        its own: ``{"item": {...}, "history": [...]}``, see ItemsMixin._export_items).
        Lossless up to item ids (see import_jsonl); returns the number of entries."""
        with self._lock:  # one read transaction: a consistent snapshot of entries and history
            self._db.execute("BEGIN")
            try:
                self.check("full")  # a damaged file would silently lose rows: refuse it
                entries = self.list()
                linked, items = self._export_items([(e.id, e.created) for e in entries])
                lines = [json.dumps({**e.to_dict(), **_items_field(linked.get(e.id, [])),
                                     "history": self.history(e.id)}, ensure_ascii=False)
                         for e in entries]
                lines += [json.dumps(it, ensure_ascii=False) for it in items]
            finally:
                self._db.execute("COMMIT")
        atomic_write_text(path, "".join(line + "\n" for line in lines))
        return len(entries)

    def import_jsonl(self, path: str | os.PathLike, note: str | None = None) -> int:
        """Import an export_jsonl file, all or nothing, in one transaction; returns the number
        of entries. Entries keep their ids and history; a line without history gets an
        "import" history row. An entry line with ``items`` links every one of them (its
        ``knowledge`` must be the enabled ones' texts), without, the items of its
        ``knowledge``. Items are matched by item_key, not id. An item new to this KB is made
        from its item line if there is one (text, enabled, created, updated, and its history
        in place of the "add" row; the ids in that history become its id here), else disabled
        when an entry line lists it disabled; an item this KB already has keeps its row (text,
        enabled, times), and an item line's history is appended to its history. Errors name
        the file and line: a bad line, an item line no entry line states, an item enabled on
        one line and disabled on another."""
        with _gc_paused():
            return self._import_jsonl(Path(path), note)

    def _import_jsonl(self, path: Path, note: str | None) -> int:
        parsed: list[tuple[Entry, list | None, list[str] | None, int]] = []
        item_lines: list[tuple[int, dict, list | None]] = []
        lines: dict[int, int] = {}  # entry id -> line
        now = time.time()
        for lineno, obj, plain in _jsonl_lines(path, _plain_line):
            try:
                if not plain and "item" in obj:
                    item_lines.append((lineno, *_item_line(obj)))
                    continue
                e, history, off = _import_line(obj, checked=plain)
                if e.id is not None and e.id in lines:
                    raise DataError(f"entry id {e.id} is also on line {lines[e.id]}")
            except DataError as err:
                raise DataError(f"{path}:{lineno}: {err}") from None
            if e.id is not None:
                lines[e.id] = lineno
            e.created, e.updated = e.created or now, e.updated or now
            parsed.append((e, history, off, lineno))
        given = _item_states(path, parsed, item_lines)
        with self._bulk_write() as db:
            ids = list(lines)
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                row = db.execute(f"SELECT min(id) FROM entries WHERE id IN "
                                 f"({','.join('?' * len(chunk))})", chunk).fetchone()
                if row[0] is not None:
                    raise DataError(f"{path}:{lines[row[0]]}: entry id {row[0]} already "
                                    f"exists in kb {self.path}")
            self._put_many(db, [e for e, _, _, _ in parsed], given)
            self._log_many(db, [(e.id, "import", None, e, note or f"from {path}", now)
                                if h is None else (e.id, x["action"], x.get("before"),
                                                   x.get("after"), x.get("note"), x["at"])
                                for e, h, _, _ in parsed
                                for x in (h if h is not None else [None])])
        return len(parsed)

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
_FIELD_SET = frozenset(FIELDS)
_LINE_KEYS = _FIELD_SET | {"history", "items"}  # an entry line: entry, items, history
_ITEM_KEYS = frozenset({"text", "enabled"})  # an item of an entry line's "items"
_ITEM_FIELDS = frozenset({"text", "enabled", "created", "updated"})  # an item line's "item"
_HISTORY_KEYS = frozenset({"entry_id", "action", "at", "before", "after", "note"})  # exported
_FIELD_VALUES = operator.attrgetter(*FIELDS)  # an entry's column values, in FIELDS' order
_KNOWLEDGE_AT, _ENABLED_AT = FIELDS.index("knowledge"), FIELDS.index("enabled")


def open_kb(path: str | os.PathLike, check: str | None = "quick") -> KnowledgeBase:
    """Open an existing knowledge base for reading, or raise a one-line NesyloopError naming
    the file: missing, not a regular file, empty (0 bytes), not SQLite, an SQLite file without
    the KB schema, a newer schema version, or (``check``) damaged. Never creates or changes
    the file; the returned KB refuses writes."""
    return KnowledgeBase(path, readonly=True, check=check)


def _import_line(obj: Any, checked: bool = False
                 ) -> tuple[Entry, list | None, list[str] | None]:
    """One entry line of an export: the entry, its history (None: none given) and the texts
    of its disabled items (None: none), checked unless ``checked`` (:func:`_plain_line`
    passed it). With ``items`` the entry's knowledge becomes all their texts, to link."""
    history = obj.pop("history", None) if isinstance(obj, dict) else None
    items = obj.pop("items", None) if isinstance(obj, dict) else None
    if checked:
        e = Entry._of(obj)
    else:
        e = Entry.from_dict(obj)  # checks its texts are valid UTF-8
        if history is not None:
            _checked_history(history)
        if items is not None:
            _check_items(items)
    return e, history, None if items is None else _all_items(e, items)


def _checked_history(history: Any, actions: tuple[str, ...] = ACTIONS) -> None:
    """:func:`_check_history` of a history the standard library read, its texts valid UTF-8."""
    try:
        json.dumps(history, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError("a text holds an escaped lone surrogate (\\udXXX), not valid "
                        "UTF-8") from None
    _check_history(history, actions)


def _check_items(items: Any) -> None:
    """Every check of an entry line's ``items``; a DataError names the first fault."""
    _check_list("items", items, dict, "objects")
    for n, i in enumerate(items, 1):
        _check_item(i, _ITEM_KEYS, f"entry: field 'items' item {n}")


def _check_item(item: dict, fields: frozenset[str], what: str) -> None:
    """An item object (of an entry line's ``items``, or an item line's ``item``): only
    ``fields``, a valid ``text``, ``enabled`` true or false when given."""
    unknown = sorted(item.keys() - fields)
    if unknown:
        raise DataError(f"{what}: unknown field {unknown[0]!r}")
    _check_text("text", item.get("text"), f"{what}: field 'text'")
    if not isinstance(item.get("enabled", True), bool):
        raise DataError(f"{what}: field 'enabled' must be true or false")


def _all_items(e: Entry, items: list[dict]) -> list[str] | None:
    """The texts of the disabled ones of an entry line's (checked) ``items`` (None: none);
    ``e.knowledge``, which must be the enabled ones' texts, becomes all their texts."""
    texts = [i["text"] for i in items]
    on = [i["text"] for i in items if i.get("enabled", True)]
    off = [i["text"] for i in items if not i.get("enabled", True)] or None
    if on != e.knowledge:
        raise DataError("entry: field 'knowledge' must be the texts of the enabled items of "
                        "field 'items', in their order")
    e.knowledge = texts
    return off


def _item_line(obj: dict) -> tuple[dict, list | None]:
    """An item line, checked: its item (text, enabled: true unless given, created and
    updated when given) and its history (None: none given)."""
    unknown = sorted(obj.keys() - {"item", "history"})
    if unknown:
        raise DataError(f"item line: unknown field {unknown[0]!r}")
    item = obj["item"]
    if not isinstance(item, dict):
        raise DataError("item line: field 'item' must be an object")
    _check_item(item, _ITEM_FIELDS, "item")
    for name in ("created", "updated"):
        if item.get(name) is not None and not _finite(item[name]):
            raise DataError(f"item: field {name!r} must be a finite number")
    history = obj.get("history")
    if history is not None:
        _checked_history(history, ITEM_ACTIONS)
    return {"enabled": True, **{k: v for k, v in item.items() if v is not None}}, history


def _item_states(path: Path, parsed: list[tuple[Entry, Any, list[str] | None, int]],
                 item_lines: list[tuple[int, dict, list | None]]) -> dict[str, dict]:
    """What an import file says of its items, by item_key (see link_new's ``given``): each
    item line's item and history, and ``enabled: False`` for an item an entry line lists as
    disabled. Nothing to compute (and no cost) for a file without either. A DataError names
    the line where the file contradicts itself: an item line repeated, an item enabled on
    one line and disabled on another (a line without ``items`` states its knowledge
    enabled), an item line that no entry line states."""
    if not item_lines and not any(off for _, _, off, _ in parsed):
        return {}
    given: dict[str, dict] = {}
    state: dict[str, tuple[bool, int]] = {}  # key -> (enabled, the line that first said so)
    for lineno, item, history in item_lines:
        key = item_key(item["text"])
        if key in given:
            raise DataError(f"{path}:{lineno}: item {item['text']!r} is also on line "
                            f"{given[key]['line']}")
        given[key] = {**item, "history": history, "line": lineno}
        state[key] = (item["enabled"], lineno)
    stated: set[str] = set()
    key_of: dict[str, str] = {}
    for e, _, off, lineno in parsed:
        for t in e.knowledge:
            if t not in key_of:
                key_of[t] = item_key(t)
            on, key = off is None or t not in off, key_of[t]
            stated.add(key)
            was, where = state.setdefault(key, (on, lineno))
            if was != on:
                raise DataError(f"{path}:{lineno}: item {t!r} is {_ON_OFF[on]} here but "
                                f"{_ON_OFF[was]} on line {where}")
    for key, g in given.items():
        if key not in stated:
            raise DataError(f"{path}:{g['line']}: item {g['text']!r}: no entry line states it")
    given.update((key, {"enabled": False}) for key, (on, _) in state.items()
                 if not on and key not in given)
    return given


_ON_OFF = {True: "enabled", False: "disabled"}


def _jsonl_lines(path: Path, fast: Callable[[dict], bool]) -> Iterator[tuple[int, Any, bool]]:
    """(line number, parsed JSON object, whether ``fast`` accepted it) per non-blank line;
    undecodable or invalid lines raise a DataError naming the file and line. A line is read
    with orjson and kept when ``fast`` accepts the object (a plain entry and history: every
    check passed), else read again as the standard library reads it (an integer beyond 64 bits
    stays an integer, NaN is a number), so its checks name the same fault as ever."""
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                obj = None
            if type(obj) is dict and fast(obj):
                yield lineno, obj, True
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {err.start + 1} of the "
                                "line)") from None
            if not line.strip():
                continue
            obj = loads_json(line, path, lineno)
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line")
            yield lineno, obj, False


def _entry(row: sqlite3.Row) -> Entry:
    d = {f: row[f] for f in FIELDS}
    try:
        knowledge = json.loads(d["knowledge"])
    except (TypeError, ValueError):
        knowledge = None
    if not isinstance(knowledge, list):
        raise DataError(f"entry {d['id']}: field 'knowledge' is damaged (not a JSON list)")
    return Entry(**{**d, "knowledge": knowledge, "enabled": bool(d["enabled"])})


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _finite(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return -_INT64 <= v < _INT64 if isinstance(v, int) else math.isfinite(v)


def _check_history(history: Any, actions: tuple[str, ...] = ACTIONS) -> None:
    if not isinstance(history, list):
        raise DataError("field 'history' must be a list")
    for i, h in enumerate(history):
        if not isinstance(h, dict):
            raise DataError(f"history[{i}] must be an object")
        at, opt = h.get("at"), lambda k, t: h.get(k) is None or isinstance(h[k], t)
        for ok, key, what in (
                (h.get("action") in actions, "action", f"one of {', '.join(actions)}"),
                (_finite(at), "at", "a finite number"),
                (opt("before", dict), "before", "an object or null"),
                (opt("after", dict), "after", "an object or null"),
                (opt("note", str), "note", "a string or null")):
            if not ok:
                raise DataError(f"history[{i}].{key} must be {what}")
