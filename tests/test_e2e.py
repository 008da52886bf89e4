"""End to end on the --quick preset: the CLI runs the whole job; a run killed during training
resumes, issues no teacher request twice, and finishes with complete artifacts; the Python API
reuses the CLI's run; a changed setting recomputes only what it touches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nesyloop.io import read_json
from nesyloop.runs.cache import RequestCache

pytestmark = pytest.mark.slow


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(NESYLOOP_CACHE=str(cache), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nesyloop.cli", *args]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    out, cache = tmp / "run", tmp / "cache.sqlite"
    env = _env(cache)
    proc = subprocess.Popen(_cli("run", "--quick", "--out", str(out)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.startswith(".tmp-train-") for p in out.glob(".tmp-*")) if out.exists() else False:
            time.sleep(1.0)  # let training get going
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.2)
    proc.wait()
    assert killed, "the run finished before training could be interrupted"
    issued_before = RequestCache(cache).issued_counts()
    assert issued_before, "teacher requests should have been made before training"
    assert not (out / "report.md").exists()
    done = subprocess.run(_cli("run", "--quick", "--out", str(out)), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out, cache, issued_before, done.stdout


def test_resume_issues_no_request_twice(resumed_run):
    out, cache, before, _ = resumed_run
    counts = RequestCache(cache).issued_counts()
    assert set(counts.values()) == {1}
    assert counts.keys() == before.keys()  # everything was asked before the kill, nothing since
    rat = read_json(out / "rationales" / "manifest.json")
    assert rat["info"]["kept"] > 0


def test_final_artifacts_complete(resumed_run):
    out, _, _, stdout = resumed_run
    metrics = read_json(out / "metrics.json")
    assert set(metrics) == {"zero-shot", "answer-ft", "std-cot"}
    for method, per_split in metrics.items():
        for split in ("test", "test-rare", "test-deep"):
            m = per_split[split]
            assert 0.0 <= m["strict"] <= m["flexible"] <= 1.0 and m["n"] > 0
            preds = (out / f"predict-{method}" / f"{split}.jsonl").read_text().splitlines()
            assert len(preds) == m["n"]
    for stage in ("data", "rationales", "student-init", "train-answer-ft", "train-std-cot"):
        assert (out / stage / "manifest.json").exists()
    assert (out / "train-std-cot" / "model" / "config.json").exists()
    report = (out / "report.md").read_text()
    assert "| std-cot |" in report and "| train-std-cot |" in report
    assert "| std-cot |" in stdout  # the table is printed to the terminal too
    assert not list(out.glob(".tmp-*"))
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG" and "loss.png" in report


def test_python_api_reuses_cli_run_and_recomputes_only_downstream(resumed_run, monkeypatch):
    out, cache, _, _ = resumed_run
    monkeypatch.setenv("NESYLOOP_CACHE", str(cache))
    from nesyloop import api

    cfg = api.load_config(quick=True)
    p = api.Pipeline(cfg, out, log=lambda m: None)
    metrics = p.execute()
    assert all(r.skipped for r in p.run.results.values())
    assert metrics == read_json(out / "metrics.json")

    cfg2 = api.load_config(quick=True, overrides={"eval": {"max_new_tokens": 48}})
    p2 = api.Pipeline(cfg2, out, log=lambda m: None)
    p2.execute(methods=["answer-ft"])
    r = p2.run.results
    assert r["data"].skipped and r["train-answer-ft"].skipped
    assert not r["predict-answer-ft"].skipped and not r["score-answer-ft"].skipped


def test_rerun_from_scratch_asks_the_teacher_nothing(resumed_run, tmp_path):
    _, cache, before, _ = resumed_run
    fresh = tmp_path / "fresh"
    done = subprocess.run(_cli("rationales", "--quick", "--out", str(fresh)), env=_env(cache),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    info = read_json(fresh / "rationales" / "manifest.json")["info"]
    assert info["requests_issued"] == 0 and info["requests_cached"] == info["questions"]
    assert RequestCache(cache).issued_counts() == {k: 1 for k in before}
