"""Text handling around the teacher's error analysis: cleaning the student's response before the
teacher sees it, and parsing the teacher's reply into a knowledge-base entry (or a reason why not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .store import MAX_TEXT_CHARS

REPETITION_MARK = " [...]"
_SUMMARY = re.compile(r"^[\s>#*_-]*learning\s+summary\s*[*_]*\s*:\s*[*_]*", re.I | re.M)
_KNOWLEDGE = re.compile(r"^[\s>#*_-]*supplementary\s+knowledge\s*[*_]*\s*:\s*[*_]*", re.I | re.M)
_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(.*\S)\s*$")
_PLACEHOLDER = re.compile(r"<[^<>]{3,}>")
MAX_SUMMARY_WORDS = 120
MAX_ITEMS = 8


def cut_repetition(words: list[str], min_span: int = 12,
                   max_period: int = 60) -> tuple[list[str], bool]:
    """Cut a degenerate loop: the first place where a block of ``p`` words repeats back to back
    (3+ copies, or 2+ copies when ``p`` >= 10) and the copies cover ``min_span`` words or more.
    Keeps the text up to the end of the block's first copy."""
    n = len(words)
    for i in range(n):
        for p in range(1, min(max_period, (n - i) // 2) + 1):
            if words[i + p] != words[i]:
                continue
            copies = 1
            while words[i + copies * p:i + (copies + 1) * p] == words[i:i + p]:
                copies += 1
            if copies >= (2 if p >= 10 else 3) and copies * p >= min_span:
                return words[:i + p], True
    return words, False


def clean_response(text: str, max_words: int = 256) -> tuple[str, dict]:
    """The student's response as the teacher should see it: degenerate repetition cut out, then
    truncated to ``max_words`` words. Returns the text and what was done."""
    words = text.split()
    words, repeated = cut_repetition(words)
    truncated = len(words) > max_words
    words = words[:max_words]
    out = " ".join(words)
    if repeated or truncated:
        out += REPETITION_MARK
    return out, {"repetition_cut": repeated, "truncated": truncated, "words": len(words)}


@dataclass
class ParsedAnalysis:
    summary: str | None
    knowledge: list[str]
    reason: str | None  # None when the reply parsed into an entry

    @property
    def ok(self) -> bool:
        return self.reason is None


def _reject(reason: str) -> ParsedAnalysis:
    return ParsedAnalysis(None, [], reason)


def parse_analysis(text: str) -> ParsedAnalysis:
    """Parse "Learning summary: ... / Supplementary knowledge: 1. ... 2. ..." (markdown bold,
    bullets and either order tolerated). Malformed replies come back with ``reason`` set."""
    if not text or not text.strip():
        return _reject("empty reply")
    s = _SUMMARY.search(text)
    k = _KNOWLEDGE.search(text)
    if s is None:
        return _reject("no 'Learning summary:' section")
    if k is None:
        return _reject("no 'Supplementary knowledge:' section")
    if s.start() < k.start():
        summary_text, knowledge_text = text[s.end():k.start()], text[k.end():]
    else:
        knowledge_text, summary_text = text[k.end():s.start()], text[s.end():]
    summary = " ".join(summary_text.split())
    if not summary:
        return _reject("empty learning summary")
    items, loose = [], []
    for line in knowledge_text.splitlines():
        m = _ITEM.match(line)
        if m:
            items.append(" ".join(m.group(1).split()))
        elif line.strip():
            if items:  # a wrapped item continues on the next line
                items[-1] += " " + " ".join(line.split())
            else:
                loose.append(" ".join(line.split()))
    if not items and loose:
        items = loose
    items = [it.strip(" *_") for it in items if it.strip(" *_")]
    if not items:
        return _reject("no supplementary knowledge items")
    if _PLACEHOLDER.search(summary) or any(_PLACEHOLDER.search(it) for it in items):
        return _reject("template placeholder left in the reply")
    if len(summary.split()) > MAX_SUMMARY_WORDS:
        return _reject(f"learning summary longer than {MAX_SUMMARY_WORDS} words")
    if len(items) > MAX_ITEMS:
        return _reject(f"more than {MAX_ITEMS} knowledge items")
    if max(len(summary), *map(len, items)) > MAX_TEXT_CHARS:  # the KB would refuse it
        return _reject(f"a text longer than {MAX_TEXT_CHARS} characters")
    return ParsedAnalysis(summary, items, None)
