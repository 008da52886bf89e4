"""llama.cpp's own OpenAI-compatible server (llama-cpp-python's ``llama_cpp.server``) as a child
process: a local teacher for ``backend = "openai"`` in scripts, benchmarks and tests.

:class:`LlamaCppServer` starts ``python -m llama_cpp.server`` on 127.0.0.1 (a free port unless
one is given) through :class:`~nesyloop.gen.http.process.ServerProcess`: it waits until
``/v1/models`` answers and stops the process on exit. Its output goes to a log file, kept when
the start fails (the error names it and its last line). The
server answers one request at a time and ignores ``n`` (the backend asks for the missing samples
one by one), so a teacher config for it sets ``concurrency`` to 1 or 2 (docs/teachers.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ...errors import NesyloopError
from .process import ServerProcess, free_port

__all__ = ["LlamaCppServer", "free_port"]


class LlamaCppServer(ServerProcess):
    """``with LlamaCppServer(gguf) as srv:`` ... ``OpenAIBackend(srv.alias, srv.url)``."""

    def __init__(self, model: str | os.PathLike, alias: str = "local", port: int | None = None,
                 n_ctx: int = 2048, n_threads: int | None = None, start_timeout_s: float = 120.0,
                 extra_args: tuple[str, ...] = ()):
        self.model = Path(model)
        if not self.model.is_file():
            raise NesyloopError(f"llama.cpp server: model file {self.model} not found")
        super().__init__([], port or free_port(), start_timeout_s=start_timeout_s,
                         what="llama.cpp server")
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads  # None: the server's default, half the cores
        self.extra_args = tuple(extra_args)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
                "--model_alias", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--verbose", "False",
                *(["--n_threads", str(self.n_threads)] if self.n_threads else []),
                *self.extra_args]

    def close(self) -> None:
        """Stop the server and remove its log (a temp file)."""
        self.stop()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
