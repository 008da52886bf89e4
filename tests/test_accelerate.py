"""`accelerate launch --multi_gpu` runs the student trainer unchanged on several processes (two
CPU processes with DDP over gloo here; the same command spreads over GPUs on a GPU machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from toydata import toy_pairs

from nesyloop.io import write_jsonl
from nesyloop.students.scratch import ScratchSettings, create_scratch_student

pytestmark = pytest.mark.slow


def test_accelerate_launch_two_processes(tmp_path):
    pairs = toy_pairs(64)
    base = create_scratch_student([p["prompt"] + p["completion"] for p in pairs], tmp_path / "base",
                                  ScratchSettings(hidden=32, layers=1, heads=2, vocab_size=300))
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nmax_steps = 4\nper_device_train_batch_size = 4\nbf16 = false\n"
                   "save_steps = 2\n")
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher) if launcher.exists() else shutil.which("accelerate"), "launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "nesyloop.cli", "train-student",
           str(tmp_path / "pairs.jsonl"), "--base", str(base), "--out", str(tmp_path / "out"),
           "--config", str(cfg)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(stats) == 2  # one line per process
    assert all(s["steps"] == 4 and s["world_size"] == 2 for s in stats)  # real DDP (gloo)
    assert stats[0]["train_loss"] != stats[1]["train_loss"]  # each rank saw its own shard
    assert (tmp_path / "out" / "config.json").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_a_runs_training_stages_spread_over_two_processes(tmp_path):
    """`[train] launch`: `nesyloop run` trains every stage (here std-cot's and FDD's rounds)
    under `accelerate launch` with two gloo processes; the rest of the run stays one process;
    a re-run finds every stage done; a launcher that fails gives one line naming its log."""
    import nesyloop
    from nesyloop.config import load_config
    from nesyloop.errors import NesyloopError
    from nesyloop.io import read_json

    launch = ("accelerate launch --multi_gpu --num_processes 2 --num_machines 1 "
              "--mixed_precision no --dynamo_backend no")
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'[run]\nprogress = false\n[train]\nlaunch = "{launch}"\nbf16 = false\n'
                        "[fdd]\nrounds = 1\n[eval]\nsplits = [\"test\"]\n")
    out = tmp_path / "run"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    metrics = nesyloop.run(load_config(cfg_file, quick=True), out=out, methods=["fdd"],
                           log=lambda m: None)
    assert metrics["fdd-r2"]["test"]["n"] == 24  # FDD's round 1 trains the r2 student
    stages = [p for p in out.glob("train-*") if (p / "train_stats.json").exists()]
    assert {p.name for p in stages} == {"train-std-cot", "train-fdd-r1", "train-fdd-r2"}
    for stage in stages:
        stats = read_json(stage / "train_stats.json")
        assert stats["world_size"] == 2 and stats["steps"] > 0, stage.name
        assert (stage / "model" / "config.json").exists()
    logs: list[str] = []
    assert nesyloop.run(load_config(cfg_file, quick=True), out=out, methods=["fdd"],
                        log=logs.append) == metrics
    assert not [m for m in logs if m.startswith("[run ]")]  # nothing recomputed
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg_file.read_text().replace("--num_processes 2", "--num_processes 2 "
                                                "--no_such_flag"))
    with pytest.raises(NesyloopError, match=r"\[train\] launch: accelerate exited with status "
                       r"\d+; see .*launch.log"):
        nesyloop.run(load_config(bad, quick=True), out=tmp_path / "bad", methods=["std-cot"],
                     log=lambda m: None)
