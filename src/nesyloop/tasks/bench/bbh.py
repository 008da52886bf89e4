"""BIG-Bench Hard: 27 subtasks, each a ``<task>.json`` with ``examples: [{input, target}]``, and
the original paper's 3-shot chain-of-thought prompts in ``cot-prompts/<task>.txt`` (a canary
line, ``-----``, the task description, then three ``Q: .. A: Let's think step by step. ..``
exemplars). The description and the answer format asked for are the task's header.

Answer types per subtask: multiple choice (target ``(B)``; options parsed from the input's
``Options:`` lines), labels (True/False, Yes/No, valid/invalid: text), numbers
(object_counting, multistep_arithmetic_two) and free text (dyck_languages, word_sorting). A
choice target that is not a letter (three upstream items whose option text holds a comma, e.g.
"Monsters, Inc") is scored as text.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ...errors import DataError
from ..base import Example
from .settings import BenchSettings, data_root
from .source import field, hub_rows, local_path, read_rows

SUBTASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa",
    "dyck_languages", "formal_fallacies", "geometric_shapes", "hyperbaton",
    "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "multistep_arithmetic_two",
    "navigate", "object_counting", "penguins_in_a_table", "reasoning_about_colored_objects",
    "ruin_names", "salient_translation_error_detection", "snarks", "sports_understanding",
    "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects",
    "web_of_lies", "word_sorting",
)
NUMBER = frozenset({"object_counting", "multistep_arithmetic_two"})
LABELS = frozenset({"boolean_expressions", "causal_judgement", "formal_fallacies", "navigate",
                    "sports_understanding", "web_of_lies"})
FREE_TEXT = frozenset({"dyck_languages", "word_sorting"})
_OPTION = re.compile(r"^\(([A-Z])\)\s?(.*)$")
_LETTER = re.compile(r"^\(([A-Z])\)$")


def answer_type(subtask: str) -> str:
    if subtask in NUMBER:
        return "number"
    if subtask in LABELS or subtask in FREE_TEXT:
        return "text"
    return "choice"


def parse_options(text: str) -> list[str] | None:
    """Option texts of an input's ``Options:`` block with ``(A) ..`` lines (None if none)."""
    if "Options:" not in text:
        return None
    opts = []
    for line in text.rsplit("Options:", 1)[1].strip().splitlines():
        m = _OPTION.match(line.strip())
        if m and m.group(1) == chr(65 + len(opts)):
            opts.append(m.group(2).strip())
    return opts or None


def cot_dir(s: BenchSettings) -> Path:
    base = Path(s.path).expanduser() if s.path and not s.hub else data_root() / "bbh"
    return base / "cot-prompts"


@lru_cache(maxsize=64)
def _read_cot(path: Path) -> tuple[str, str]:
    text = path.read_text(encoding="utf-8")
    body = text.split("-----", 1)[1] if "-----" in text else text
    description, _, exemplars = body.strip().partition("\n")
    if exemplars.count("Q: ") < 1:
        raise DataError(f"{path}: no 'Q: ..' exemplars after the description line")
    return description.strip(), exemplars.strip()


def cot_prompt(subtask: str, s: BenchSettings) -> tuple[str, str] | None:
    """(description, the three exemplars verbatim) of a subtask, or None without the file."""
    path = cot_dir(s) / f"{subtask}.txt"
    return _read_cot(path) if path.exists() else None


ANSWER_FORMAT = {"choice": 'End with "The answer is (X)."',
                 "number": 'End with "The answer is N."',
                 "text": 'End with "The answer is" and your answer.'}


def _header(subtask: str, s: BenchSettings) -> str:
    """The task description (from its cot-prompts file) and the answer format asked for."""
    got = cot_prompt(subtask, s)
    description = got[0] if got else "Answer the question."
    atype = answer_type(subtask)
    return f"{description} {ANSWER_FORMAT[atype]}"


def bbh_example(subtask: str, row: dict, idx: int, where: str, header: str) -> Example:
    text, target = field(row, where, "input"), str(field(row, where, "target")).strip()
    atype = answer_type(subtask)
    options = parse_options(text) if atype == "choice" else None
    meta = {"subtask": subtask, "header": header, "target": target}
    answer = target
    if atype == "choice":
        m = _LETTER.match(target)
        if m and options and ord(m.group(1)) - 65 < len(options):
            answer = m.group(1)
        else:  # an upstream target that is an option's text rather than a letter
            atype, meta["note"] = "text", "target is not an option letter; scored as text"
    return Example(id=f"bbh-{subtask}-{idx:03d}", question=text, answer=answer,
                   answer_type=atype, options=options, meta=meta)  # type: ignore[arg-type]


def check_subtasks(names: list[str] | None, valid: tuple[str, ...], task: str) -> list[str]:
    if not names:
        return list(valid)
    bad = [n for n in names if n not in valid]
    if bad:
        raise DataError(f"{task}: unknown subtask {bad[0]!r}; valid: {', '.join(valid)}")
    return list(names)


def load_bbh(s: BenchSettings) -> dict[str, list[Example]]:
    rows: list[Example] = []
    folder = None if s.hub else local_path("bbh", s, "bbh", folder=True)
    for sub in check_subtasks(s.subtasks, SUBTASKS, "bbh"):
        if folder is None:
            data, src = hub_rows("bbh", "lukaemon/bbh", sub, "test"), f"lukaemon/bbh/{sub}"
            where = lambda i, src=src: f"{src} row {i}"
        else:
            f = folder / f"{sub}.json"
            if not f.exists():
                raise DataError(f"bbh: {f} not found (subtask {sub})")
            data = read_rows(f)
            where = lambda i, f=f: f"{f} example {i + 1}"
        header = _header(sub, s)
        rows += [bbh_example(sub, r, i, where(i), header) for i, r in enumerate(data)]
    return {"all": rows}
