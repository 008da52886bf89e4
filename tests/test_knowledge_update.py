"""The main job's knowledge update (issue 16), end to end on the --quick preset: adding season
2's splits to a finished run reruns no training; KB students answer them with a copy of their
KB updated by the fact sheet (the original untouched), the stale-KB row with the KB as it was;
the report's knowledge-update section, table and plot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nesyloop.io import read_json, read_jsonl
from nesyloop.kb.store import open_kb
from nesyloop.tasks.bazaar import build_world
from nesyloop.tasks.bazaar.season import held_out_ids, season2

pytestmark = pytest.mark.slow

SEASON1 = """methods = ["std-cot", "nesycd+fdd"]
[task.bazaar]
held_out = 0.1
test_drift = 24
test_novel = 16
[eval]
splits = ["dev", "test"]
"""
SEASON2 = SEASON1.replace('"test"]', '"test", "test-drift", "test-novel"]')


def _run(tmp: Path, toml: str) -> str:
    cfg = tmp / "cfg.toml"
    cfg.write_text(toml)
    env = {**os.environ, "NESYLOOP_CACHE": str(tmp / "cache.sqlite"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "nesyloop.cli", "run", str(cfg), "--quick",
                           "--out", str(tmp / "run")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def updated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("update")
    _run(tmp, SEASON1)
    kb = tmp / "run" / "kb-fdd-r2" / "kb.sqlite"
    with open_kb(kb) as store:
        before = store.version()
    return tmp / "run", _run(tmp, SEASON2), before


def test_adding_season_2_reruns_only_its_own_stages(updated):
    run, log, _ = updated
    ran = re.findall(r"^\[run \] (\S+)", log, re.M)
    assert ran and not [s for s in ran if s.startswith("train-") or "evolve" in s
                        or "feedback" in s or s in ("data", "demos", "kb", "kb-fdd-r1",
                                                    "kb-fdd-r2", "rationales")]
    assert {"data-season2", "kb-fdd-r2-season2", "predict-nesycd+fdd-season2",
            "predict-nesycd+fdd-stale-kb", "predict-std-cot"} <= set(ran)
    assert re.search(r"^\[skip\] train-nesycd\+fdd ", log, re.M)


def test_the_kb_students_answer_season_2_with_the_updated_copy(updated):
    run, _, before = updated
    with open_kb(run / "kb-fdd-r2" / "kb.sqlite") as kb:
        assert kb.version() == before  # the original KB stays as it was
    s = read_json(run / "config.json")["task"]["bazaar"]
    world = build_world(s["seed"], s["tail_fraction"])
    world2, changes = season2(world, s["drift"], held_out_ids(world, s["held_out"]))
    with open_kb(run / "kb-fdd-r2-season2" / "kb.sqlite") as kb:
        stated = {it["text"] for it in kb.items(enabled_only=True)}
    assert not {world.fact(f).sentence for f in changes} & stated
    assert {world2.fact(f).sentence for f in changes} <= stated
    new = read_jsonl(run / "predict-nesycd+fdd-season2" / "test-drift.jsonl")
    old = read_jsonl(run / "predict-nesycd+fdd-stale-kb" / "test-drift.jsonl")
    data = {e["id"]: e for e in read_jsonl(run / "data-season2" / "test-drift.jsonl")}
    gives = lambda recs, w: sum(w.fact(f).sentence in (r["knowledge"] or "")  # noqa: E731
                                for r in recs for f in data[r["id"]]["meta"]["changed_facts"])
    assert gives(new, world2) > 0 and gives(new, world) == 0
    assert gives(old, world) > 0 and gives(old, world2) == 0


def test_report_and_metrics(updated):
    run, _, _ = updated
    metrics = read_json(run / "metrics.json")
    for row in ("std-cot", "nesycd+fdd", "nesycd+fdd/stale-kb"):
        assert {"test-drift", "test-novel"} <= set(metrics[row])
    assert "test" in metrics["nesycd+fdd"] and "test" not in metrics["nesycd+fdd/stale-kb"]
    report = (run / "report.md").read_text()
    assert "## Knowledge update (season 2)" in report
    assert "| nesycd+fdd/stale-kb | – |" in report and "followed %" in report
    assert (run / "knowledge-update.png").stat().st_size > 1000
    saved = json.loads((run / "knowledge-update.json").read_text())
    assert saved["following"]["nesycd+fdd"]["test-drift"]["conflicts"] > 0
