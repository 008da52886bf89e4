"""The Python API; the CLI calls exactly these functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Config, load_config
from .pipeline import Pipeline
from .pipeline import run as _run

__all__ = ["Config", "Pipeline", "estimate", "evaluate", "load_config", "run"]


def run(config: str | Path | Config | None = None, out: str | Path | None = None,
        quick: bool = False, until: str | None = None, methods: list[str] | None = None,
        log=print) -> dict[str, Any]:
    """Run (or resume) a config: a path, a loaded :class:`Config`, or None for the main job.
    Same as ``nesyloop run CONFIG --out DIR [--quick]``; returns method -> split -> metrics."""
    cfg = config if isinstance(config, Config) else load_config(config, quick=quick)
    return _run(cfg, out=out, until=until, methods=methods, log=log)


def estimate(config: str | Path | Config | None = None, out: str | Path | None = None,
             quick: bool = False, methods: list[str] | None = None, assumptions=None):
    """The teacher requests, tokens and USD per teacher stage a config needs, before anything
    is spent (``nesyloop estimate``); ``assumptions``: a ``nesyloop.costs.estimate.Assumptions``
    for the stages that depend on the student. Returns an ``Estimate`` (``.table()``,
    ``.rows``, ``.to_dict()``)."""
    from .costs.estimate import estimate as _estimate

    cfg = config if isinstance(config, Config) else load_config(config, quick=quick)
    return _estimate(cfg, out=out, methods=methods, assumptions=assumptions)


def evaluate(students: list[str | Path] | None, task: str, split: str | None = None,
             **kwargs: Any) -> dict[str, Any]:
    """Students on a benchmark split (``nesyloop eval``): strict and flexible accuracy, per
    subtask, predictions saved per student, a comparison table (``["report"]``). Keyword
    arguments: limit, kb, out, shots, data, hub, subtasks, header, config, batch_size,
    max_new_tokens, progress, log (see ``nesyloop.evaluation.evaluate``). With
    ``predictions=FILE`` (and ``students`` None) it scores a JSONL of another model's outputs
    instead (``nesyloop eval --predictions``), ``json_out=PATH`` receiving the scores."""
    from .evaluation import evaluate as _evaluate

    return _evaluate(students, task, split, **kwargs)
