"""An OpenAI-compatible HTTP server in front of any nesyloop :class:`~nesyloop.gen.base.Backend`.

Standard library only (``http.server.ThreadingHTTPServer``, HTTP/1.1 keep-alive): the handler
owns the socket, so faults can delay an answer, replace it with a 429 or a 500, or close the
connection without one. Hardened for load and hostile clients:

* a listen backlog of ``backlog`` (1024) and at most ``max_connections`` open connections (a
  connection over the cap is answered 503 and closed);
* a client must send a whole request (line, headers, body) within ``client_timeout_s`` of its
  first byte (else 408 and the connection is closed), and an idle keep-alive connection is
  closed after ``idle_timeout_s``;
* prompts over ``max_prompt_tokens`` are refused (400, ``context_length_exceeded``);
* backend calls run on one worker thread (:mod:`.sched`), each cut at ``max_generation_s``
  (finish_reason "length"); small requests run nested inside a long generation, and a
  student's greedy requests that wait together are generated as one batch;
* every error, malformed requests and unsupported methods included, is JSON in OpenAI's shape.

Latency faults are slept in the request's thread, outside the worker.
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

from .backends import question_of
from .faults import Faults
from .sched import Scheduler, hf_of, hook
from .wire import ApiError, Call, parse_body, parse_call, response, stream_events

log = logging.getLogger("nesyloop.serve")
POST_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}
DEFAULT_PROMPT_TOKENS = 16384  # when the backend does not say its context (the oracle: words)


def body_hash(raw: bytes) -> str:
    """The key of a request body in :attr:`Server.stats` (``served``, ``attempts``)."""
    return hashlib.sha256(raw).hexdigest()[:32]


def _token_counter(backend: Any):
    tok = getattr(backend, "tokenizer", None)
    if tok is not None:
        return lambda text: len(tok(text, add_special_tokens=False, verbose=False)["input_ids"])
    return lambda text: len(text.split())  # the oracle counts words


def _prompt_counter(backend: Any, count_tokens):
    """How many tokens the prompt of a request is: the student's encoding of it (a chat with
    its template), the question alone for a student with a knowledge base, else words."""
    holder = hf_of(backend)
    if holder is not None and holder is backend and callable(getattr(backend, "encode", None)):
        # the encoding is kept on the request: HFBackend.generate reuses it (no second pass)
        return lambda r: len(r.meta.setdefault("input_ids", backend.encode(r)))
    if holder is not None:
        return lambda r: count_tokens(question_of(r))
    return lambda r: count_tokens(r.text())


def context_of(backend: Any) -> int:
    """The default prompt limit: the model's context (``max_position_embeddings``, or the
    tokenizer's ``model_max_length`` when sane), else :data:`DEFAULT_PROMPT_TOKENS`."""
    holder = hf_of(backend)
    if holder is not None:
        n = getattr(getattr(holder.lm, "config", None), "max_position_embeddings", None)
        if isinstance(n, int) and n > 0:
            return n
        n = getattr(getattr(holder, "tokenizer", None), "model_max_length", None)
        if isinstance(n, int) and 0 < n < 10**6:
            return n
    return DEFAULT_PROMPT_TOKENS


class Server:
    """Serve ``backend`` at ``http://host:port/v1`` (``port=0``: an ephemeral port).

    ``token``: the bearer token clients must send (None: no auth). ``model_name``: the model
    id in ``/v1/models`` that requests must name (default ``backend.model``).
    ``max_request_bytes``: larger bodies get 413. ``faults``: see :class:`Faults` (the
    attribute can be changed while serving, e.g. set to None to "recover").
    ``max_prompt_tokens``: longer prompts get 400 (None: the model's context, see
    :func:`context_of`). ``max_generation_s``: a generation is cut after this many seconds
    (finish_reason "length"; None: no limit). ``client_timeout_s``: time to send a whole request
    from its first byte (else 408, closed). ``idle_timeout_s``: an idle keep-alive connection is
    closed after it. ``max_connections``: more are answered 503 and closed. ``backlog``: the
    listen queue."""

    def __init__(self, backend: Any, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, model_name: str | None = None,
                 max_request_bytes: int = 1 << 20, faults: Faults | None = None,
                 max_prompt_tokens: int | None = None, max_generation_s: float | None = 60.0,
                 client_timeout_s: float = 10.0, idle_timeout_s: float = 30.0,
                 max_connections: int = 512, backlog: int = 1024):
        limits = {"max_request_bytes": max_request_bytes, "max_connections": max_connections,
                  "backlog": backlog, "max_prompt_tokens": max_prompt_tokens,
                  "max_generation_s": max_generation_s, "client_timeout_s": client_timeout_s,
                  "idle_timeout_s": idle_timeout_s}
        for name, v in limits.items():
            if v is not None and not v > 0:  # None: the default (prompts) or no limit (time)
                raise ValueError(f"{name} must be > 0, got {v}")
        self.backend = backend
        self.host, self.port = host, port
        self._token = token or None
        self.model_name = model_name or str(getattr(backend, "model", "") or "nesyloop")
        self.max_request_bytes = max_request_bytes
        self.faults = faults
        self.count_tokens = _token_counter(backend)
        self.prompt_tokens = _prompt_counter(backend, self.count_tokens)
        self.max_prompt_tokens = max_prompt_tokens or context_of(backend)
        self.max_generation_s = max_generation_s
        self.client_timeout_s, self.idle_timeout_s = client_timeout_s, idle_timeout_s
        self.max_connections, self.backlog = max_connections, backlog
        self.created = int(time.time())
        holder = hf_of(backend)
        self.scheduler = Scheduler(backend.generate, merge_limit=max(1, int(getattr(
            holder, "batch_size", 1) or 1)) if holder is not None else 1)
        self._unhook = lambda: None
        self._stats_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._open = 0  # connections admitted and not yet closed
        self._watched: dict[socket.socket, float] = {}  # connection -> request deadline
        self._expired: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._requests = 0
        self._faults: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._attempts: Counter[str] = Counter()
        self._faulted: Counter[str] = Counter()
        self._served: Counter[str] = Counter()
        self._conn_stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ lifecycle

    def bind(self) -> Server:
        """Open the listening socket (``port`` becomes the real port); :meth:`start` or
        :meth:`serve_forever` then answer on it."""
        if self._httpd is None:
            cls = _HTTPServer6 if ":" in self.host else _HTTPServer
            httpd = cls((self.host, self.port), _Handler, bind_and_activate=False)
            httpd.request_queue_size = self.backlog
            try:
                httpd.server_bind()
                httpd.server_activate()
            except BaseException:
                httpd.server_close()
                raise
            httpd.app = self
            self._httpd = httpd
            self.port = httpd.server_address[1]
        return self

    def _start_workers(self) -> None:
        self._stopping.clear()
        self.scheduler.start(name=f"nesyloop-serve-worker-{self.port}")
        self._unhook = hook(self.backend, self.scheduler)
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch_loop, daemon=True,
                                              name=f"nesyloop-serve-watchdog-{self.port}")
            self._watchdog.start()

    def start(self) -> Server:
        """Serve in a background (daemon) thread; returns self."""
        self.bind()
        if self._thread is None:
            self._start_workers()
            self._thread = threading.Thread(target=self._httpd.serve_forever,  # type: ignore
                                            kwargs={"poll_interval": 0.05},
                                            name=f"nesyloop-serve-{self.port}", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (from another thread) or Ctrl-C."""
        self.bind()
        self._start_workers()
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
        self._stopping.set()
        self.scheduler.stop()
        self._unhook()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
            self._watchdog = None
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

    # ------------------------------------------------------------------ connections

    def _admit(self) -> bool:
        with self._stats_lock:
            if self._open >= self.max_connections:
                self._conn_stats["refused"] += 1
                return False
            self._open += 1
            self._conn_stats["accepted"] += 1
            return True

    def _release(self) -> None:
        with self._stats_lock:
            self._open -= 1

    def _watch(self, conn: socket.socket) -> None:
        """A request began on ``conn``: it must be read whole within ``client_timeout_s``."""
        with self._stats_lock:
            self._watched[conn] = time.monotonic() + self.client_timeout_s

    def _unwatch(self, conn: socket.socket) -> bool:
        """The request on ``conn`` has been read; False when it had timed out already."""
        with self._stats_lock:
            self._watched.pop(conn, None)
            return conn not in self._expired

    def _forget(self, conn: socket.socket) -> None:
        with self._stats_lock:
            self._watched.pop(conn, None)
            self._expired.discard(conn)

    def timed_out(self, conn: socket.socket) -> bool:
        with self._stats_lock:
            return conn in self._expired

    def _watch_loop(self) -> None:
        """Cut the reading side of connections whose request is late: the handler then sees
        the end of the stream, answers 408 and closes."""
        while not self._stopping.wait(0.1):
            now = time.monotonic()
            with self._stats_lock:
                late = [c for c, t in self._watched.items() if t <= now]
                for c in late:
                    del self._watched[c]
                    self._expired.add(c)
                    self._conn_stats["timed_out"] += 1
            for c in late:
                try:
                    c.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    # ------------------------------------------------------------------ stats

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: ``requests`` received, ``faults`` by kind ("latency", "429", "500",
        "drop"), ``errors`` by status (other error answers), ``attempts`` and ``served``
        (successful completions) per request-body hash (:func:`body_hash`), ``completions``,
        ``connections`` ("accepted", "refused" over the cap, "timed_out" slow clients,
        "open" now), ``nested`` (calls run inside a long generation) and ``merged`` (greedy
        calls generated together as one batch)."""
        with self._stats_lock:
            return {"requests": self._requests, "faults": dict(self._faults),
                    "errors": dict(self._errors), "attempts": dict(self._attempts),
                    "served": dict(self._served), "completions": sum(self._served.values()),
                    "connections": {**self._conn_stats, "open": self._open},
                    "nested": self.scheduler.nested_runs,
                    "merged": self.scheduler.merged_runs}

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

    def _check_prompts(self, call: Call) -> list[int]:
        """Prompt tokens per request; 400 (``context_length_exceeded``) over the limit."""
        counts = []
        for i, r in enumerate(call.requests):
            n = self.prompt_tokens(r)
            if n > self.max_prompt_tokens:
                param = "messages" if call.kind == "chat" else (
                    "prompt" if len(call.requests) == 1 else f"prompt[{i}]")
                raise ApiError(400, f"{param}: the prompt has {n} tokens, over this server's "
                               f"limit of {self.max_prompt_tokens} (--max-prompt-tokens)",
                               code="context_length_exceeded", param=param)
            counts.append(n)
        return counts

    def _check_logprobs(self, call: Call) -> None:
        """400 (``logprobs_not_supported``) when a call asks for token log-probabilities and
        the backend gives none (the oracle)."""
        if (any(r.settings.top_logprobs is not None for r in call.requests)
                and not getattr(self.backend, "supports_logprobs", False)):
            kind = getattr(self.backend, "kind", "?")
            raise ApiError(400, f"logprobs: this server's backend ({kind}) gives no token "
                           "log-probabilities", code="logprobs_not_supported", param="logprobs")

    def complete(self, call: Call) -> tuple[list[Any], dict[str, Any] | None]:
        """Run the backend on a parsed call (400 for a too-long prompt, 500 when it fails);
        ``call.timed_out`` is set when the generation was cut at ``max_generation_s``."""
        if call.model != self.model_name:
            raise ApiError(404, f"model {call.model!r} not found; this server serves "
                           f"{self.model_name!r}", "not_found_error", "model_not_found", "model")
        self._check_logprobs(call)
        counts = self._check_prompts(call)
        cost = sum((n + r.settings.max_tokens) * r.settings.n
                   for n, r in zip(counts, call.requests, strict=True))
        job = self.scheduler.run(call.requests, cost, self.max_generation_s)
        if isinstance(job.error, ApiError):
            raise job.error
        if job.error is not None:  # any backend failure: 500
            err = job.error
            log.error("backend failed", exc_info=err)
            raise ApiError(500, f"backend failed: {type(err).__name__}: {err}", "server_error",
                           "backend_error")
        call.timed_out = job.timed_out
        comps = job.result
        infos = [getattr(c, "nesyloop", None) for c in comps]
        extra = None
        if any(infos):
            extra = infos[0] if len(infos) == 1 else {"prompts": infos}
        return comps, extra


def _refuse(sock: socket.socket) -> None:
    """Answer a connection over the cap with a 503 and close it (reading what the client sent
    first, so that the close does not reset the connection before the answer is read)."""
    body = json.dumps(ApiError(503, "too many open connections; retry later", "server_error",
                               "too_many_connections").body()).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    try:
        sock.settimeout(0.05)
        sock.sendall(head.encode() + body)
        _linger(sock, 0.01, 2)  # in the accepting thread: only a moment
    except OSError:
        pass
    finally:
        sock.close()


def _linger(sock: socket.socket, timeout: float = 0.2, reads: int = 16) -> None:
    """Half-close, then read (briefly) what the client still sends: closing a socket with
    unread data resets the connection, and the client could lose the answer sent before."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(timeout)
        for _ in range(reads):
            if not sock.recv(1 << 16):
                return
    except OSError:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not block stop()
    app: Server

    def process_request(self, request, client_address) -> None:
        if not self.app._admit():
            _refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.app._release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.app._release()


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nesyloop-serve"
    sys_version = ""
    timeout = None  # set per phase: idle_timeout_s while waiting for a request
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms stall
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.app._stats_lock:
            self.server.app._conns.add(self.connection)

    def finish(self) -> None:
        app = self.server.app
        with app._stats_lock:
            app._conns.discard(self.connection)
        app._forget(self.connection)
        try:
            super().finish()
        except OSError:
            pass
        if self.close_connection:
            _linger(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def handle_one_request(self) -> None:
        """Wait (up to ``idle_timeout_s``) for a request's first byte, then read it under the
        ``client_timeout_s`` watch."""
        app = self.server.app
        self.connection.settimeout(app.idle_timeout_s)
        try:
            first = self.rfile.peek(1)
        except OSError:  # idle too long, or reset
            first = b""
        if not first:
            self.close_connection = True
            return
        app._watch(self.connection)
        try:
            super().handle_one_request()
        except OSError:
            self.close_connection = True
        finally:
            app._unwatch(self.connection)

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
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, err: ApiError) -> None:
        app = self.server.app
        if err.code not in ("rate_limit_exceeded", "injected_fault"):
            app._count(app._errors, str(err.status))
        self._send_json(err.status, err.body(), err.headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None,
                   ) -> None:
        """``http.server``'s own errors (malformed request line or headers, a method without
        a handler), as JSON in OpenAI's shape instead of HTML; the connection is closed."""
        self.close_connection = True
        self.request_version = "HTTP/1.1"  # an HTTP/0.9 answer would have no status line
        if self.server.app.timed_out(self.connection):
            err = _late()
        elif code == 501:  # no do_<METHOD>
            err = _method_not_allowed(self.command)
        else:
            err = ApiError(code, message or explain or "bad request", code="bad_request")
        try:
            self._send_error(err)
        except OSError:
            pass

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

    def _begin(self) -> bool:
        """Count the request; False (after a 408) when its headers came too late."""
        app = self.server.app
        with app._stats_lock:
            app._requests += 1
        if app.timed_out(self.connection):
            self.close_connection = True
            self._send_error(_late())
            return False
        return True

    def do_GET(self) -> None:
        app = self.server.app
        if not self._begin():
            return
        app._unwatch(self.connection)
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
        if not self._begin():
            return
        try:
            self._post(self.server.app)
        except ApiError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # a bug: answer 500 rather than drop the connection
            log.exception("request failed")
            self.close_connection = True
            self._send_error(ApiError(500, f"internal error: {type(err).__name__}",
                                      "server_error", "internal_error"))

    def _not_allowed(self) -> None:
        if self._begin():
            self._discard_body(self.server.app)
            self._send_error(_method_not_allowed(self.command))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_TRACE = do_CONNECT = _not_allowed

    def _discard_body(self, app: Server) -> None:
        """Read and drop the body of a refused request, so the error answer reaches the client
        (closing a socket with unread data makes the kernel reset the connection). A body over
        4x the size limit is left unread and the connection closed."""
        length = self.headers.get("Content-Length", "")
        n = int(length) if length.strip().isdigit() else -1
        if self.headers.get("Transfer-Encoding") or not 0 <= n <= 4 * max(
                app.max_request_bytes, 1 << 14):
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
        raw = self.rfile.read(n)
        if not app._unwatch(self.connection):
            self.close_connection = True
            raise _late()
        if len(raw) < n:  # the client closed early: nothing to answer
            self.close_connection = True
            raise ConnectionResetError("body cut short")
        return raw

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


def _late() -> ApiError:
    return ApiError(408, "the request was not received in time (--client-timeout)",
                    code="request_timeout")


def _method_not_allowed(method: str | None) -> ApiError:
    return ApiError(405, f"method {method!r} is not allowed; use GET for /health and "
                    "/v1/models, POST for /v1/chat/completions and /v1/completions",
                    code="method_not_allowed", headers={"Allow": "GET, POST"})
