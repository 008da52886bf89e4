"""Comparing an extracted answer with the gold one, and scoring outputs strict and flexible.

The same functions serve teacher filtering (keep a rationale only when ``score_output(...)``
says its answer equals gold), student error mining, and evaluation (``summarize``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from nesyloop.scoring.extract import (choice_letter, clean_text, extract, normalize_text,
                                      parse_number)

__all__ = ["answers_match", "score_output", "summarize", "NUMBER_TOL"]

NUMBER_TOL = 1e-6


def _numbers_equal(pred: str, gold: str) -> bool | None:
    """True/False when both parse as numbers, None when either does not."""
    a, b = parse_number(pred), parse_number(gold)
    if a is None or b is None:
        return None
    return abs(float(a - b)) <= NUMBER_TOL


def answers_match(pred: str | None, gold: str, answer_type: str, options: list[str] | None = None) -> bool:
    """Whether a predicted answer equals the gold one.

    number: numeric equality within 1e-6 ("18" == "18.0" == "$18" == "18.50"/"18.5" rules).
    choice: same letter, case-insensitive; "(B)" == "B" == "b"; either side may be an option's text.
    text:   normalised exact match (case, whitespace, quotes, trailing period); numbers compare
            numerically ("24" == "24.0"). The gold goes through the LaTeX cleaning model outputs
            get (``14,\\!400`` == "14,400"); when either side holds LaTeX or ``$``, ``\\left``/
            ``\\right``, ``\\dfrac`` and spaces do not matter either.
    """
    if pred is None or gold is None:
        return False
    if answer_type == "number":
        eq = _numbers_equal(pred, gold)
        if eq is not None:
            return eq
        return normalize_text(pred) == normalize_text(gold) is not None
    if answer_type == "choice":
        p, g = choice_letter(pred, options), choice_letter(gold, options)
        if p is not None and g is not None:
            return p == g
        return normalize_text(pred) == normalize_text(gold) is not None
    if answer_type == "text":
        gold = clean_text(gold)
        eq = _numbers_equal(pred, gold)
        if eq is not None:
            return eq
        p, g = normalize_text(pred), normalize_text(gold)
        if p is None or g is None:
            return False
        return p == g or (_has_latex(p + g) and _latex_key(p) == _latex_key(g))
    raise ValueError(f"unknown answer_type {answer_type!r}")


def _has_latex(s: str) -> bool:
    return "\\" in s or "$" in s


def _latex_key(s: str) -> str:
    """A LaTeX answer without spacing commands, sizing, math delimiters or spaces."""
    s = re.sub(r"\\(?:left|right|displaystyle|[!,;: ])", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    return re.sub(r"\s+", "", s.replace("$", ""))


def score_output(text: str, gold: str, answer_type: str, options: list[str] | None = None) -> dict[str, Any]:
    """Extract strict and flexible answers from ``text`` and compare each with ``gold``."""
    s = extract(text, answer_type, options, mode="strict")
    f = extract(text, answer_type, options, mode="flexible")
    return {
        "strict": answers_match(s.value, gold, answer_type, options),
        "flexible": answers_match(f.value, gold, answer_type, options),
        "strict_pred": s.value,
        "strict_rule": s.rule,
        "flexible_pred": f.value,
        "flexible_rule": f.rule,
    }


def summarize(scored: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy of a list of ``score_output`` results: {"strict": acc, "flexible": acc, "n": n}."""
    rows = list(scored)
    n = len(rows)
    if n == 0:
        return {"strict": 0.0, "flexible": 0.0, "n": 0}
    return {
        "strict": sum(bool(r["strict"]) for r in rows) / n,
        "flexible": sum(bool(r["flexible"]) for r in rows) / n,
        "n": n,
    }
