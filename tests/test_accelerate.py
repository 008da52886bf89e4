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
