"""The dataset teacher (``teacher.backend = "dataset"``): the training examples' own worked
solutions (GSM8K's) are the rationales, through the same answer filter as any teacher's; a quick
std-cot run on GSM8K with it (no teacher request, kept rationales == the gold solutions); methods
that need a real teacher fail at config load (and on the command line) naming teacher.backend."""

from __future__ import annotations

import subprocess
import sys

import pytest

import nesyloop
from nesyloop.config import load_config
from nesyloop.errors import ConfigError
from nesyloop.io import read_json, read_jsonl
from nesyloop.pipeline import Pipeline
from nesyloop.roles.rationale import NO_SOLUTION, dataset_rationales, with_final_answer
from nesyloop.tasks.base import Example
from nesyloop.tasks.bench import BenchSettings, data_root, load_task

needs_gsm8k = pytest.mark.skipif(
    not (data_root() / "gsm8k").is_dir(),
    reason=f"shared GSM8K not found at {data_root()} (set NESYLOOP_DATA)")

RECORD_KEYS = {"id", "sample", "role", "rationale", "pred", "rule", "kept", "reason",
               "question", "answer", "source"}


def ex(i: int, rationale: str | None, answer: str = "12", **kw) -> Example:
    return Example(id=f"q{i}", question=f"Question {i}?", answer=answer, rationale=rationale,
                   **kw)


def test_filter_keeps_right_rejects_wrong_and_missing_with_reasons():
    exs = [ex(0, "3 + 9 = 12.\nTherefore, the answer is 12."),
           ex(1, "3 + 8 = 11.\nTherefore, the answer is 11."),  # a wrong worked solution
           ex(2, None),
           ex(3, "   "),
           ex(4, "Add 3 and 9 to get twelve")]  # no final answer: the gold one is appended
    kept, rejected = dataset_rationales(exs)
    assert [r["id"] for r in kept] == ["q0", "q4"]
    assert kept[0]["rationale"] == exs[0].rationale and kept[0]["pred"] == "12"
    assert kept[1]["rationale"] == "Add 3 and 9 to get twelve\nTherefore, the answer is 12."
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons == {"q1": "wrong answer (teacher 11, gold 12)", "q2": NO_SOLUTION,
                       "q3": NO_SOLUTION}
    for r in kept + rejected:
        assert set(r) == RECORD_KEYS and r["source"] == "dataset" and r["sample"] == 0
        assert r["role"] == "rationale" and r["kept"] == (r["reason"] is None)


def test_final_answer_appended_in_the_answer_types_form():
    choice = ex(0, "Red is warm.", answer="B", answer_type="choice", options=["blue", "red"])
    assert with_final_answer("Red is warm.", choice).endswith("Therefore, the answer is (B).")
    kept, _ = dataset_rationales([choice])
    assert kept and kept[0]["pred"] == "B"
    stated = "So 5.\nThe answer is 5."
    assert with_final_answer(stated, ex(1, stated, answer="5")) == stated  # left as it is


@pytest.mark.parametrize("method, need", [("nesycd", "error analysis"),
                                          ("std-cot+kb", "error analysis"),
                                          ("kard", "error analysis"),
                                          ("fdd", "problem evolution")])
def test_methods_needing_a_real_teacher_fail_at_config_load(tmp_path, method, need):
    p = tmp_path / "c.toml"
    p.write_text(f'methods = ["std-cot", "{method}"]\n[teacher]\nbackend = "dataset"\n')
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{p}: teacher.backend 'dataset'")
    assert f"method '{method}' needs a teacher for {need}" in msg
    load_config(p, overrides={"methods": ["zero-shot", "answer-ft", "std-cot"]})  # fine


def test_cli_config_and_method_flag_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('methods = ["nesycd"]\n[teacher]\nbackend = "dataset"\n')
    proc = subprocess.run([sys.executable, "-m", "nesyloop.cli", "config", str(bad)],
                          check=False, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {bad}: teacher.backend 'dataset'")
    # a method asked for on the command line is checked before anything runs
    good = load_config(overrides={"teacher": {"backend": "dataset"}, "methods": ["std-cot"]})
    with pytest.raises(ConfigError, match=r"teacher.backend 'dataset'.*'fdd'"):
        Pipeline(good, tmp_path / "run").execute(methods=["fdd"])
    assert not any((tmp_path / "run").iterdir())  # nothing written


@needs_gsm8k
def test_quick_std_cot_on_gsm8k_with_the_dataset_teacher(tmp_path):
    cfg_file = tmp_path / "gsm8k.toml"
    cache = tmp_path / "requests.sqlite"
    cfg_file.write_text(f'''
methods = ["std-cot"]
[run]
cache = "{cache}"
progress = false
[task]
name = "gsm8k"
[task.bench]
limits = {{train = 32, dev = 8, test = 8}}
[teacher]
backend = "dataset"
[eval]
splits = ["test"]
''')
    cfg = load_config(cfg_file, quick=True)  # the quick preset's tiny scratch student
    out, logs = tmp_path / "run", []
    metrics = nesyloop.run(cfg, out=out, log=logs.append)
    assert metrics["std-cot"]["test"]["n"] == 8
    gold = load_task("gsm8k", BenchSettings(limits={"train": 32, "dev": 8, "test": 8}))["train"]
    kept = read_jsonl(out / "rationales" / "kept.jsonl")
    assert [r["id"] for r in kept] == [e.id for e in gold]
    assert [r["rationale"] for r in kept] == [e.rationale for e in gold]  # the gold solutions
    assert all(r["reason"] is None and r["source"] == "dataset" for r in kept)
    assert read_jsonl(out / "rationales" / "rejected.jsonl") == []
    info = read_json(out / "rationales" / "manifest.json")["info"]
    assert info["questions"] == info["kept"] == info["covered_questions"] == 32
    pairs = read_jsonl(out / "train-std-cot" / "train_pairs.jsonl")
    assert [p["completion"] for p in pairs] == [" " + e.rationale for e in gold]
    assert not cache.exists()  # no teacher request was made, nothing cached
    assert "worked solutions" in (out / "report.md").read_text()
    # model settings of the teacher mean nothing to the dataset teacher: nothing recomputes
    again = load_config(cfg_file, quick=True, overrides={"teacher": {"samples": 5,
                                                                     "temperature": 0.0}})
    logs.clear()
    assert nesyloop.run(again, out=out, log=logs.append) == metrics
    assert not [m for m in logs if m.startswith("[run ]")], logs
