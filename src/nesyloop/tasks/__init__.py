"""Tasks: the bundled Bazaar world (``bazaar``) and the benchmarks read from files (``bench``)."""

from __future__ import annotations

from typing import Any


def task_splits(name: str, bazaar: Any, bench: Any) -> dict[str, list]:
    """Every split of task ``name``: Bazaar generated from ``bazaar`` settings, a benchmark read
    with ``bench`` settings (docs/benchmarks.md)."""
    if name == "bazaar":
        from .bazaar import generate_splits

        return generate_splits(bazaar)
    from .bench import load_task

    return load_task(name, bench)


def task_files(name: str, bazaar: Any) -> dict[str, str]:
    """Files the data stage writes beside the splits: for Bazaar with held-out facts,
    ``held-out.json`` (the facts no season-1 problem may use and the phrases that name them;
    FDD's evolution filter reads it; tasks/bazaar/season.py)."""
    if name != "bazaar":
        return {}
    from .bazaar.season import held_out_file

    return held_out_file(bazaar)
