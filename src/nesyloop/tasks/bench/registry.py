"""The benchmark tasks by name, and the one function that turns a name into train/dev/test."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ...errors import DataError
from ..base import Example
from .agieval import load_agieval
from .arc import load_arc
from .bbh import load_bbh
from .math_word import load_asdiv, load_gsm8k, load_multiarith, load_svamp
from .settings import BenchSettings
from .splits import make_splits
from .user import load_user

Loader = Callable[[BenchSettings], dict[str, list[Example]]]  # native splits (see splits.py)

# local files and hub data sets of each task: docs/benchmarks.md
TASKS: dict[str, Loader] = {
    "gsm8k": load_gsm8k,
    "svamp": load_svamp,
    "asdiv": load_asdiv,
    "multiarith": load_multiarith,
    "bbh": load_bbh,
    "agieval": load_agieval,
    "arc-easy": partial(load_arc, "arc-easy"),
    "arc-challenge": partial(load_arc, "arc-challenge"),
    "user": load_user,
}
BENCH_TASKS = tuple(TASKS)


def get_task(name: str) -> Loader:
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; valid: bazaar, {', '.join(BENCH_TASKS)}")
    return TASKS[name]


def load_task(name: str, settings: BenchSettings | None = None) -> dict[str, list[Example]]:
    """train/dev/test Examples of a benchmark task (``meta``: header, bare question, subtask)."""
    s = settings or BenchSettings()
    native = get_task(name)(s)
    return make_splits(name, native, s)
