"""End to end on the --quick preset: the CLI runs the whole job (std-cot, two FDD rounds,
nesycd, nesycd+fdd); a run killed in the middle of FDD round 1 resumes, issues no teacher
request twice, and finishes with complete artifacts; the Python API reuses the CLI's run; a
changed setting recomputes only what it touches."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nesyloop.io import read_json
from nesyloop.kb.abstract import apply_block
from nesyloop.runs.cache import RequestCache

pytestmark = pytest.mark.slow
SEASON2 = {"test-drift", "test-novel"}  # the default config's season-2 splits (--quick sizes)


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
        mid_round = out.exists() and any(p.name.startswith(".tmp-train-fdd-r1")
                                         for p in out.glob(".tmp-*"))
        if mid_round:  # round 1's problems are written, its student is loading or training
            # killed at once: the quick round trains for a second or two, so a wait here could
            # let the stage finish (resuming from a checkpoint, whole or cut short mid-write, is
            # tested in test_students.py)
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    proc.wait()
    assert killed, "the run finished before round 1's training could be interrupted"
    issued_before = RequestCache(cache).issued_counts()
    assert issued_before, "teacher requests should have been made before training"
    assert not (out / "report.md").exists() and not (out / "train-fdd-r1").exists()
    assert (out / "fdd-evolve-r1" / "manifest.json").exists()
    done = subprocess.run(_cli("run", "--quick", "--out", str(out)), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out, cache, issued_before, done.stdout


def test_resume_issues_no_request_twice(resumed_run):
    out, cache, before, _ = resumed_run
    counts = RequestCache(cache).issued_counts()
    assert set(counts.values()) == {1}  # no request reached the teacher twice
    assert before.keys() <= counts.keys()  # the rationales asked before the kill were reused
    later = sum(read_json(out / s / "manifest.json")["info"].get("requests_issued", 0)
                for s in ("kb", "fdd-evolve-r2", "kb-fdd-r1", "nesycd+fdd-evolve-r2",
                          "nesycd+fdd-knowledge-r1", "nesycd+fdd-knowledge-r2"))
    assert len(counts) == len(before) + later  # only the stages after the kill asked more
    rat = read_json(out / "rationales" / "manifest.json")
    assert rat["info"]["kept"] > 0


def test_final_artifacts_complete(resumed_run):
    out, _, _, stdout = resumed_run
    metrics = read_json(out / "metrics.json")
    assert set(metrics) == {"std-cot", "fdd-r1", "fdd-r2", "nesycd", "nesycd+fdd-r1",
                            "nesycd+fdd", "nesycd+fdd/stale-kb"}
    assert "[skip] fdd-evolve-r1" in stdout and "[run ] train-fdd-r1" in stdout
    for method, per_split in metrics.items():
        # rounds before the last are scored on fdd.round_splits only (dev, as in the main job);
        # the stale-KB row on season 2's splits only
        last = not method.endswith("-r1")
        assert set(per_split) == ({"dev"} if not last else SEASON2 if "/" in method
                                  else {"dev", "test", "test-rare", "test-deep"} | SEASON2)
        for split in per_split:
            m = per_split[split]
            assert 0.0 <= m["strict"] <= m["flexible"] <= 1.0 and m["n"] > 0
            stage = f"predict-{method.replace('/', '-')}"
            if split in SEASON2 and method in ("nesycd", "nesycd+fdd"):
                stage += "-season2"  # KB students answer season 2 with the updated KB
            preds = (out / stage / f"{split}.jsonl").read_text().splitlines()
            assert len(preds) == m["n"]
    for stage in ("data", "rationales", "student-init", "train-std-cot", "demos", "kb",
                  "train-nesycd"):
        assert (out / stage / "manifest.json").exists()
    assert (out / "train-std-cot" / "model" / "config.json").exists()
    # the quick run abstracts names: its scratch tokenizer has one token per placeholder
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "student-init" / "model")
    assert [len(tok.tokenize(f" {p}")) for p in ("XA", "XB", "XJ")] == [1, 1, 1]
    report = (out / "report.md").read_text()
    assert "| std-cot |" in report and "| train-std-cot |" in report and "| nesycd |" in report
    assert "| std-cot |" in stdout  # the table is printed to the terminal too
    assert not list(out.glob(".tmp-*"))
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG" and "loss.png" in report
    assert (out / "fdd-rounds.png").read_bytes()[:4] == b"\x89PNG" and "fdd-rounds.png" in report
    rounds = read_json(out / "fdd-rounds.json")
    assert [r["round"] for r in rounds] == [0, 1, 2] and "## FDD rounds" in report
    joined = read_json(out / "nesycd+fdd-rounds.json")  # the joined loop, side by side
    assert [r["round"] for r in joined] == [0, 1, 2] and "**nesycd+fdd**" in report
    assert joined[0] == {**rounds[0], "kb_entries": joined[0]["kb_entries"]}  # shared round 0
    assert joined[1]["pool"] == rounds[1]["pool"]  # round 1's pool is FDD's
    assert joined[0]["kb_entries"] < joined[1]["kb_entries"] == joined[2]["kb_entries"]
    assert rounds[2]["pool"] == rounds[1]["pool"] + rounds[2]["new"] > rounds[0]["pool"]
    for r in rounds[1:]:
        assert r["generated"] == r["new"] + r["rejected"] and r["easy"] + r["hard"] == r["seeds"]
        last = r["round"] == rounds[-1]["round"]
        assert r["teacher_requests"] > 0
        assert set(r["accuracy"]) == ({"dev", "test", "test-rare", "test-deep"} | SEASON2
                                      if last else {"dev"})
    # the training each method took, and where the KB students' errors come from
    assert report.count("## FDD rounds") == 1 and "## Training compute" in report
    assert "| fdd | 3 |" in report and "| 1.00x |" in report  # std-cot's student + 2 rounds
    assert "| nesycd+fdd | 3 |" in report  # S_P + its own 2 rounds
    for method, kb in (("nesycd", "kb"), ("nesycd+fdd", "kb-fdd-r1")):
        assert f"## Where {method}'s errors come from" in report and f"`{kb}/kb.sqlite`" in report
        rows = read_json(out / f"knowledge-{method}.json")
        assert set(rows) == set(metrics[method]) - SEASON2
        for split, r in rows.items():
            assert r["n"] == metrics[method][split]["n"] and 0 <= r["hit"] <= r["coverage"] <= 100


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
    p2.execute(methods=["std-cot"])
    r = p2.run.results
    assert r["data"].skipped and r["train-std-cot"].skipped
    assert not r["predict-std-cot"].skipped and not r["score-std-cot"].skipped


def test_final_feedback_puts_the_last_rounds_errors_in_the_kb(resumed_run, tmp_path):
    out, cache, _, _ = resumed_run
    import shutil

    from nesyloop import api
    from nesyloop.kb.store import KnowledgeBase

    quick = api.load_config(quick=True)
    assert quick.joined.final_feedback is False  # the main job's setting (time)
    assert not (out / "nesycd+fdd-feedback-r2").exists() and not (out / "kb-fdd-r2").exists()
    run = tmp_path / "run"
    shutil.copytree(out, run)
    cfg = api.load_config(quick=True, overrides={"joined": {"final_feedback": True},
                                                 "run": {"cache": str(cache)}})
    p = api.Pipeline(cfg, run, log=lambda m: None)
    p.execute(methods=["nesycd+fdd"])
    r = p.run.results
    # the loop's students and KBs so far are unchanged; the last student answers with the KB
    # its own errors grew
    assert all(r[s].skipped for s in ("train-nesycd+fdd-r1", "kb-fdd-r1", "train-nesycd+fdd"))
    assert not r["nesycd+fdd-feedback-r2"].skipped and not r["kb-fdd-r2"].skipped
    assert not r["predict-nesycd+fdd"].skipped
    with KnowledgeBase(run / "kb-fdd-r2" / "kb.sqlite") as kb:
        assert 2 in {e.round for e in kb.list()}  # round 2's student got some wrong


def test_knowledge_from_round_two_shares_fdds_first_round(resumed_run, tmp_path):
    """``[joined] from_round = 2`` (the main job's): round 1 is fdd's own (its stages, reused),
    its wrong answers grow the KB, and only round 2 trains and answers with knowledge."""
    out, cache, _, _ = resumed_run
    import shutil

    from nesyloop import api
    from nesyloop.io import read_jsonl
    from nesyloop.kb.store import KnowledgeBase

    run = tmp_path / "run"
    shutil.copytree(out, run)
    cfg = api.load_config(quick=True, overrides={"joined": {"from_round": 2},
                                                 "run": {"cache": str(cache)}})
    p = api.Pipeline(cfg, run, log=lambda m: None)
    metrics = p.execute(methods=["nesycd+fdd"])
    r = p.run.results
    assert set(metrics) == {"std-cot", "fdd-r1", "nesycd+fdd", "nesycd+fdd/stale-kb"}
    assert all(r[s].skipped for s in ("train-fdd-r1", "fdd-feedback-r1", "fdd-evolve-r2",
                                      "predict-fdd-r1"))
    assert "train-nesycd+fdd-r1" not in r and "nesycd+fdd-evolve-r2" not in r
    assert not r["kb-fdd-r1"].skipped and not r["train-nesycd+fdd"].skipped
    wrong = {d["id"] for d in read_jsonl(run / "fdd-feedback-r1" / "demos.jsonl")
             if not d["correct"]}
    with KnowledgeBase(run / "kb-fdd-r1" / "kb.sqlite") as kb:
        added = {e.source_id for e in kb.list() if e.round == 1}
    assert added and added <= wrong  # fdd's round-1 errors, analysed into the joined KB
    pairs = read_jsonl(run / "train-nesycd+fdd" / "train_pairs.jsonl")
    pool2 = {x["id"] for x in read_jsonl(run / "fdd-evolve-r2" / "pool.jsonl")}
    assert {x["id"] for x in pairs} <= pool2 and any(x["task"] == "kb-cot" for x in pairs)
    base = read_json(run / "train-nesycd+fdd" / "manifest.json")["settings"]["base"]
    assert base == "train-fdd-r1"  # it continues from fdd's round-1 student


def test_rerun_from_scratch_asks_the_teacher_nothing(resumed_run, tmp_path):
    _, cache, before, _ = resumed_run
    fresh = tmp_path / "fresh"
    done = subprocess.run(_cli("rationales", "--quick", "--out", str(fresh)), env=_env(cache),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    info = read_json(fresh / "rationales" / "manifest.json")["info"]
    assert info["requests_issued"] == 0 and info["requests_cached"] == info["questions"]
    counts = RequestCache(cache).issued_counts()
    assert set(counts.values()) == {1} and before.keys() <= counts.keys()


def test_nesycd_artifacts(resumed_run):
    out, _, _, _ = resumed_run
    from nesyloop.io import read_jsonl
    from nesyloop.kb.store import KnowledgeBase

    demos = read_jsonl(out / "demos" / "demos.jsonl")
    wrong = [d for d in demos if not d["correct"]]
    assert len(demos) == 96 and wrong
    assert {"id", "input", "response", "pred", "correct"} <= set(demos[0])
    kb_info = read_json(out / "kb" / "manifest.json")["info"]
    assert kb_info["wrong_demos"] == len(wrong) == kb_info["entries"] + kb_info["rejected"]
    with KnowledgeBase(out / "kb" / "kb.sqlite") as kb:
        entries = kb.list()
        assert len(entries) == kb_info["entries"] > 0
        e = entries[0]
        assert e.source_id in {d["id"] for d in wrong} and e.teacher == "oracle:bazaar-oracle"
        assert e.knowledge and e.student_response is not None  # (the quick student may say nothing)
        assert kb.history(e.id)[0]["action"] == "add"
        assert sum(x.retrieved for x in entries) > 0  # prediction counted its retrievals
    mix = read_json(out / "train-nesycd" / "mixture.json")
    assert mix["pairs_per_task"]["kb-cot"] > 0 and mix["pairs_per_task"]["cot"] > 0
    preds = read_jsonl(out / "predict-nesycd" / "test-rare.jsonl")
    assert all(p["retrieved"] and p["prompt"].startswith("Knowledge: ") for p in preds)
    plain = read_jsonl(out / "predict-fdd-r2" / "test-rare.jsonl")
    assert not any(p["prompt"].startswith("Knowledge: ") for p in plain)


def test_fdd_artifacts(resumed_run):
    out, _, _, _ = resumed_run
    from nesyloop.io import read_jsonl
    from nesyloop.kb.store import KnowledgeBase

    pool1 = read_jsonl(out / "fdd-evolve-r1" / "pool.jsonl")
    new1 = [r for r in pool1 if r["round"] == 1]
    assert new1 and all(r["origin"] in ("harder", "similar") and r["parent"] for r in new1)
    assert all(r["rationales"] and r["programs"] for r in new1)  # CoT and PoT agreed
    rejected = read_jsonl(out / "fdd-evolve-r1" / "rejected.jsonl")
    assert all(r["reason"] for r in rejected)
    # round 2 evolved only round 1's new problems (seeds = "new")
    fb1 = read_jsonl(out / "fdd-feedback-r1" / "demos.jsonl")
    assert {r["id"] for r in fb1} == {r["id"] for r in new1}
    # the joined loop: its round-1 student answers its problems with retrieved knowledge,
    # the teacher analyses its wrong answers and the KB grows (a copy: round 0's stays)
    fb = read_jsonl(out / "nesycd+fdd-feedback-r1" / "demos.jsonl")
    assert {r["id"] for r in fb} == {r["id"] for r in new1}
    with_block = [r for r in fb if r["knowledge"]]
    # the prompt's block: the retrieved one, its names abstracted ([nesycd.retrieval] abstract)
    assert with_block and all(
        r["input"].startswith("Knowledge: " + apply_block(r["knowledge"], r.get("abstracted", [])))
        and r["retrieved"] for r in with_block)
    with KnowledgeBase(out / "kb" / "kb.sqlite") as kb:
        before = {e.id: e.source_id for e in kb.list()}
    with KnowledgeBase(out / "kb-fdd-r1" / "kb.sqlite") as kb:
        after = {e.id: (e.source_id, e.round) for e in kb.list()}
    assert {i: s for i, (s, _) in after.items() if i in before} == before
    added = {s for i, (s, rnd) in after.items() if i not in before}
    assert added and added <= {r["id"] for r in fb if not r["correct"]}
    assert {rnd for i, (_, rnd) in after.items() if i not in before} == {1}
    # round 2 trains on its own pool, grown from that feedback, every pair with a block
    pool2 = read_jsonl(out / "nesycd+fdd-evolve-r2" / "pool.jsonl")
    assert {r["parent"] for r in pool2 if r["round"] == 2} <= {r["id"] for r in fb}
    pairs = read_jsonl(out / "train-nesycd+fdd" / "train_pairs.jsonl")
    assert {p["id"] for p in pairs} <= {r["id"] for r in pool2}
    assert all(p["prompt"].startswith("Knowledge: ") == (p["task"] in ("kb-cot", "cf-cot"))
               for p in pairs)
    assert any(p["task"] == "cf-cot" for p in pairs)  # the quick preset's counterfactual pairs
    preds = read_jsonl(out / "predict-nesycd+fdd" / "test.jsonl")
    assert all(p["prompt"].startswith("Knowledge: ") for p in preds)


def test_kb_edit_from_the_cli_reruns_only_prediction(resumed_run, tmp_path):
    out, cache, _, _ = resumed_run
    from nesyloop.io import read_jsonl

    env = _env(cache)
    rec = read_jsonl(out / "predict-nesycd" / "test-rare.jsonl")[0]
    entry = rec["retrieved"][0]["id"]
    # the entry's own words with one number changed, so that it is still the one retrieved
    new = re.sub(r"\d+", lambda m: str(int(m.group()) + 1), rec["knowledge"], count=1)
    assert new != rec["knowledge"]
    done = subprocess.run(_cli("kb", "edit", str(entry), "--knowledge", new, "--note", "fix",
                               "--run", str(out)), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    train_before = read_json(out / "train-nesycd" / "manifest.json")["fingerprint"]
    done = subprocess.run(_cli("predict", "--quick", "--out", str(out), "-m", "nesycd"),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[skip] train-nesycd" in done.stdout and "[run ] predict-nesycd" in done.stdout
    assert read_json(out / "train-nesycd" / "manifest.json")["fingerprint"] == train_before
    again = read_jsonl(out / "predict-nesycd" / "test-rare.jsonl")[0]
    # the edited text is the block; the prompt states it (names as placeholders: abstract)
    assert again["retrieved"][0]["id"] == entry and again["knowledge"] == new
    assert again["prompt"].startswith(
        "Knowledge: " + apply_block(new, again.get("abstracted", [])))
    hist = subprocess.run(_cli("kb", "history", str(entry), "--run", str(out)), env=env,
                          capture_output=True, text=True)
    assert hist.returncode == 0 and "fix" in hist.stdout and new in hist.stdout
    report = tmp_path / "attr.json"
    att = subprocess.run(_cli("kb", "attribute", "--run", str(out), "--config",
                              str(_quick_config(tmp_path)), "--out", str(report)),
                         env=env, capture_output=True, text=True, timeout=300)
    assert att.returncode == 0, att.stderr[-2000:]
    rows = read_json(report)["entries"]
    assert rows and all(r["questions"] >= 1 for r in rows)
    assert sum(r["questions"] for r in rows) == 16  # test-rare has 16 questions, top-1 each
    assert "helped" in att.stdout and "net" in att.stdout


def _quick_config(tmp_path: Path) -> Path:
    """The quick preset's eval sizes as a config file (``kb attribute`` reads [eval], [nesycd])."""
    path = tmp_path / "quick.toml"
    path.write_text("[run]\nprogress = false\n[eval]\nbatch_size = 32\nmax_new_tokens = 64\n")
    return path


def test_mixed_thoughts_round_runs_programs_in_the_sandbox(tmp_path):
    """CoT + PoT training targets, PoT answers executed (CoT when a program fails), one round,
    then the joined student: knowledge-augmented programs in training and at inference."""
    from nesyloop import api
    from nesyloop.io import read_jsonl

    cfg = api.load_config(quick=True, overrides={
        "methods": ["nesycd+fdd"],
        "run": {"progress": False, "cache": str(tmp_path / "c.sqlite")},
        "fdd": {"rounds": 1, "thoughts": "both", "inference": "pot-then-cot"},
        "eval": {"splits": ["dev", "test"]}})
    p = api.Pipeline(cfg, tmp_path / "run", log=lambda m: None)
    metrics = p.execute()
    assert set(metrics) == {"fdd-r0", "nesycd+fdd"}  # round 0 is shared with fdd
    prog = read_json(tmp_path / "run" / "programs" / "manifest.json")["info"]
    assert prog["kept"] > 0 and prog["rejected"] > 0  # the oracle's wrong programs were dropped
    pairs = read_jsonl(tmp_path / "run" / "train-fdd-r0" / "train_pairs.jsonl")
    assert {"cot", "pot"} == {x["task"] for x in pairs}
    fb = read_jsonl(tmp_path / "run" / "fdd-feedback-r0" / "demos.jsonl")
    assert len(fb) == 96 and {"easy", "n_correct"} <= set(fb[0])
    joined = {x["task"] for x in read_jsonl(tmp_path / "run" / "train-nesycd+fdd"
                                            / "train_pairs.jsonl")}
    assert {"kb-cot", "kb-pot"} <= joined <= {"cot", "kb-cot", "cf-cot", "pot", "kb-pot"}
    assert (tmp_path / "run" / "kb-fdd-r0" / "kb.sqlite").exists()  # round 0's own feedback
    preds = read_jsonl(tmp_path / "run" / "predict-nesycd+fdd" / "test.jsonl")
    assert all(x["prompt"].endswith("Program:") or "fallback_from" in x for x in preds)
    assert all("program" in x and x["program"]["verdict"] for x in preds)
    with_knowledge = [x for x in preds if x["knowledge"]]
    assert with_knowledge and all(x["prompt"].startswith(
        "Knowledge: " + apply_block(x["knowledge"], x.get("abstracted", [])))
        for x in with_knowledge)
