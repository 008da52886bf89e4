"""Build generation backends: the teacher from its config section (the Bazaar oracle, a local
transformers model ``hf`` or any OpenAI-compatible endpoint ``openai``), and the student's
engine for a checkpoint (``hf`` in this process, or ``server``: an OpenAI-compatible server).
New backends and student engines plug in here."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError
from .base import Backend


def make_teacher(teacher: Any, world_seed: int = 0, seed: int = 0) -> Backend:
    if teacher.backend == "oracle":
        from ..tasks.bazaar import OracleBackend

        error_rate = teacher.oracle.error_rate
        backend = OracleBackend(world_seed=world_seed, error_rate=error_rate, seed=seed)
        # the cache key must change when the oracle's behaviour does
        backend.cache_id = (f"bazaar-oracle?world_seed={world_seed}"
                            f"&error_rate={error_rate}&seed={seed}&v={backend.version}")
        return backend
    if teacher.backend == "hf":
        from .hf import HFBackend

        return HFBackend(teacher.model, batch_size=teacher.batch_size)
    if teacher.backend == "openai":
        from .http import OpenAIBackend

        return OpenAIBackend.from_config(teacher)
    if teacher.backend == "dataset":  # answered by the rationales stage itself (no model)
        raise ConfigError("teacher.backend 'dataset' has no model to send requests to: it only "
                          "supplies the rationales stage with the data set's worked solutions")
    raise ConfigError(f"teacher.backend: unknown backend {teacher.backend!r}")


STUDENT_ENGINES = ("hf", "server")


def make_student(model: str | os.PathLike, engine: str = "hf", batch_size: int = 32,
                 progress: bool = True, server: Any = None,
                 log_path: str | os.PathLike | None = None) -> Backend:
    """The engine that runs the student ``model`` (a checkpoint folder, ``.gguf`` file,
    ``smollm2`` or hub name); every stage, ``eval`` and ``serve`` build students here.
    ``hf``: transformers in this process, batched ``batch_size`` prompts at a time.
    ``server``: an OpenAI-compatible server per ``server`` (the ``[student.server]`` section),
    started for this checkpoint (its output to ``log_path``) or run by the user. Close the
    backend when done: a started server stops then."""
    if engine == "hf":
        from .hf import HFBackend

        return HFBackend(str(model), batch_size=batch_size, progress=progress)
    if engine == "server":
        from .http.student_server import ServerEngine

        if server is None or not (server.command or server.base_url):
            raise ConfigError("student.server: engine 'server' needs [student.server] command "
                              "or base_url")
        return ServerEngine(model, server, log_path=log_path, progress=progress)
    raise ConfigError(f"student engine: unknown engine {engine!r} "
                      f"(expected one of {', '.join(STUDENT_ENGINES)})")
