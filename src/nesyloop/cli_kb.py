"""``nesyloop kb``: read, search and curate a NesyCD knowledge base. Every command takes ``--kb
FILE`` or ``--run DIR`` (its ``kb/kb.sqlite``; default: the config's ``run.out``); ``search`` runs
the student's own retrieval, so it shows what the student would get."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer

from .errors import DataError, NesyloopError
from .kb.store import (Entry, KnowledgeBase, check_length, check_utf8, db_error, existing_file,
                       open_kb, side_files)
from .kb.view import changes, describe_change, format_entry, kb_stats, local_time, one_line, row
from .methods.nesycd.stages import task_description

kb_app = typer.Typer(no_args_is_help=True, help="Inspect and curate a NesyCD knowledge base.")

KbOpt = Annotated[Path | None, typer.Option("--kb", help="The knowledge base file (.sqlite).")]
RunOpt = Annotated[Path | None, typer.Option(
    "--run", help="A run directory; its KB is DIR/kb/kb.sqlite [default: the config's run.out].")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="A TOML config [default: the built-in one].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="Why; kept in the history.")]
IdArg = Annotated[int, typer.Argument(help="Entry id.", show_default=False)]
KnowledgeOpt = Annotated[list[str] | None, typer.Option(
    "--knowledge", help="A knowledge item (repeatable).")]


# -- non-CLI helpers ---------------------------------------------------------------------------
def kb_path(kb: Path | None, run: Path | None, config: Path | None = None) -> Path:
    """The KB file named by --kb, or DIR/kb/kb.sqlite of --run (default: the config's run.out)."""
    if kb is not None and run is not None:
        raise NesyloopError("give --kb or --run, not both")
    if kb is not None:
        return kb
    if run is None:
        from .config import load_config

        run = Path(load_config(config).run.out)
    return run / "kb" / "kb.sqlite"


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-"


# -- CLI plumbing ------------------------------------------------------------------------------
def _fail(err: Exception) -> NoReturn:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


def _width() -> int:
    return max(shutil.get_terminal_size((100, 24)).columns, 40)


def _check_args(values: dict[str, str | list[str] | None]) -> None:
    """Free-text arguments must be storable text: undecodable bytes (lone surrogates in Python)
    are a one-line error naming the option, and exit 2."""
    try:
        for name, value in values.items():
            for v in [value] if isinstance(value, str) else value or []:
                check_utf8(name, v)
                check_length(name, v)
    except NesyloopError as err:
        _fail(err)


def _writable(path: Path) -> None:
    """Refuse to change a KB file whose permissions say read-only (even for root)."""
    bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    if path.is_file() and (not os.access(path, os.W_OK) or not path.stat().st_mode & bits):
        raise NesyloopError(f"kb {path}: the file is read-only; make it writable to change it")


@contextmanager
def _open(kb: Path | None, run: Path | None, config: Path | None,
          create: bool = False, write: bool = False, check: str | None = "quick",
          ) -> Iterator[KnowledgeBase]:
    """The KB; NesyloopError, OSError or an SQLite error -> a one-line error and exit 2.
    Read commands (the default) open it read-only: the file must exist as a non-empty KB and is
    never changed. ``write`` opens it for changes; with ``create`` an explicit --kb may be a new
    file, removed again when the command fails. ``check``: SQLite's quick_check on open."""
    created: Path | None = None
    path: Path | None = None
    existed = False
    try:
        path = kb_path(kb, run, config)
        if not (write or create):
            with open_kb(path, check=check) as db:
                yield db
            return
        if path.exists() and not path.is_file():
            raise NesyloopError(f"kb {path}: not a file")
        _writable(path)
        if not (create and kb is not None):
            existing_file(path)
        elif not path.exists() or path.stat().st_size == 0:
            created, existed = path, path.exists()
        with KnowledgeBase(path, check=check if created is None else None) as db:
            yield db
    except (NesyloopError, OSError, sqlite3.Error) as err:
        if created is not None:
            _undo_create(created, existed)
        _fail(db_error(path, err) if isinstance(err, sqlite3.Error) else err)


def _undo_create(path: Path, existed: bool) -> None:
    """After a failed add/import into a new KB: remove the file, or empty it again when it was
    an existing 0-byte file, and SQLite's side files."""
    for p in side_files(path):
        p.unlink(missing_ok=True)
    if existed:
        path.write_bytes(b"")
    else:
        path.unlink(missing_ok=True)


# -- commands ----------------------------------------------------------------------------------
@kb_app.command("list")
def list_cmd(
    all_: Annotated[bool, typer.Option("--all", help="Disabled entries too.")] = False,
    disabled: Annotated[bool, typer.Option("--disabled", help="Only disabled entries.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N.")] = None,
    json_: JsonOpt = False, kb: KbOpt = None, run: RunOpt = None, config: ConfigOpt = None,
) -> None:
    """One line per entry: id, on/off, times retrieved, summary (enabled ones by default)."""
    if all_ and disabled:
        _fail(NesyloopError("give --all or --disabled, not both"))
    with _open(kb, run, config) as db:
        entries = db.list(enabled_only=not (all_ or disabled))
    entries = [e for e in entries if not e.enabled] if disabled else entries
    entries = entries[:limit] if limit else entries
    width = _width()
    typer.echo(_dumps([e.to_dict() for e in entries]) if json_
               else "\n".join(row(f"{e.id:>4}  {'on ' if e.enabled else 'off'}  {e.retrieved:>4}  ",
                                   e.summary, width) for e in entries), nl=bool(json_ or entries))


@kb_app.command()
def show(entry_id: IdArg, json_: JsonOpt = False, kb: KbOpt = None, run: RunOpt = None,
         config: ConfigOpt = None) -> None:
    """The full entry: summary, numbered knowledge and provenance."""
    with _open(kb, run, config) as db:
        e = db.get(entry_id)
    typer.echo(_dumps(e.to_dict()) if json_ else format_entry(e))


@kb_app.command()
def search(
    query: Annotated[str, typer.Argument(help="A question, as the student would get it.")],
    k: Annotated[int | None, typer.Option("--k", min=1, help="Hits to show "
                                             "[default: the config's top_k].")] = None,
    method: Annotated[str | None, typer.Option(
        "--method", help="Override the config's retrieval method: bm25, dense or hybrid.")] = None,
    json_: JsonOpt = False, kb: KbOpt = None, run: RunOpt = None, config: ConfigOpt = None,
) -> None:
    """Retrieve exactly as the student does (the config's settings and task description)."""
    from .config import load_config
    from .kb.retrieve import Retriever

    if method not in (None, "bm25", "dense", "hybrid"):
        _fail(NesyloopError(f"--method: {method!r} is not one of bm25, dense, hybrid"))
    _check_args({"QUERY": query})
    with _open(kb, run, config) as db:
        cfg = load_config(config)
        settings = cfg.nesycd.retrieval.model_copy(update={"method": method} if method else {})
        try:
            retriever = Retriever(db, settings, task_description(cfg))
            hits = retriever.retrieve(query, max(k or settings.top_k, settings.top_k))
        except ImportError as err:
            raise NesyloopError(f"{settings.method} retrieval is not available ({err})") from None
    block = retriever.block(hits[:settings.top_k])
    hits = hits[:k or settings.top_k]
    if json_:
        return typer.echo(_dumps({
            "query": query, "method": settings.method, "top_k": settings.top_k, "block": block,
            "hits": [{"rank": r, "id": e.id, "score": s, "summary": e.summary,
                      "knowledge": e.knowledge} for r, (e, s) in enumerate(hits, 1)]}))
    width = _width()
    for r, (e, s) in enumerate(hits, 1):
        typer.echo(row(f"{r:>2}. entry {e.id}  score {s:.4g}  ", e.summary, width))
    if not hits:
        typer.echo("no matching enabled entries")
    typer.echo(f"\nstudent's knowledge block ({settings.method}, top_k={settings.top_k}):")
    typer.echo(block or "(none: the student gets no knowledge)")


@kb_app.command()
def add(
    summary: Annotated[str, typer.Option("--summary", help="The learning summary.")],
    knowledge: KnowledgeOpt = None, note: NoteOpt = None,
    kb: KbOpt = None, run: RunOpt = None, config: ConfigOpt = None,
) -> None:
    """Add an entry written by hand; prints its id. An explicit --kb may be a new file."""
    _check_args({"--summary": summary, "--knowledge": knowledge, "--note": note})
    with _open(kb, run, config, create=True) as db:
        new_id = db.add(summary, knowledge or [], note=note)
    typer.echo(new_id)


def _edit_in_editor(e: Entry) -> tuple[str, list[str]] | None:
    """Open $EDITOR on {summary, knowledge}; None when the text is unchanged."""
    text = _dumps({"summary": e.summary, "knowledge": e.knowledge}) + "\n"
    try:
        edited = click.edit(text, extension=".json")
    except click.ClickException as err:
        raise NesyloopError(err.format_message()) from None
    if edited is None or edited == text:
        return None
    try:
        d = json.loads(edited)
    except json.JSONDecodeError as err:
        raise DataError(f"edited entry {e.id}: invalid JSON ({err.msg}, line {err.lineno})") \
            from None
    if not isinstance(d, dict) or set(d) != {"summary", "knowledge"}:
        raise DataError(f"edited entry {e.id}: expected exactly the keys summary and knowledge")
    return d["summary"], d["knowledge"]


@kb_app.command()
def edit(
    entry_id: IdArg,
    summary: Annotated[str | None, typer.Option("--summary", help="New summary.")] = None,
    knowledge: Annotated[list[str] | None, typer.Option(
        "--knowledge", help="New knowledge item (repeatable; replaces the list).")] = None,
    editor: Annotated[bool, typer.Option("--editor", help="Edit its JSON in $EDITOR.")] = False,
    note: NoteOpt = None, kb: KbOpt = None, run: RunOpt = None, config: ConfigOpt = None,
) -> None:
    """Change an entry's summary and/or knowledge; the old version stays in its history."""
    if editor and (summary is not None or knowledge is not None):
        _fail(NesyloopError("--editor cannot be combined with --summary or --knowledge"))
    _check_args({"--summary": summary, "--knowledge": knowledge, "--note": note})
    with _open(kb, run, config, write=True) as db:
        before = db.get(entry_id)
        if editor:
            got = _edit_in_editor(before)
            if got is None:
                typer.echo(f"entry {entry_id} unchanged")
                return
            summary, knowledge = got
        after = db.edit(entry_id, summary=summary, knowledge=knowledge, note=note)
    typer.echo(f"edited entry {entry_id}")
    for field, (old, new) in changes(before.to_dict(), after.to_dict()).items():
        typer.echo(f"  {describe_change(field, old, new)}")


def _set_enabled(entry_id: int, enabled: bool, note: str | None, kb, run, config) -> None:
    word = "enabled" if enabled else "disabled"
    _check_args({"--note": note})
    with _open(kb, run, config, write=True) as db:
        unchanged = db.get(entry_id).enabled == enabled
        db.set_enabled(entry_id, enabled, note=note)
    typer.echo(f"entry {entry_id} already {word}" if unchanged else f"{word} entry {entry_id}")


@kb_app.command()
def disable(entry_id: IdArg, note: NoteOpt = None, kb: KbOpt = None, run: RunOpt = None,
            config: ConfigOpt = None) -> None:
    """Keep the entry but stop retrieving it."""
    _set_enabled(entry_id, False, note, kb, run, config)


@kb_app.command()
def enable(entry_id: IdArg, note: NoteOpt = None, kb: KbOpt = None, run: RunOpt = None,
           config: ConfigOpt = None) -> None:
    """Retrieve a disabled entry again."""
    _set_enabled(entry_id, True, note, kb, run, config)


@kb_app.command()
def remove(entry_id: IdArg, note: NoteOpt = None,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
           kb: KbOpt = None, run: RunOpt = None, config: ConfigOpt = None) -> None:
    """Delete an entry (its history is kept); asks first unless --yes."""
    _check_args({"--note": note})
    with _open(kb, run, config, write=True) as db:
        e = db.get(entry_id)
        if not yes:
            typer.confirm(f"remove entry {entry_id} ({one_line(e.summary, 60)})?", abort=True)
        db.remove(entry_id, note=note)
    typer.echo(f"removed entry {entry_id}")


@kb_app.command()
def history(entry_id: IdArg, json_: JsonOpt = False, kb: KbOpt = None, run: RunOpt = None,
            config: ConfigOpt = None) -> None:
    """Every change of an entry (also of a removed one): when, why, and what changed."""
    with _open(kb, run, config) as db:
        if not (rows := db.history(entry_id)):
            raise DataError(f"kb {db.path}: no entry {entry_id}")
    rows = [{"at": h["at"], "time": local_time(h["at"]), "action": h["action"],
             "note": h["note"], "changes": changes(h["before"], h["after"])} for h in rows]
    if json_:
        return typer.echo(_dumps(rows))
    for h in rows:
        note = f"  note: {h['note']}" if h["note"] else ""
        typer.echo(f"{h['time']}  {h['action']:<7}{note}".rstrip())
        for field, (old, new) in h["changes"].items():
            typer.echo(f"    {describe_change(field, old, new)}")


@kb_app.command()
def stats(json_: JsonOpt = False, kb: KbOpt = None, run: RunOpt = None,
          config: ConfigOpt = None) -> None:
    """Entries, enabled, by run and teacher, retrievals, the most retrieved entries."""
    with _open(kb, run, config) as db:
        s = kb_stats(db)
    if json_:
        return typer.echo(_dumps(s))
    typer.echo(f"entries:     {s['entries']} ({s['enabled']} enabled)\n"
               f"items: {s['items']} distinct ({s['merged']} duplicates merged)\n"
               f"sources:     {s['sources']} distinct source examples\n"
               f"retrievals:  {s['retrievals']}\n"
               f"by run:      {_counts(s['by_run'])}\nby teacher:  {_counts(s['by_teacher'])}")
    if s["top_retrieved"]:
        typer.echo("most retrieved:")
        width = _width()
        for t in s["top_retrieved"]:
            typer.echo(row(f"  {t['id']:>4}  {t['retrieved']:>5}x  ", t["summary"], width))


@kb_app.command("export")
def export_cmd(file: Annotated[Path, typer.Argument(help="The JSONL file to write.")],
               kb: KbOpt = None, run: RunOpt = None, config: ConfigOpt = None) -> None:
    """Write every entry with its items and history, then the items that are disabled or were
    changed with their history, to a JSONL file (lossless; see import). A damaged file is
    refused (SQLite's integrity_check) rather than exported in part."""
    with _open(kb, run, config, check=None) as db:  # export_jsonl runs the full check
        n = db.export_jsonl(file)
    typer.echo(f"exported {n} entries to {file}")


@kb_app.command("import")
def import_cmd(file: Annotated[Path, typer.Argument(help="A JSONL file from export.")],
               note: NoteOpt = None, kb: KbOpt = None, run: RunOpt = None,
               config: ConfigOpt = None) -> None:
    """Add the entries of a JSONL file (their items, disabled ones too, and the items'
    history), all or nothing. An item this KB already has keeps its state here and gets the
    file's history of it appended. An explicit --kb may be a new file."""
    _check_args({"--note": note})
    if not file.is_file():
        _fail(DataError(f"{file}: file not found" if not file.exists() else f"{file}: not a file"))
    with _open(kb, run, config, create=True) as db:
        n = db.import_jsonl(file, note=note)
    typer.echo(f"imported {n} entries into {db.path}")


@kb_app.command()
def markdown(file: Annotated[Path, typer.Argument(help="The Markdown file to write.")],
             kb: KbOpt = None, run: RunOpt = None, config: ConfigOpt = None) -> None:
    """Write the KB as a readable Markdown document."""
    with _open(kb, run, config) as db:
        n = db.export_markdown(file)
    typer.echo(f"wrote {n} entries to {file}")


@kb_app.command()
def attribute(
    split: Annotated[str, typer.Option(help="The evaluation split.")] = "test-rare",
    method: Annotated[str, typer.Option(help="Whose student: a method that retrieves from a "
                                                 "KB (nesycd, std-cot+kb, kard, nesycd+fdd).")
                      ] = "nesycd",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="First N questions.")] = None,
    mode: Annotated[str, typer.Option(help="Answer extraction: strict or flexible.")] = "strict",
    out: Annotated[Path | None, typer.Option(help="Also write the table as JSON here.")] = None,
    json_: JsonOpt = False, run: RunOpt = None, config: ConfigOpt = None,
) -> None:
    """Leave-one-out: per entry, how many answers change when it is disabled (helped/hurt)."""
    from .config import load_config
    from .io import write_json
    from .methods.attribute import attribute_entries
    from .methods.common import load_split

    from .methods import methods

    path: Path | None = None
    try:
        if mode not in ("strict", "flexible"):
            raise NesyloopError(f"--mode: {mode!r} is not one of strict, flexible")
        cfg = load_config(config)
        uses = {n: u for n, m in methods().items() if (u := m.kb_use(cfg)) is not None}
        if method not in uses:
            raise NesyloopError(f"--method: {method!r} is not one of {', '.join(uses)}")
        root = Path(run or cfg.run.out)
        use = uses[method]
        model = root / use.model_stage / "model"
        path = root / use.kb_stage / "kb.sqlite"
        data = root / "data" / f"{split}.jsonl"
        for need in (model, path, data):
            if not need.exists():
                raise NesyloopError(f"{need}: not found (run `nesyloop run` with {method} first)")
        open_kb(path).close()  # a damaged, empty or foreign file is refused before any work
        examples = load_split(data.parent, split)[:limit]
        res = attribute_entries(model, path, examples, cfg.nesycd, task_description(cfg),
                                cfg.eval.batch_size, cfg.eval.max_new_tokens, cfg.run.progress,
                                mode, use.inference, cfg.student.engine, cfg.student.server)
        if out is not None:
            write_json(out, res)
    except (NesyloopError, OSError) as err:
        _fail(err)
    except sqlite3.Error as err:
        _fail(db_error(path, err))
    if json_:
        return typer.echo(_dumps(res))
    b = res["baseline"]
    typer.echo(f"{split}: {b['n']} questions, {b['with_knowledge']} with knowledge, "
               f"{mode} accuracy {100 * b['accuracy']:.1f}% with every entry enabled")
    typer.echo("entry  questions  changed  helped  hurt   net  summary")
    width = _width()
    for r in res["entries"]:
        typer.echo(row(f"{r['entry']:>5}  {r['questions']:>9}  {r['changed']:>7}  "
                       f"{r['helped']:>6}  {r['hurt']:>4}  {r['net']:>4}  ", r["summary"] or "",
                       width))

