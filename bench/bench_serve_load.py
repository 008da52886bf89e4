"""Load and hostile clients against ``nesyloop serve`` (a script, not a test).

    .venv/bin/python bench/bench_serve_load.py --baseline-src /tmp/serve-baseline/src \
        --json bench/results/serve-load.json

Starts each server variant as a child process (``python -m nesyloop.cli serve`` on 127.0.0.1)
and runs the same bounded asyncio load client against each, one variant after the other:

* ``baseline``: the code under ``--baseline-src`` (e.g. ``git archive HEAD src`` unpacked);
* ``current``: this checkout's ``src``;
* ``uvicorn`` (unless ``--no-uvicorn``): the oracle behind uvicorn + starlette, the production
  ASGI stack the issue suggests, with its defaults (oracle scenarios only).

Scenarios (every request has a timeout; every loop is bounded in count and time):

* ``burst``: ``--clients`` concurrent clients, each sending ``--requests`` requests on a new
  connection each (the oracle), then 200 one-request clients to a student: resets, other
  errors, p50/p99 latency;
* ``large``: one long student generation (a prompt near the context, ``--large-tokens`` new
  tokens) while 4 clients send small requests back to back: small p50/p99, and how many
  answered before the large one finished;
* ``huge``: a ``--huge-kb`` KB prompt to the student, then a small request 0.3 s later: the
  small one's latency and the huge one's status;
* ``slow``: ``--slow`` connections trickling header bytes (one per second, for at most
  ``--slow-seconds``) while a normal client sends requests: how many the server closed, and the
  normal client's p50/p99;
* ``hostile``: bad requests (NaN, deep JSON, huge seed, PUT/DELETE, ...): how many got a JSON
  4xx in OpenAI's error shape.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PHRASE = "Question: 12 plus 34 apples and pears? "  # in the bench student's vocabulary

UVICORN_APP = '''
import sys, json
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.concurrency import run_in_threadpool
sys.path.insert(0, {src!r})
from nesyloop.serve import serve_backend
from nesyloop.serve.wire import ApiError, parse_body, parse_call, response
backend = serve_backend("oracle")
count = lambda t: len(t.split())
async def chat(request):
    try:
        call = parse_call("chat", parse_body(await request.body()))
        comps = await run_in_threadpool(backend.generate, call.requests)
        return JSONResponse(response(call, comps, "bazaar-oracle", count))
    except ApiError as err:
        return JSONResponse(err.body(), status_code=err.status)
app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                        Route("/v1/completions", chat, methods=["POST"])])
'''


# ---------------------------------------------------------------------------- the client


async def http(port: int, method: str, path: str, body: bytes | None = None,
               headers: dict[str, str] | None = None, timeout: float = 60.0,
               ) -> tuple[int, dict, bytes]:
    """One request on a new connection (``Connection: close``): (status, headers, body).
    Raises ConnectionResetError, asyncio.TimeoutError, or EOFError (closed without answer)."""
    async def go():
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            head = {"Host": f"{HOST}:{port}", "Connection": "close", **(headers or {})}
            if body is not None:
                head.setdefault("Content-Type", "application/json")
                head["Content-Length"] = str(len(body))
            lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
            await writer.drain()
            data = await reader.read(-1)
        finally:
            writer.close()
        if not data:
            raise EOFError("closed without an answer")
        top, _, payload = data.partition(b"\r\n\r\n")
        status_line, *hlines = top.decode("latin-1").split("\r\n")
        hdrs = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in hlines)}
        return int(status_line.split()[1]), hdrs, payload
    return await asyncio.wait_for(go(), timeout)


def classify(err: BaseException) -> str:
    if isinstance(err, ConnectionResetError):
        return "reset"
    if isinstance(err, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(err, EOFError | asyncio.IncompleteReadError):
        return "dropped"
    if isinstance(err, ConnectionRefusedError):
        return "refused"
    return type(err).__name__


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1)


def chat_body(model: str, text: str, max_tokens: int) -> bytes:
    return json.dumps({"model": model, "max_tokens": max_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": text}]}).encode()


async def timed(port: int, body: bytes, path: str = "/v1/chat/completions",
                timeout: float = 60.0) -> tuple[str, float]:
    """("200" / "400" / ... or an error kind, seconds)."""
    t = time.perf_counter()
    try:
        status, _, _ = await http(port, "POST", path, body, timeout=timeout)
        return str(status), time.perf_counter() - t
    except Exception as err:  # noqa: BLE001 - every failure is counted by kind
        return classify(err), time.perf_counter() - t


def summary(results: list[tuple[str, float]], wall: float) -> dict:
    kinds: dict[str, int] = {}
    for k, _ in results:
        kinds[k] = kinds.get(k, 0) + 1
    ok = [s for k, s in results if k == "200"]
    return {"requests": len(results), "outcomes": kinds, "ok": len(ok),
            "resets": kinds.get("reset", 0), "p50_ms": pct(ok, 0.5), "p99_ms": pct(ok, 0.99),
            "wall_s": round(wall, 2), "ok_per_s": round(len(ok) / wall, 1) if wall else None}


# ---------------------------------------------------------------------------- scenarios


async def burst(port: int, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    async def client(i: int) -> list[tuple[str, float]]:
        out = []
        for j in range(requests):
            out.append(await timed(port, chat_body(model, f"Question: {i} plus {j}?",
                                                   max_tokens)))
        return out

    t = time.perf_counter()
    per = await asyncio.gather(*(client(i) for i in range(clients)))
    return summary([r for rs in per for r in rs], time.perf_counter() - t)


async def small_loop(port: int, model: str, stop: asyncio.Event, until: float,
                     out: list[tuple[str, float, float]]) -> None:
    """Small requests back to back until ``stop`` (or ``until``): (kind, start, end)."""
    i = 0
    while not stop.is_set() and time.monotonic() < until:
        start = time.monotonic()
        kind, _ = await timed(port, chat_body(model, f"Question: {i}?", 8), timeout=120)
        out.append((kind, start, time.monotonic()))
        i += 1


async def large_vs_small(port: int, model: str, large_text: str, large_tokens: int,
                         cap_s: float = 120.0) -> dict:
    stop, smalls = asyncio.Event(), []
    until = time.monotonic() + cap_s
    loops = [asyncio.create_task(small_loop(port, model, stop, until, smalls)) for _ in range(4)]
    await asyncio.sleep(0.5)
    started = time.monotonic()
    kind, large_s = await timed(port, chat_body(model, large_text, large_tokens),
                                timeout=cap_s)
    finished = time.monotonic()
    stop.set()
    await asyncio.gather(*loops)
    # every small request in flight while the large one ran (also those it held up)
    during = [(k, end - start) for k, start, end in smalls if end > started and start < finished]
    ok = [s for k, s in during if k == "200"]
    return {"large": kind, "large_s": round(large_s, 2),
            "small_answered_before_large_ended": sum(
                1 for k, _, end in smalls if k == "200" and started < end <= finished),
            "small_in_flight_during_large": len(during),
            "small_during_p50_ms": pct(ok, 0.5), "small_during_p99_ms": pct(ok, 0.99),
            "small_during_max_ms": pct(ok, 1.0)}


async def huge(port: int, model: str, kb: int) -> dict:
    text = (PHRASE * (kb * 1024 // len(PHRASE) + 1))[:kb * 1024]
    big = asyncio.create_task(timed(port, chat_body(model, text, 8), timeout=300))
    await asyncio.sleep(0.3)
    small_kind, small_s = await timed(port, chat_body(model, "Question: 2 plus 2?", 8),
                                      timeout=300)
    big_kind, big_s = await big
    return {"prompt_kb": kb, "huge": big_kind, "huge_s": round(big_s, 2), "small": small_kind,
            "small_ms": round(small_s * 1000, 1)}


async def trickler(port: int, seconds: float) -> str:
    """Send a request line, then one header byte per second: how the connection ended
    ("answered NNN" or "closed" by the server, "reset", "still open" after ``seconds``)."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError as err:
        return classify(err)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nX-Slow: ")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = await asyncio.wait_for(reader.read(4096), 1.0)
                return "closed" if not data else f"answered {data.split()[1].decode()}"
            except asyncio.TimeoutError:
                writer.write(b"a")
                await writer.drain()
        return "still open"
    except OSError as err:
        return classify(err)
    finally:
        writer.close()


async def slow(port: int, model: str, n: int, seconds: float) -> dict:
    tasks = [asyncio.create_task(trickler(port, seconds)) for _ in range(n)]
    await asyncio.sleep(1.0)
    normal = []
    end = time.monotonic() + seconds - 2
    while time.monotonic() < end and len(normal) < 200:
        normal.append(await timed(port, chat_body(model, "Question: hi?", 8), timeout=30))
        await asyncio.sleep(0.05)
    ends = await asyncio.gather(*tasks)
    kinds: dict[str, int] = {}
    for e in ends:
        kinds[e] = kinds.get(e, 0) + 1
    ok = [s for k, s in normal if k == "200"]
    return {"slow_clients": n, "seconds": seconds, "slow_ends": kinds,
            "closed_by_server": sum(v for k, v in kinds.items()
                                    if k == "closed" or k.startswith("answered")),
            "resets": kinds.get("reset", 0),
            "normal_ok": len(ok), "normal_failed": len(normal) - len(ok),
            "normal_p50_ms": pct(ok, 0.5), "normal_p99_ms": pct(ok, 0.99)}


HOSTILE = {
    "temperature NaN": b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], '
                       b'"temperature": NaN}',
    "temperature Infinity": b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], '
                            b'"temperature": Infinity}',
    "deep JSON": b'{"model": "M", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "seed 2**70": b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], '
                  b'"seed": 1180591620717411303424}',
    "non-UTF-8": b'{"model": "M", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "non-JSON": b"model=M&prompt=hi",
}


async def hostile(port: int, model: str) -> dict:
    cases = [("POST", "/v1/chat/completions", body.replace(b'"M"', json.dumps(model).encode()))
             for body in HOSTILE.values()]
    names = list(HOSTILE) + ["PUT", "DELETE", "PATCH", "GET unknown path"]
    cases += [(m, "/v1/chat/completions", b"{}") for m in ("PUT", "DELETE", "PATCH")]
    cases += [("GET", "/v1/nothing", None)]
    out = {}
    for name, (method, path, body) in zip(names, cases, strict=True):
        try:
            status, hdrs, payload = await http(port, method, path, body, timeout=30)
            shape = False
            try:
                err = json.loads(payload)["error"]
                shape = {"message", "type", "param", "code"} <= set(err)
            except (ValueError, KeyError, TypeError):
                pass
            out[name] = f"{status} {'json' if shape else hdrs.get('content-type', '?')}"
        except Exception as e:  # noqa: BLE001
            out[name] = classify(e)
    good = sum(v.endswith("json") and v[0] == "4" for v in out.values())
    return {"cases": out, "json_4xx": good, "total": len(out)}


# ---------------------------------------------------------------------------- servers


class Served:
    """A server child process: ``nesyloop serve`` from ``src``, or the uvicorn candidate."""

    def __init__(self, src: Path, args: list[str], uvicorn_app: Path | None = None):
        env = {**os.environ, "PYTHONPATH": str(src)}
        if uvicorn_app is not None:
            port = free_port()
            cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(uvicorn_app.parent),
                   f"{uvicorn_app.stem}:app", "--port", str(port), "--log-level", "warning"]
            self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
            self.port = port
            wait_port(port)
            return
        cmd = [sys.executable, "-m", "nesyloop.cli", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if " at http://" not in line:
            raise RuntimeError(f"server did not start: {line}{self.proc.stderr.read()}")
        self.port = int(line.split(" at http://")[1].split("/")[0].rsplit(":", 1)[1])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, limit_s: float = 60.0) -> None:
    import socket

    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port}")


def make_student(tmp: Path) -> tuple[Path, str]:
    """A default-size scratch student (untrained: it never stops before max_tokens), and the
    longest chat prompt of repeated :data:`PHRASE` that fits its context (8 tokens spare)."""
    sys.path.insert(0, str(ROOT / "src"))
    from nesyloop.gen.base import Request
    from nesyloop.gen.hf import HFBackend
    from nesyloop.students.scratch import ScratchSettings, create_scratch_student

    rng = random.Random(0)
    texts = [f"Question: {rng.randint(1, 99)} plus {rng.randint(1, 99)} apples and pears?"
             f" Answer: {rng.randint(1, 200)}" for _ in range(400)]
    path = create_scratch_student(texts, tmp / "student", ScratchSettings())
    hf = HFBackend(path, progress=False)
    limit = hf.lm.config.max_position_embeddings - 8
    k = 1
    while len(hf.encode(Request.chat([{"role": "user", "content": PHRASE * (k + 1)}]))) <= limit:
        k += 1
    hf.close()
    return path, PHRASE * k


# ---------------------------------------------------------------------------- main


def run_variant(name: str, src: Path, student: tuple[Path, str], args,
                uvicorn_app: Path | None) -> dict:
    """Every scenario against a fresh server process (so that requests a client gave up on
    cannot slow the next scenario down)."""
    oracle = "bazaar-oracle"
    scenarios = [
        ("burst_oracle", [], lambda p: burst(p, oracle, args.clients, args.requests, 64)),
        ("slow_oracle", [], lambda p: slow(p, oracle, args.slow, args.slow_seconds)),
        ("hostile_oracle", [], lambda p: hostile(p, oracle)),
    ]
    if uvicorn_app is None:
        on_student = ["--model", str(student[0]), "--model-name", "student"]
        scenarios += [
            ("burst_student", on_student, lambda p: burst(p, "student", args.clients, 1, 8)),
            ("large_student", on_student,
             lambda p: large_vs_small(p, "student", student[1], args.large_tokens)),
            ("huge_student", on_student, lambda p: huge(p, "student", args.huge_kb)),
        ]
    out: dict = {}
    for scenario, server_args, make in scenarios:
        srv = Served(src, server_args, uvicorn_app)
        try:
            out[scenario] = asyncio.run(make(srv.port))
        finally:
            srv.close()
        print(name, scenario, out[scenario], flush=True)
    return out


def ratios(base: dict, cur: dict) -> dict:
    def r(a, b):
        return None if not a or b is None else round(b / a, 2)

    return {
        "burst_oracle_ok_per_s": r(base["burst_oracle"]["ok_per_s"],
                                   cur["burst_oracle"]["ok_per_s"]),
        "burst_oracle_p99": r(base["burst_oracle"]["p99_ms"], cur["burst_oracle"]["p99_ms"]),
        "small_during_large_p50": r(base["large_student"]["small_during_p50_ms"],
                                    cur["large_student"]["small_during_p50_ms"]),
        "small_during_large_p99": r(base["large_student"]["small_during_p99_ms"],
                                    cur["large_student"]["small_during_p99_ms"]),
        "small_after_huge_prompt": r(base["huge_student"]["small_ms"],
                                     cur["huge_student"]["small_ms"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-src", type=Path, required=True,
                    help="the src folder of the code to compare against")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--requests", type=int, default=5, help="per client (oracle burst)")
    ap.add_argument("--large-tokens", type=int, default=600)
    ap.add_argument("--huge-kb", type=int, default=32)
    ap.add_argument("--slow", type=int, default=200)
    ap.add_argument("--slow-seconds", type=float, default=15.0)
    ap.add_argument("--no-uvicorn", action="store_true")
    args = ap.parse_args()
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()},
                     "machine": f"{os.cpu_count()} cpus", "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        student = make_student(Path(tmp))
        app_file = Path(tmp) / "uvicorn_oracle.py"
        app_file.write_text(UVICORN_APP.format(src=str(ROOT / "src")))
        variants = [("baseline", args.baseline_src.resolve(), None),
                    ("current", ROOT / "src", None)]
        if not args.no_uvicorn:
            variants.append(("uvicorn", ROOT / "src", app_file))
        for name, src, app in variants:
            results[name] = run_variant(name, src, student, args, app)
    results["ratios_current_over_baseline"] = ratios(results["baseline"], results["current"])
    print(json.dumps(results["ratios_current_over_baseline"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
