"""Your own data set: JSONL, JSON or CSV rows with ``question``, ``answer`` and optional
``choices`` (or ``options``), ``id``, ``rationale``, ``answer_type`` (number/choice/text) and
``subtask``. ``path`` is one file (its split taken from its name: train/dev/val/test, else
all) or a folder of ``train``/``dev``/``test`` files (``.jsonl``, ``.json`` or ``.csv``). A
``.json`` file is a JSON array of row objects, or one object a line like JSONL.

With choices, the answer is an option letter ("B", "(B)") or an option's text; without, a
number when it parses as one, else text. In CSV, ``choices`` is a JSON list or ``a | b | c``.
Files are UTF-8 (a BOM is fine), at most ``io.MAX_FILE_BYTES`` (256 MB), a row at most
``io.MAX_ROW_BYTES`` (1 MB), checked while streaming. A bad row is a one-line error naming the
file, the line and the field.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import DataError
from ...io import (MAX_ROW_BYTES, check_file_size, iter_jsonl_lines, iter_text_lines,
                   loads_json)
from ...scoring.extract import choice_letter, normalize_number
from ..base import Example
from .agieval import HEADER_MC, format_mc
from .math_word import split_of
from .settings import BenchSettings

HEADER = 'Answer the question. End with "The answer is" and your answer.'
ANSWER_TYPES = ("number", "choice", "text")
_SUFFIXES = (".jsonl", ".csv", ".json")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    return iter_jsonl_lines(path, MAX_ROW_BYTES)


def _json_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """A ``.json`` file: a JSON array of row objects (line numbers are the items' lines), or
    one object per line like JSONL."""
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"["):
        yield from _jsonl_rows(path)
        return
    text = "".join(line for _, line in iter_text_lines(path))
    items = loads_json(text, path)
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON array of objects, or one JSON object per line")
    starts = _item_lines(text, len(items))
    for i, item in enumerate(items):
        where = f"{path}:{starts[i]}" if i < len(starts) else f"{path} item {i + 1}"
        if not isinstance(item, dict):
            raise DataError(f"{where}: item {i + 1} of the array is not an object")
        if len(json.dumps(item, ensure_ascii=False).encode()) > MAX_ROW_BYTES:
            raise DataError(f"{where}: item {i + 1} is over the {MAX_ROW_BYTES // 1024} KB "
                            f"limit of one row")
        yield (starts[i] if i < len(starts) else i + 1), item


def _item_lines(text: str, n: int) -> list[int]:
    """The line on which each top-level item of a JSON array starts."""
    dec, out, pos = json.JSONDecoder(), [], text.index("[") + 1
    for _ in range(n):
        while text[pos] in " \t\r\n,":
            pos += 1
        out.append(text.count("\n", 0, pos) + 1)
        pos = dec.raw_decode(text, pos)[1]
    return out


def _csv_lines(path: Path) -> Iterator[str]:
    for _, line in iter_text_lines(path, MAX_ROW_BYTES):
        yield line


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(_csv_lines(path))
    start = 1  # the line the record being read starts on
    try:
        if not reader.fieldnames:
            raise DataError(f"{path}:1: empty CSV (expected a header row)")
        names = [n.strip() for n in reader.fieldnames]
        dup = next((n for n in names if n and names.count(n) > 1), None)
        if dup:
            raise DataError(f"{path}:1: column {dup!r} appears twice in the header")
        start = reader.line_num + 1
        for row in reader:
            if None in row:
                raise DataError(f"{path}:{start}: more values than header columns")
            yield start, {k.strip(): v for k, v in row.items() if k and v not in (None, "")}
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}:{start}: bad CSV ({err})") from None


def _choices(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise DataError(f"{where}: field 'choices' is not a valid JSON list") from None
        else:
            value = [c.strip() for c in text.split("|")]
    if not isinstance(value, list) or len(value) < 2 or not all(
            isinstance(c, (str, int, float)) and str(c).strip() for c in value):
        raise DataError(f"{where}: field 'choices' must hold at least two non-empty options")
    if len(value) > 26:
        raise DataError(f"{where}: field 'choices' has more than 26 options")
    out = [str(c).strip() for c in value]
    keys = [" ".join(c.split()).casefold() for c in out]
    dup = next((c for c, k in zip(out, keys) if keys.count(k) > 1), None)
    if dup is not None:
        raise DataError(f"{where}: field 'choices' lists the option {dup!r} twice")
    return out


def user_example(row: dict[str, Any], where: str, default_id: str) -> Example:
    q = row.get("question")
    if not isinstance(q, str) or not q.strip():
        raise DataError(f"{where}: field 'question' must be a non-empty string")
    a = row.get("answer")
    if isinstance(a, bool) or not isinstance(a, (str, int, float)) or not str(a).strip() \
            or (isinstance(a, float) and not math.isfinite(a)):
        raise DataError(f"{where}: field 'answer' must be a non-empty string or number")
    answer = str(a).strip()
    raw_choices = row.get("choices", row.get("options"))
    options = _choices(raw_choices, where) if raw_choices not in (None, "") else None
    atype = row.get("answer_type")
    if atype is not None and atype not in ANSWER_TYPES:
        raise DataError(f"{where}: field 'answer_type' must be one of {ANSWER_TYPES} "
                        f"(got {atype!r})")
    if options:
        letter = choice_letter(answer, options)
        if letter is None:
            raise DataError(f"{where}: field 'answer' {answer!r} is neither an option letter "
                            f"nor one option's text")
        answer, atype, question, header = letter, "choice", format_mc(q.strip(), options), \
            HEADER_MC
    else:
        if atype == "choice":
            raise DataError(f"{where}: field 'choices' is required for answer_type 'choice'")
        num = normalize_number(answer)
        atype = atype or ("number" if num is not None else "text")
        if atype == "number":
            if num is None:
                raise DataError(f"{where}: field 'answer' is not a number (got {answer!r})")
            answer = num
        question, header = q.strip(), HEADER
    rationale = row.get("rationale")
    if rationale is not None and not isinstance(rationale, str):
        raise DataError(f"{where}: field 'rationale' must be a string")
    for name in ("id", "subtask"):
        v = row.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (str, int))
                              or not str(v).strip()):
            got = repr(v) if len(repr(v)) < 60 else repr(v)[:57] + "..."
            raise DataError(f"{where}: field {name!r} must be a non-empty string or integer "
                            f"(got {got})")
    meta: dict[str, Any] = {"header": header}
    if row.get("subtask") is not None:
        meta["subtask"] = str(row["subtask"]).strip()
    rid = row.get("id")
    return Example(id=str(rid).strip() if rid is not None else default_id, question=question,
                   answer=answer, answer_type=atype, options=options,
                   rationale=rationale or None, meta=meta)  # type: ignore[arg-type]


def read_user_file(path: Path) -> list[Example]:
    readers = {".csv": _csv_rows, ".jsonl": _jsonl_rows, ".json": _json_rows}
    if path.suffix.lower() not in readers:
        raise DataError(f"{path}: expected a .jsonl, .json or .csv file")
    check_file_size(path)
    rows = readers[path.suffix.lower()](path)
    out, seen = [], set()
    for line_no, row in rows:
        ex = user_example(row, f"{path}:{line_no}", f"{path.stem}-{line_no}")
        if ex.id in seen:
            raise DataError(f"{path}:{line_no}: field 'id' {ex.id!r} repeats an earlier row")
        seen.add(ex.id)
        out.append(ex)
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def load_user(s: BenchSettings) -> dict[str, list[Example]]:
    if s.hub:
        raise DataError("user: a user data set is a local file; hub = true does not apply")
    if not s.path:
        raise DataError("user: set [task.bench] path (eval: --data) to a .jsonl or .csv file "
                        "or a folder of train/dev/test files")
    p = Path(s.path).expanduser()
    if p.is_file():
        return {split_of(p): read_user_file(p)}
    if not p.is_dir():
        raise DataError(f"user: {p} does not exist")
    files = {sp: next((p / f"{sp}{x}" for x in _SUFFIXES if (p / f"{sp}{x}").exists()), None)
             for sp in ("train", "dev", "test")}
    found = {sp: read_user_file(f) for sp, f in files.items() if f is not None}
    if not found:
        raise DataError(f"user: {p} holds no train/dev/test .jsonl or .csv file")
    return found
