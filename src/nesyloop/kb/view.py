"""Plain-text views of knowledge-base entries for people: one-line rows, a full entry, the
changes between two versions of an entry, and statistics (used by ``nesyloop kb``)."""

from __future__ import annotations

import json
import time
from typing import Any

from .store import Entry, KnowledgeBase


def local_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def row(head: str, summary: str, width: int = 100) -> str:
    """``head`` then the summary on one line, cut to ``width`` characters."""
    return head + one_line(summary, max(width - len(head), 10))


def format_entry(e: Entry) -> str:
    state = "enabled" if e.enabled else "disabled"
    out = [f"entry {e.id}  ({state}, retrieved {e.retrieved} times)", f"summary: {e.summary}",
           "knowledge:"]
    out += [f"  {i}. {k}" for i, k in enumerate(e.knowledge, 1)] or ["  (none)"]
    out.append("provenance:")
    for name, value in (("source_id", e.source_id), ("question", e.question),
                        ("student_response", e.student_response), ("teacher", e.teacher),
                        ("run", e.run), ("round", e.round), ("created", local_time(e.created)),
                        ("updated", local_time(e.updated))):
        lines = ("(none)" if value is None else str(value)).splitlines() or [""]
        out.append(f"  {name + ':':<18}{lines[0]}")
        out += [" " * 20 + ln for ln in lines[1:]]
    return "\n".join(out)


def changes(before: dict | None, after: dict | None) -> dict[str, list]:
    """{field: [before, after]} for summary, knowledge and enabled where they differ."""
    b, a = before or {}, after or {}
    return {f: [b.get(f), a.get(f)] for f in ("summary", "knowledge", "enabled")
            if b.get(f) != a.get(f)}


def describe_change(field: str, old: Any, new: Any) -> str:
    """One compact line: ``knowledge: -"old item" +"new item"`` or ``field: old -> new``."""
    def show(v: Any) -> str:
        return "(none)" if v is None else json.dumps(v, ensure_ascii=False)
    if old is None:
        return f"{field}: {show(new)}"
    if field == "knowledge" and new is not None:
        parts = [f"-{show(k)}" for k in old if k not in new]
        parts += [f"+{show(k)}" for k in new if k not in old]
        if parts:
            return "knowledge: " + " ".join(parts)
    return f"{field}: {show(old)} -> {show(new)}"


def kb_stats(kb: KnowledgeBase, top: int = 10) -> dict[str, Any]:
    entries = kb.list()
    ranked = sorted((e for e in entries if e.retrieved), key=lambda e: (-e.retrieved, e.id))
    return {**kb.stats(), "sources": len({e.source_id for e in entries if e.source_id}),
            "top_retrieved": [{"id": e.id, "retrieved": e.retrieved, "summary": e.summary}
                              for e in ranked[:top]]}
