"""Scoring predictions made elsewhere (``nesyloop eval --task T --predictions FILE.jsonl``):
any model's outputs, one JSON object a line, scored with the same extractor as ``nesyloop
eval``'s students.

A line holds ``prediction`` (the model's output text), and ``id`` or ``question`` to find the
task's example: the id as nesyloop gives it (``bbh-snarks-004``; ``id`` of your user file), or
the question as the data set has it (whitespace-normalised; with or without the task's header;
for multiple choice with or without the ``Options:`` block). ``subtask`` narrows a question to
one subtask where the task has them. A question the data set holds more than once is matched
in order: the first line naming it to its first example, the next to the second. A line that
matches no example, or an example an earlier line matched, is an error naming the line; so is
a file over the input size limits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io import MAX_ROW_BYTES, check_file_size, iter_jsonl_lines
from ..scoring import score_output
from ..tasks.base import Example

__all__ = ["match_predictions", "score_predictions"]


def _key(text: str) -> str:
    return " ".join(text.split())


def _keys(ex: Example) -> set[str]:
    bare = ex.meta.get("question", ex.question)
    keys = {_key(ex.question), _key(bare)}
    if "\nOptions:" in bare:
        keys.add(_key(bare.split("\nOptions:", 1)[0]))
    return keys - {""}


class _Index:
    """Examples by id and by (subtask, normalised question)."""

    def __init__(self, examples: list[Example]):
        self.by_id: dict[str, Example] = {}
        self.by_q: dict[tuple[str, str], list[Example]] = defaultdict(list)
        self.subtasks = sorted({ex.meta["subtask"] for ex in examples if ex.meta.get("subtask")})
        for ex in examples:
            self.by_id.setdefault(ex.id, ex)
            for k in _keys(ex):
                self.by_q[(ex.meta.get("subtask") or "", k)].append(ex)
                self.by_q[("*", k)].append(ex)


def _field(row: dict[str, Any], name: str, where: str, types: tuple[type, ...]) -> Any:
    v = row.get(name)
    if v is not None and (isinstance(v, bool) or not isinstance(v, types)):
        raise DataError(f"{where}: field {name!r} must be a "
                        f"{'string' if types == (str,) else 'string or integer'}")
    return v


def _find(row: dict[str, Any], where: str, index: _Index, used: Container[str], what: str
          ) -> Example:
    """The example a prediction line names (see the module doc)."""
    rid = _field(row, "id", where, (str, int))
    question = _field(row, "question", where, (str,))
    sub = _field(row, "subtask", where, (str,))
    if sub is not None and index.subtasks and sub not in index.subtasks:
        raise DataError(f"{where}: field 'subtask' {sub!r} is not a subtask of {what}")
    if rid is not None:
        ex = index.by_id.get(str(rid).strip())
        if ex is None:
            raise DataError(f"{where}: no example of {what} has id {str(rid)!r}")
        if sub is not None and ex.meta.get("subtask") not in (None, sub):
            raise DataError(f"{where}: id {str(rid)!r} is in subtask "
                            f"{ex.meta.get('subtask')!r}, not {sub!r}")
        return ex
    if question is None or not question.strip():
        raise DataError(f"{where}: give field 'id' or 'question' to name the example")
    scope = sub if sub is not None and index.subtasks else "*"
    found = index.by_q.get((scope, _key(question)), [])
    if not found:
        raise DataError(f"{where}: no example of {what} has this question "
                        f"({_key(question)[:60]!r})")
    # a question the data set holds twice (BBH has a few, some with different answers): lines
    # take its examples in the data set's order, as the official scorers pair them
    return next((ex for ex in found if ex.id not in used), found[0])


def match_predictions(path: str | Path, examples: list[Example], what: str
                      ) -> list[tuple[Example, str]]:
    """(example, prediction text) per line of a predictions file; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--predictions: {path} is not a file")
    check_file_size(path)
    index, used, out = _Index(examples), {}, []
    for lineno, row in iter_jsonl_lines(path, MAX_ROW_BYTES):
        where = f"{path}:{lineno}"
        pred = row.get("prediction")
        if not isinstance(pred, str):
            raise DataError(f"{where}: field 'prediction' must be a string (the model's output)"
                            if "prediction" in row else f"{where}: missing field 'prediction'")
        ex = _find(row, where, index, used, what)
        if ex.id in used:
            raise DataError(f"{where}: predicts example {ex.id!r} again (first on line "
                            f"{used[ex.id]})")
        used[ex.id] = lineno
        out.append((ex, pred))
    if not out:
        raise DataError(f"{path}: no predictions (expected one JSON object a line)")
    return out


def score_predictions(path: str | Path, examples: list[Example], what: str
                      ) -> list[dict[str, Any]]:
    """Scored records (id, subtask, prediction, gold, strict/flexible verdicts and rules)."""
    return [{"id": ex.id, "subtask": ex.meta.get("subtask"), "output": pred, "gold": ex.answer,
             **score_output(pred, ex.answer, ex.answer_type, ex.options)}
            for ex, pred in match_predictions(path, examples, what)]
