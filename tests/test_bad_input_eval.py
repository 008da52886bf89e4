"""Bad input to ``nesyloop eval`` and to user data files: each kind is one case that runs the
real CLI and expects a one-line ``error:`` naming the file, line or option, no traceback, and
nothing left behind (no output folder, no JSON file, no data stage)."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
from typer.testing import CliRunner

from nesyloop.cli import app
from nesyloop.io import MAX_FILE_BYTES, MAX_ROW_BYTES
from nesyloop.tasks.bench import data_root

GOOD = [{"id": "q1", "question": "What is 2 + 3?", "answer": 5},
        {"id": "q2", "question": "Pick the even one.", "choices": ["3", "8"], "answer": "8"}]
LATIN1 = "question,answer\nCafé?,1\n".encode("latin-1")  # é as the single byte 0xe9


def run_cli(*args) -> tuple[int, str]:
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.output


def assert_one_line_error(code: int, output: str, *parts: str) -> None:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert code != 0 and "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for p in parts:
        assert p in lines[0], (p, lines[0])


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def eval_user(tmp_path: Path, data: Path, *extra) -> tuple[int, str]:
    """``eval --task user`` with a student that resolves (smollm2) but is never loaded."""
    return run_cli("eval", "-s", "smollm2", "--task", "user", "--data", data, "--split", "all",
                   "--out", tmp_path / "out", *extra)


# --------------------------------------------------------------------------- user data files


def _bytes_file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("name, data, where", [
    ("mine.jsonl", b'{"question": "2+2?", "answer": 4}\n{"question": "caf\xe9?", "answer": 1}\n',
     "mine.jsonl:2: not UTF-8 text (byte 0xe9"),
    ("mine.csv", LATIN1, "mine.csv:2: not UTF-8 text (byte 0xe9"),
    ("mine.json", b'[{"question": "caf\xe9?", "answer": 1}]', "mine.json:1: not UTF-8 text"),
])
def test_user_file_not_utf8_through_eval(tmp_path, name, data, where):
    code, out = eval_user(tmp_path, _bytes_file(tmp_path, name, data))
    assert_one_line_error(code, out, where, "save the file as UTF-8")
    assert not (tmp_path / "out").exists()


def test_user_file_not_utf8_through_data_command(tmp_path):
    bad = _bytes_file(tmp_path, "mine.csv", LATIN1)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[task]\nname = "user"\n[task.bench]\npath = "{bad}"\n'
                   '[eval]\nsplits = ["test"]\n')
    code, out = run_cli("data", cfg, "--out", tmp_path / "run", "--quick")
    # the run logs its stage names ("[run ] data") before the one error line
    errors = [ln for ln in out.splitlines() if ln.startswith("error")]
    assert code != 0 and "Traceback" not in out and len(errors) == 1, out
    assert_one_line_error(code, errors[0], "mine.csv:2: not UTF-8 text")
    assert not (tmp_path / "run" / "data").exists()


def test_utf8_bom_is_accepted(tmp_path):
    """Spreadsheet exports start with a byte-order mark; it is not part of the first column."""
    from nesyloop.tasks.bench import BenchSettings, load_task

    f = _bytes_file(tmp_path, "mine.csv", b"\xef\xbb\xbfquestion,answer\nWhat is 1+1?,2\n")
    assert load_task("user", BenchSettings(path=str(f), test_fraction=1.0))["test"][0].answer == "2"


@pytest.mark.parametrize("name", ["big.jsonl", "big.csv", "big.json"])
def test_user_row_over_the_size_limit(tmp_path, name):
    """A row over MAX_ROW_BYTES is refused while streaming, naming its line."""
    q = "x" * (MAX_ROW_BYTES + 10)
    if name.endswith(".csv"):
        text = f"question,answer\nok?,1\n{q},2\n"
    elif name.endswith(".jsonl"):
        text = json.dumps({"question": "ok?", "answer": 1}) + "\n" + \
            json.dumps({"question": q, "answer": 2}) + "\n"
    else:
        text = "[\n" + json.dumps({"question": "ok?", "answer": 1}) + ",\n" + \
            json.dumps({"question": q, "answer": 2}) + "\n]"
    f = tmp_path / name
    f.write_text(text)
    code, out = eval_user(tmp_path, f)
    assert_one_line_error(code, out, f"{name}:{2 if name.endswith('.jsonl') else 3}:",
                          "1024 KB limit of one row")
    assert not (tmp_path / "out").exists()


def test_user_file_over_the_size_limit_is_refused_before_reading(tmp_path):
    f = tmp_path / "huge.jsonl"
    with f.open("wb") as fh:  # sparse: no disk used, nothing read
        fh.truncate(MAX_FILE_BYTES + 1)
    code, out = eval_user(tmp_path, f)
    assert_one_line_error(code, out, "huge.jsonl: 256 MB is over the 256 MB limit")


def test_json_array_user_file_is_accepted(tmp_path):
    f = tmp_path / "mine.json"
    f.write_text(json.dumps(GOOD, indent=1))
    from nesyloop.tasks.bench import BenchSettings, load_task

    got = load_task("user", BenchSettings(path=str(f), test_fraction=1.0))["test"]
    assert sorted((e.id, e.answer, e.answer_type) for e in got) == \
        [("q1", "5", "number"), ("q2", "B", "choice")]
    jsonl(f, GOOD)  # one object a line in a .json file is read too
    assert len(load_task("user", BenchSettings(path=str(f), test_fraction=1.0))["test"]) == 2


@pytest.mark.parametrize("name, text, parts", [
    ("arr.json", '[\n {"question": "q?", "answer": 1},\n 7\n]', ["arr.json:3:", "item 2"]),
    ("obj.json", '{"question": "q?", "answer": 1,\n "x": [1]}',
     ["obj.json:", "invalid JSON"]),  # one object over two lines is neither form
    ("dict.json", '  {"rows": [{"question": "q?", "answer": 1}]}', ["dict.json:1:"]),
    ("broken.json", '[{"question": "q?", "answer": 1},\n {"question": ]', ["broken.json:2:"]),
    ("mine.txt", "question,answer\n", ["mine.txt: expected a .jsonl, .json or .csv file"]),
    ("empty.jsonl", "\n\n", ["empty.jsonl: no rows"]),
    ("head.csv", "question,answer\n", ["head.csv: no rows"]),
    ("dupcol.csv", "question,answer,answer\nq?,1,2\n", ["dupcol.csv:1: column 'answer'"]),
    ("field.csv", "question,answer\n" + "x" * 200_000 + ",1\n",  # Python's csv field limit
     ["field.csv:2: bad CSV (field larger than field limit (131072))"]),
])
def test_user_file_shape_errors(tmp_path, name, text, parts):
    f = tmp_path / name
    f.write_text(text)
    code, out = eval_user(tmp_path, f)
    assert_one_line_error(code, out, *parts)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("row, parts", [
    ({"id": ["a"], "question": "q?", "answer": 1}, ["bad.jsonl:1: field 'id'"]),
    ({"id": "", "question": "q?", "answer": 1}, ["bad.jsonl:1: field 'id'"]),
    ({"question": "q?", "answer": 1, "subtask": {"a": 1}}, ["bad.jsonl:1: field 'subtask'"]),
    ({"question": "q?", "answer": "8", "choices": ["8", " 8 "]},
     ["bad.jsonl:1: field 'choices' lists the option '8' twice"]),
    ('{"question": "q?", "answer": NaN}', ["bad.jsonl:1: field 'answer'"]),
    ({"question": "q?", "answer": True}, ["bad.jsonl:1: field 'answer'"]),
    ({"question": "   ", "answer": 1}, ["bad.jsonl:1: field 'question'"]),
    ({"question": "q?", "answer": 1, "rationale": 5}, ["bad.jsonl:1: field 'rationale'"]),
])
def test_user_field_errors(tmp_path, row, parts):
    code, out = eval_user(tmp_path, jsonl(tmp_path / "bad.jsonl", [row]))
    assert_one_line_error(code, out, *parts)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- eval options


def test_missing_student_fails_before_loading_data(tmp_path):
    """The data path does not exist either: the student is checked first, and no folder made."""
    code, out = run_cli("eval", "-s", tmp_path / "MISSING", "--task", "user", "--data",
                        tmp_path / "nowhere.jsonl", "--out", tmp_path / "out")
    assert_one_line_error(code, out, "MISSING", "no such model folder")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make, parts", [
    (lambda t: (t / "file.txt").write_text("x") and t / "file.txt",
     ["--out", "exists and is not a folder"]),
    (lambda t: (t / "file.txt").write_text("x") and t / "file.txt" / "sub",
     ["--out", "is a file, not a folder"]),
    (lambda t: Path("/proc/nesyloop-eval"), ["--out /proc/nesyloop-eval", "system folder"]),
])
def test_bad_out_folder(tmp_path, make, parts):
    out = make(tmp_path)
    code, text = run_cli("eval", "-s", "smollm2", "--task", "user", "--data",
                         jsonl(tmp_path / "ok.jsonl", GOOD), "--out", out)
    assert_one_line_error(code, text, *parts)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_out_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    code, text = run_cli("eval", "-s", "smollm2", "--task", "user", "--data",
                         jsonl(tmp_path / "ok.jsonl", GOOD), "--out", ro / "out")
    assert_one_line_error(code, text, "--out", "is not writable")


@pytest.mark.parametrize("args, parts", [
    (["--limit", "0"], ["--limit: must be a whole number of at least 1 (got 0)"]),
    (["--batch-size", "-2"], ["--batch-size: must be a whole number of at least 1"]),
    (["--max-new-tokens", "0"], ["--max-new-tokens: must be"]),
    (["--max-new-tokens", "10000000"], ["--max-new-tokens: at most 32768 (got 10000000)"]),
    (["--batch-size", "100000"], ["--batch-size: at most 4096"]),
    (["--shots", "5"], ["--shots: must be 0 or 3 (got 5)"]),
    (["--subtask", "x"], ["--subtask: no example of the user data has subtask 'x'"]),
    (["--json", "x.json"], ["--json: only with --predictions"]),
    (["--split", "validation"], ["--split: 'validation' is not a split of user"]),
    (["--hub"], ["user: a user data set is a local file"]),
])
def test_bad_eval_option_values(tmp_path, args, parts):
    code, out = eval_user(tmp_path, jsonl(tmp_path / "ok.jsonl", GOOD), *args)
    assert_one_line_error(code, out, *parts)
    assert not (tmp_path / "out").exists()


def test_bad_kb_subtask_and_student_name(tmp_path):
    notdb = tmp_path / "kb.sqlite"
    notdb.write_text("not a database")
    ok = jsonl(tmp_path / "ok.jsonl", GOOD)
    code, out = eval_user(tmp_path, ok, "--kb", notdb)
    assert_one_line_error(code, out, "--kb:", "not an SQLite file")
    code, out = run_cli("eval", "-s", "smollm2", "--task", "gsm8k", "--subtask", "x",
                        "--out", tmp_path / "out")
    assert_one_line_error(code, out, "--subtask: gsm8k has no subtasks")
    code, out = run_cli("eval", "-s", " ", "--task", "user", "--data", ok,
                        "--out", tmp_path / "out")
    assert_one_line_error(code, out, "--student: an empty name")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- --predictions


def preds_cli(tmp_path: Path, rows: list, *extra) -> tuple[int, str]:
    data = jsonl(tmp_path / "ok.jsonl", GOOD)
    p = jsonl(tmp_path / "preds.jsonl", rows)
    return run_cli("eval", "--task", "user", "--data", data, "--predictions", p,
                   "--json", tmp_path / "scores.json", *extra)


def test_predictions_scored_by_id_and_question(tmp_path):
    code, out = preds_cli(tmp_path, [
        {"id": "q1", "prediction": "2 + 3 = 5. The answer is 5."},
        {"question": "  Pick the\n even one. ", "prediction": "So the answer is (A) or (B)."},
    ])
    assert code == 0, out
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores == {"subtasks": {}, "overall": {"strict": 0.5, "flexible": 0.5, "n": 2}}
    assert "| preds | 50.0 | 50.0 | 2 |" in out


@pytest.mark.parametrize("rows, parts", [
    ([{"id": "q9", "prediction": "5"}], ["preds.jsonl:1: no example of user has id 'q9'"]),
    ([{"id": "q1", "prediction": "5"}, {"question": "What is 2 + 3?", "prediction": "6"}],
     ["preds.jsonl:2: predicts example 'q1' again (first on line 1)"]),
    ([{"id": "q1", "prediction": "5"}, {"question": "What is 7 + 3?", "prediction": "6"}],
     ["preds.jsonl:2: no example of user has this question"]),
    ([{"id": "q1"}], ["preds.jsonl:1: missing field 'prediction'"]),
    ([{"id": "q1", "prediction": 5}], ["preds.jsonl:1: field 'prediction' must be a string"]),
    ([{"prediction": "5"}], ["preds.jsonl:1: give field 'id' or 'question'"]),
    ([{"id": ["q1"], "prediction": "5"}], ["preds.jsonl:1: field 'id' must be"]),
    (["[1, 2]"], ["preds.jsonl:1: expected a JSON object per line"]),
    (["{oops"], ["preds.jsonl:1: invalid JSON"]),
    (["[" * 100_000], ["preds.jsonl:1: invalid JSON (nested too deeply)"]),
    ([""], ["preds.jsonl: no predictions"]),
    ([{"id": "q1", "prediction": "x" * (MAX_ROW_BYTES + 1)}],
     ["preds.jsonl:1: the line is over the 1024 KB limit of one row"]),
])
def test_bad_prediction_lines(tmp_path, rows, parts):
    code, out = preds_cli(tmp_path, rows)
    assert_one_line_error(code, out, *parts)
    assert not (tmp_path / "scores.json").exists()


def test_predictions_file_not_utf8_missing_or_combined(tmp_path):
    data = jsonl(tmp_path / "ok.jsonl", GOOD)
    bad = _bytes_file(tmp_path, "p.jsonl", b'{"id": "q1", "prediction": "caf\xe9"}\n')
    base = ["eval", "--task", "user", "--data", data]
    code, out = run_cli(*base, "--predictions", bad)
    assert_one_line_error(code, out, "p.jsonl:1: not UTF-8 text")
    code, out = run_cli(*base, "--predictions", tmp_path / "none.jsonl")
    assert_one_line_error(code, out, "--predictions:", "none.jsonl is not a file")
    code, out = run_cli(*base, "--predictions", bad, "-s", "smollm2")
    assert_one_line_error(code, out, "exactly one of --student")
    code, out = run_cli(*base)
    assert_one_line_error(code, out, "exactly one of --student")
    code, out = run_cli("eval", "-s", "smollm2")
    assert_one_line_error(code, out, "--task: give the task to evaluate on: bazaar, gsm8k")
    code, out = run_cli(*base, "--predictions", bad, "--kb", tmp_path / "kb.sqlite")
    assert_one_line_error(code, out, "--kb: does not apply to --predictions")
    for target, part in ((tmp_path, "is a folder"), (Path("/proc/x.json"), "system folder")):
        code, out = run_cli(*base, "--predictions", bad, "--json", target)
        assert_one_line_error(code, out, "--json", part)


@pytest.mark.skipif(not (data_root() / "bbh").is_dir(), reason="shared BBH data not found")
def test_prediction_with_unknown_subtask(tmp_path):
    p = jsonl(tmp_path / "p.jsonl", [{"subtask": "snark", "question": "q", "prediction": "x"}])
    code, out = run_cli("eval", "--task", "bbh", "--subtask", "snarks", "--predictions", p)
    assert_one_line_error(code, out, "p.jsonl:1: field 'subtask' 'snark' is not a subtask")


def test_bad_benchmark_data_path(tmp_path):
    """--data for BBH: a file instead of its folder; a subtask file that is not UTF-8."""
    f = jsonl(tmp_path / "x.jsonl", GOOD)
    base = ["eval", "-s", "smollm2", "--task", "bbh", "--subtask", "navigate",
            "--out", tmp_path / "out"]
    code, out = run_cli(*base, "--data", f)
    assert_one_line_error(code, out, "bbh:", "x.jsonl is a file; give the folder")
    folder = tmp_path / "bbh"
    folder.mkdir()
    (folder / "navigate.json").write_bytes(
        b'{"examples": [\n{"input": "caf\xe9", "target": "No"}]}')
    code, out = run_cli(*base, "--data", folder)
    assert_one_line_error(code, out, "navigate.json:2: not UTF-8 text")
    assert not (tmp_path / "out").exists()
