"""Where a knowledge-base student's errors come from, on Bazaar, where every problem lists the
facts it needs (``meta.facts``).

Per evaluation split: **coverage**, the share of questions whose needed facts are all stated in
the KB; **hit**, the share whose retrieved knowledge block states them all; and the accuracy on
hits and on misses. Low coverage calls for more error analysis, covered-but-missed for better
retrieval, and wrong answers on hits for better reading. A wrong answer on a hit whose
rationale does not restate one of the block's needed facts is a reading error (the student
wrote another entity or value than its block gives); one that restates them all went wrong in
its reasoning. A fact counts as stated when its sentence appears in a knowledge item, block or
rationale (case and spacing ignored).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ...kb.abstract import restore
from .facts import World


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _states(text: str, sentence: str) -> bool:
    pattern = r"(?<![\w])" + re.escape(_norm(sentence).rstrip(".")) + r"(?![\w])"
    return re.search(pattern, text) is not None


def coverage(world: World, kb_items: Iterable[str], records: list[dict[str, Any]],
             facts_by_id: dict[str, list[str]]) -> dict[str, Any]:
    """The coverage/hit summary of scored prediction ``records`` (each with ``id``, ``strict``,
    the ``knowledge`` block it was given, None when none, and its ``output``); ``facts_by_id``:
    the fact ids each question needs; ``kb_items``: every knowledge item of the KB."""
    kb_text = "\n".join(_norm(k) for k in kb_items)
    in_kb: dict[str, bool] = {}  # fact id -> stated in the KB (each looked up once)
    n = covered = hit = ok_hit = ok_miss = unread = 0
    for r in records:
        needed = facts_by_id.get(r["id"], [])
        sentences = [world.fact(f).sentence for f in needed]
        block = _norm(r.get("knowledge") or "")
        n += 1
        covered += all(in_kb.setdefault(f, _states(kb_text, s))
                       for f, s in zip(needed, sentences, strict=True))
        got = all(_states(block, s) for s in sentences)
        hit += got
        if got:
            ok_hit += bool(r["strict"])
            output = _norm(restore(r.get("output") or "", r.get("abstracted") or []))
            unread += not r["strict"] and not all(_states(output, s) for s in sentences)
        else:
            ok_miss += bool(r["strict"])
    n_miss = n - hit

    def share(a: int, b: int) -> float | None:
        return round(100 * a / b, 1) if b else None

    return {"n": n, "coverage": share(covered, n), "hit": share(hit, n), "hits": hit,
            "accuracy_hit": share(ok_hit, hit), "accuracy_miss": share(ok_miss, n_miss),
            "wrong_hit_unread": share(unread, hit - ok_hit)}


def coverage_table(rows: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of :func:`coverage` summaries by split."""

    def cell(x) -> str:
        return "–" if x is None else f"{x:.1f}"

    out = ["| split | n | coverage % | hit % | accuracy on hits % | accuracy on misses % "
           "| wrong on hits, a block fact not restated % |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for split, r in rows.items():
        out.append(f"| {split} | {r['n']} | {cell(r['coverage'])} | {cell(r['hit'])} | "
                   f"{cell(r['accuracy_hit'])} | {cell(r['accuracy_miss'])} | "
                   f"{cell(r.get('wrong_hit_unread'))} |")
    return "\n".join(out)
