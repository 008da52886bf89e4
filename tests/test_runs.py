"""Run directory stages and the per-request SQLite cache, on real files."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nesyloop.gen.base import BaseBackend, Completion, GenSettings, Request
from nesyloop.io import read_jsonl, write_jsonl
from nesyloop.runs.cache import CachedBackend, RequestCache
from nesyloop.runs.rundir import RunDir


def test_stage_skips_when_unchanged_and_recomputes_downstream(tmp_path):
    calls = []

    def make(tag):
        def fn(ctx):
            calls.append(tag)
            (ctx.out / "x.txt").write_text(tag)
            return {"tag": tag}
        return fn

    run = RunDir(tmp_path)
    a = run.stage("a", {"k": 1}, make("a"))
    b = run.stage("b", {"j": 1}, make("b"), deps=[a])
    assert calls == ["a", "b"] and (tmp_path / "b" / "manifest.json").exists()

    run2 = RunDir(tmp_path)
    a2 = run2.stage("a", {"k": 1}, make("a"))
    b2 = run2.stage("b", {"j": 1}, make("b"), deps=[a2])
    assert calls == ["a", "b"] and a2.skipped and b2.skipped

    # change a's setting: a and b (downstream) recompute
    run3 = RunDir(tmp_path)
    a3 = run3.stage("a", {"k": 2}, make("a"))
    run3.stage("b", {"j": 1}, make("b"), deps=[a3])
    assert calls == ["a", "b", "a", "b"]

    # change only b's setting: a is reused
    run4 = RunDir(tmp_path)
    a4 = run4.stage("a", {"k": 2}, make("a"))
    run4.stage("b", {"j": 2}, make("b"), deps=[a4])
    assert calls == ["a", "b", "a", "b", "b"] and a4.skipped


def test_stage_shared_by_several_methods_keeps_its_first_result(tmp_path):
    """A stage asked for twice in one invocation (S_P by std-cot and by nesycd) runs once and
    is reported as computed, not as reused."""
    calls = []
    run = RunDir(tmp_path)

    def fn(ctx):
        calls.append(1)
        return {}

    first = run.stage("sp", {"k": 1}, fn)
    again = run.stage("sp", {"k": 1}, fn)
    assert calls == [1] and again is first and not run.results["sp"].skipped
    other = run.stage("sp", {"k": 2}, fn)  # a different fingerprint still recomputes
    assert calls == [1, 1] and other is not first


def test_failed_stage_leaves_nothing_trusted(tmp_path):
    run = RunDir(tmp_path)

    def boom(ctx):
        (ctx.out / "half.jsonl").write_text('{"a": 1}\n{"b":')
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run.stage("s", {}, boom)
    assert not (tmp_path / "s").exists()
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    ok = run.stage("s", {}, lambda ctx: {"ok": True})
    assert not ok.skipped and ok.info == {"ok": True}


def test_work_dir_survives_a_crash(tmp_path):
    run = RunDir(tmp_path)
    seen = []

    def crash(ctx):
        ctx.work.mkdir(parents=True, exist_ok=True)
        (ctx.work / "checkpoint").write_text("step 10")
        raise RuntimeError("killed")

    def resume(ctx):
        seen.append((ctx.work / "checkpoint").read_text())
        return {}

    with pytest.raises(RuntimeError):
        run.stage("train", {"lr": 1}, crash)
    run.stage("train", {"lr": 1}, resume)
    assert seen == ["step 10"]
    assert not (tmp_path / ".work").exists() or not any((tmp_path / ".work").iterdir())


def test_jsonl_atomic_and_errors(tmp_path):
    p = tmp_path / "a.jsonl"
    write_jsonl(p, [{"i": 1}, {"i": 2}])
    assert read_jsonl(p) == [{"i": 1}, {"i": 2}]
    p.write_text('{"i": 1}\n{"i": \n')
    from nesyloop.errors import DataError
    with pytest.raises(DataError, match=r"a.jsonl:2"):
        read_jsonl(p)


class CountingBackend(BaseBackend):
    kind = "count"
    model = "echo"

    def __init__(self):
        self.seen = []

    def generate(self, requests):
        self.seen += [r.text() for r in requests]
        return [Completion([r.text().upper()] * r.settings.n, 3, 5) for r in requests]


def test_cache_hits_across_instances_and_keys(tmp_path):
    db = tmp_path / "cache.sqlite"
    inner = CountingBackend()
    s = GenSettings(n=2, temperature=0.7)
    reqs = [Request.raw(f"q{i}", s) for i in range(5)]
    c1 = CachedBackend(inner, RequestCache(db), chunk_size=2)
    out = c1.generate(reqs)
    assert [o.texts for o in out] == [[f"Q{i}"] * 2 for i in range(5)] and c1.usage.requests_issued == 5
    c2 = CachedBackend(inner, RequestCache(db))
    out2 = c2.generate(reqs + [Request.raw("q0", GenSettings(n=2, temperature=0.9))])
    assert c2.usage.requests_cached == 5 and c2.usage.requests_issued == 1 and all(o.cached for o in out2[:5])
    assert inner.seen.count("q0") == 2  # once per distinct settings
    counts = RequestCache(db).issued_counts()
    assert len(counts) == 6 and set(counts.values()) == {1}
    # plain SQLite file anyone can read
    con = sqlite3.connect(db)
    row = con.execute("SELECT texts, completion_tokens FROM requests LIMIT 1").fetchone()
    assert json.loads(row[0]) and row[1] == 5


def test_cache_async_and_partial_failure(tmp_path):
    db = tmp_path / "c.sqlite"

    class Flaky(CountingBackend):
        def generate(self, requests):
            if any(r.text() == "bad" for r in requests):
                raise ConnectionError("server went away")
            return super().generate(requests)

    inner = Flaky()
    cb = CachedBackend(inner, RequestCache(db), chunk_size=1)
    reqs = [Request.raw(t) for t in ["a", "b", "bad", "c"]]
    with pytest.raises(ConnectionError):
        cb.generate(reqs)
    # the two answered before the failure are stored; re-running asks only for the rest
    inner2 = CountingBackend()
    cb2 = CachedBackend(inner2, RequestCache(db), chunk_size=1)
    out = asyncio.run(cb2.agenerate([reqs[0], reqs[1], reqs[3]]))
    assert [o.text for o in out] == ["A", "B", "C"] and inner2.seen == ["c"]


def test_cache_commit_needs_no_fsync_and_survives_a_killed_process(tmp_path):
    """A commit in WAL mode with synchronous=NORMAL (no fsync per reply, which held an HTTP
    teacher's event loop ~4 ms per reply here) is still in the cache after the process dies."""
    db = tmp_path / "c.sqlite"
    child = ("import os, sys\n"
             "from nesyloop.gen.base import Request\n"
             "from nesyloop.runs.cache import CachedBackend, RequestCache\n"
             "sys.path.insert(0, sys.argv[2])\n"
             "from test_runs import CountingBackend\n"
             "CachedBackend(CountingBackend(), RequestCache(sys.argv[1])).generate("
             "[Request.raw('q')])\n"
             "os._exit(9)  # no close, no cleanup\n")
    proc = subprocess.run([sys.executable, "-c", child, str(db), str(Path(__file__).parent)],
                          capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    cache = RequestCache(db)
    assert cache._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    out = CachedBackend(CountingBackend(), cache).generate([Request.raw("q")])
    assert out[0].cached and out[0].text == "Q"
    cache.close()


def test_run_role_hands_every_request_at_once_to_a_per_request_backend(tmp_path):
    """Behind the cache, an HTTP teacher gets a role's requests all at once, not in batches
    of ``batch_size`` that each wait for their slowest request."""
    from nesyloop.roles.base import run_role
    from nesyloop.roles.rationale import RationaleRole
    from nesyloop.tasks.base import Example

    class PerRequest(CountingBackend):  # sends each request on its own, like OpenAIBackend
        concurrency = 16
        in_flight = most = 0

        def run_sync(self, coro):
            return asyncio.run(coro)

        async def agenerate(self, requests):
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0)  # every other request starts before this one answers
            self.in_flight -= 1
            return self.generate(requests)

    inner = PerRequest()
    teacher = CachedBackend(inner, RequestCache(tmp_path / "c.sqlite"))
    examples = [Example(id=str(i), question=f"{i} + 1?", answer=str(i + 1)) for i in range(12)]
    recs = run_role(teacher, RationaleRole(), examples, GenSettings(), batch_size=4,
                    progress=False)
    assert inner.most == 12 and len(inner.seen) == 12
    assert [r[0]["id"] for r in recs] == [ex.id for ex in examples]


def _ask_for_stage(root: str, marks: str) -> tuple[int, bool]:
    import os
    import time

    def fn(sc):
        with open(marks, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # long enough for the other process to ask meanwhile
        (sc.out / "x.txt").write_text("done")
        return {"pid": os.getpid()}

    res = RunDir(root).stage("shared", {"k": 1}, fn)
    assert (res.path / "x.txt").read_text() == "done"
    return res.manifest["info"]["pid"], res.skipped


def test_two_processes_asking_for_a_stage_compute_it_once(tmp_path):
    """Two invocations on one run folder: the second waits for the stage the first computes,
    then reuses it (the stage lock), instead of computing it again."""
    import multiprocessing as mp

    marks = tmp_path / "marks.txt"
    with mp.get_context("spawn").Pool(2) as pool:
        got = pool.starmap(_ask_for_stage, [(str(tmp_path / "run"), str(marks))] * 2)
    assert len(marks.read_text().split()) == 1  # computed once
    assert got[0][0] == got[1][0]  # both read the same result
    assert sorted(skipped for _, skipped in got) == [False, True]
