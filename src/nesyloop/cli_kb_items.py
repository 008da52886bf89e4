"""``nesyloop kb items``, ``item``, ``item-edit``, ``item-disable``, ``item-enable`` and
``migrate``: the knowledge items of a KB, each a distinct sentence stated once
(kb/itemstore.py), with the entries (errors, rounds) that produced it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .cli_kb import (ConfigOpt, JsonOpt, KbOpt, NoteOpt, RunOpt, _check_args, _dumps, _open,
                     _width, kb_app)
from .kb.view import local_time, row

ItemArg = Annotated[int, typer.Argument(help="Item id.", show_default=False)]


@kb_app.command()
def items(
    query: Annotated[str | None, typer.Argument(
        help="Only items whose text holds every word of it.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Disabled items too.")] = False,
    json_: JsonOpt = False, kb: KbOpt = None, run: RunOpt = None, config: ConfigOpt = None,
) -> None:
    """One line per distinct knowledge item: id, on/off, entries stating it, text."""
    _check_args({"QUERY": query})
    with _open(kb, run, config) as db:
        found = db.items(enabled_only=not all_, query=query)
    if json_:
        return typer.echo(_dumps(found))
    width = _width()
    for it in found:
        typer.echo(row(f"{it['id']:>4}  {'on ' if it['enabled'] else 'off'}  "
                       f"{it['entries']:>4}x  ", it["text"], width))
    if not found:
        typer.echo("no matching items")


@kb_app.command()
def item(item_id: ItemArg, json_: JsonOpt = False, kb: KbOpt = None, run: RunOpt = None,
         config: ConfigOpt = None) -> None:
    """An item: its text, the entries (errors, rounds) that state it, and its history."""
    with _open(kb, run, config) as db:
        it = {**db.item(item_id), "history": db.item_history(item_id)}
    if json_:
        return typer.echo(_dumps(it))
    typer.echo(f"item {it['id']} ({'enabled' if it['enabled'] else 'disabled'}): {it['text']}")
    typer.echo(f"stated by {len(it['entries'])} entries:")
    width = _width()
    for e in it["entries"]:
        where = " ".join(f"{k} {e[k]}" for k in ("source_id", "round") if e[k] is not None)
        typer.echo(row(f"  {e['id']:>4}  {where}  ", e["summary"], width))
    typer.echo("history:")
    for h in it["history"]:
        change = ""
        if h["action"] == "edit":
            change = f"  {h['before']['text']!r} -> {h['after']['text']!r}"
        note = f"  note: {h['note']}" if h["note"] else ""
        typer.echo(f"  {local_time(h['at'])}  {h['action']}{change}{note}")


@kb_app.command("item-edit")
def item_edit(item_id: ItemArg,
              text: Annotated[str, typer.Option("--text", help="The item's new wording.")],
              note: NoteOpt = None, kb: KbOpt = None, run: RunOpt = None,
              config: ConfigOpt = None) -> None:
    """Reword an item: every entry that states it, and every block, changes with it."""
    _check_args({"--text": text, "--note": note})
    with _open(kb, run, config, write=True) as db:
        n = len(db.item(item_id)["entries"])
        db.edit_item(item_id, text, note=note)
    typer.echo(f"edited item {item_id} ({n} entries state it)")


def _set_item(item_id: int, enabled: bool, note: str | None, kb, run, config) -> None:
    word = "enabled" if enabled else "disabled"
    _check_args({"--note": note})
    with _open(kb, run, config, write=True) as db:
        it = db.item(item_id)
        db.set_item_enabled(item_id, enabled, note=note)
    typer.echo(f"item {item_id} already {word}" if it["enabled"] == enabled
               else f"{word} item {item_id} ({len(it['entries'])} entries state it)")


@kb_app.command("item-disable")
def item_disable(item_id: ItemArg, note: NoteOpt = None, kb: KbOpt = None, run: RunOpt = None,
                 config: ConfigOpt = None) -> None:
    """Stop stating an item anywhere (every entry keeps it, disabled)."""
    _set_item(item_id, False, note, kb, run, config)


@kb_app.command("item-enable")
def item_enable(item_id: ItemArg, note: NoteOpt = None, kb: KbOpt = None, run: RunOpt = None,
                config: ConfigOpt = None) -> None:
    """State a disabled item again wherever it was stated."""
    _set_item(item_id, True, note, kb, run, config)


@kb_app.command()
def migrate(kb: KbOpt = None, run: RunOpt = None, config: ConfigOpt = None) -> None:
    """Bring a KB file of an older nesyloop to this one's schema (every file opened for
    writing is migrated anyway): version 1's per-entry sentences become shared items."""
    with _open(kb, run, config, write=True) as db:
        counts = db.item_counts()
    typer.echo(f"kb {db.path}: schema up to date; items: {counts['items']} distinct "
               f"({counts['merged']} duplicates merged)")


@kb_app.command("import-facts")
def import_facts(
    file: Annotated[Path, typer.Argument(help="A fact sheet: .md/.txt list, .csv or .jsonl.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the changes; write nothing.")]
    = False,
    note: NoteOpt = None, kb: KbOpt = None, run: RunOpt = None, config: ConfigOpt = None,
) -> None:
    """Bring a fact sheet into the KB, all or nothing: each line becomes a human entry, and an
    item stating an old value of the same fact is disabled (docs/kb.md: the conflict rule). An
    explicit --kb may be a new file."""
    from .cli_kb import _fail
    from .errors import NesyloopError
    from .kb.sheets import apply_import, plan_import, read_sheet

    _check_args({"--note": note})
    try:
        lines = read_sheet(file)
    except NesyloopError as err:
        _fail(err)
    if dry_run and kb is not None and not kb.exists():  # a new KB: every line is added
        import tempfile

        from .kb.store import KnowledgeBase

        with tempfile.TemporaryDirectory() as tmp, KnowledgeBase(Path(tmp) / "kb.sqlite") as db:
            changes, counts = plan_import(db, lines), None
    else:
        with _open(kb, run, config, write=not dry_run, create=not dry_run) as db:
            changes = plan_import(db, lines)
            counts = None if dry_run else apply_import(db, file, changes, note)
    for c in changes:
        for line in c.describe(file):
            typer.echo(line)
    if counts is None:
        n = sum(c.add for c in changes)
        d = len({x["id"] for c in changes for x in c.disable})
        typer.echo(f"dry run: would add {n} entries and disable {d} items; nothing written")
    else:
        typer.echo(f"imported {file}: {counts['added']} entries added, {counts['disabled']} "
                   f"items disabled, {counts['enabled']} enabled, {counts['unchanged']} "
                   f"unchanged")
