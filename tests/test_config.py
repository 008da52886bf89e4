"""Config loading: defaults, quick preset, and one-line errors naming the key or file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nesyloop.config import load_config
from nesyloop.errors import ConfigError


def test_default_and_quick():
    cfg = load_config()
    assert cfg.task.name == "bazaar" and cfg.student.model == "scratch"
    assert cfg.methods == ["std-cot", "fdd", "nesycd", "nesycd+fdd"]
    assert cfg.nesycd.init == "sp" and cfg.train_for("nesycd").epochs == 1.0
    assert cfg.fdd.rounds == 3 and cfg.train_for("nesycd+fdd").max_steps == 150
    assert cfg.train_for("std-cot").epochs == cfg.train.epochs == 3.0
    assert cfg.student.scratch.numbers == "whole" and cfg.fdd.final_feedback is False
    q = load_config(quick=True)
    assert q.task.bazaar.train < cfg.task.bazaar.train
    assert q.student.scratch.hidden < cfg.student.scratch.hidden
    assert q.fdd.rounds == 2  # the quick e2e run kills and resumes round 1 of two


@pytest.mark.parametrize("text, match", [
    ("[teacher]\nsampels = 3\n", r"unknown key 'teacher.sampels'"),
    ("[teacher]\nsamples = 'three'\n", r"key 'teacher.samples'"),
    ("[teacher]\nsamples = 0\n", r"key 'teacher.samples'"),
    ("methods = ['std-cot', 'magic']\n", r"key 'methods.1'"),
    ("[task.bazaar]\ntrain = -5\n", r"key 'task.bazaar.train'"),
    ("[run\nout = 1\n", r"invalid TOML"),
    ("[method_train.nesycd]\nepochz = 1\n", r"key 'method_train.nesycd.epochz'"),
    ("[method_train.magic]\nepochs = 1\n", r"key 'method_train.magic'"),
    ("[nesycd.retrieval]\nmethod = 'grep'\n", r"key 'nesycd.retrieval.method'"),
    ("[nesycd]\ngate_threshold = 2\n", r"key 'nesycd.gate_threshold'"),
    ("[fdd]\nthoughts = 'poems'\n", r"key 'fdd.thoughts'"),
    ("[fdd]\nfeedback_samples = 2\nfeedback_min_correct = 3\n", r"key 'fdd': .*must be <="),
    ("[fdd]\ninference = 'pot'\n", r"key 'fdd': .*needs thoughts"),
    ("[fdd]\nleak_threshold = 0\n", r"key 'fdd.leak_threshold'"),
    ("[fdd]\nmin_dev_gain = 1\n", r"min_dev_gain needs 'dev'"),
])
def test_bad_config_one_line_error(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(p)
    assert "\n" not in str(info.value) and "bad.toml" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: config file not found"):
        load_config(tmp_path / "nope.toml")


def test_cli_bad_config_exits_nonzero_with_one_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[student]\nmodel = 3\nfoo = 1\n")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "nesyloop.cli", "run", str(p), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.toml" in lines[0]
    assert not out.exists()  # no half-written artifact


def test_cli_config_show(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nesyloop.cli", "config", "--quick"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and '"samples"' in proc.stdout


def test_example_configs_validate():
    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.toml"))
    assert files
    for f in files:
        load_config(f)
