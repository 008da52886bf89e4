"""The Python API; the CLI calls exactly these functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Config, load_config
from .pipeline import Pipeline
from .pipeline import run as _run

__all__ = ["Config", "Pipeline", "load_config", "run"]


def run(config: str | Path | Config | None = None, out: str | Path | None = None,
        quick: bool = False, until: str | None = None, methods: list[str] | None = None,
        log=print) -> dict[str, Any]:
    """Run (or resume) a config: a path, a loaded :class:`Config`, or None for the main job.
    Same as ``nesyloop run CONFIG --out DIR [--quick]``; returns method -> split -> metrics."""
    cfg = config if isinstance(config, Config) else load_config(config, quick=quick)
    return _run(cfg, out=out, until=until, methods=methods, log=log)
