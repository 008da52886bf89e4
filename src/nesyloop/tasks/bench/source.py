"""Where a benchmark's rows come from: a local file or folder (upstream format), or the hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import DataError
from ...io import MAX_ROW_BYTES, check_file_size, iter_jsonl_lines, read_json
from .settings import BenchSettings, data_root


def local_path(task: str, s: BenchSettings, default: str, folder: bool = False) -> Path:
    """``s.path`` or ``$NESYLOOP_DATA/<default>``; a clear error when it does not exist (or,
    for a task read from a folder of files, is not a folder)."""
    p = Path(s.path).expanduser() if s.path else data_root() / default
    if not p.exists():
        how = "the path does not exist" if s.path else "no local copy"
        raise DataError(f"{task}: {how} at {p}; set [task.bench] path (eval: --data), "
                        f"NESYLOOP_DATA, or hub = true (eval: --hub)")
    if folder and not p.is_dir():
        raise DataError(f"{task}: {p} is a file; give the folder of its <subtask> files "
                        f"([task.bench] path, eval: --data)")
    return p


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Records of a .json (a list, or a dict holding one list) or .jsonl file, within the input
    size limits (io.MAX_FILE_BYTES a file, io.MAX_ROW_BYTES a JSONL line)."""
    if path.is_file():
        check_file_size(path)
    if path.suffix == ".jsonl":
        return [obj for _, obj in iter_jsonl_lines(path, MAX_ROW_BYTES)]
    data = read_json(path)
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else data
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a JSON list of objects")
    return data


def hub_rows(task: str, name: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """Rows of a Hugging Face data set split (needs ``datasets`` and a network or its cache)."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets ships with the test extra
        raise DataError(f"{task}: hub = true needs the 'datasets' package "
                        f"(pip install 'nesyloop[hub]')") from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one line
        raise DataError(f"{task}: cannot load {name}"
                        f"{'/' + config if config else ''} [{split}] from the hub ({err})") from None
    return [dict(r) for r in ds]


def field(row: dict[str, Any], where: str, *names: str) -> Any:
    """The first present of ``names`` in ``row``; a DataError naming the field when missing."""
    for n in names:
        if row.get(n) is not None:
            return row[n]
    raise DataError(f"{where}: missing field {names[0]!r}")
