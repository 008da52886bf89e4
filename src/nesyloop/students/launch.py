"""A run's training stage in several processes: ``[train] launch`` names a launcher (``accelerate
launch --multi_gpu --num_processes 4``, ``accelerate launch --config_file ds_zero2.yaml``,
``torchrun --nproc_per_node 4``) and the stage runs ``<launch> -m nesyloop.cli train-student``
on its pairs, with the stage's ``[train]`` settings, checkpoints in the stage's work folder (a
re-run resumes from them) and the launcher's output in ``launch.log`` there. The run itself
(teacher, generation, scoring) stays one process; only training spreads.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NesyloopError
from ..io import atomic_write_text
from .train import TrainSettings


def train_toml(settings: TrainSettings) -> str:
    """``settings`` as a config file's ``[train]`` table (without ``launch``)."""
    lines = ["[train]"]
    for key, value in settings.model_dump(exclude={"launch"}).items():
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers and booleans are written alike in TOML


def launcher(launch: str) -> list[str]:
    """The launch command's words; its program found on PATH or beside this Python."""
    try:
        words = shlex.split(launch)
    except ValueError as err:
        raise ConfigError(f"train.launch: {err}: {launch!r}") from None
    if not words:
        raise ConfigError("train.launch: empty command")
    beside = Path(sys.executable).with_name(words[0])
    found = shutil.which(words[0]) or (str(beside) if beside.exists() else None)
    if found is None:
        raise ConfigError(f"train.launch: program {words[0]!r} not found (on PATH or in "
                          f"{beside.parent})")
    return [found, *words[1:]]


def launch_training(launch: str, base: str | os.PathLike, pairs: Path, out_dir: Path,
                    settings: TrainSettings, work: Path) -> dict[str, Any]:
    """Train ``base`` on the pairs file ``pairs`` into ``out_dir`` under the launcher; the
    statistics rank 0 wrote. A failure raises one line naming the log."""
    work.mkdir(parents=True, exist_ok=True)
    config, log = work / "train.toml", work / "launch.log"
    atomic_write_text(config, train_toml(settings))
    cmd = [*launcher(launch), "-m", "nesyloop.cli", "train-student", str(pairs),
           "--base", str(base), "--out", str(out_dir), "--config", str(config),
           "--work", str(work / "checkpoints")]
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            code = proc.wait()
        except BaseException:  # Ctrl-C or an error here: no training left running
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
    stats = out_dir / "train_stats.json"
    if code != 0 or not stats.is_file():
        errors = [ln.strip() for ln in log.read_text(errors="replace").splitlines()
                  if "error" in ln.lower()]
        raise NesyloopError(f"[train] launch: {Path(cmd[0]).name} exited with status {code}; "
                            f"see {log}" + (f" ({errors[0][:200]})" if errors else ""))
    return json.loads(stats.read_text())
