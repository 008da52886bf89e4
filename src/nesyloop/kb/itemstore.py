"""Knowledge items stated once (schema version 2 of the KB file).

Every distinct knowledge sentence is one row of ``items``; an entry (one analysed error: its
learning summary and provenance) links to the items it states through ``entry_items``. A
person lists, searches, edits and disables the *item*: the change reaches every entry, and so
every block, that states it, and ``item_history`` records it once. Two sentences are the same
item when they differ only in case, spacing or a final period (:func:`item_key`); the first
wording seen is the item's text. An entry's ``knowledge`` column keeps the texts of its enabled
items, rewritten in the same transaction as every item change, so readers, the FTS index and
the KB's content version need no join.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from ..errors import DataError
from ..io import dumps_json

ITEM_SCHEMA = """
CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL,
  key TEXT NOT NULL UNIQUE, enabled INTEGER NOT NULL DEFAULT 1, created REAL NOT NULL,
  updated REAL NOT NULL);
CREATE TABLE entry_items (entry_id INTEGER NOT NULL, pos INTEGER NOT NULL,
  item_id INTEGER NOT NULL, PRIMARY KEY (entry_id, pos));
CREATE INDEX entry_items_item ON entry_items(item_id);
CREATE TABLE item_history (item_id INTEGER NOT NULL, at REAL NOT NULL, action TEXT NOT NULL,
  before TEXT, after TEXT, note TEXT);
CREATE INDEX item_history_item ON item_history(item_id);
"""
ITEM_TABLES = ("items", "entry_items", "item_history")
ITEM_ACTIONS = ("add", "edit", "disable", "enable")  # item_history's actions


def item_key(text: str) -> str:
    """What makes two knowledge sentences one item: case, spacing and a final period ignored."""
    return " ".join(text.split()).rstrip(".").strip().lower()


def create_tables(db: sqlite3.Connection) -> None:
    for stmt in ITEM_SCHEMA.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _item_row(db: sqlite3.Connection, item_id: int) -> dict[str, Any] | None:
    row = db.execute("SELECT id, text, enabled, created, updated FROM items WHERE id=?",
                     (item_id,)).fetchone()
    return None if row is None else {**dict(row), "enabled": bool(row["enabled"])}


def log_item(db: sqlite3.Connection, item_id: int, action: str, before: dict | None,
             after: dict | None, note: str | None, at: float | None = None) -> None:
    def blob(x):
        return None if x is None else dumps_json(x)
    db.execute("INSERT INTO item_history VALUES (?,?,?,?,?,?)", (
        item_id, time.time() if at is None else at, action, blob(before), blob(after), note))


def item_id_for(db: sqlite3.Connection, text: str, at: float, note: str | None = None) -> int:
    """The id of ``text``'s item, created (with an "add" history row) when new."""
    key = item_key(text)
    row = db.execute("SELECT id FROM items WHERE key=?", (key,)).fetchone()
    if row is not None:
        return row[0]
    clean = " ".join(text.split())
    cur = db.execute("INSERT INTO items (text, key, enabled, created, updated) VALUES "
                     "(?,?,1,?,?)", (clean, key, at, at))
    log_item(db, cur.lastrowid, "add", None, _item_row(db, cur.lastrowid), note, at=at)
    return cur.lastrowid


def link(db: sqlite3.Connection, entry_id: int, texts: Iterable[str], at: float) -> list[str]:
    """Link entry ``entry_id`` to the items of ``texts`` (a sentence stated twice, once) in
    place of its old links; returns the texts of its enabled items, in order."""
    old = unlink(db, entry_id)
    seen: set[int] = set()
    for text in texts:
        item = item_id_for(db, text, at)
        if item not in seen:
            db.execute("INSERT INTO entry_items VALUES (?,?,?)", (entry_id, len(seen), item))
            seen.add(item)
    drop_orphans(db, old)
    return entry_texts(db, entry_id)


def next_id(db: sqlite3.Connection, table: str) -> int:
    """The id AUTOINCREMENT gives the next row of ``table`` (above every id ever used)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchone()
    top = db.execute(f"SELECT max(id) FROM {table}").fetchone()[0]
    return max(row[0] if row else 0, top or 0) + 1


def link_new(db: sqlite3.Connection, batch: list[tuple[int, list[str], float]],
             given: dict[str, dict] | None = None) -> list[list[str]]:
    """:func:`link` for many new entries (``(entry_id, texts, at)``, none linked yet) in a
    few statements: the same items, ids and history rows as linking them one by one.
    ``given``: by :func:`item_key`, what an import file says of an item (``text``,
    ``enabled``, ``created``, ``updated``, ``history``: item_history records in place of the
    "add" row). An item the batch creates takes it; an item the KB already has keeps its row,
    and the given history records are appended to its history."""
    given = given or {}
    key_of: dict[str, str] = {}  # text -> item_key(text): a batch repeats its sentences
    for _, texts, _ in batch:
        for t in texts:
            if t not in key_of:
                key_of[t] = item_key(t)
    keys = list(set(key_of.values()))
    known: dict[str, int] = {}
    items: dict[int, tuple[str, bool]] = {}  # id -> (text, enabled)
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        for r in db.execute(f"SELECT id, key, text, enabled FROM items WHERE key IN "
                            f"({','.join('?' * len(chunk))})", chunk):
            known[r[1]], items[r[0]] = r[0], (r[2], bool(r[3]))
    history = [row for key, g in given.items() if key in known and g.get("history")
               for row in history_rows(known[key], g["history"])]  # appended to the KB's
    nxt = next_id(db, "items")
    new, links, out = [], [], []
    for entry_id, texts, at in batch:
        seen: list[int] = []
        for text in texts:
            key = key_of[text]
            if key not in known:
                row, rows = _new_item(nxt, key, text, at, given.get(key))
                known[key], items[nxt] = nxt, (row[1], bool(row[3]))
                new.append(row)
                history += rows
                nxt += 1
            if known[key] not in seen:
                links.append((entry_id, len(seen), known[key]))
                seen.append(known[key])
        out.append([items[i][0] for i in seen if items[i][1]])
    db.executemany("INSERT INTO items (id, text, key, enabled, created, updated) VALUES "
                   "(?,?,?,?,?,?)", new)
    db.executemany("INSERT INTO item_history VALUES (?,?,?,?,?,?)", history)
    db.executemany("INSERT INTO entry_items VALUES (?,?,?)", links)
    return out


def _new_item(item_id: int, key: str, text: str, at: float, given: dict | None
              ) -> tuple[tuple, list[tuple]]:
    """The ``items`` row of a new item (``text`` first stated at ``at``, unless ``given``
    says otherwise, see :func:`link_new`) and its item_history rows."""
    if given is None:
        clean, enabled, created, updated = " ".join(text.split()), True, at, at
    else:
        clean = " ".join(given.get("text", text).split())
        enabled, created = given.get("enabled", True), given.get("created", at)
        updated = given.get("updated", created)
        if given.get("history") is not None:
            return ((item_id, clean, key, int(enabled), created, updated),
                    history_rows(item_id, given["history"]))
    after = {"id": item_id, "text": clean, "enabled": enabled, "created": created,
             "updated": updated}
    return ((item_id, clean, key, int(enabled), created, updated),
            [(item_id, created, "add", None, dumps_json(after), None)])


def history_rows(item_id: int, history: list[dict]) -> list[tuple]:
    """item_history rows of imported records (at, action, before, after, note); the item
    states in before and after name the item by its id in this KB."""
    def blob(x):
        return None if x is None else dumps_json({**x, "id": item_id} if "id" in x else x)
    return [(item_id, h["at"], h["action"], blob(h.get("before")), blob(h.get("after")),
             h.get("note")) for h in history]


def unlink(db: sqlite3.Connection, entry_id: int) -> list[int]:
    """Remove an entry's links; returns the items it linked to."""
    old = [r[0] for r in db.execute("SELECT item_id FROM entry_items WHERE entry_id=?",
                                    (entry_id,))]
    db.execute("DELETE FROM entry_items WHERE entry_id=?", (entry_id,))
    return old


def drop_orphans(db: sqlite3.Connection, item_ids: Iterable[int]) -> None:
    """Delete those of ``item_ids`` that no entry states any more (their history stays)."""
    for item in set(item_ids):
        if db.execute("SELECT 1 FROM entry_items WHERE item_id=? LIMIT 1", (item,)).fetchone() \
                is None:
            db.execute("DELETE FROM items WHERE id=?", (item,))


def entry_texts(db: sqlite3.Connection, entry_id: int) -> list[str]:
    return [r[0] for r in db.execute(
        "SELECT i.text FROM entry_items l JOIN items i ON i.id = l.item_id "
        "WHERE l.entry_id=? AND i.enabled=1 ORDER BY l.pos", (entry_id,))]


def linked_entries(db: sqlite3.Connection, item_id: int) -> list[int]:
    return [r[0] for r in db.execute(
        "SELECT DISTINCT entry_id FROM entry_items WHERE item_id=? ORDER BY entry_id",
        (item_id,))]


def migrate_v1(db: sqlite3.Connection) -> int:
    """Version 1 (each entry a JSON list of its own sentences) to version 2: the items made
    from every entry's sentences, in entry order. Returns the number of entries linked."""
    create_tables(db)
    rows = db.execute("SELECT id, knowledge, created FROM entries ORDER BY id").fetchall()
    for row in rows:
        try:
            texts = json.loads(row["knowledge"])
        except (TypeError, ValueError):
            texts = None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataError(f"entry {row['id']}: field 'knowledge' is damaged (not a JSON list "
                            "of strings); the file cannot be migrated")
        link(db, row["id"], texts, row["created"])
    return len(rows)


def _remade(item_id: int, item: dict, history: list[dict], at: float) -> bool:
    """Whether importing the entry lines alone makes ``item`` (id, history) again: enabled,
    created and never changed at ``at`` (its first entry's), one "add" row without a note."""
    after = {"id": item_id, "text": item["text"], "enabled": True, "created": at,
             "updated": at}
    return item["enabled"] and item["created"] == item["updated"] == at and history == [
        {"at": at, "action": "add", "note": None, "before": None, "after": after}]


class ItemsMixin:
    """The item half of :class:`..store.KnowledgeBase` (its ``_db``, ``_lock``, ``_write``,
    ``path`` and ``_refresh``)."""

    def items(self, enabled_only: bool = False, query: str | None = None) -> list[dict]:
        """Every item: id, text, enabled, entries (how many state it), created, updated;
        ``query``: only those whose text holds every word of it (case ignored)."""
        sql = ("SELECT i.id, i.text, i.enabled, i.created, i.updated, "
               "(SELECT COUNT(DISTINCT entry_id) FROM entry_items l WHERE l.item_id = i.id) "
               "AS entries FROM items i" + (" WHERE i.enabled=1" if enabled_only else "")
               + " ORDER BY i.id")
        with self._lock:
            rows = [{**dict(r), "enabled": bool(r["enabled"])}
                    for r in self._db.execute(sql).fetchall()]
        words = (query or "").lower().split()
        return [r for r in rows if all(w in r["text"].lower() for w in words)]

    def item(self, item_id: int) -> dict[str, Any]:
        """An item with the entries that state it (id, source, round, run, summary, enabled)."""
        with self._lock:
            row = _item_row(self._db, item_id) if -(1 << 63) <= item_id < 1 << 63 else None
            if row is None:
                raise DataError(f"kb {self.path}: no item {item_id}")
            entries = self._db.execute(
                "SELECT id, source_id, round, run, summary, enabled FROM entries WHERE id IN "
                "(SELECT entry_id FROM entry_items WHERE item_id=?) ORDER BY id",
                (item_id,)).fetchall()
        return {**row, "entries": [{**dict(e), "enabled": bool(e["enabled"])}
                                   for e in entries]}

    def item_of(self, text: str) -> int | None:
        """The id of the item that states ``text`` (:func:`item_key`), or None."""
        with self._lock:
            row = self._db.execute("SELECT id FROM items WHERE key=?",
                                   (item_key(text),)).fetchone()
        return None if row is None else row[0]

    def _change_item(self, item_id: int, action: str, note: str | None,
                     text: str | None = None, enabled: bool | None = None) -> dict[str, Any]:
        with self._write() as db:
            return self._change_item_in(db, item_id, action, note, text, enabled)

    def _change_item_in(self, db: sqlite3.Connection, item_id: int, action: str,
                        note: str | None, text: str | None = None,
                        enabled: bool | None = None) -> dict[str, Any]:
        """One item change inside the caller's transaction: the item, its entries, its history."""
        before = _item_row(db, item_id)
        if before is None:
            raise DataError(f"kb {self.path}: no item {item_id}")
        now = time.time()
        if text is not None:
            other = db.execute("SELECT id FROM items WHERE key=? AND id<>?",
                               (item_key(text), item_id)).fetchone()
            if other is not None:
                raise DataError(f"kb {self.path}: item {other[0]} already states "
                                f"{text!r}; disable item {item_id} instead")
            db.execute("UPDATE items SET text=?, key=?, updated=? WHERE id=?",
                       (" ".join(text.split()), item_key(text), now, item_id))
        if enabled is not None:
            db.execute("UPDATE items SET enabled=?, updated=? WHERE id=?",
                       (int(enabled), now, item_id))
        after = _item_row(db, item_id)
        self._refresh(db, linked_entries(db, item_id))
        log_item(db, item_id, action, before, after, note, at=now)
        return after

    def edit_item(self, item_id: int, text: str, note: str | None = None) -> dict[str, Any]:
        """New wording for an item: every entry that states it, and so every block, changes."""
        from .store import _check_text

        _check_text("text", text, "item text")
        return self._change_item(item_id, "edit", note, text=text)

    def set_item_enabled(self, item_id: int, enabled: bool,
                         note: str | None = None) -> dict[str, Any]:
        """Disable (or enable again) an item everywhere: no block states it while disabled."""
        current = self.item(item_id)
        if current["enabled"] == bool(enabled):
            return {k: v for k, v in current.items() if k != "entries"}
        return self._change_item(item_id, "enable" if enabled else "disable", note,
                                 enabled=bool(enabled))

    def item_history(self, item_id: int) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM item_history WHERE item_id=? ORDER BY rowid",
                                    (item_id,)).fetchall()
        return [{**dict(r), "before": json.loads(r["before"]) if r["before"] else None,
                 "after": json.loads(r["after"]) if r["after"] else None} for r in rows]

    def _export_items(self, entries: list[tuple[int, float]]
                      ) -> tuple[dict[int, list[dict]], list[dict]]:
        """What an export writes of the items, inside the caller's read transaction
        (``entries``: (id, created) of the exported entries, in id order): per entry id its
        linked items, ``{"text", "enabled"}`` in link order; and the item lines, ``{"item":
        {"text", "enabled", "created", "updated"}, "history": [item_history records without
        item_id]}``, one per linked item that an import could not make again from the entry
        lines alone: disabled, changed, or not stated first (with one "add" row and no note)
        by the first entry that states it."""
        db = self._db
        items = {r[0]: {"text": r[1], "enabled": bool(r[2]), "created": r[3], "updated": r[4]}
                 for r in db.execute("SELECT id, text, enabled, created, updated FROM items "
                                     "ORDER BY id")}
        linked: dict[int, list[dict]] = {}
        first: dict[int, int] = {}  # item id -> the first entry (in id order) stating it
        for entry_id, item_id in db.execute("SELECT entry_id, item_id FROM entry_items "
                                            "ORDER BY entry_id, pos"):
            it = items[item_id]
            linked.setdefault(entry_id, []).append({"text": it["text"],
                                                    "enabled": it["enabled"]})
            first.setdefault(item_id, entry_id)
        history: dict[int, list[dict]] = {}
        for r in db.execute("SELECT * FROM item_history ORDER BY rowid"):
            try:
                history.setdefault(r["item_id"], []).append({
                    "at": r["at"], "action": r["action"], "note": r["note"],
                    "before": json.loads(r["before"]) if r["before"] else None,
                    "after": json.loads(r["after"]) if r["after"] else None})
            except ValueError as err:
                raise DataError(f"kb {self.path}: the history of item {r['item_id']} is "
                                f"damaged ({err})") from None
        created = dict(entries)
        return linked, [{"item": it, "history": history.get(i, [])} for i, it in items.items()
                        if i in first and not _remade(i, it, history.get(i, []),
                                                      created.get(first[i]))]

    def item_counts(self) -> dict[str, int]:
        """Distinct items, and how many statements of them in entries were merged into them."""
        with self._lock:
            distinct = self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            links = self._db.execute("SELECT COUNT(*) FROM entry_items").fetchone()[0]
            stated = self._db.execute(
                "SELECT COUNT(DISTINCT item_id) FROM entry_items").fetchone()[0]
        return {"items": distinct, "merged": links - stated}
