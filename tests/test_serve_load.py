"""``nesyloop serve`` under load (real servers on 127.0.0.1): 200 concurrent clients without a
reset, slow-header clients cut off while others are served, the connection cap, the prompt
limit's default, and small requests answered while a long student generation runs (which is
cut at the generation time limit). Orderings and counts are asserted, never durations."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

from serve_client import one_request

from nesyloop.serve import Server, serve_backend

MODEL = "bazaar-oracle"


def chat(model: str, text: str, max_tokens: int, **kw) -> bytes:
    return json.dumps({"model": model, "max_tokens": max_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": text}], **kw}).encode()


BURST_CLIENT = """
import asyncio, json, sys
port, model, per_client = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sys.path.insert(0, sys.argv[4])
from serve_client import one_request

async def one(i, j):
    body = json.dumps({"model": model, "max_tokens": 8, "temperature": 0, "messages": [
        {"role": "user", "content": f"Question: {i} and {j}?"}]}).encode()
    return await one_request(port, body, timeout=20)

async def client(i):
    return [await one(i, j) for j in range(per_client)]

async def main():
    per = await asyncio.gather(*(client(i) for i in range(200)))
    print(json.dumps([s for statuses in per for s in statuses]))

asyncio.run(main())
"""


def test_200_concurrent_clients_without_a_reset():
    """200 clients in another process (as real clients are), 3 requests each, each on a new
    connection: every one answered (with a backlog of 5, connections beyond the listen queue
    stalled for tens of seconds or were reset)."""
    with Server(serve_backend("oracle")) as srv:
        statuses = burst(srv, MODEL, 3)
        stats = srv.stats
    assert statuses.count("reset") == 0
    assert statuses == ["200"] * 600
    assert stats["completions"] == 600


def burst(srv: Server, model: str, per_client: int) -> list[str]:
    out = subprocess.run([sys.executable, "-c", BURST_CLIENT, str(srv.port), model,
                          str(per_client), str(Path(__file__).parent)],
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


def trickle(port: int, seconds: float, ends: list[str]) -> None:
    """Send a request line, then one header byte every 0.1 s until the server ends it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nX-Slow: ")
        sock.settimeout(0.1)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = sock.recv(4096)
                ends.append("answered" if data else "closed")
                return
            except TimeoutError:
                try:
                    sock.sendall(b"a")
                except OSError:
                    ends.append("closed")
                    return
            except ConnectionResetError:
                ends.append("closed")
                return
        ends.append("still open")


def test_slow_header_clients_are_cut_off_while_others_are_served():
    with Server(serve_backend("oracle"), client_timeout_s=1.0) as srv:
        ends: list[str] = []
        threads = [threading.Thread(target=trickle, args=(srv.port, 6.0, ends))
                   for _ in range(50)]
        for t in threads:
            t.start()
        served = []
        while len(ends) < 50 and len(served) < 50:  # normal requests during the attack
            served.append(asyncio.run(one_request(srv.port, chat(MODEL, "Question: hi?", 8))))
        for t in threads:
            t.join()
        for _ in range(100):  # the server's side of the last connections closing (bounded)
            if srv.stats["connections"]["open"] == 0:
                break
            time.sleep(0.02)
        stats = srv.stats
    assert ends.count("still open") == 0 and len(ends) == 50
    assert served and set(served) == {"200"}
    assert stats["connections"]["timed_out"] == 50
    assert stats["connections"]["open"] == 0


def test_connections_over_the_cap_get_a_503():
    with Server(serve_backend("oracle"), max_connections=4) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(4)]
        for _ in range(100):  # until the server has accepted them (bounded)
            if srv.stats["connections"]["open"] == 4:
                break
            time.sleep(0.02)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("POST", "/v1/chat/completions", chat(MODEL, "hi", 8))
        r = conn.getresponse()
        err = json.loads(r.read())["error"]
        assert r.status == 503 and err["code"] == "too_many_connections"
        assert set(err) == {"message", "type", "param", "code"}
        idle.pop().close()
        for _ in range(100):
            if srv.stats["connections"]["open"] < 4:
                break
            time.sleep(0.02)
        assert asyncio.run(one_request(srv.port, chat(MODEL, "hi", 8))) == "200"
        for s in idle:
            s.close()
        assert srv.stats["connections"]["refused"] == 1


# ---------------------------------------------------------------------------- a student


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """An untrained tiny scratch student: greedy decoding never stops on its own here."""
    from nesyloop.students.scratch import ScratchSettings, create_scratch_student

    texts = [f"Question: {i} plus {i + 1} pears? Answer: {2 * i + 1}" for i in range(200)]
    path = create_scratch_student(texts, tmp_path_factory.mktemp("load-student") / "m",
                                  ScratchSettings(hidden=32, layers=1, heads=2, vocab_size=300,
                                                  max_len=64))
    return serve_backend("hf", model=str(path))


def post(srv: Server, body: bytes, out: dict | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body)
    r = conn.getresponse()
    got = {"status": r.status, **json.loads(r.read())}
    if out is not None:
        out.update(got)
    return got


def test_200_concurrent_clients_of_a_student_are_all_answered(student):
    """200 clients of a student at once, on new connections: every one answered, the greedy
    requests that waited together generated as one batch."""
    with Server(student, model_name="s") as srv:
        statuses = burst(srv, "s", 1)
        stats = srv.stats
    assert statuses == ["200"] * 200
    assert stats["completions"] == 200 and stats["merged"] > 0


def test_prompt_limit_defaults_to_the_model_context(student):
    with Server(student, model_name="s") as srv:
        assert srv.max_prompt_tokens == 64  # max_position_embeddings
        r = post(srv, chat("s", "pears " * 80, 4))
        assert r["status"] == 400 and r["error"]["code"] == "context_length_exceeded"
        assert post(srv, chat("s", "pears " * 5, 4))["status"] == 200


def test_small_requests_answer_while_a_long_generation_runs_and_it_is_cut(student):
    with Server(student, model_name="s", max_generation_s=3.0) as srv:
        alone = [post(srv, chat("s", f"Question: {i} plus 1?", 4)) for i in range(3)]
        large: dict = {}
        runner = threading.Thread(target=post, args=(
            srv, chat("s", "Question: count the pears", 10**6), large))
        runner.start()
        for _ in range(500):  # until the large generation is under way (bounded)
            if srv.scheduler.busy:
                break
            time.sleep(0.01)
        during = []
        for i in range(3):
            during.append(post(srv, chat("s", f"Question: {i} plus 1?", 4)))
            during[-1]["large_done"] = not runner.is_alive()
        runner.join(timeout=60)
        nested = srv.stats["nested"]
    assert [d["large_done"] for d in during] == [False] * 3  # answered before the large one
    assert [d["choices"][0]["message"]["content"] for d in during] == [
        a["choices"][0]["message"]["content"] for a in alone]  # as if served alone
    assert nested >= 3
    assert large["status"] == 200 and large["choices"][0]["finish_reason"] == "length"
    assert 0 < large["usage"]["completion_tokens"] < 10**6  # cut at the time limit
