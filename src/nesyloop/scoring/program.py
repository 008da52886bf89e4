"""Answers of program-of-thought (PoT) solutions: find the program in a reply, run it in the
sandbox (never in-process), and normalise its value like any extracted answer.

One place serves the teacher's PoT filter, the agreement check of synthesised problems and the
student's PoT answers at inference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..sandbox import ProgramResult, run_programs
from .extract import normalize_number

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_LINE = re.compile(r"^\s*(#|[A-Za-z_][A-Za-z_0-9]*\s*=|import |from |for |if |while |"
                        r"def |return |print\(|else:|elif )")


def extract_program(text: str) -> str | None:
    """The program in a reply: the last fenced code block, else the reply itself when every
    non-empty line looks like Python (students answer with bare code). None if neither."""
    blocks = [b for b in _FENCE.findall(text or "") if b.strip()]
    if blocks:
        return blocks[-1].strip("\n") + "\n"
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    if lines and all(_CODE_LINE.match(ln) or ln.startswith((" ", "\t")) for ln in lines):
        return "\n".join(lines) + "\n"
    return None


@dataclass(frozen=True)
class ProgramAnswer:
    program: str | None
    result: ProgramResult | None  # None when no program was found
    value: str | None  # the normalised answer when the program ran ok

    def to_dict(self) -> dict:
        return {"program": self.program, "value": self.value,
                "verdict": self.result.verdict if self.result else "no program",
                "error": self.result.error if self.result else None}


def value_of(result: ProgramResult) -> str | None:
    """The program's answer as an answer string (ints and integral floats/Fractions as ints)."""
    if not result.ok or result.answer is None:
        return None
    raw = result.answer.strip()
    m = re.fullmatch(r"Fraction\((-?\d+),\s*(-?\d+)\)", raw)
    if m:
        raw = f"{m.group(1)}/{m.group(2)}"
    elif re.fullmatch(r"Decimal\('([^']*)'\)", raw):
        raw = raw[9:-2]
    if raw in ("True", "False", "None"):
        return None
    return normalize_number(raw) or raw.strip("'\"")


def program_answers(texts: list[str], timeout_s: float = 2.0, mem_mb: int = 512
                    ) -> list[ProgramAnswer]:
    """Extract and run the program of every reply (identical programs run once)."""
    programs = [extract_program(t) for t in texts]
    unique = sorted({p for p in programs if p is not None})
    results = dict(zip(unique, run_programs(unique, timeout_s=timeout_s, mem_mb=mem_mb),
                       strict=True))
    out = []
    for prog in programs:
        res = results.get(prog) if prog is not None else None
        out.append(ProgramAnswer(prog, res, value_of(res) if res is not None else None))
    return out
