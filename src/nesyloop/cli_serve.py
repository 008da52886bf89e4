"""``nesyloop serve``: an OpenAI-compatible endpoint for the oracle teacher or a student (+ KB)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import ConfigError, NesyloopError


def serve(
    backend: Annotated[str | None, typer.Option(
        "--backend", help="oracle (the Bazaar teacher) or hf (a student); default: hf with "
        "--model, else oracle.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Student: checkpoint folder, .gguf file or smollm2.")] = None,
    kb: Annotated[Path | None, typer.Option(
        "--kb", help="The student's knowledge base (kb.sqlite): retrieval on every request.",
    )] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: any free port).")] = 8000,
    token_env: Annotated[str | None, typer.Option(
        "--token-env", help="Name of the environment variable holding the bearer token "
        "clients must send.")] = None,
    max_request_bytes: Annotated[int, typer.Option(
        "--max-request-bytes", help="Larger request bodies get 413.")] = 1 << 20,
    max_prompt_tokens: Annotated[int | None, typer.Option(
        "--max-prompt-tokens", help="Longer prompts get 400 (default: the model's context; "
        "16384 words for the oracle).")] = None,
    max_generation_seconds: Annotated[float, typer.Option(
        "--max-generation-seconds", help="Cut a generation after this many seconds (the "
        "answer so far, finish_reason 'length'); 0: no limit.")] = 60.0,
    client_timeout: Annotated[float, typer.Option(
        "--client-timeout", help="Seconds a client has to send a whole request from its first "
        "byte (else 408, connection closed).")] = 10.0,
    max_connections: Annotated[int, typer.Option(
        "--max-connections", help="Open connections at most; more are answered 503.")] = 512,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Student: up to this many waiting greedy requests generate as one "
        "batch.")] = 32,
    model_name: Annotated[str | None, typer.Option(
        "--model-name", help="Model id advertised in /v1/models (default: the backend's).")] = None,
    faults: Annotated[str | None, typer.Option(
        "--faults", help="Inject faults, e.g. 'latency=0.05,429=0.3,retry_after=1,500=0.2,"
        "drop=0.1,seed=0,max_faults=3'.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Take the teacher/task/run seeds and the nesycd retrieval settings from "
        "this config.")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Layer the quick preset on the config.")] = False,
    error_rate: Annotated[float | None, typer.Option(
        "--error-rate", help="Oracle: override the teacher's error rate.")] = None,
) -> None:
    """Serve a backend over the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models)."""
    from .serve import Server, parse_faults, serve_backend

    try:
        _check_limits(port, max_request_bytes, max_prompt_tokens, max_generation_seconds,
                      client_timeout, max_connections, batch_size)
        token = None
        if token_env is not None:
            token = os.environ.get(token_env)
            if not token:
                raise ConfigError(f"--token-env: environment variable {token_env!r} is not set "
                                  "or empty")
        fault_spec = parse_faults(faults)
        kind = backend or ("hf" if model is not None else "oracle")
        if kb is not None and model is not None:  # a bad KB: one line now, not 500s later
            from .kb.store import open_kb

            open_kb(kb).close()
        served = serve_backend(kind, model=model, kb=None if kb is None else str(kb),
                               config=config, quick=quick, error_rate=error_rate,
                               batch_size=batch_size)
        srv = Server(served, host=host, port=port, token=token, model_name=model_name,
                     max_request_bytes=max_request_bytes, faults=fault_spec,
                     max_prompt_tokens=max_prompt_tokens,
                     max_generation_s=max_generation_seconds or None,
                     client_timeout_s=client_timeout, max_connections=max_connections).bind()
    except NesyloopError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except OSError as err:
        typer.echo(f"error: --host/--port: cannot listen on {host}:{port} ({err.strerror})",
                   err=True)
        raise typer.Exit(2) from None

    _serve_until_stopped(srv, served, host, token)


def _check_limits(port: int, max_request_bytes: int, max_prompt_tokens: int | None,
                  max_generation_seconds: float, client_timeout: float,
                  max_connections: int, batch_size: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: must be in [0, 65535], got {port}")
    for flag, value, ok in [("--max-request-bytes", max_request_bytes, max_request_bytes >= 1),
                            ("--max-prompt-tokens", max_prompt_tokens,
                             max_prompt_tokens is None or max_prompt_tokens >= 1),
                            ("--max-generation-seconds", max_generation_seconds,
                             max_generation_seconds >= 0),
                            ("--client-timeout", client_timeout, client_timeout > 0),
                            ("--max-connections", max_connections, max_connections >= 1),
                            ("--batch-size", batch_size, batch_size >= 1)]:
        if not ok:
            raise ConfigError(f"{flag}: must be positive, got {value}")


def _serve_until_stopped(srv, served, host: str, token: str | None) -> None:
    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    auth = "bearer token required" if token else "no auth"
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: listening on {host} without a token: anyone who can reach this "
                   "port can use it (see --token-env)", err=True)
    typer.echo(f"serving {srv.model_name!r} at {srv.url} ({auth}; prompts up to "
               f"{srv.max_prompt_tokens} tokens; Ctrl-C stops)")
    sys.stdout.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        close = getattr(served, "close", None)
        if close is not None:
            close()
