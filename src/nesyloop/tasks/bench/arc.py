"""ARC-Easy and ARC-Challenge (AI2 Reasoning Challenge), multiple choice.

Upstream (``ARC-V1-Feb2018/ARC-Easy/ARC-Easy-{Train,Dev,Test}.jsonl``), one object a line::

    {"id": "Mercury_7175875", "question": {"stem": "...", "choices": [{"text": "..",
     "label": "A"}, ..]}, "answerKey": "C"}

The hub's rows (``allenai/ai2_arc``) have ``question`` as a string and ``choices: {text: [..],
label: [..]}``; both are accepted. Labels may be digits ("1".."4"); options are lettered by
position, so the gold answer is always a letter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import DataError
from ..base import Example
from .agieval import format_mc
from .settings import BenchSettings
from .source import field, hub_rows, local_path, read_rows

HEADER = 'Answer the science question. End with "The answer is (X)."'
VARIANTS = {"arc-easy": "ARC-Easy", "arc-challenge": "ARC-Challenge"}
_SPLITS = {"train": "Train", "dev": "Dev", "test": "Test"}


def arc_example(task: str, row: dict[str, Any], idx: int, split: str, where: str) -> Example:
    q = field(row, where, "question")
    stem, choices = (q.get("stem"), q.get("choices")) if isinstance(q, dict) \
        else (q, row.get("choices"))
    if not isinstance(stem, str) or not stem.strip():
        raise DataError(f"{where}: field 'question.stem' must be a non-empty string")
    if isinstance(choices, dict):  # the hub's {text: [..], label: [..]}
        choices = [{"text": t, "label": lab}
                   for t, lab in zip(choices.get("text", []), choices.get("label", []))]
    if not isinstance(choices, list) or len(choices) < 2 or not all(
            isinstance(c, dict) and "text" in c and "label" in c for c in choices):
        raise DataError(f"{where}: field 'question.choices' must list at least two "
                        f"{{text, label}} objects")
    key = str(field(row, where, "answerKey")).strip()
    labels = [str(c["label"]).strip() for c in choices]
    if key not in labels:
        raise DataError(f"{where}: field 'answerKey' {key!r} is not one of the labels {labels}")
    options = [" ".join(str(c["text"]).split()) for c in choices]
    rid = row.get("id") or f"{split}-{idx:05d}"
    return Example(id=f"{task}-{rid}", question=format_mc(stem.strip(), options),
                   answer=chr(65 + labels.index(key)), answer_type="choice", options=options,
                   meta={"header": HEADER})


def _local_files(task: str, s: BenchSettings) -> dict[str, Path]:
    name = VARIANTS[task]
    p = local_path(task, s, f"arc/{name}")
    if p.is_file():
        from .math_word import split_of

        return {split_of(p): p}
    for folder in (p, p / name):
        files = {sp: folder / f"{name}-{suffix}.jsonl" for sp, suffix in _SPLITS.items()}
        files = {sp: f for sp, f in files.items() if f.exists()}
        if files:
            return files
    raise DataError(f"{task}: {p} holds no {name}-Train/Dev/Test.jsonl")


def load_arc(task: str, s: BenchSettings) -> dict[str, list[Example]]:
    if s.hub:
        hub = {"train": "train", "dev": "validation", "test": "test"}
        return {sp: [arc_example(task, r, i, sp, f"allenai/ai2_arc/{VARIANTS[task]}[{h}] row {i}")
                     for i, r in enumerate(hub_rows(task, "allenai/ai2_arc", VARIANTS[task], h))]
                for sp, h in hub.items()}
    return {sp: [arc_example(task, r, i, sp, f"{f}:{i + 1}") for i, r in enumerate(read_rows(f))]
            for sp, f in _local_files(task, s).items()}
