"""Teacher throughput: the OpenAI-compatible teacher against ``nesyloop serve --faults
latency=L``, measured against the ideal bound concurrency / L (a script, not a test).

    mkdir -p /tmp/teacher-baseline && git archive 2548ece src | tar -x -C /tmp/teacher-baseline
    .venv/bin/python bench/bench_teacher.py --baseline-src /tmp/teacher-baseline/src \
        --json bench/results/teacher.json

Starts ``nesyloop serve`` (the Bazaar oracle, which answers in about a millisecond) from this
checkout as a child process on 127.0.0.1 with ``--faults latency=L``: every POST waits L seconds
before it is answered. At concurrency c the ideal rate is c / L requests/s. Each level sends c x
``--rounds`` rationale requests (the Bazaar training questions with the main job's teacher
settings) through ``OpenAIBackend(concurrency=c)``, its client made and warmed by one request
first, in three ways:

* ``backend``: ``generate`` on all of them at once;
* ``cached``: behind the run's request cache (``CachedBackend`` on a fresh SQLite file: each
  reply committed as it returns), as ``RunContext.teacher()`` builds it;
* ``stage``: ``distill_rationales`` through that cache, as the rationales stage runs it (with
  ``teacher.batch_size``; each reply parsed and filtered).

The clients run in child processes with the code under test on their ``PYTHONPATH``: this
checkout's ``src`` and, with ``--baseline-src``, an older one (cached and stage only: the
backend alone did not change), alternated ``--repeats`` times (this machine's speed drifts);
medians are reported, with the CPU time the client process and the server spent per request.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_serve_load import Served  # bench/ is this script's folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
MODES = ("backend", "cached", "stage")
BASELINE_MODES = ("cached", "stage")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served_model(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
        return json.load(r)["data"][0]["id"]


# ---------------------------------------------------------------------------- the client


def one_run(mode: str, url: str, model: str, c: int, examples, settings, args,
            tmp: Path) -> dict:
    """Send every example's request once in ``mode``: the seconds it took and the CPU
    seconds of this process and of the server meanwhile."""
    from nesyloop.gen.base import Request
    from nesyloop.gen.http import OpenAIBackend
    from nesyloop.roles.rationale import RationaleRole, distill_rationales
    from nesyloop.runs.cache import CachedBackend, RequestCache

    backend = OpenAIBackend(model, url, concurrency=c)
    cache = RequestCache(tmp / f"cache-{mode}-{c}-{time.monotonic_ns()}.sqlite")
    try:  # the client, its event loop and a first connection: made once per stage in a run
        backend.generate([Request.chat([{"role": "user", "content": "warm-up"}], settings)])
        cpu, server, t = time.process_time(), cpu_s(args.server_pid), time.perf_counter()
        cached = CachedBackend(backend, cache, run="bench")
        if mode == "stage":
            distill_rationales(cached, examples, settings, args.batch_size, progress=False)
        else:
            reqs = [Request.chat(RationaleRole().format_input(ex), settings) for ex in examples]
            comps = (cached if mode == "cached" else backend).generate(reqs)
            errors = [comp.error for comp in comps if comp.error]
            if errors:
                raise SystemExit(f"{mode}, c={c}: {len(errors)} failed, e.g. {errors[0]}")
        took = {"seconds": time.perf_counter() - t, "client_cpu_s": time.process_time() - cpu,
                "server_cpu_s": cpu_s(args.server_pid) - server}
        if cached.usage.requests_failed:
            raise SystemExit(f"{mode}, c={c}: {cached.usage.first_error}")
        return took
    finally:
        backend.close()
        cache.close()


def client_main(args) -> None:
    """The measurements of one repeat, as one JSON line on stdout (a child process)."""
    from nesyloop import api
    from nesyloop.gen.base import GenSettings
    from nesyloop.tasks import task_splits

    cfg = api.load_config(None)
    t = cfg.teacher
    examples = task_splits(cfg.task.name, cfg.task.bazaar, cfg.task.bench)["train"]
    settings = GenSettings(max_tokens=t.max_tokens, temperature=t.temperature, top_p=t.top_p,
                           n=t.samples, seed=cfg.run.seed)
    url = f"http://127.0.0.1:{args.port}/v1"
    args.batch_size = t.batch_size
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.concurrency:
            n = c * args.rounds
            for mode in args.modes:
                took = one_run(mode, url, args.model, c, examples[:n], settings, args, Path(tmp))
                out.append({"concurrency": c, "mode": mode, "requests": n, **took})
    print(json.dumps({"runs": out, "batch_size": t.batch_size, "samples": t.samples,
                      "max_tokens": t.max_tokens}))


# ---------------------------------------------------------------------------- the driver


def run_client(src: Path, modes: tuple[str, ...], served: Served, model: str, args) -> dict:
    cmd = [sys.executable, __file__, "--client", "--port", str(served.port), "--model", model,
           "--server-pid", str(served.proc.pid), "--rounds", str(args.rounds),
           "--concurrency", *map(str, args.concurrency), "--modes", *modes]
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"client on {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict], latency: float) -> list[dict]:
    """Medians per (concurrency, mode) over the repeats, against the bound c / latency."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["concurrency"], r["mode"]), []).append(r)
    out = []
    for (c, mode), rs in groups.items():
        rps = statistics.median(r["requests"] / r["seconds"] for r in rs)
        out.append({"concurrency": c, "mode": mode, "requests": rs[0]["requests"],
                    "bound_rps": round(c / latency, 1), "rps": round(rps, 1),
                    "of_bound": round(rps * latency / c, 3),
                    "client_cpu_ms": cpu_ms(rs, "client_cpu_s"),
                    "server_cpu_ms": cpu_ms(rs, "server_cpu_s"),
                    "rps_runs": [round(r["requests"] / r["seconds"], 1) for r in rs]})
    return out


def cpu_ms(runs: list[dict], key: str) -> float:
    """The median CPU milliseconds per request of ``runs``."""
    return round(statistics.median(r[key] * 1e3 / r["requests"] for r in runs), 2)


def print_rows(name: str, rows: list[dict]) -> None:
    for row in rows:
        print(f"{name:8s} c={row['concurrency']:3d} {row['mode']:8s} {row['rps']:7.1f} req/s "
              f"= {row['of_bound']:.3f} of {row['bound_rps']:.0f} (CPU per request: client "
              f"{row['client_cpu_ms']} ms, server {row['server_cpu_ms']} ms)")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.2, help="injected latency, seconds")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--rounds", type=int, default=10, help="requests per level = c x rounds")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--baseline-src", type=Path, help="the src folder of the code to compare")
    ap.add_argument("--json", type=Path, help="write the results here")
    # a child process's own arguments
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--modes", nargs="+", default=list(MODES), help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.client:
        return client_main(args)
    if max(args.concurrency) * args.rounds > 1200:
        raise SystemExit("at most 1,200 requests a level (the Bazaar training questions)")
    variants = [("current", ROOT / "src", MODES)]
    if args.baseline_src is not None:
        variants.insert(0, ("baseline", args.baseline_src.resolve(), BASELINE_MODES))
    load = os.getloadavg()[0]  # other work on this machine skews the figures
    served = Served(ROOT / "src", ["--backend", "oracle", "--faults", f"latency={args.latency}"])
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in variants}
    try:
        model = served_model(served.port)
        for _ in range(args.repeats):
            for name, src, modes in variants:
                got = run_client(src, modes, served, model, args)
                runs[name] += got["runs"]
    finally:
        served.close()
    result = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "load_avg_1min": load,
              "latency_s": args.latency, "rounds": args.rounds, "repeats": args.repeats,
              "teacher_batch_size": got["batch_size"], "samples_per_request": got["samples"],
              "max_tokens": got["max_tokens"],
              **{name: summarise(rs, args.latency) for name, rs in runs.items()}}
    for name in runs:
        print_rows(name, result[name])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
