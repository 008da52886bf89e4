"""Fact sheets: facts a person writes down (a price list, a glossary, a season's changes),
brought into a KB by ``nesyloop kb import-facts``.

Formats, by suffix: ``.csv`` (a ``sentence`` column, optionally ``key``), ``.jsonl`` (one
object per line with ``sentence``, optionally ``key``), anything else Markdown/plain text: every
list item ("- ", "* " or "1. ") is a fact; blank lines and "#" headings are skipped, and any
other line is an error.

**The same fact.** A line states the same fact as a KB item when the two sentences are equal
once every number is replaced by "#" (case, spacing, final period ignored): "A jincloak costs
8 coins." and "A jincloak costs 5 coins." are one fact with two values; "A jincloak costs 5
coins." and "A jincloak is priced at 5 coins." are not. With a ``key``, a line also supersedes
whatever an earlier sheet line with the same key stated, however it was worded. Bazaar's sheets
use the fact id as key, and every Bazaar fact's sentence differs from every other's once its
numbers are masked, so "the same fact" is exact there.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .itemstore import item_key

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.*\S)\s*$")


@dataclass(frozen=True)
class SheetLine:
    line: int
    sentence: str
    key: str | None = None


def fact_subject(sentence: str) -> str:
    """What a sentence says a value of: the sentence with every number masked."""
    return item_key(_NUMBER.sub("#", sentence))


def _check(path: Path, n: int, sentence, key) -> SheetLine:
    from .store import check_length, check_utf8

    if not isinstance(sentence, str) or not sentence.strip():
        raise DataError(f"{path}:{n}: no sentence")
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise DataError(f"{path}:{n}: the key must be a non-empty string")
    for what, text in (("sentence", sentence), ("key", key or "")):
        try:
            check_utf8(what, text)
            check_length(what, text)
        except DataError as err:
            raise DataError(f"{path}:{n}: {err}") from None
    return SheetLine(n, " ".join(sentence.split()), key.strip() if key else None)


def _csv_lines(path: Path, text: str) -> list[SheetLine]:
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    if "sentence" not in header:
        raise DataError(f"{path}:1: the header has no 'sentence' column (columns: "
                        f"{', '.join(header) or 'none'})")
    out = []
    for n, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
        rec = dict(zip(header, row, strict=True))
        out.append(_check(path, n, rec["sentence"], rec.get("key") or None))
    return out


def _jsonl_lines(path: Path, text: str) -> list[SheetLine]:
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as err:
            raise DataError(f"{path}:{n}: not valid JSON ({err.args[0]})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: expected a JSON object with 'sentence'")
        out.append(_check(path, n, obj.get("sentence"), obj.get("key")))
    return out


def _markdown_lines(path: Path, text: str) -> list[SheetLine]:
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        m = _LIST_ITEM.match(raw)
        if m is None:
            raise DataError(f"{path}:{n}: not a list item (a fact is a line '- <sentence>')")
        out.append(_check(path, n, m.group(1), None))
    return out


def read_sheet(path: str | Path) -> list[SheetLine]:
    """The facts of a sheet; a bad line, or two lines giving one fact two values, is a
    one-line DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 (byte {err.start + 1})") from None
    read = {".csv": _csv_lines, ".jsonl": _jsonl_lines}.get(path.suffix.lower(), _markdown_lines)
    lines = read(path, text)
    seen: dict[str, SheetLine] = {}
    for ln in lines:
        for k in (fact_subject(ln.sentence), f"key:{ln.key}" if ln.key else None):
            if k is None:
                continue
            other = seen.setdefault(k, ln)
            if other is not ln and item_key(other.sentence) != item_key(ln.sentence):
                raise DataError(f"{path}:{ln.line}: gives the fact of line {other.line} another "
                                f"value ({ln.sentence!r} against {other.sentence!r})")
    if not lines:
        raise DataError(f"{path}: no facts in the file")
    return lines


@dataclass
class Change:
    """What one sheet line does to a KB."""

    line: SheetLine
    disable: list[dict]  # the enabled items it supersedes: id, text, entries
    enable: int | None  # its own item, when the KB has it disabled
    add: bool  # a human entry stating it (False: a sheet already did)

    def describe(self, path: Path) -> list[str]:
        at = f"{path.name}:{self.line.line}"
        out = [f"{at}: disable item {d['id']} {d['text']!r} ({d['entries']} entries), "
               f"superseded by {self.line.sentence!r}" for d in self.disable]
        if self.enable is not None:
            out.append(f"{at}: enable item {self.enable} {self.line.sentence!r}")
        out.append(f"{at}: add entry {self.line.sentence!r}" if self.add
                   else f"{at}: unchanged ({self.line.sentence!r} is stated by a fact sheet)")
        return out


def plan_import(kb, lines: list[SheetLine]) -> list[Change]:
    """What importing ``lines`` would change in ``kb`` (nothing is written)."""
    items = kb.items()
    by_key = {item_key(it["text"]): it for it in items}
    by_subject: dict[str, list[dict]] = {}
    for it in items:
        by_subject.setdefault(fact_subject(it["text"]), []).append(it)
    human: set[str] = set()  # item keys a sheet stated
    keyed: dict[str, set[str]] = {}  # sheet key -> item keys stated under it
    for e in kb.list():
        if e.teacher == "human":
            human.update(map(item_key, e.knowledge))
            if (e.source_id or "").startswith("facts:"):
                keyed.setdefault(e.source_id[6:], set()).update(map(item_key, e.knowledge))
    out = []
    for ln in lines:
        own = item_key(ln.sentence)
        old = [it for it in by_subject.get(fact_subject(ln.sentence), []) if it["enabled"]]
        old += [by_key[k] for k in keyed.get(ln.key or "", ()) if k in by_key
                and by_key[k]["enabled"] and by_key[k] not in old]
        mine = by_key.get(own)
        out.append(Change(ln, [{"id": it["id"], "text": it["text"], "entries": it["entries"]}
                               for it in old if item_key(it["text"]) != own],
                          mine["id"] if mine and not mine["enabled"] else None,
                          not (own in human and mine and mine["enabled"])))
    return out


def apply_import(kb, path: Path, changes: list[Change], note: str | None = None) -> dict:
    """Carry out :func:`plan_import`'s changes in one transaction (all or nothing): superseded
    items disabled, the line's own item enabled, a human-provenance entry per added line (the
    sentence as summary and knowledge, ``teacher`` "human", ``source_id`` ``facts:<key>`` or
    ``FILE:LINE``, the file and line in its "import" history row)."""
    import time

    from .store import Entry

    counts = {"added": 0, "disabled": 0, "enabled": 0, "unchanged": 0}
    done: set[int] = set()
    with kb._write() as db:
        for c in changes:
            at = f"{path}:{c.line.line}"
            why = f"superseded by {c.line.sentence!r} ({at})" + (f"; {note}" if note else "")
            for d in c.disable:
                if d["id"] not in done:  # two lines of one sheet may supersede one item
                    kb._change_item_in(db, d["id"], "disable", why, enabled=False)
                    counts["disabled"] += 1
                    done.add(d["id"])
            if c.enable is not None:
                kb._change_item_in(db, c.enable, "enable", f"stated again by {at}",
                                    enabled=True)
                counts["enabled"] += 1
            if not c.add:
                counts["unchanged"] += 1
                continue
            now = time.time()
            # the summary is the fact itself: a block shows it once (kb/retrieve.py), and
            # where it came from is its source, teacher and history
            e = Entry(summary=c.line.sentence, knowledge=[c.line.sentence], teacher="human",
                      source_id=f"facts:{c.line.key}" if c.line.key else at,
                      created=now, updated=now)
            kb._put(db, e)
            kb._log(db, e.id, "import", None, e, f"fact sheet {at}" + (f"; {note}" if note
                                                                          else ""), at=now)
            counts["added"] += 1
    return counts
