"""Bad input to the run commands and the config (issue 13): each case gives one ``error:`` line
naming the file, line, key or flag, a non-zero exit (130 for Ctrl-C), no traceback, and leaves
no run folder behind. The two loop cases (every teacher rationale rejected, every evolved problem
rejected) run real tiny configs end to end."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nesyloop.cli import app

RUN_COMMANDS = ["run", "data", "rationales", "train", "predict", "score", "estimate"]


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_error(res, *needles: str, code: int = 2) -> str:
    """The single ``error:`` line of a failed command (checked: exit code, no traceback)."""
    assert res.exit_code == code, (res.exit_code, res.output)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], res.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# --- the config file itself ------------------------------------------------------------------
@pytest.mark.parametrize("kind, content, needles", [
    ("folder", None, ["is a folder, not a config file"]),
    ("missing", None, ["config file not found"]),
    ("non-utf8", b"[teacher]\nsamples = 2\nmodel = '\xff\xfe'\n", ["bad.toml:3:", "not UTF-8"]),
    ("toml-syntax", "[run]\nout = 'x'\nseed = \n", ["bad.toml:3:", "invalid TOML"]),
    ("duplicate-key", "[run]\nseed = 1\nseed = 2\n", ["bad.toml:3:", "invalid TOML"]),
])
def test_config_file_unusable(tmp_path, kind, content, needles):
    path = tmp_path / "bad.toml"
    if kind == "folder":
        path.mkdir()
    elif content is not None:
        _write(path, content)
    for args in (["config", str(path)], ["run", str(path), "--out", str(tmp_path / "run")]):
        _one_error(_cli(*args), str(path), *needles)
    assert not (tmp_path / "run").exists()


BAD_VALUES = [  # (id, config text, what the error line says)
    ("nan", "[teacher]\ntemperature = nan\n", "key 'teacher.temperature': nan"),
    ("inf", "[fdd]\nreplay = inf\n", "key 'fdd.replay': inf"),
    ("-inf", "[train]\nlearning_rate = -inf\n", "key 'train.learning_rate': -inf"),
    ("nan-override", "[method_train.fdd]\nnum_train_epochs = nan\n",
     "key 'method_train.fdd.num_train_epochs'"),
    ("huge-size", "[task.bazaar]\ntrain = 1000000000000\n", "key 'task.bazaar.train': at most"),
    ("huge-rounds", "[fdd]\nrounds = 1000000000\n", "key 'fdd.rounds': at most 100"),
    ("huge-tokens", "[teacher]\nmax_tokens = 1000000000000\n", "key 'teacher.max_tokens'"),
    ("huge-override", "[method_train.nesycd]\nnum_train_epochs = 1e9\n",
     "key 'method_train.nesycd.num_train_epochs': at most"),
    ("negative", "[task.bazaar]\ntrain = -5\n", "key 'task.bazaar.train'"),
    ("zero", "[eval]\nbatch_size = 0\n", "key 'eval.batch_size'"),
    ("wrong-type", "[teacher]\nsamples = 'three'\n", "key 'teacher.samples'"),
    ("seed-negative", "[train]\nseed = -1\n", "key 'train.seed': a seed from 0"),
    ("seed-huge", "[run]\nseed = 99999999999\n", "key 'run.seed': a seed from 0"),
    ("empty-out", "[run]\nout = ''\n", "key 'run.out': must not be empty"),
    ("empty-model", "[student]\nmodel = '  '\n", "key 'student.model': must not be empty"),
    ("empty-methods", "methods = []\n", "key 'methods': the list is empty"),
    ("duplicate-method", "methods = ['std-cot', 'std-cot']\n", "'std-cot' is listed twice"),
    ("unknown-method", "methods = ['std-cot', 'magic']\n", "key 'methods.1'"),
    ("empty-splits", "[eval]\nsplits = []\n", "key 'eval.splits': the list is empty"),
    ("unknown-split", "[eval]\nsplits = ['test', 'tset']\n",
     "'tset' is not a split of task 'bazaar'"),
    ("split-not-made", "[eval]\nsplits = ['dev-deep']\n",
     "dev-deep is made when task.bazaar.dev_deep > 0"),
    ("season-2-split-not-made", "[eval]\nsplits = ['test-drift']\n",
     "test-drift is made when task.bazaar.test_drift > 0"),
    ("novel-without-held-out", "[task.bazaar]\ntest_novel = 10\n", "set held_out > 0"),
    ("empty-split", "[task.bazaar]\ntest_deep = 0\n", "'test-deep' has 0 problems"),
    ("no-train", "methods = ['std-cot']\n[task.bazaar]\ntrain = 0\n",
     "key 'task.bazaar.train': 0 training problems"),
    ("heads", "[student.scratch]\nhidden = 64\nheads = 3\n", "key 'student.scratch.heads'"),
    ("odd-head-size", "[student.scratch]\nhidden = 36\nheads = 4\n", "(9) must be even"),
    ("intermediate", "[student.scratch]\nintermediate = -4\n",
     "key 'student.scratch.intermediate'"),
    ("empty-mix", "[nesycd.mix]\nkb_cot = 0\ncot = 0\nanswer = 0\n", "key 'nesycd.mix'"),
    ("empty-lora-targets", "[train]\nlora_targets = []\n", "key 'train.lora_targets'"),
    ("missing-student", "[student]\nmodel = './models/not-there'\n",
     "key 'student.model': './models/not-there': no such model folder"),
    ("missing-gguf-teacher", "[teacher]\nbackend = 'hf'\nmodel = 'nope.gguf'\n",
     "key 'teacher.model': 'nope.gguf'"),
    ("unknown-key", "[teacher]\nsampels = 3\n", "unknown key 'teacher.sampels'"),
]


@pytest.mark.parametrize("name, text, match", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_config_value_refused_before_anything_runs(tmp_path, name, text, match):
    path = _write(tmp_path / "bad.toml", text)
    _one_error(_cli("config", str(path)), "bad.toml", match)
    out = tmp_path / "run"
    _one_error(_cli("run", str(path), "--out", str(out)), "bad.toml", match)
    assert not out.exists()


def test_utf8_config_with_a_bom_loads(tmp_path):
    path = _write(tmp_path / "bom.toml", "\ufeff[teacher]\nsamples = 3\n")
    res = _cli("config", str(path))
    assert res.exit_code == 0 and '"samples": 3' in res.stdout


def test_quick_says_which_of_your_settings_it_replaces(tmp_path):
    path = _write(tmp_path / "mine.toml", "[task.bazaar]\ntrain = 5000\ndev = 16\n")
    res = _cli("config", str(path), "--quick")
    assert res.exit_code == 0
    notes = [ln for ln in res.stderr.splitlines() if ln.startswith("note: ")]
    assert len(notes) == 1 and "mine.toml" in notes[0]
    assert "task.bazaar.train = 5000 -> 96" in notes[0] and "dev" not in notes[0]  # same value
    assert '"train": 96' in res.stdout  # the preset wins, as documented
    quiet = _cli("config", "--quick")  # the built-in default: shrinking it is the point
    assert quiet.exit_code == 0 and "note:" not in quiet.stderr


# --- --out and the run folder ----------------------------------------------------------------
@pytest.mark.parametrize("command", RUN_COMMANDS)
@pytest.mark.parametrize("kind", ["existing-file", "proc", "empty"])
def test_out_that_cannot_hold_a_run(tmp_path, command, kind):
    target = {"existing-file": str(_write(tmp_path / "taken", "x")),
              "proc": "/proc/nesyloop-run", "empty": ""}[kind]
    needle = {"existing-file": "exists and is not a folder", "proc": "system folder",
              "empty": "--out: empty"}[kind]
    before = sorted(os.listdir(tmp_path))
    _one_error(_cli(command, "--quick", "--out", target), "--out", needle)
    assert sorted(os.listdir(tmp_path)) == before


def test_run_out_from_the_config_is_checked_too(tmp_path):
    taken = _write(tmp_path / "taken", "x")
    path = _write(tmp_path / "c.toml", f"[run]\nout = '{taken}'\n")
    _one_error(_cli("data", str(path)), "run.out", "exists and is not a folder")


def test_out_in_an_unwritable_folder(tmp_path):
    # under a folder of its own that every user can reach (pytest's tmp_path is private)
    home = Path(tempfile.mkdtemp(prefix="nesyloop-ro-"))
    try:
        home.chmod(0o755)
        locked = home / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        cmd = [sys.executable, "-m", "nesyloop.cli", "data", "--quick", "--out",
               str(locked / "run")]
        if os.geteuid() == 0:  # root writes anywhere: run the command as nobody
            if not shutil.which("setpriv"):
                pytest.skip("needs setpriv to drop root")
            cmd = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=home,
                              env={**os.environ, "HOME": str(home)})
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert lines == [f"error: --out {locked / 'run'}: {locked} is not writable"]
        assert os.listdir(locked) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_write_that_fails_inside_the_run_folder_is_one_line(tmp_path):
    out = tmp_path / "run"
    (out / "config.json").mkdir(parents=True)  # the first file a run writes cannot be written
    line = _one_error(_cli("data", "--quick", "--out", str(out)))
    assert line == f"error: {out / 'config.json'}: Is a directory"
    assert os.listdir(out) == ["config.json"]  # a folder the user made is left as it was


@pytest.mark.parametrize("command", ["run", "train", "predict", "score", "estimate"])
def test_unknown_method_flag(tmp_path, command):
    out = tmp_path / "run"
    _one_error(_cli(command, "--quick", "--out", str(out), "--method", "magic"),
               "--method: 'magic' is not one of")
    assert not out.exists()


@pytest.mark.parametrize("flags, needle", [
    (["--error-rate", "nan"], "student_error_rate must be in [0, 1]"),
    (["--error-rate", "-0.1"], "student_error_rate must be in [0, 1]"),
    (["--keep-rate", "1.5"], "evolve_keep_rate must be in [0, 1]"),
    (["--completion-share", "inf"], "completion_share must be in [0, 1]"),
])
def test_estimate_bad_flags(tmp_path, flags, needle):
    out = tmp_path / "run"
    _one_error(_cli("estimate", "--quick", "--out", str(out), *flags), needle)
    assert not out.exists()


@pytest.mark.parametrize("flags, needle", [
    (["--timeout", "nan"], "--timeout"), (["--timeout", "0"], "--timeout"),
    (["--timeout", "-3"], "--timeout"), (["--mem-mb", "0"], "--mem-mb"),
])
def test_sandbox_bad_limits(tmp_path, flags, needle):
    prog = _write(tmp_path / "p.py", "answer = 1\n")
    _one_error(_cli("sandbox", str(prog), *flags), needle)


# --- train-student's pairs file --------------------------------------------------------------
GOOD = '{"prompt": "Q?", "completion": " A."}\n'


@pytest.mark.parametrize("kind, content, needles", [
    ("missing", None, ["file not found"]),
    ("folder", None, ["is a folder"]),
    ("non-utf8", (GOOD + '{"prompt": "\xff"}\n').encode("latin-1"), [":2: not UTF-8"]),
    ("empty", "\n\n", ["no training pairs"]),
    ("not-json", GOOD + "{oops\n", [":2: invalid JSON"]),
    ("no-completion", GOOD + '\n{"prompt": "Q?"}\n', [":3: expected string fields"]),
])
def test_train_student_bad_pairs(tmp_path, kind, content, needles):
    pairs = tmp_path / "pairs.jsonl"
    if kind == "folder":
        pairs.mkdir()
    elif content is not None:
        _write(pairs, content)
    out = tmp_path / "model"
    _one_error(_cli("train-student", str(pairs), "--base", "smollm2", "--out", str(out)),
               str(pairs), *needles)
    assert not out.exists()


def test_train_student_bad_out(tmp_path):
    pairs = _write(tmp_path / "pairs.jsonl", GOOD)
    taken = _write(tmp_path / "taken", "x")
    _one_error(_cli("train-student", str(pairs), "--base", "smollm2", "--out", str(taken)),
               "--out", "exists and is not a folder")
    _one_error(_cli("train-student", str(pairs), "--base", "smollm2", "--out", ""),
               "--out: empty")


# --- the request cache -----------------------------------------------------------------------
def test_request_cache_that_is_a_folder_or_not_a_database(tmp_path):
    for cache, needle in ((tmp_path, "is a folder"),
                          (_write(tmp_path / "junk.sqlite", "junk"), "not a database")):
        path = _write(tmp_path / "c.toml", f"methods = ['std-cot']\n[run]\ncache = '{cache}'\n"
                                           f"progress = false\n")
        _one_error(_cli("rationales", str(path), "--quick", "--out", str(tmp_path / "r")),
                   str(cache), needle)


# --- Ctrl-C ----------------------------------------------------------------------------------
def _ctrl_c_on():
    """In the child: Ctrl-C as in a terminal, even where the suite was started in the background
    (a shell without job control starts it with SIGINT ignored, and a child inherits that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_how_to_resume_and_exits_130(tmp_path):
    # a data stage big enough to be interrupted while it runs (no stage finishes)
    path = _write(tmp_path / "big.toml", "[run]\nprogress = false\n[task.bazaar]\n"
                                         "train = 300000\n")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "nesyloop.cli", "data", str(path), "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=_ctrl_c_on)
    try:
        for line in proc.stdout:
            if "[run ] data" in line:
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == ["interrupted: re-run the same command to resume"], err
    assert not out.exists()  # nothing had finished: no empty run folder is left


# --- what the loop itself rejects ------------------------------------------------------------
TINY = """
[run]
progress = false
cache = "{cache}"
[task.bazaar]
train = 24
dev = 8
test = 8
test_rare = 8
test_deep = 8
[student.scratch]
hidden = 32
layers = 1
heads = 2
[train]
max_steps = 2
per_device_train_batch_size = 8
[eval]
splits = ["test"]
max_new_tokens = 32
"""


def test_all_rationales_rejected_says_why_and_where(tmp_path):
    path = _write(tmp_path / "c.toml", 'methods = ["std-cot"]\n'
                  + TINY.format(cache=tmp_path / "c.sqlite")
                  + "[teacher.oracle]\nerror_rate = 1.0\n")
    out = tmp_path / "run"
    line = _one_error(_cli("run", str(path), "--out", str(out)),
                      "rationales were all rejected", "top reasons: wrong answer: 48",
                      str(out / "rationales" / "rejected.jsonl"))
    assert "no training pairs" not in line
    assert (out / "rationales" / "rejected.jsonl").stat().st_size > 0  # kept to be read
    assert not (out / "student-init").exists()  # stopped before any training


def test_fdd_stopping_on_all_rejected_says_why_in_the_report(tmp_path):
    # filters so strict that every evolved problem is a near duplicate or a leak
    path = _write(tmp_path / "c.toml", 'methods = ["fdd"]\n'
                  + TINY.format(cache=tmp_path / "c.sqlite")
                  + "[fdd]\nrounds = 1\nnear_duplicate = 0.01\nleak_ngram = 1\n"
                    "leak_threshold = 0.01\n")
    out = tmp_path / "run"
    res = _cli("run", str(path), "--out", str(out))
    assert res.exit_code == 0, res.output
    report = (out / "report.md").read_text()
    line = next(ln for ln in report.splitlines() if "FDD stopped before round 1" in ln)
    assert "problems the teacher wrote were rejected" in line
    assert "near duplicate of the pool" in line and "`fdd-evolve-r1/rejected.jsonl`" in line


@pytest.mark.parametrize("argv, needles", [
    (["nosuch"], ["nesyloop:", "No such command 'nosuch'"]),
    (["run", "--bogus"], ["nesyloop run:", "--bogus"]),
    (["kb", "show", "abc"], ["nesyloop kb show:", "entry_id"]),
    (["kb", "list", "--limit", "0"], ["nesyloop kb list:", "--limit"]),
    (["sandbox"], ["nesyloop sandbox:", "Missing argument"]),
], ids=["unknown-command", "unknown-option", "wrong-type", "out-of-range", "missing-argument"])
def test_usage_errors_are_one_line(argv, needles):
    """The console script (cli.main), not just the typer app: a usage error is one ``error:``
    line naming the command and exit 2, not a multi-line usage box."""
    res = subprocess.run([sys.executable, "-m", "nesyloop.cli", *argv], capture_output=True,
                         text=True, timeout=120)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
