"""Atomic file writes and JSONL helpers: a killed run never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from .errors import DataError

_encode_str = json.encoder.encode_basestring  # json.dumps(str, ensure_ascii=False), in C


def dumps_json(obj: Any) -> str:
    """Compact JSON text of ``obj`` (orjson; the standard library for what orjson refuses:
    integers beyond 64 bits, lone surrogates)."""
    try:
        return orjson.dumps(obj).decode("utf-8")
    except orjson.JSONEncodeError:
        return json.dumps(obj, ensure_ascii=False)


def dumps_str_list(texts: list[str]) -> str:
    """``json.dumps(texts, ensure_ascii=False)``, byte for byte, without its overhead."""
    return "[" + ", ".join(map(_encode_str, texts)) + "]"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; artifacts are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def loads_json(text: str, path: str | os.PathLike, line: int | None = None) -> Any:
    """``json.loads`` with a one-line DataError naming ``path`` and the line (``line``, or
    the parser's own line in ``text``): invalid JSON, or nesting too deep to parse."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{line or err.lineno}: invalid JSON ({err.msg})") from None
    except RecursionError:
        raise DataError(f"{path}:{line or 1}: invalid JSON (nested too deeply)") from None


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); "
                        f"save the file as UTF-8") from None
    return loads_json(text, path)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write one JSON object per line, atomically. Returns the number of records."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    for _, obj in iter_jsonl_lines(path):
        yield obj


# Size limits of input files written by people or other tools (user data sets, predictions):
# checked before reading (the file) and while streaming (each row), never after reading it all.
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_ROW_BYTES = 1024 * 1024


def check_file_size(path: str | os.PathLike, limit: int = MAX_FILE_BYTES) -> None:
    """A one-line DataError when ``path`` is larger than ``limit`` bytes."""
    size = Path(path).stat().st_size
    if size > limit:
        raise DataError(f"{path}: {size / 2**20:.0f} MB is over the {limit / 2**20:.0f} MB "
                        f"limit of an input file; split it")


def iter_text_lines(path: str | os.PathLike, max_line_bytes: int | None = None
                    ) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file (a leading BOM dropped), read in binary so a line
    that is not UTF-8, or longer than ``max_line_bytes``, is a DataError naming its number."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file")
    with path.open("rb") as fh:
        lineno = 0
        while True:
            raw = fh.readline(max_line_bytes + 1) if max_line_bytes else fh.readline()
            if not raw:
                return
            lineno += 1
            if max_line_bytes and len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise DataError(f"{path}:{lineno}: the line is over the "
                                f"{max_line_bytes // 1024} KB limit of one row")
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} "
                                f"at column {err.start + 1}); save the file as UTF-8") from None


def iter_jsonl_lines(path: str | os.PathLike, max_line_bytes: int | None = None,
                     ) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a bad line is a one-line DataError
    (invalid JSON, not an object, not UTF-8, or longer than ``max_line_bytes``)."""
    for lineno, line in iter_text_lines(path, max_line_bytes):
        if not line.strip():
            continue
        obj = loads_json(line, path, lineno)
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line")
        yield lineno, obj


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return list(iter_jsonl(path))


_SYSTEM_ROOTS = ("/proc", "/sys", "/dev")


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot hold a run, before anything is written: an existing
    file, a folder under /proc, /sys or /dev, or one whose nearest existing parent is not
    writable. Returns the path; creates nothing (the caller makes it when it writes)."""
    path = Path(path)
    resolved = path.resolve()
    if any(resolved == Path(r) or Path(r) in resolved.parents for r in _SYSTEM_ROOTS):
        raise DataError(f"{flag} {path}: a system folder cannot hold a run; choose another")
    if path.exists() and not path.is_dir():
        raise DataError(f"{flag} {path}: exists and is not a folder")
    probe = resolved
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DataError(f"{flag} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"{flag} {path}: {probe} is not writable")
    return path


def check_out_file(path: str | os.PathLike, flag: str) -> Path:
    """Refuse an output file that cannot be written, before anything runs: an existing folder,
    a path under /proc, /sys or /dev, or one whose nearest existing parent is not a writable
    folder. Returns the path; creates nothing."""
    path = Path(path)
    if str(path).strip() == "" or path.name in ("", ".", ".."):
        raise DataError(f"{flag} {str(path)!r}: give a file name")
    if path.is_dir():
        raise DataError(f"{flag} {path}: is a folder; give a file name")
    check_out_dir(path.parent, flag)
    return path
