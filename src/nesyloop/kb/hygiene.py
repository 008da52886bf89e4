"""Knowledge-base hygiene: two cheap checks on a teacher's parsed error analysis, so that a weak
teacher's slips do not become knowledge-base entries (docs/kb.md, "Hygiene").

**Copied demonstration.** A text (the learning summary, or one knowledge item) is a copy when at
least ``COPY_SHARE`` of its word ``COPY_N``-grams occur in the prompt's demonstrations. Words
are lower-cased runs of letters and digits, so punctuation, markdown and spacing do not hide a
copy. Six words is longer than the generic phrases every analysis shares with the
demonstrations ("the student used a wrong", "before adding or subtracting"), and half of the
text's 6-grams means at least half of it was lifted word for word. Texts shorter than
``COPY_N`` words are never judged: too short to tell a copy from a coincidence.

**False arithmetic.** Only the simplest claims are parsed: ``a op b = c`` with plain numbers
(``$``, thousands commas and decimals allowed) and one operator among ``+ - * / x × ·``. A
longer chain (``2 + 3 * 4 = 14``), a number touching a parenthesis, ``%``, ``^`` or another
operator, and anything with words between the numbers are left alone. ``+ - *`` must be exact
(to the precision ``c`` is written with); a division may also round or drop its remainder
(``17 / 5 = 3``). An equation the student's own response contains is a quotation of the
mistake, not a claim, and is never held against the teacher.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from fractions import Fraction

COPY_N = 6
COPY_SHARE = 0.5
COPIED = "copied the demonstration"
FALSE_ARITHMETIC = "false arithmetic"

_WORD = re.compile(r"[a-z0-9]+")
_NUM = r"\$?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\d%^(]|[.,]\d)"
_OP = r"(\\times|\\cdot|\\div|[-+*/×·÷−–]|(?<=\s)[xX](?=\s))"
_CHAIN = re.compile(rf"{_NUM}(?:\s*{_OP}\s*{_NUM})+\s*=\s*{_NUM}(?:\s*{_OP}\s*{_NUM})*")
_SIMPLE = re.compile(rf"{_NUM}\s*{_OP}\s*{_NUM}\s*=\s*{_NUM}")
_BEFORE = re.compile(r"(?:[-+*/×·÷−–=^(\\%$]|\d,?|\\times|\\cdot|\\div|\s[xX])$")
_AFTER = re.compile(r"^\s*[=(/^%]")
_OPS = {"+": "+", "-": "-", "−": "-", "–": "-", "*": "*", "×": "*", "·": "*", "x": "*",
        "X": "*", "\\times": "*", "\\cdot": "*", "/": "/", "÷": "/", "\\div": "/"}


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(ws: list[str], n: int = COPY_N) -> list[tuple[str, ...]]:
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def demo_ngrams(texts: Iterable[str], n: int = COPY_N) -> frozenset[tuple[str, ...]]:
    """Every word ``n``-gram of the demonstrations' texts (none spans two texts)."""
    return frozenset(g for t in texts for g in ngrams(words(t), n))


def copy_share(text: str, demo: frozenset[tuple[str, ...]], n: int = COPY_N) -> float:
    """The share of ``text``'s word ``n``-grams that occur in ``demo`` (0.0 under ``n`` words)."""
    grams = ngrams(words(text), n)
    return sum(g in demo for g in grams) / len(grams) if grams else 0.0


def is_copy(text: str, demo: frozenset[tuple[str, ...]], n: int = COPY_N,
            threshold: float = COPY_SHARE) -> bool:
    return bool(demo) and copy_share(text, demo, n) >= threshold


Equation = tuple[Fraction, str, Fraction, Fraction]


def _number(s: str) -> Fraction:
    return Fraction(s.replace(",", ""))


def equations(text: str) -> list[tuple[str, Equation]]:
    """The simple ``a op b = c`` claims in ``text``: (the text as written, parsed equation)."""
    out = []
    for m in _CHAIN.finditer(text):
        simple = _SIMPLE.fullmatch(m.group(0))
        before, after = text[:m.start()], text[m.end():]
        if simple is None or _BEFORE.search(before.rstrip()) or _AFTER.match(after) \
                or before[-1:].isalnum() or after[:1].isalnum():
            continue
        a, op, b, c = simple.groups()
        out.append((m.group(0), (_number(a), _OPS[op], _number(b), _number(c))))
    return out


def _decimals(c: Fraction) -> int:
    d = 0
    while c.denominator != 1 and d < 12:
        c, d = c * 10, d + 1
    return d


def holds(eq: Equation) -> bool:
    """Whether ``a op b = c`` is true to the precision ``c`` is written with."""
    a, op, b, c = eq
    if op == "/":
        if b == 0:
            return False
        exact = a / b
        if c.denominator == 1 and c in (math.floor(exact), math.ceil(exact)):
            return True  # whole groups, remainder dropped or rounded up
    else:
        exact = {"+": a + b, "-": a - b, "*": a * b}[op]
    return abs(exact - c) <= Fraction(1, 2 * 10 ** _decimals(c))


def false_equations(text: str, quoted: Iterable[Equation] = ()) -> list[str]:
    """The simple equations in ``text`` that are false, except those in ``quoted``."""
    skip = set(quoted)
    return [s for s, eq in equations(text) if eq not in skip and not holds(eq)]
