"""From a data set's own splits to train/dev/test, the same way for every benchmark.

An adapter returns its rows under the splits it has: ``train``, ``dev``, ``test``, or ``all``
when it has none (SVAMP, BBH, AGIEval, ...). Per subtask, ``all`` gives a seeded
``test_fraction`` to test and the rest to train; a data set without dev gets a seeded
``dev_fraction`` of train. Carving does not depend on ``limit``: a limit takes the first N of
each split (in the data set's order), so a smaller run evaluates a subset of the same test set.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import TypeVar

from ..base import Example
from .settings import SPLITS, BenchSettings

T = TypeVar("T")


def carve(items: list[T], fraction: float, key: str) -> tuple[list[T], list[T]]:
    """(rest, carved): a seeded ``fraction`` of ``items`` carved out; both keep their order."""
    n = round(len(items) * fraction)
    order = list(range(len(items)))
    random.Random(key).shuffle(order)
    chosen = set(order[:n])
    return ([x for i, x in enumerate(items) if i not in chosen],
            [x for i, x in enumerate(items) if i in chosen])


def make_splits(task: str, native: dict[str, list[Example]], s: BenchSettings,
                ) -> dict[str, list[Example]]:
    """train/dev/test of a task from its native splits (see the module doc)."""
    groups: dict[str, dict[str, list[Example]]] = defaultdict(lambda: defaultdict(list))
    for split, rows in native.items():
        for ex in rows:
            groups[ex.meta.get("subtask", "")][split].append(ex)
    out: dict[str, list[Example]] = {s_: [] for s_ in SPLITS}
    for sub, parts in groups.items():
        train, dev, test = parts.get("train", []), parts.get("dev", []), parts.get("test", [])
        if parts.get("all"):
            rest, carved = carve(parts["all"], s.test_fraction, f"{s.seed}:{task}:{sub}:test")
            train, test = train + rest, test + carved
        if "dev" not in parts and s.dev_fraction > 0:
            train, dev = carve(train, s.dev_fraction, f"{s.seed}:{task}:{sub}:dev")
        for name, rows in (("train", train), ("dev", dev), ("test", test)):
            cap = s.cap(name)
            out[name] += rows[:cap] if cap is not None else rows
    for name, rows in out.items():
        for ex in rows:
            ex.split = name
            _fold_header(ex, s)
    return out


def _fold_header(ex: Example, s: BenchSettings) -> None:
    """Keep the bare question in ``meta["question"]``; put the header before it if asked."""
    ex.meta.setdefault("question", ex.question)
    header = s.header_text if s.header_text is not None else ex.meta.get("header", "")
    ex.meta["header"] = header
    if s.header and header:
        ex.question = f"{header}\n{ex.meta['question']}"
