"""Evaluation prompts of a benchmark task: zero-shot (the student's own input format, with the
task's header folded into the question) or the few-shot chain-of-thought prompts (BBH: the
original paper's three exemplars per subtask; other tasks: three training examples with gold
rationales, e.g. GSM8K's worked solutions)."""

from __future__ import annotations

from ...errors import DataError
from ...students.prompt import STUDENT_STOP, student_prompt
from ..base import Example
from .bbh import cot_prompt
from .settings import BenchSettings

FEWSHOT_STOP = ("\nQ:",)
COT_TRIGGER = "Let's think step by step."


def stops(shots: int) -> tuple[str, ...]:
    return STUDENT_STOP + FEWSHOT_STOP if shots else STUDENT_STOP


def bbh_fewshot(ex: Example, s: BenchSettings) -> str:
    sub = ex.meta["subtask"]
    got = cot_prompt(sub, s)
    if got is None:
        raise DataError(f"bbh: --shots 3 needs cot-prompts/{sub}.txt (set --data / [task.bench] "
                        f"path to the BBH folder, or NESYLOOP_DATA)")
    description, exemplars = got
    return f"{description}\n\n{exemplars}\n\nQ: {ex.meta['question']}\nA: {COT_TRIGGER}"


def rationale_exemplars(task: str, train: list[Example], k: int) -> list[Example]:
    picked = [ex for ex in train if ex.rationale][:k]
    if len(picked) < k:
        raise DataError(f"{task}: --shots {k} needs {k} training examples with gold rationales "
                        f"(found {len(picked)}); few-shot prompts exist for bbh, gsm8k and user "
                        f"files with a 'rationale' field")
    return picked


def eval_prompts(task: str, examples: list[Example], shots: int, s: BenchSettings,
                 train: list[Example] | None = None) -> list[str]:
    """The prompt of every example; ``train`` gives the exemplars of non-BBH few-shot prompts."""
    if shots == 0:
        return [student_prompt(ex.question) for ex in examples]
    if task == "bbh":
        return [bbh_fewshot(ex, s) for ex in examples]
    shots_ex = rationale_exemplars(task, train or [], shots)
    block = "\n\n".join(f"Q: {e.meta['question']}\nA: {e.rationale}" for e in shots_ex)
    out = []
    for ex in examples:
        header = ex.meta.get("header") if s.header else ""
        head = f"{header}\n\n" if header else ""
        out.append(f"{head}{block}\n\nQ: {ex.meta['question']}\nA:")
    return out
