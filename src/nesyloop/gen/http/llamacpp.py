"""llama.cpp's own OpenAI-compatible server (llama-cpp-python's ``llama_cpp.server``) as a child
process: a local teacher for ``backend = "openai"`` in scripts, benchmarks and tests.

:class:`LlamaCppServer` starts ``python -m llama_cpp.server`` on 127.0.0.1 (a free port unless
one is given), waits until ``/v1/models`` answers, and stops the process on exit. Its output goes
to a log file, kept when the start fails (the error names it and its last line). The
server answers one request at a time and ignores ``n`` (the backend asks for the missing samples
one by one), so a teacher config for it sets ``concurrency`` to 1 or 2 (docs/teachers.md).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from ...errors import NesyloopError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """``with LlamaCppServer(gguf) as srv:`` ... ``OpenAIBackend(srv.alias, srv.url)``."""

    def __init__(self, model: str | os.PathLike, alias: str = "local", port: int | None = None,
                 n_ctx: int = 2048, n_threads: int | None = None, start_timeout_s: float = 120.0,
                 extra_args: tuple[str, ...] = ()):
        self.model = Path(model)
        if not self.model.is_file():
            raise NesyloopError(f"llama.cpp server: model file {self.model} not found")
        self.alias = alias
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.n_threads = n_threads  # None: the server's default, half the cores
        self.start_timeout_s = start_timeout_s
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.start_s = 0.0  # seconds from launch until /v1/models answered

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
                "--model_alias", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--verbose", "False",
                *(["--n_threads", str(self.n_threads)] if self.n_threads else []),
                *self.extra_args]

    def start(self) -> Self:
        fd, name = tempfile.mkstemp(prefix="nesyloop-llamacpp-", suffix=".log")
        self.log_path = Path(name)
        t0 = time.perf_counter()
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = t0 + self.start_timeout_s
        while time.perf_counter() < deadline:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                raise NesyloopError(f"llama.cpp server exited at start (code {code}): "
                                    f"{self.log_tail()} (log: {self.log_path})")
            if self._answers():
                self.start_s = time.perf_counter() - t0
                return self
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise NesyloopError(f"llama.cpp server did not answer within {self.start_timeout_s:.0f} s"
                            f": {tail} (log: {self.log_path})")

    def _answers(self) -> bool:
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxies
            with opener.open(f"{self.url}/models", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 1) -> str:
        """The last non-empty lines of the server's log (the error, when it failed)."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        last = [ln.strip() for ln in text if ln.strip()][-lines:]
        return " | ".join(last) or "(empty log)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def close(self) -> None:
        """Stop the server and remove its log."""
        self.stop()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
