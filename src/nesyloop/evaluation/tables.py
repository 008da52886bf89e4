"""Markdown tables of an evaluation: one row per student (strict, flexible, n), and, for tasks
with subtasks (BBH, AGIEval), one row per subtask with a strict/flexible column pair per
student."""

from __future__ import annotations

from typing import Any


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def overall_table(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| student | strict | flexible | n |", "|---|---:|---:|---:|"]
    for label, r in results.items():
        o = r["overall"]
        rows.append(f"| {label} | {pct(o['strict'])} | {pct(o['flexible'])} | {o['n']} |")
    return "\n".join(rows)


def subtask_table(results: dict[str, dict[str, Any]]) -> str | None:
    """Per-subtask accuracy (strict / flexible per student); None when there are no subtasks."""
    subs = sorted({s for r in results.values() for s in r.get("subtasks", {})})
    if not subs:
        return None
    labels = list(results)
    head = "| subtask | n | " + " | ".join(f"{lab} strict | {lab} flexible" for lab in labels)
    rows = [head + " |", "|---|---:|" + "---:|" * (2 * len(labels))]
    for sub in subs:
        cells, n = [], 0
        for lab in labels:
            m = results[lab]["subtasks"].get(sub)
            n = m["n"] if m else n
            cells += [pct(m["strict"]), pct(m["flexible"])] if m else ["-", "-"]
        rows.append(f"| {sub} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def render(title: str, notes: list[str], results: dict[str, dict[str, Any]]) -> str:
    parts = [f"# {title}", "", *notes, "", overall_table(results), ""]
    sub = subtask_table(results)
    if sub:
        parts += ["## Per subtask (%)", "", sub, ""]
    return "\n".join(parts)
