"""An OpenAI-compatible HTTP server in front of any nesyloop :class:`~nesyloop.gen.base.Backend`.

Standard library only (``http.server.ThreadingHTTPServer``, HTTP/1.1 keep-alive): the handler
owns the socket, so faults can delay an answer, replace it with a 429 or a 500, or close the
connection without one. Backend calls are serialised with a lock (local models are not
thread-safe; the oracle is fast), while latency faults are slept outside it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from .faults import Faults
from .wire import ApiError, Call, parse_body, parse_call, response, stream_events

log = logging.getLogger("nesyloop.serve")
POST_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}


def body_hash(raw: bytes) -> str:
    """The key of a request body in :attr:`Server.stats` (``served``, ``attempts``)."""
    return hashlib.sha256(raw).hexdigest()[:32]


def _token_counter(backend: Any):
    tok = getattr(backend, "tokenizer", None)
    if tok is not None:
        return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
    return lambda text: len(text.split())  # the oracle counts words


class Server:
    """Serve ``backend`` at ``http://host:port/v1`` (``port=0``: an ephemeral port).

    ``token``: the bearer token clients must send (None: no auth). ``model_name``: the model
    id in ``/v1/models`` that requests must name (default ``backend.model``).
    ``max_request_bytes``: larger bodies get 413. ``faults``: see :class:`Faults` (the
    attribute can be changed while serving, e.g. set to None to "recover")."""

    def __init__(self, backend: Any, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, model_name: str | None = None,
                 max_request_bytes: int = 1 << 20, faults: Faults | None = None):
        if max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {max_request_bytes}")
        self.backend = backend
        self.host, self.port = host, port
        self._token = token or None
        self.model_name = model_name or str(getattr(backend, "model", "") or "nesyloop")
        self.max_request_bytes = max_request_bytes
        self.faults = faults
        self.count_tokens = _token_counter(backend)
        self.created = int(time.time())
        self._gen_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._requests = 0
        self._faults: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._attempts: Counter[str] = Counter()
        self._faulted: Counter[str] = Counter()
        self._served: Counter[str] = Counter()

    # ------------------------------------------------------------------ lifecycle

    def bind(self) -> Server:
        """Open the listening socket (``port`` becomes the real port); :meth:`start` or
        :meth:`serve_forever` then answer on it."""
        if self._httpd is None:
            cls = _HTTPServer6 if ":" in self.host else _HTTPServer
            self._httpd = cls((self.host, self.port), _Handler)
            self._httpd.app = self
            self.port = self._httpd.server_address[1]
        return self

    def start(self) -> Server:
        """Serve in a background (daemon) thread; returns self."""
        self.bind()
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever,  # type: ignore
                                            kwargs={"poll_interval": 0.05},
                                            name=f"nesyloop-serve-{self.port}", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (from another thread) or Ctrl-C."""
        self.bind()
        try:
            self._httpd.serve_forever(poll_interval=0.2)  # type: ignore[union-attr]
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        if self._httpd is None:
            return
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._close()

    def _close(self) -> None:
        if self._httpd is None:
            return
        self._httpd.server_close()
        self._httpd = None
        with self._stats_lock:
            conns = list(self._conns)
        for c in conns:  # idle keep-alive connections would otherwise hold their threads
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    # ------------------------------------------------------------------ stats

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: ``requests`` received, ``faults`` by kind ("latency", "429", "500",
        "drop"), ``errors`` by status (other error answers), ``attempts`` and ``served``
        (successful completions) per request-body hash (:func:`body_hash`), ``completions``."""
        with self._stats_lock:
            return {"requests": self._requests, "faults": dict(self._faults),
                    "errors": dict(self._errors), "attempts": dict(self._attempts),
                    "served": dict(self._served), "completions": sum(self._served.values())}

    def _count(self, counter: Counter[str], key: str) -> None:
        with self._stats_lock:
            counter[key] += 1

    def check_token(self, header: str | None) -> None:
        if self._token is None:
            return
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "missing bearer token (send 'Authorization: Bearer <token>')",
                           "authentication_error", "missing_api_key")
        if not hmac.compare_digest(given.strip().encode(), self._token.encode()):
            raise ApiError(401, "invalid bearer token", "authentication_error", "invalid_api_key")

    def fault_for(self, digest: str) -> str | None:
        """Count this attempt of a body and decide its fault (None: serve it)."""
        faults = self.faults
        with self._stats_lock:
            attempt = self._attempts[digest]
            self._attempts[digest] += 1
            faulted = self._faulted[digest]
        if faults is None:
            return None
        if faults.latency_s > 0:
            self._count(self._faults, "latency")
            time.sleep(faults.latency_s)
        kind = faults.decide(digest, attempt, faulted)
        if kind is not None:
            with self._stats_lock:
                self._faults[kind] += 1
                self._faulted[digest] += 1
        return kind

    def complete(self, call: Call) -> tuple[list[Any], dict[str, Any] | None]:
        """Run the backend on a parsed call (500 when it fails)."""
        if call.model != self.model_name:
            raise ApiError(404, f"model {call.model!r} not found; this server serves "
                           f"{self.model_name!r}", "not_found_error", "model_not_found", "model")
        try:
            with self._gen_lock:
                comps = self.backend.generate(call.requests)
        except Exception as err:  # any backend failure: 500
            log.exception("backend failed")
            raise ApiError(500, f"backend failed: {type(err).__name__}: {err}", "server_error",
                           "backend_error") from None
        infos = [getattr(c, "nesyloop", None) for c in comps]
        extra = None
        if any(infos):
            extra = infos[0] if len(infos) == 1 else {"prompts": infos}
        return comps, extra


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not block stop()
    app: Server


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nesyloop-serve"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is closed after this many seconds
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms stall
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.app._stats_lock:
            self.server.app._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.app._stats_lock:
            self.server.app._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # ------------------------------------------------------------------ answers

    def _send_json(self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None,
                   ) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: ApiError) -> None:
        app = self.server.app
        if err.code not in ("rate_limit_exceeded", "injected_fault"):
            app._count(app._errors, str(err.status))
        self._send_json(err.status, err.body(), err.headers)

    def _send_stream(self, events: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for ev in [*(json.dumps(e, ensure_ascii=False) for e in events), "[DONE]"]:
            data = f"data: {ev}\n\n".encode()
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    # ------------------------------------------------------------------ methods

    def do_GET(self) -> None:
        app = self.server.app
        with app._stats_lock:
            app._requests += 1
        path = self._path()
        try:
            if path == "/health":
                return self._send_json(200, {"status": "ok"})
            if path == "/v1/models" or path.startswith("/v1/models/"):
                app.check_token(self.headers.get("Authorization"))
                card = {"id": app.model_name, "object": "model", "created": app.created,
                        "owned_by": "nesyloop"}
                if path == "/v1/models":
                    return self._send_json(200, {"object": "list", "data": [card]})
                if path[len("/v1/models/"):] == app.model_name:
                    return self._send_json(200, card)
                raise ApiError(404, f"model {path[len('/v1/models/'):]!r} not found",
                               "not_found_error", "model_not_found")
            raise ApiError(404, f"unknown path {path!r}", "not_found_error", "unknown_url")
        except ApiError as err:
            self._send_error(err)

    def do_POST(self) -> None:
        app = self.server.app
        with app._stats_lock:
            app._requests += 1
        try:
            self._post(app)
        except ApiError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _discard_body(self, app: Server) -> None:
        """Read and drop the body of a refused request, so the error answer reaches the client
        (closing a socket with unread data makes the kernel reset the connection). A body over
        4x the size limit is left unread and the connection closed."""
        length = self.headers.get("Content-Length", "")
        n = int(length) if length.strip().isdigit() else -1
        if not 0 <= n <= 4 * max(app.max_request_bytes, 1 << 14):
            self.close_connection = True
            return
        while n > 0:
            chunk = self.rfile.read(min(n, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            n -= len(chunk)

    def _read_body(self, app: Server) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise ApiError(411, "chunked request bodies are not supported; send Content-Length",
                           code="length_required")
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            raise ApiError(411 if length is None else 400,
                           "a Content-Length header with the body size is required",
                           code="length_required")
        n = int(length)
        if n > app.max_request_bytes:
            self._discard_body(app)
            raise ApiError(413, f"request body of {n} bytes is over the limit of "
                           f"{app.max_request_bytes} bytes", code="request_too_large")
        return self.rfile.read(n)

    def _post(self, app: Server) -> None:
        kind = POST_PATHS.get(self._path())
        if kind is None:
            self._discard_body(app)
            raise ApiError(404, f"unknown path {self._path()!r}", "not_found_error", "unknown_url")
        try:
            app.check_token(self.headers.get("Authorization"))
        except ApiError:
            self._discard_body(app)
            raise
        raw = self._read_body(app)
        digest = body_hash(raw)
        fault = app.fault_for(digest)
        if fault == "drop":
            self.close_connection = True  # no response at all: the socket just closes
            return
        if fault == "429":
            wait = app.faults.retry_after_s if app.faults else 1.0
            raise ApiError(429, "rate limit reached (injected fault)", "rate_limit_error",
                           "rate_limit_exceeded", headers={
                               "Retry-After": str(max(0, math.ceil(wait))),
                               "retry-after-ms": str(int(wait * 1000))})
        if fault == "500":
            raise ApiError(500, "internal server error (injected fault)", "server_error",
                           "injected_fault")
        call = parse_call(kind, parse_body(raw))
        comps, extra = app.complete(call)
        if call.stream:
            events = stream_events(call, comps, app.model_name, app.count_tokens, extra)
        else:
            whole = response(call, comps, app.model_name, app.count_tokens, extra)
        # counted before the answer goes out, so a client never sees stats lag behind its answer
        app._count(app._served, digest)
        if call.stream:
            self._send_stream(events)
        else:
            self._send_json(200, whole)
