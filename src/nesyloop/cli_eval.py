"""``nesyloop eval``: students on a benchmark split (docs/benchmarks.md); calls
``nesyloop.api.evaluate`` and prints its Markdown report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .errors import NesyloopError


def eval_command(
    student: Annotated[list[str], typer.Option(
        "--student", "-s", help="A student: checkpoint folder, .gguf, smollm2 or a hub name "
        "(repeat to compare several).")],
    task: Annotated[str, typer.Option(
        "--task", "-t", help="gsm8k, svamp, asdiv, multiarith, bbh, agieval, arc-easy, "
        "arc-challenge, user (your --data file), or bazaar.")],
    split: Annotated[str, typer.Option("--split", help="train, dev, test or all.")] = "test",
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="At most N questions (per subtask for bbh and agieval).")] = None,
    kb: Annotated[Path | None, typer.Option(
        "--kb", help="A NesyCD knowledge base: retrieve for every question.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Where predictions and report go (default: runs/eval/TASK-SPLIT).")
    ] = None,
    shots: Annotated[int, typer.Option(
        "--shots", help="0, or 3 for the few-shot CoT prompts (bbh: the paper's).")] = 0,
    data: Annotated[Path | None, typer.Option(
        "--data", help="The task's file or folder (default: $NESYLOOP_DATA/<task>).")] = None,
    hub: Annotated[bool, typer.Option("--hub", help="Load the data set from the hub.")] = False,
    subtask: Annotated[list[str] | None, typer.Option(
        "--subtask", help="Only this subtask (bbh, agieval; repeatable).")] = None,
    no_header: Annotated[bool, typer.Option(
        "--no-header", help="Leave the task's instruction out of the prompt.")] = False,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Retrieval, batch size, max_new_tokens and task.bench settings.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", min=1)] = None,
) -> None:
    """Evaluate students on a benchmark: strict/flexible accuracy, per subtask, predictions."""
    from . import api

    try:
        res = api.evaluate(student, task, split, limit=limit, kb=kb, out=out, shots=shots,
                           data=data, hub=hub, subtasks=subtask, header=not no_header,
                           config=config, batch_size=batch_size, max_new_tokens=max_new_tokens)
    except NesyloopError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo("")
    typer.echo(res["report"])
