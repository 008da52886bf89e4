"""An OpenAI-compatible server as a child process: llama.cpp's server (llamacpp.py) and the
student's ``server`` engine (student_server.py) are two commands run through it.

:class:`ServerProcess` starts a command on 127.0.0.1 in a process group of its own, its output
going to a log file, waits until ``GET /v1/models`` answers, and stops the whole group (the
server and any workers it spawned: SIGTERM, then SIGKILL) on :meth:`stop`; the callers stop it
on close, on error and on Ctrl-C. On Linux the server also gets SIGTERM when the thread that
started it dies (``PR_SET_PDEATHSIG``), so a killed nesyloop leaves no server behind. A start
that fails (the command exits, or does not answer in time) is one line naming the command, the
log's last line and the log file, which is kept.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from ...errors import NesyloopError

POLL_S = 0.2  # how often a starting server is asked whether it answers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def list_models(base_url: str, api_key: str | None = None, timeout: float = 5.0) -> list[str]:
    """The model ids ``GET {base_url}/models`` lists (an OpenAI-compatible server, proxies
    bypassed); raises OSError (urllib's errors included) when it does not answer 200."""
    req = urllib.request.Request(f"{base_url.rstrip('/')}/models")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=timeout) as r:
        body = json.loads(r.read() or b"{}")
    data = body.get("data") if isinstance(body, dict) else None
    return [str(m.get("id")) for m in data or [] if isinstance(m, dict) and m.get("id")]


def _die_with_parent():
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when its parent thread dies (None
    elsewhere, or off the main thread, whose end is not the program's)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not \
            threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """``with ServerProcess(argv, port, what="my server") as srv:`` ... ``srv.url``.
    ``log_path``: where the output goes (default: a temp file); ``what`` names the server in
    errors; ``api_key_env``: the environment variable holding the key the server wants."""

    def __init__(self, argv: list[str], port: int, log_path: str | os.PathLike | None = None,
                 start_timeout_s: float = 120.0, what: str = "server",
                 api_key_env: str | None = None):
        self.argv = list(argv)
        self.port = port
        self.api_key_env = api_key_env
        self.log_path: Path | None = None if log_path is None else Path(log_path)
        self.start_timeout_s = start_timeout_s
        self.what = what
        self.proc: subprocess.Popen | None = None
        self.start_s = 0.0  # seconds from launch until /v1/models answered

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return self.argv

    def start(self) -> Self:
        """Launch the command and wait until it answers; on any failure (Ctrl-C included)
        the process group is stopped before the error goes up."""
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="nesyloop-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=_die_with_parent())
            self._wait_until_ready(t0 + self.start_timeout_s)
        except FileNotFoundError as err:
            raise NesyloopError(f"{self.what}: cannot run {err.filename!r}: no such program "
                                f"(log: {self.log_path})") from None
        except BaseException:
            self.stop()
            raise
        self.start_s = time.perf_counter() - t0
        return self

    def _wait_until_ready(self, deadline: float) -> None:
        while time.perf_counter() < deadline:
            code = self.exited()
            if code is not None:
                raise NesyloopError(f"{self.what} exited at start (code {code}): "
                                    f"{self.log_tail()} (log: {self.log_path})")
            if self._answers():
                return
            time.sleep(POLL_S)
        raise NesyloopError(f"{self.what} did not answer GET /v1/models within "
                            f"{self.start_timeout_s:g} s: {self.log_tail()} (log: {self.log_path})")

    def _answers(self) -> bool:
        """Whether ``GET /v1/models`` answers: 200, or a 4xx (up, but refusing: the caller's
        own request then says why); a 5xx (still loading) or no connection is not yet."""
        try:
            self.models()
            return True
        except urllib.error.HTTPError as err:
            return err.code < 500
        except (OSError, ValueError):
            return False

    def models(self) -> list[str]:
        """The ids ``GET /v1/models`` lists (with the key, when there is one)."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return list_models(self.url, key or None, timeout=2)

    def exited(self) -> int | None:
        """The exit code once the server has stopped (None while it runs)."""
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 1) -> str:
        """The last non-empty lines of the server's log (the error, when it failed)."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        last = [ln.strip() for ln in text if ln.strip()][-lines:]
        return " | ".join(last) or "(empty log)"

    def stop(self) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL after 10 s (and
        SIGKILL for whatever of the group outlived its leader)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        _signal_group(proc, signal.SIGKILL)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, sig)  # the group the server leads (start_new_session)
        elif proc.poll() is None:
            proc.terminate() if sig == signal.SIGTERM else proc.kill()
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already
