"""Settings of a benchmark task (``[task.bench]`` in a config) and where local copies live.

Local data sets are read from ``$NESYLOOP_DATA`` (default: ``../shared/data`` next to the
checkout), one folder per data set in its upstream format; ``path`` points at another file or
folder. ``hub = true`` loads the Hugging Face copy instead (needs ``datasets`` and a network).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SplitName = Literal["train", "dev", "test"]
SPLITS: tuple[str, ...] = ("train", "dev", "test")


class BenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None  # a file or folder in the upstream format; default: $NESYLOOP_DATA/..
    hub: bool = False  # load the Hugging Face hub copy instead of a local one
    subtasks: list[str] | None = None  # BBH / AGIEval: only these subtasks (default: all)
    limit: int | None = Field(None, ge=1)  # at most this many examples per split (and subtask)
    limits: dict[SplitName, int] = Field(default_factory=dict)  # per-split caps over ``limit``
    dev_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # dev carved from train when there is none
    test_fraction: float = Field(0.3, gt=0.0, le=1.0)  # test carved when there is no test split
    seed: int = 0  # the carving's seed
    header: bool = True  # put the task's prompt header before each question
    header_text: str | None = None  # a header of your own instead of the task's

    def cap(self, split: str) -> int | None:
        return self.limits.get(split, self.limit)  # type: ignore[call-overload]


def data_root() -> Path:
    """``$NESYLOOP_DATA``, else ``../shared/data`` relative to the checkout (or the cwd)."""
    env = os.environ.get("NESYLOOP_DATA")
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve()
    repo = here.parents[4] if len(here.parents) > 4 else Path.cwd()
    if not (repo / "pyproject.toml").exists():  # an installed package: use the cwd's checkout
        repo = Path.cwd()
    return (repo.parent / "shared" / "data").resolve()
