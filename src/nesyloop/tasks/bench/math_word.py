"""Arithmetic word problems: GSM8K, SVAMP, ASDiv, MultiArith (number answers).

Upstream formats (docs/benchmarks.md has examples):

* GSM8K: ``train.jsonl`` / ``test.jsonl``, ``{question, answer}``; ``answer`` is a worked
  solution with ``<<a*b=c>>`` calculator annotations ending ``#### N``. The solution, without
  annotations and ending "Therefore, the answer is N.", becomes the Example's ``rationale``.
* SVAMP: ``SVAMP.json``, a list of ``{ID, Body, Question, Equation, Answer, Type}``.
* ASDiv: ``ASDiv.xml`` (``<Problem ID=..><Body/><Question/><Solution-Type/><Answer>9 (apples)
  </Answer><Formula/></Problem>``), or JSON/JSONL rows ``{body, question, answer}`` (the hub's).
* MultiArith: ``MultiArith.json``, a list of ``{iIndex, sQuestion, lEquations, lSolutions}``, or
  rows ``{question, final_ans}`` (the hub's).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ...errors import DataError
from ...scoring.extract import normalize_number
from ..base import Example
from .settings import BenchSettings
from .source import field, hub_rows, local_path, read_rows

HEADER = 'Solve the math word problem step by step. End with "The answer is N."'
_ANNOTATION = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def split_of(path: Path) -> str:
    """The split a single file holds, from its name (train/dev/val/test), else "all"."""
    name = path.stem.lower()
    for key, split in (("train", "train"), ("dev", "dev"), ("val", "dev"), ("test", "test")):
        if key in name:
            return split
    return "all"


def _files(task: str, s: BenchSettings, default: str, names: dict[str, list[str]],
           ) -> dict[str, Path]:
    """split -> file: a folder holding the upstream file names, or one file (split by name)."""
    p = local_path(task, s, default)
    if p.is_file():
        return {split_of(p): p}
    found = {split: next((p / n for n in cands if (p / n).exists()), None)
             for split, cands in names.items()}
    found = {k: v for k, v in found.items() if v is not None}
    if not found:
        wanted = ", ".join(n for cands in names.values() for n in cands)
        raise DataError(f"{task}: {p} holds none of {wanted}")
    return found


def _join(body: str, question: str) -> str:
    body, question = " ".join(body.split()), " ".join(question.split())
    if not body:
        return question
    return f"{body}{'' if body[-1] in '.?!,;:' else ','} {question}"


def _number(value: Any, where: str, name: str) -> str:
    got = normalize_number(str(value))
    if got is None:
        raise DataError(f"{where}: field {name!r} is not a number (got {value!r})")
    return got


# --------------------------------------------------------------------------- GSM8K


def gsm8k_example(row: dict[str, Any], idx: int, split: str, where: str) -> Example:
    question, solution = field(row, where, "question"), field(row, where, "answer")
    m = _FINAL.search(solution)
    if not m:
        raise DataError(f"{where}: field 'answer' has no final '#### N'")
    gold = _number(m.group(1), where, "answer")
    work = "\n".join(ln.strip() for ln in _ANNOTATION.sub("", solution[: m.start()]).splitlines()
                     if ln.strip())
    rationale = f"{work}\nTherefore, the answer is {gold}." if work else None
    return Example(id=f"gsm8k-{split}-{idx:05d}", question=question.strip(), answer=gold,
                   answer_type="number", rationale=rationale, meta={"header": HEADER})


def load_gsm8k(s: BenchSettings) -> dict[str, list[Example]]:
    if s.hub:
        parts = {sp: hub_rows("gsm8k", "openai/gsm8k", "main", sp) for sp in ("train", "test")}
        return {sp: [gsm8k_example(r, i, sp, f"openai/gsm8k[{sp}] row {i}")
                     for i, r in enumerate(rows)] for sp, rows in parts.items()}
    files = _files("gsm8k", s, "gsm8k", {"train": ["train.jsonl"], "test": ["test.jsonl"]})
    return {sp: [gsm8k_example(r, i, sp, f"{f}:{i + 1}") for i, r in enumerate(read_rows(f))]
            for sp, f in files.items()}


# --------------------------------------------------------------------------- SVAMP


def svamp_example(row: dict[str, Any], idx: int, where: str) -> Example:
    body = field(row, where, "Body", "body")
    question = field(row, where, "Question", "question")
    gold = _number(field(row, where, "Answer", "answer"), where, "Answer")
    rid = str(row.get("ID") or row.get("id") or f"{idx:04d}")
    return Example(id=f"svamp-{rid}", question=_join(body, question), answer=gold,
                   meta={"header": HEADER, "type": row.get("Type"),
                         "equation": row.get("Equation")})


def load_svamp(s: BenchSettings) -> dict[str, list[Example]]:
    if s.hub:
        return {sp: [svamp_example(r, i, f"ChilleD/SVAMP[{sp}] row {i}")
                     for i, r in enumerate(hub_rows("svamp", "ChilleD/SVAMP", None, sp))]
                for sp in ("train", "test")}
    files = _files("svamp", s, "svamp", {"all": ["SVAMP.json", "svamp.json"]})
    return {sp: [svamp_example(r, i, f"{f} item {i + 1}") for i, r in enumerate(read_rows(f))]
            for sp, f in files.items()}


# --------------------------------------------------------------------------- ASDiv


def asdiv_example(row: dict[str, Any], idx: int, where: str) -> Example:
    body = field(row, where, "body", "Body")
    question = field(row, where, "question", "Question")
    raw = str(field(row, where, "answer", "Answer")).strip()
    unitless = re.sub(r"\s*\([^()]*\)", "", raw).strip()  # "9 (apples)" -> "9"
    num = normalize_number(unitless)
    rid = str(row.get("ID") or row.get("id") or f"{idx:04d}")
    return Example(id=f"asdiv-{rid}", question=_join(body, question),
                   answer=num if num is not None else unitless,
                   answer_type="number" if num is not None else "text",
                   meta={"header": HEADER, "raw_answer": raw,
                         "type": row.get("solution_type") or row.get("Solution-Type"),
                         "formula": row.get("formula") or row.get("Formula")})


def _asdiv_xml(path: Path) -> list[dict[str, Any]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(f"{path}:{err.position[0]}: invalid XML ({err})") from None
    rows = []
    for prob in root.iter("Problem"):
        row: dict[str, Any] = {"ID": prob.get("ID")}
        for child in prob:
            row[child.tag] = (child.text or "").strip()
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no <Problem> elements")
    return rows


def load_asdiv(s: BenchSettings) -> dict[str, list[Example]]:
    if s.hub:
        rows = hub_rows("asdiv", "EleutherAI/asdiv", None, "validation")
        return {"all": [asdiv_example(r, i, f"EleutherAI/asdiv row {i}")
                        for i, r in enumerate(rows)]}
    files = _files("asdiv", s, "asdiv", {"all": ["ASDiv.xml", "asdiv.jsonl", "asdiv.json"]})
    out = {}
    for sp, f in files.items():
        if f.suffix == ".xml":
            out[sp] = [asdiv_example(r, i, f"{f} problem {r.get('ID') or i + 1}")
                       for i, r in enumerate(_asdiv_xml(f))]
        else:
            out[sp] = [asdiv_example(r, i, f"{f}:{i + 1}") for i, r in enumerate(read_rows(f))]
    return out


# --------------------------------------------------------------------------- MultiArith


def multiarith_example(row: dict[str, Any], idx: int, where: str) -> Example:
    question = field(row, where, "sQuestion", "question")
    sols = row.get("lSolutions")
    if sols is not None:
        if not isinstance(sols, list) or not sols:
            raise DataError(f"{where}: field 'lSolutions' must be a non-empty list")
        gold = _number(sols[0], where, "lSolutions")
    else:
        gold = _number(field(row, where, "lSolutions", "final_ans", "answer"), where, "final_ans")
    rid = row.get("iIndex", idx)
    return Example(id=f"multiarith-{rid}", question=" ".join(str(question).split()), answer=gold,
                   meta={"header": HEADER, "equations": row.get("lEquations")})


def load_multiarith(s: BenchSettings) -> dict[str, list[Example]]:
    if s.hub:
        return {sp: [multiarith_example(r, i, f"ChilleD/MultiArith[{sp}] row {i}")
                     for i, r in enumerate(hub_rows("multiarith", "ChilleD/MultiArith", None, sp))]
                for sp in ("train", "test")}
    files = _files("multiarith", s, "multiarith",
                   {"all": ["MultiArith.json", "multiarith.json", "multiarith.jsonl"]})
    return {sp: [multiarith_example(r, i, f"{f} item {i + 1}" if f.suffix == ".json"
                                    else f"{f}:{i + 1}") for i, r in enumerate(read_rows(f))]
            for sp, f in files.items()}
