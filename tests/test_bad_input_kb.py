"""Bad input to the knowledge-base commands (issue 13, part 3): every case must end with one
``error:`` line naming the file, line or field, a non-zero exit, no traceback, the KB file
unchanged and nothing left behind. Real SQLite files throughout; damaged files are made from a
real KB by overwriting or truncating it past its first page."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nesyloop.cli import app
from nesyloop.kb import KnowledgeBase
from nesyloop.kb.store import MAX_TEXT_CHARS

PAGE = 4096


def _build(path: Path, n: int = 30) -> None:
    """A real KB with entries, edits and disabled entries: several pages per table."""
    with KnowledgeBase(path) as kb:
        for i in range(n):
            e = kb.add(f"The student used a wrong price for glimwick lot {i}. " * 3,
                       [f"A glimwick of lot {i} costs {i + 3} coins."], source_id=f"q{i}",
                       question=f"Tom buys {i} glimwicks. How many coins? " * 4,
                       student_response="2 x 5 = 10 coins. " * 10, teacher="t", run="r",
                       round=i % 3)
            kb.edit(e, knowledge=[f"Lot {i}: one glimwick costs {i + 3} coins. " * 5],
                    note=f"fixed lot {i}")
            if i % 4 == 0:
                kb.set_enabled(e, False, note="hide")


@pytest.fixture(scope="module")
def good_kb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kb") / "kb.sqlite"
    _build(path)
    return path


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _sql(path: Path, *stmts: str) -> None:
    db = sqlite3.connect(path)
    for stmt in stmts:
        db.execute(stmt)
    db.commit()
    db.close()


def _make(kind: str, good: Path, folder: Path) -> Path:
    """A bad --kb of the given kind in ``folder``."""
    path = folder / "kb.sqlite"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
        return path
    if kind == "empty":
        path.write_bytes(b"")
        return path
    if kind == "not-sqlite":
        path.write_bytes(b"glimwick price list\n" * 400)
        return path
    if kind == "other-schema":
        _sql(path, "CREATE TABLE prices (item TEXT, coins INTEGER)",
             "INSERT INTO prices VALUES ('glimwick', 7)")
        return path
    shutil.copy(good, path)
    pages = path.stat().st_size // PAGE
    if kind == "newer-version":
        _sql(path, "PRAGMA user_version=99")
    elif kind == "missing-table":
        _sql(path, "DROP TABLE history")
    elif kind == "damaged-middle":  # garbage over a page past the first
        _overwrite(path, pages // 2 * PAGE, b"\xde\xad\xbe\xef" * (PAGE // 4))
    elif kind == "damaged-last":
        _overwrite(path, (pages - 1) * PAGE + 8, b"\xff" * 64)
    elif kind == "truncated":
        os.truncate(path, pages // 2 * PAGE)
    else:
        raise AssertionError(kind)
    return path


KINDS = {  # kind -> what the one error line must say
    "missing": "no such knowledge base file",
    "directory": "not a file",
    "empty": "empty file (0 bytes)",
    "not-sqlite": "not a knowledge base file",
    "other-schema": "not a knowledge base (an SQLite file with other tables: prices)",
    "newer-version": "schema version 99 is newer",
    "missing-table": "not a knowledge base (missing history)",
    "damaged-middle": "the file is damaged",
    "damaged-last": "the file is damaged",
    "truncated": "the file is damaged",
}
READS = {"list": ["list", "--all"], "show": ["show", "1"], "search": ["search", "glimwick price"],
         "history": ["history", "1"], "stats": ["stats"], "export": ["export", "OUT/out.jsonl"],
         "markdown": ["markdown", "OUT/out.md"]}
WRITES = {"edit": ["edit", "2", "--summary", "new"], "disable": ["disable", "2"],
          "enable": ["enable", "1"], "remove": ["remove", "2", "--yes"],
          "add": ["add", "--summary", "s", "--knowledge", "k"], "import": ["import", "IMPORT"]}
# add and import may create a new KB: a missing file (or an empty one) is not an error for them
CREATES = {("missing", "add"), ("missing", "import"), ("empty", "add"), ("empty", "import")}


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder`` with its bytes and mtime (folders: just their presence)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file()
            else "dir" for p in sorted(folder.rglob("*"))}


def kb_cli(*args, input: str | None = None):
    return CliRunner().invoke(app, ["kb", *map(str, args)], input=input,
                              env={"COLUMNS": "100"})


def one_error_line(res, *needles: str) -> str:
    """Exit != 0, exactly one non-empty line, ``error: ...`` with every needle, no traceback."""
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _args(args: list[str], tmp_path: Path, importable: Path) -> list[str]:
    return [str(tmp_path / a[4:]) if a.startswith("OUT/") else
            str(importable) if a == "IMPORT" else a for a in args]


@pytest.fixture
def importable(good_kb, tmp_path_factory) -> Path:
    """A valid import file (two new entries), outside the test's folder."""
    path = tmp_path_factory.mktemp("imp") / "new.jsonl"
    path.write_text("".join(json.dumps({"summary": f"s{i}", "knowledge": [f"k{i}"]}) + "\n"
                            for i in range(2)), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", [*READS, *WRITES])
@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_kb_file(kind, command, good_kb, importable, tmp_path):
    if (kind, command) in CREATES:
        pytest.skip("add/import create a new KB here by design")
    folder = tmp_path / "kbdir"
    folder.mkdir()
    path = _make(kind, good_kb, folder)
    before = snapshot(tmp_path)
    args = _args({**READS, **WRITES}[command], tmp_path, importable)
    msg = one_error_line(kb_cli(*args, "--kb", path), KINDS[kind])
    assert str(path) in msg  # names the file
    assert snapshot(tmp_path) == before  # unchanged, no export, no -wal/-shm, nothing new


@pytest.mark.parametrize("kind", ["damaged-middle", "truncated"])
def test_damaged_kb_export_refuses_instead_of_dropping_history(kind, good_kb, tmp_path):
    """The export is documented as lossless: a damaged file is refused, not exported in part."""
    path = _make(kind, good_kb, tmp_path)
    out = tmp_path / "export" / "kb.jsonl"
    out.parent.mkdir()
    one_error_line(kb_cli("export", out, "--kb", path), str(path), "damaged")
    assert list(out.parent.iterdir()) == []  # no export, no temp file


@pytest.mark.parametrize("field, value, needle", [
    ("knowledge", "not json", "entry 3: field 'knowledge' is damaged"),
    ("summary", "CAST(x'ff41' AS TEXT)", "the file is damaged"),  # invalid UTF-8 in the file
])
@pytest.mark.parametrize("command", ["list", "show", "stats", "export", "markdown", "edit"])
def test_damaged_row_is_refused(field, value, needle, command, good_kb, tmp_path):
    """Damage inside a row passes SQLite's checks: reading it is still one clear line."""
    path = tmp_path / "kb.sqlite"
    shutil.copy(good_kb, path)
    expr = value if value.startswith("CAST") else f"'{value}'"
    _sql(path, f"UPDATE entries SET {field} = {expr} WHERE id = 3")
    args = {"list": ["list", "--all"], "show": ["show", "3"], "stats": ["stats"],
            "export": ["export", tmp_path / "out.jsonl"],
            "markdown": ["markdown", tmp_path / "out.md"],
            "edit": ["edit", "3", "--summary", "x"]}[command]
    before = snapshot(tmp_path)
    one_error_line(kb_cli(*args, "--kb", path), str(path), needle)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["list", "show", "search", "history", "stats", "export",
                                     "markdown"])
def test_read_commands_never_change_a_good_kb(command, good_kb, tmp_path):
    """Read commands open the KB read-only: same bytes and mtime, no -wal/-shm left."""
    folder = tmp_path / "kbdir"
    folder.mkdir()
    path = folder / "kb.sqlite"
    shutil.copy2(good_kb, path)
    before = snapshot(folder)
    res = kb_cli(*_args(READS[command], tmp_path, path), "--kb", path)
    assert res.exit_code == 0, res.output
    assert snapshot(folder) == before


def test_empty_file_stays_empty_for_reads_and_failed_creates(tmp_path):
    path = tmp_path / "kb.sqlite"
    path.write_bytes(b"")
    for args in (["list"], ["stats"], ["search", "glimwick"], ["export", tmp_path / "o.jsonl"]):
        one_error_line(kb_cli(*args, "--kb", path), str(path), "empty file (0 bytes)")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"summary": "s", "knowledge": 3}\n', encoding="utf-8")
    one_error_line(kb_cli("import", bad, "--kb", path), f"{bad}:1", "knowledge")
    assert path.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.jsonl", "kb.sqlite"]


@pytest.mark.parametrize("args", [["edit", "2", "--summary", "new"], ["disable", "2"],
                                  ["enable", "1"], ["remove", "2", "--yes"],
                                  ["add", "--summary", "s"], ["import", "IMPORT"]])
def test_read_only_kb_file_is_not_edited(args, good_kb, importable, tmp_path):
    path = tmp_path / "kb.sqlite"
    shutil.copy(good_kb, path)
    path.chmod(0o444)
    before = snapshot(tmp_path)
    try:
        one_error_line(kb_cli(*_args(args, tmp_path, importable), "--kb", path), str(path),
                       "read-only")
        assert snapshot(tmp_path) == before
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("args", [["show", "999"], ["history", "999"], ["disable", "999"],
                                  ["enable", "999"], ["remove", "999", "--yes"],
                                  ["edit", "999", "--summary", "s"], ["show", str(2 ** 70)],
                                  ["history", str(2 ** 70)], ["edit", str(2 ** 70), "--summary",
                                                               "s"]])
def test_unknown_entry_id(args, good_kb, tmp_path):
    path = tmp_path / "kb.sqlite"
    shutil.copy(good_kb, path)
    before = snapshot(tmp_path)
    one_error_line(kb_cli(*args, "--kb", path), str(path), f"no entry {args[1]}")
    assert snapshot(tmp_path) == before


HUGE = "x" * (MAX_TEXT_CHARS + 1)
BAD_UTF8 = "caf\udce9"  # what Python makes of the undecodable argv byte 0xe9


@pytest.mark.parametrize("args, needle", [
    (["edit", "2", "--knowledge", ""], "field 'knowledge' item 1 must be a non-empty string"),
    (["edit", "2", "--knowledge", "ok", "--knowledge", "   "], "'knowledge' item 2"),
    (["edit", "2", "--summary", " "], "field 'summary' must be a non-empty string"),
    (["add", "--summary", ""], "field 'summary' must be a non-empty string"),
    (["edit", "2", "--knowledge", HUGE], "--knowledge is 20,001 characters long"),
    (["add", "--summary", HUGE], "--summary is 20,001 characters long"),
    (["edit", "2", "--knowledge", BAD_UTF8], "--knowledge is not valid UTF-8"),
    (["edit", "2", "--summary", BAD_UTF8], "--summary is not valid UTF-8"),
    (["disable", "2", "--note", BAD_UTF8], "--note is not valid UTF-8"),
    (["add", "--summary", "s", "--note", BAD_UTF8], "--note is not valid UTF-8"),
    (["search", BAD_UTF8], "QUERY is not valid UTF-8"),
    (["search", HUGE], "QUERY is 20,001 characters long"),
])
def test_bad_text_values(args, needle, good_kb, tmp_path):
    path = tmp_path / "kb.sqlite"
    shutil.copy(good_kb, path)
    before = snapshot(tmp_path)
    one_error_line(kb_cli(*args, "--kb", path), needle)
    assert snapshot(tmp_path) == before


GOOD_LINE = json.dumps({"summary": "s", "knowledge": ["k"]})


@pytest.mark.parametrize("content, needle", [
    (GOOD_LINE.encode() + b"\n" + b'{"summary": "caf\xe9", "knowledge": []}\n',
     ":2: not valid UTF-8"),
    (b"\xff\xfe" + GOOD_LINE.encode("utf-16-le"), ":1: not valid UTF-8"),
    (GOOD_LINE.encode() + b'\n{"summary": "x", "knowledge": \n', ":2: invalid JSON"),
    (b'["summary", "knowledge"]\n', ":1: expected a JSON object"),
    (b'{"summary": "s", "knowledge": ["k"], "colour": "red"}\n', ":1: entry: unknown field"),
    (b'{"summary": "s", "knowledge": [""]}\n', ":1: entry: field 'knowledge' item 1"),
    (b'{"summary": "s", "knowledge": ["k"], "created": NaN}\n', ":1: entry: field 'created'"),
    (b'{"summary": "s", "knowledge": ["k"], "id": 1180591620717411303424}\n',
     ":1: entry: field 'id' is out of range"),
    # orjson, the fast reader, takes this integer for a float: the line is read again
    (b'{"summary": "s", "knowledge": ["k"], "created": 1180591620717411303424}\n',
     ":1: entry: field 'created' is out of range"),
    (b'{"summary": "caf\\udce9", "knowledge": ["k"]}\n',
     ":1: entry: field 'summary' is not valid UTF-8"),
    (GOOD_LINE.encode() + b'\n{"summary": "s", "knowledge": ["k"], '
     b'"history": [{"action": "edit", "at": Infinity}]}\n', ":2: history[0].at"),
    (('{"summary": "' + HUGE + '", "knowledge": []}\n').encode(), ":1: entry: field 'summary' is"),
    (b"[" * 100_000 + b"\n", ":1: invalid JSON"),
])
@pytest.mark.parametrize("target", ["existing", "new"])
def test_bad_import_file_names_file_and_line(content, needle, target, good_kb, tmp_path):
    path = tmp_path / "kb.sqlite"
    if target == "existing":
        shutil.copy(good_kb, path)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    before = snapshot(tmp_path)
    one_error_line(kb_cli("import", bad, "--kb", path), f"{bad}{needle}")
    assert snapshot(tmp_path) == before  # all or nothing; a new KB is not left behind


@pytest.mark.parametrize("make, needle", [
    (lambda p: None, "file not found"), (lambda p: p.mkdir(), "not a file")])
def test_import_file_missing_or_a_folder(make, needle, good_kb, tmp_path):
    path = tmp_path / "kb.sqlite"
    shutil.copy(good_kb, path)
    src = tmp_path / "in.jsonl"
    make(src)
    before = snapshot(tmp_path)
    one_error_line(kb_cli("import", src, "--kb", path), f"{src}: {needle}")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["export", "markdown"])
def test_export_to_a_folder_or_below_a_file(command, good_kb, tmp_path):
    path = tmp_path / "kb.sqlite"
    shutil.copy(good_kb, path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain").write_text("x")
    before = snapshot(tmp_path)
    for out in (tmp_path / "folder", tmp_path / "plain" / "out"):
        one_error_line(kb_cli(command, out, "--kb", path))
        assert snapshot(tmp_path) == before  # no temp file left in the folder


@pytest.mark.parametrize("kind, needle", [("empty", "not a knowledge base"),
                                          ("other-schema", "not a knowledge base"),
                                          ("newer-version", "schema version 99"),
                                          ("damaged-middle", "the file is damaged")])
def test_eval_kb_refused_before_any_work(kind, needle, good_kb, tmp_path):
    folder = tmp_path / "kbdir"
    folder.mkdir()
    path = _make(kind, good_kb, folder)
    before = snapshot(tmp_path)
    res = CliRunner().invoke(app, ["eval", "-s", str(tmp_path / "no-model"), "--task", "bazaar",
                                   "--kb", str(path), "--out", str(tmp_path / "out")])
    one_error_line(res, str(path), needle)
    assert snapshot(tmp_path) == before  # the 0-byte file got no schema; no output folder


@pytest.mark.parametrize("kind", ["other-schema", "empty", "damaged-middle"])
def test_serve_kb_not_a_kb_exits_before_listening(kind, good_kb, tmp_path):
    """Before: the server started and answered every request with 500."""
    folder = tmp_path / "kbdir"
    folder.mkdir()
    path = _make(kind, good_kb, folder)
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "nesyloop.cli", "serve", "--model", "smollm2",
                           "--kb", str(path), "--port", "0"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode != 0 and proc.stdout == "", proc.stdout  # never printed "serving"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: kb "), proc.stderr
    assert str(path) in lines[0] and KINDS[kind] in lines[0]
    assert snapshot(tmp_path) == before


def test_attribute_refuses_a_bad_kb_before_any_work(tmp_path):
    run = tmp_path / "run"
    (run / "train-nesycd" / "model").mkdir(parents=True)
    (run / "data").mkdir()
    (run / "data" / "test-rare.jsonl").write_text("", encoding="utf-8")
    (run / "kb").mkdir()
    path = run / "kb" / "kb.sqlite"
    path.write_bytes(b"")
    before = snapshot(tmp_path)
    one_error_line(kb_cli("attribute", "--run", run, "--out", tmp_path / "attr.json"),
                   str(path), "empty file (0 bytes)")
    assert snapshot(tmp_path) == before
