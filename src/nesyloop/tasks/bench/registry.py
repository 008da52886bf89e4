"""The benchmark tasks by name, and the one function that turns a name into train/dev/test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from ...errors import DataError
from ..base import Example
from .agieval import SUBTASKS as AGIEVAL_SUBTASKS
from .agieval import load_agieval
from .arc import load_arc
from .bbh import SUBTASKS as BBH_SUBTASKS
from .bbh import load_bbh
from .math_word import load_asdiv, load_gsm8k, load_multiarith, load_svamp
from .settings import BenchSettings
from .splits import make_splits
from .user import load_user


@dataclass(frozen=True)
class BenchTask:
    name: str
    load: Callable[[BenchSettings], dict[str, list[Example]]]  # native splits (see splits.py)
    local: str  # the folder (or file) under $NESYLOOP_DATA, upstream format
    hub: str  # the Hugging Face data set used with hub = true
    answer: str  # answer type(s), for the docs and error messages
    subtasks: tuple[str, ...] = ()


TASKS: dict[str, BenchTask] = {t.name: t for t in (
    BenchTask("gsm8k", load_gsm8k, "gsm8k/{train,test}.jsonl", "openai/gsm8k (main)", "number"),
    BenchTask("svamp", load_svamp, "svamp/SVAMP.json", "ChilleD/SVAMP", "number"),
    BenchTask("asdiv", load_asdiv, "asdiv/ASDiv.xml", "EleutherAI/asdiv", "number (text if not)"),
    BenchTask("multiarith", load_multiarith, "multiarith/MultiArith.json", "ChilleD/MultiArith",
              "number"),
    BenchTask("bbh", load_bbh, "bbh/<subtask>.json, bbh/cot-prompts/<subtask>.txt",
              "lukaemon/bbh", "choice, labels, number, text", BBH_SUBTASKS),
    BenchTask("agieval", load_agieval, "agieval/<subtask>.jsonl", "hails/agieval-<subtask>",
              "choice (math: text)", AGIEVAL_SUBTASKS),
    BenchTask("arc-easy", partial(load_arc, "arc-easy"), "arc/ARC-Easy/ARC-Easy-*.jsonl",
              "allenai/ai2_arc (ARC-Easy)", "choice"),
    BenchTask("arc-challenge", partial(load_arc, "arc-challenge"),
              "arc/ARC-Challenge/ARC-Challenge-*.jsonl", "allenai/ai2_arc (ARC-Challenge)",
              "choice"),
    BenchTask("user", load_user, "(your file: path)", "-", "number, choice or text"),
)}
BENCH_TASKS = tuple(TASKS)


def get_task(name: str) -> BenchTask:
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; valid: bazaar, {', '.join(BENCH_TASKS)}")
    return TASKS[name]


def load_task(name: str, settings: BenchSettings | None = None) -> dict[str, list[Example]]:
    """train/dev/test Examples of a benchmark task (``meta``: header, bare question, subtask)."""
    s = settings or BenchSettings()
    native = get_task(name).load(s)
    return make_splits(name, native, s)
