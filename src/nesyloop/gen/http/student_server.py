"""The student's ``server`` engine: a student checkpoint behind any OpenAI-compatible server
(vLLM, SGLang, llama.cpp, TGI, ``nesyloop serve``), asked through :class:`OpenAIBackend`.

``[student.server] command`` (a template with ``{model}`` and ``{port}``): the engine starts it
for the checkpoint on a free 127.0.0.1 port (:class:`ServerProcess`: its own process group, its
output in a log file), waits until ``GET /v1/models`` answers, and stops the group on
:meth:`ServerEngine.close`, which every stage calls, also on error or Ctrl-C.
``base_url``: a server the user runs, which must list the checkpoint (its absolute path) in
``/v1/models``. Requests go out ``concurrency`` at a time; a raw prompt goes to
``/v1/completions``, or as one user message to ``/v1/chat/completions`` when the student's
tokenizer has a chat template (as the ``hf`` engine wraps it). Token log-probabilities come
from the API's ``logprobs``, so NesyCD's confidence gate works through any server that gives
them. A student's answers must be whole: a request that still fails after the retries, or a
server that exits mid-stage, stops the stage with a one-line :class:`StudentServerError`
naming the server and its log (a re-run recomputes the stage; finished stages are kept).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import urllib.error
from pathlib import Path
from typing import Any

from ...errors import NesyloopError
from ..base import Completion, Request
from .openai_backend import OpenAIBackend
from .process import ServerProcess, free_port, list_models

REQUEST_TIMEOUT_S = 600.0  # one request, queueing on a busy server included
WATCH_S = 0.2  # how often a started server is checked while requests are in flight


class StudentServerError(NesyloopError):
    """The student's server failed to start, exited, or could not answer every request."""


def checkpoint_name(model: str | os.PathLike) -> str:
    """What ``{model}`` becomes and the name asked for: a checkpoint folder's absolute path, a
    GGUF file's (``smollm2``: the shipped one), or a hub name as given."""
    from ...students.load import resolve_student

    folder, gguf = resolve_student(model)
    return str(Path(folder) / gguf) if gguf else folder


def command_argv(template: str, model: str, port: int) -> list[str]:
    """The argv of a ``command`` template, split as a shell would (no shell runs it), with
    ``{model}`` and ``{port}`` filled in inside each word (so a path with spaces stays one)."""
    return [w.replace("{model}", model).replace("{port}", str(port))
            for w in shlex.split(template)]


def raw_prompt_route(model: str | os.PathLike) -> str:
    """``"chat"`` when the student's tokenizer has a chat template (the ``hf`` engine then wraps
    a raw prompt in it as one user message), else ``"completions"`` (the prompt as it is)."""
    from ...students.fmt import has_chat_template
    from ...students.load import load_tokenizer

    return "chat" if has_chat_template(load_tokenizer(model)) else "completions"


class ServerEngine(OpenAIBackend):
    """The student ``model`` through an OpenAI-compatible server (see the module docstring);
    ``settings``: the ``[student.server]`` section; ``log_path``: the started server's log (a
    temp file when None)."""

    kind = "server"
    role = "student"
    supports_logprobs = True

    def __init__(self, model: str | os.PathLike, settings: Any,
                 log_path: str | os.PathLike | None = None, progress: bool = False):
        self.checkpoint = checkpoint_name(model)
        self.progress = progress
        self.server: ServerProcess | None = None
        self.log_path: Path | None = None
        route = raw_prompt_route(model)
        self.api_key_env = settings.api_key_env
        if settings.command:
            name, url = self._start(settings, log_path)
        else:
            url = settings.base_url.rstrip("/")
            name = self._served(url)
        super().__init__(name, url, api_key_env=settings.api_key_env,
                         concurrency=settings.concurrency, timeout_s=REQUEST_TIMEOUT_S,
                         raw_prompts=route)

    def __repr__(self) -> str:
        return f"ServerEngine(model={self.checkpoint!r}, base_url={self.base_url!r})"

    @property
    def where(self) -> str:
        """How errors name the server: its command, or its URL."""
        if self.server is not None:
            return f"student server `{shlex.join(self.server.argv)}`"
        return f"student server at {self.base_url}"

    def _models(self, url: str) -> list[str]:
        """What ``GET {url}/models`` lists; a one-line StudentServerError when it fails."""
        try:
            return list_models(url, os.environ.get(self.api_key_env) or None)
        except (OSError, ValueError) as err:
            hint = ""
            if isinstance(err, urllib.error.HTTPError) and err.code in (401, 403):
                hint = f"; is ${self.api_key_env} set to the server's key?"
            elif self.server is None:
                hint = "; is the server running (student.server.base_url)?"
            raise StudentServerError(f"{self.where}: GET /v1/models failed ({err}){hint}"
                                     f"{self._log_note()}") from None

    def _start(self, settings: Any, log_path: str | os.PathLike | None) -> tuple[str, str]:
        port = free_port()
        argv = command_argv(settings.command, self.checkpoint, port)
        self.server = ServerProcess(argv, port, log_path, settings.start_timeout_s,
                                    what=f"student server `{shlex.join(argv)}`",
                                    api_key_env=self.api_key_env)
        try:
            self.server.start()
        except NesyloopError as err:
            self.log_path = self.server.log_path
            raise StudentServerError(str(err)) from None
        self.log_path = self.server.log_path
        try:
            ids = self._models(self.server.url)
        except StudentServerError:
            self.server.stop()
            raise
        if self.checkpoint in ids or len(ids) == 1:
            return (self.checkpoint if self.checkpoint in ids else ids[0]), self.server.url
        self.server.stop()
        raise StudentServerError(
            f"{self.where} serves {', '.join(map(repr, ids)) or 'no model'}, not one model "
            f"named {self.checkpoint!r}: make it serve the checkpoint under that name "
            f"(log: {self.log_path})")

    def _served(self, url: str) -> str:
        """The checkpoint's name, checked against what the user's server lists."""
        self.base_url = url  # named by errors before the client exists
        ids = self._models(url)
        if self.checkpoint not in ids:
            raise StudentServerError(
                f"student server at {url} does not serve {self.checkpoint!r} (it lists: "
                f"{', '.join(map(repr, ids)) or 'nothing'}); load the checkpoint under that "
                "name, or set student.server.command to start a server per checkpoint "
                "(docs/recipes.md)")
        return self.checkpoint

    # --- generation ----------------------------------------------------------------------
    async def agenerate(self, requests: list[Request]) -> list[Completion]:
        """Every request, ``concurrency`` at a time, while the started server is watched; a
        server that exits, or a request that fails for good, is a StudentServerError."""
        from tqdm.auto import tqdm

        bar = tqdm(total=len(requests), desc="generate", unit="req",
                   disable=not self.progress or len(requests) < 2)
        tasks = [asyncio.ensure_future(self.one(r)) for r in requests]
        for t in tasks:
            t.add_done_callback(lambda _: bar.update())
        try:
            comps = await self._watched(tasks)
        finally:  # an error, or Ctrl-C: nothing stays in flight
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            bar.close()
        failed = [c for c in comps if c.error is not None]
        if failed:
            if self.server is not None and self.server.exited() is not None:
                raise self._exited()
            raise StudentServerError(
                f"{self.where}: {len(failed)} of {len(comps)} requests failed after the "
                f"retries ({failed[0].error}){self._log_note()}")
        return comps

    async def _watched(self, tasks: list[asyncio.Future]) -> list[Completion]:
        """The tasks' results; the first exception of one, or the started server's exit, is
        raised as soon as it happens."""
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=WATCH_S,
                                               return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            if pending and self.server is not None and self.server.exited() is not None:
                raise self._exited()
        return [t.result() for t in tasks]

    def _exited(self) -> StudentServerError:
        code = self.server.exited() if self.server is not None else None
        tail = self.server.log_tail() if self.server is not None else ""
        return StudentServerError(f"{self.where} exited with code {code} during generation: "
                                  f"{tail}{self._log_note()}")

    def _log_note(self) -> str:
        return f" (log: {self.log_path})" if self.log_path is not None else ""

    def close(self) -> None:
        """Close the client, then stop the started server (its whole process group)."""
        try:
            super().close()
        finally:
            if self.server is not None:
                self.server.stop()
