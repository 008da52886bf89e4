"""Hostile and malformed requests to ``nesyloop serve`` (a real oracle server on 127.0.0.1, raw
sockets): each kind is answered with a JSON 4xx in OpenAI's error shape (a slow client: 408 or
a closed connection), and the server keeps serving afterwards."""

from __future__ import annotations

import json
import socket
import time

import pytest

from nesyloop.serve import Server, serve_backend

MODEL = "bazaar-oracle"
LIMIT = 50  # prompt words
CHAT = "/v1/chat/completions"
MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def srv():
    with Server(serve_backend("oracle"), max_prompt_tokens=LIMIT, client_timeout_s=1.0,
                max_request_bytes=1 << 20) as s:
        yield s


def raw(srv: Server, data: bytes, timeout: float = 20.0) -> tuple[int, dict, bytes]:
    """Send raw bytes on a new connection, read until the server closes it."""
    with socket.create_connection((srv.host, srv.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    return int(status_line.split()[1]), headers, body


def request(method: str, path: str, body: bytes | None = None, extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


def post(path: str, body: bytes | dict) -> bytes:
    return request("POST", path, body if isinstance(body, bytes) else json.dumps(body).encode())


def assert_openai_error(status: int, headers: dict, body: bytes, want: int) -> dict:
    assert status == want, body[:300]
    assert headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def assert_still_serving(srv: Server) -> None:
    status, _, body = raw(srv, post(CHAT, {"model": MODEL, "messages": MSGS, "max_tokens": 8}))
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"]


def with_field(**kw) -> dict:
    return {"model": MODEL, "messages": MSGS, **kw}


# ---------------------------------------------------------------------------- bodies

BAD_BODIES = {
    "temperature-nan": b'{"model": "bazaar-oracle", "messages": [{"role": "user", "content": '
                       b'"hi"}], "temperature": NaN}',
    "temperature-inf": b'{"model": "bazaar-oracle", "messages": [{"role": "user", "content": '
                       b'"hi"}], "temperature": Infinity}',
    "top-p-minus-inf": b'{"model": "bazaar-oracle", "messages": [{"role": "user", "content": '
                       b'"hi"}], "top_p": -Infinity}',
    "deep-nested-json": b'{"model": "bazaar-oracle", "messages": ' + b"[" * 100_000
                        + b"]" * 100_000 + b"}",
    "deep-nested-object": b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
    "huge-integer": b'{"model": "bazaar-oracle", "messages": [], "n": 1' + b"0" * 5000 + b"}",
    "non-utf8": b'{"model": "bazaar-oracle", "messages": [{"role": "user", "content": "\xff\xfe'
                b'\xc3"}]}',
    "non-json": b"model=bazaar-oracle&prompt=hi",
    "empty-body": b"",
    "json-not-object": b'[{"model": "bazaar-oracle"}]',
}


@pytest.mark.parametrize("kind", list(BAD_BODIES))
def test_malformed_body_is_a_json_400(srv, kind):
    status, headers, body = raw(srv, post(CHAT, BAD_BODIES[kind]))
    err = assert_openai_error(status, headers, body, 400)
    assert err["type"] == "invalid_request_error"
    assert_still_serving(srv)


@pytest.mark.parametrize("seed", [2**64, 2**63, -(2**63) - 1, 10**30])
def test_seed_out_of_the_64_bit_range_is_a_400(srv, seed):
    status, headers, body = raw(srv, post(CHAT, with_field(seed=seed)))
    assert assert_openai_error(status, headers, body, 400)["param"] == "seed"
    assert_still_serving(srv)


def test_large_seeds_in_range_are_served(srv):
    for seed in (2**63 - 1, -(2**63), 2**40 + 5):
        status, _, body = raw(srv, post(CHAT, with_field(seed=seed, max_tokens=8)))
        assert status == 200, body


WRONG_TYPES = [  # (path, body, the param the error must name)
    (CHAT, {"messages": MSGS, "model": 123}, "model"),
    (CHAT, with_field(messages="hi"), "messages"),
    (CHAT, with_field(messages=["hi"]), "messages[0]"),
    (CHAT, with_field(messages=[{"role": 5, "content": "x"}]), "messages[0].role"),
    (CHAT, with_field(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (CHAT, with_field(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
     "messages[0].content"),
    (CHAT, with_field(n="2"), "n"),
    (CHAT, with_field(n=2.0), "n"),
    (CHAT, with_field(n=10**6), "n"),
    (CHAT, with_field(max_tokens="8"), "max_tokens"),
    (CHAT, with_field(max_tokens=2**40), "max_tokens"),
    (CHAT, with_field(max_completion_tokens=True), "max_completion_tokens"),
    (CHAT, with_field(temperature="hot"), "temperature"),
    (CHAT, with_field(temperature=1e308), "temperature"),
    (CHAT, with_field(top_p=[1]), "top_p"),
    (CHAT, with_field(stop=5), "stop"),
    (CHAT, with_field(stop=["ok", 1]), "stop"),
    (CHAT, with_field(seed="1"), "seed"),
    (CHAT, with_field(seed=1.5), "seed"),
    (CHAT, with_field(stream="yes"), "stream"),
    (CHAT, with_field(stream_options="x"), "stream_options"),
    ("/v1/completions", {"model": MODEL, "prompt": 7}, "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": ["a", None]}, "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": "a", "echo": True}, "echo"),
]


@pytest.mark.parametrize("path,body,param", WRONG_TYPES,
                         ids=[f"{p}-{i}" for i, (_, _, p) in enumerate(WRONG_TYPES)])
def test_wrong_field_type_is_a_400_naming_the_field(srv, path, body, param):
    status, headers, raw_body = raw(srv, post(path, body))
    err = assert_openai_error(status, headers, raw_body, 400)
    assert err["param"] == param and err["message"].startswith(param)
    assert_still_serving(srv)


def test_too_long_prompt_is_a_400(srv):
    long_text = " ".join(["word"] * (LIMIT + 1))
    status, headers, body = raw(srv, post(CHAT, with_field(
        messages=[{"role": "user", "content": long_text}])))
    err = assert_openai_error(status, headers, body, 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert f"{LIMIT + 1} tokens" in err["message"] and str(LIMIT) in err["message"]
    status, headers, body = raw(srv, post("/v1/completions", {
        "model": MODEL, "prompt": ["short", long_text]}))
    assert assert_openai_error(status, headers, body, 400)["param"] == "prompt[1]"
    fits = " ".join(["word"] * LIMIT)
    status, _, _ = raw(srv, post("/v1/completions", {"model": MODEL, "prompt": fits}))
    assert status == 200
    assert_still_serving(srv)


# ---------------------------------------------------------------------------- HTTP level


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FROB"])
def test_other_methods_are_a_json_405(srv, method):
    status, headers, body = raw(srv, request(method, CHAT, b"{}"))
    assert_openai_error(status, headers, body, 405)
    assert headers["allow"] == "GET, POST"
    assert_still_serving(srv)


def test_head_is_a_405_without_a_body(srv):
    status, headers, body = raw(srv, request("HEAD", "/v1/models"))
    assert status == 405 and headers["content-type"] == "application/json" and body == b""
    assert_still_serving(srv)


@pytest.mark.parametrize("method,path", [("GET", "/v2/nothing"), ("POST", "/v1/embeddings"),
                                         ("GET", "/v1/models/other"), ("GET", "/%ff%00")])
def test_unknown_path_is_a_json_404(srv, method, path):
    status, headers, body = raw(srv, request(method, path, b"{}" if method == "POST" else None))
    assert_openai_error(status, headers, body, 404)
    assert_still_serving(srv)


MALFORMED = {
    "garbage-request-line": (b"GARBAGE\r\n\r\n", 400),
    "bad-http-version": (b"GET /health HTTP/9x\r\n\r\n", 400),
    "request-line-too-long": (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    "too-many-headers": (b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 150 + b"\r\n", 431),
    "header-too-long": (b"GET /health HTTP/1.1\r\nX-A: " + b"b" * 70_000 + b"\r\n\r\n", 431),
    "bad-content-length": (request("POST", CHAT, extra="Content-Length: abc\r\n"), 400),
    "no-content-length": (request("POST", CHAT), 411),
    "chunked-body": (request("POST", CHAT, extra="Transfer-Encoding: chunked\r\n")
                     + b"2\r\n{}\r\n0\r\n\r\n", 411),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_http_is_a_json_4xx(srv, kind):
    data, want = MALFORMED[kind]
    status, headers, body = raw(srv, data)
    assert_openai_error(status, headers, body, want)
    assert_still_serving(srv)


@pytest.mark.parametrize("size", [(1 << 20) + 1, 50 << 20])
def test_oversized_body_is_a_json_413(srv, size):
    head = request("POST", CHAT, extra=f"Content-Type: application/json\r\n"
                   f"Content-Length: {size}\r\n")
    # only the headers are sent: the server must answer from Content-Length alone
    with socket.create_connection((srv.host, srv.port), timeout=20) as sock:
        sock.sendall(head)
        if size < (2 << 20):
            sock.sendall(b"x" * size)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    head_part, _, body = data.partition(b"\r\n\r\n")
    status = int(head_part.split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (
        h.partition(":") for h in head_part.decode().split("\r\n")[1:])}
    err = assert_openai_error(status, headers, body, 413)
    assert err["code"] == "request_too_large"
    assert_still_serving(srv)


def test_slow_header_client_is_cut_off(srv):
    t = time.monotonic()
    with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nX-Slow: ")
        got, closed = b"", False
        for _ in range(40):  # one byte every 0.2 s: at most 8 s
            sock.settimeout(0.2)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                sock.sendall(b"a")
                continue
            except ConnectionResetError:
                closed = True
                break
            got += chunk
            if not chunk:
                closed = True
                break
    assert closed and time.monotonic() - t < srv.client_timeout_s + 3
    if got:  # the server says why before closing
        status_line, _, rest = got.partition(b"\r\n")
        assert status_line.split()[1] == b"408"
        body = rest.partition(b"\r\n\r\n")[2]
        assert json.loads(body)["error"]["code"] == "request_timeout"
    assert srv.stats["connections"]["timed_out"] >= 1
    assert_still_serving(srv)
