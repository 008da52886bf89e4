"""AGIEval v1, English tasks: one ``<task>.jsonl`` per subtask with ``{passage, question,
options: ["(A)..", ..], label: "B", answer, other}``. Multiple choice everywhere except
``math``, whose ``answer`` is free-form (LaTeX allowed) and scored as text. The question the
student reads is the passage (when there is one), the question, and the options as ``(A) ..``
lines under ``Options:``.
"""

from __future__ import annotations

import re
from typing import Any

from ...errors import DataError
from ..base import Example
from .bbh import check_subtasks
from .settings import BenchSettings
from .source import field, hub_rows, local_path, read_rows

MC_SUBTASKS = ("aqua-rat", "gaokao-english", "logiqa-en", "lsat-ar", "lsat-lr", "lsat-rc",
               "sat-en", "sat-en-without-passage", "sat-math")
SUBTASKS = (*MC_SUBTASKS, "math")
HEADER_MC = 'Answer the multiple-choice question. End with "The answer is (X)."'
HEADER_MATH = 'Solve the math problem. End with "The answer is" and the final answer.'
_PREFIX = re.compile(r"^\s*\(?\s*([A-Z])\s*(?:\)|\.|:|\s)\s*")


def strip_option(text: str, i: int) -> str:
    """``"(A)five"``, ``" A. five "``, ``"A five"`` -> ``"five"`` when the letter is the i-th
    (a repeated prefix, upstream's ``"(A)A)59"``, goes too)."""
    m = _PREFIX.match(text)
    if m and m.group(1) == chr(65 + i):
        text = text[m.end():]
        again = re.match(rf"\(?{chr(65 + i)}\)\s*", text)
        text = text[again.end():] if again else text
    return text.strip()


def parse_options(raw: list) -> list[str]:
    """Option texts in letter order. A few upstream items list their options out of order
    (``(A).., (C).., (B).., (D)..``); their labels follow the prefixes, so the prefixes decide."""
    texts = [str(o) for o in raw]
    letters = [m.group(1) if (m := _PREFIX.match(o)) else None for o in texts]
    if None not in letters and sorted(letters) == [chr(65 + i) for i in range(len(texts))]:
        texts = [o for _, o in sorted(zip(letters, texts, strict=True))]
    return [strip_option(o, i) for i, o in enumerate(texts)]


def format_mc(question: str, options: list[str]) -> str:
    lines = [f"({chr(65 + i)}) {o}" for i, o in enumerate(options)]
    return "\n".join([question, "Options:", *lines])


def agieval_example(sub: str, row: dict[str, Any], idx: int, where: str) -> Example:
    passage = (row.get("passage") or "").strip()
    question = str(field(row, where, "question", "query")).strip()
    text = f"{passage}\n{question}" if passage else question
    meta = {"subtask": sub, "header": HEADER_MATH if sub == "math" else HEADER_MC}
    if sub == "math":
        gold = str(field(row, where, "answer")).strip()
        if not gold:
            raise DataError(f"{where}: field 'answer' is empty")
        return Example(id=f"agieval-{sub}-{idx:04d}", question=text, answer=gold,
                       answer_type="text", meta=meta)
    raw = field(row, where, "options", "choices")
    if not isinstance(raw, list) or len(raw) < 2:
        raise DataError(f"{where}: field 'options' must be a list of at least two options")
    options = parse_options(raw)
    label = row.get("label")
    if label is None and isinstance(row.get("gold"), list) and row["gold"]:  # the hub's form
        label = chr(65 + int(row["gold"][0]))
    if not isinstance(label, str) or not re.fullmatch(r"[A-Z]", label.strip().upper()) \
            or ord(label.strip().upper()) - 65 >= len(options):
        raise DataError(f"{where}: field 'label' must be one option letter (got {label!r})")
    return Example(id=f"agieval-{sub}-{idx:04d}", question=format_mc(text, options),
                   answer=label.strip().upper(), answer_type="choice", options=options,
                   meta=meta)


def load_agieval(s: BenchSettings) -> dict[str, list[Example]]:
    rows: list[Example] = []
    folder = None if s.hub else local_path("agieval", s, "agieval", folder=True)
    for sub in check_subtasks(s.subtasks, SUBTASKS, "agieval"):
        if folder is None:
            data = hub_rows("agieval", f"hails/agieval-{sub}", None, "test")
            rows += [agieval_example(sub, r, i, f"hails/agieval-{sub} row {i}")
                     for i, r in enumerate(data)]
            continue
        f = folder / f"{sub}.jsonl"
        if not f.exists():
            raise DataError(f"agieval: {f} not found (subtask {sub})")
        rows += [agieval_example(sub, r, i, f"{f}:{i + 1}") for i, r in enumerate(read_rows(f))]
    return {"all": rows}
