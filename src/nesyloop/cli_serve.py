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
        if not 0 <= port <= 65535:
            raise ConfigError(f"--port: must be in [0, 65535], got {port}")
        if max_request_bytes < 1:
            raise ConfigError(f"--max-request-bytes: must be >= 1, got {max_request_bytes}")
        token = None
        if token_env is not None:
            token = os.environ.get(token_env)
            if not token:
                raise ConfigError(f"--token-env: environment variable {token_env!r} is not set "
                                  "or empty")
        fault_spec = parse_faults(faults)
        kind = backend or ("hf" if model is not None else "oracle")
        served = serve_backend(kind, model=model, kb=None if kb is None else str(kb),
                               config=config, quick=quick, error_rate=error_rate)
        srv = Server(served, host=host, port=port, token=token, model_name=model_name,
                     max_request_bytes=max_request_bytes, faults=fault_spec).bind()
    except NesyloopError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except OSError as err:
        typer.echo(f"error: --host/--port: cannot listen on {host}:{port} ({err.strerror})",
                   err=True)
        raise typer.Exit(2) from None

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    auth = "bearer token required" if token else "no auth"
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: listening on {host} without a token: anyone who can reach this "
                   "port can use it (see --token-env)", err=True)
    typer.echo(f"serving {srv.model_name!r} at {srv.url} ({auth}; Ctrl-C stops)")
    sys.stdout.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        close = getattr(served, "close", None)
        if close is not None:
            close()
