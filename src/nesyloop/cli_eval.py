"""``nesyloop eval``: students on a benchmark split (docs/benchmarks.md); calls
``nesyloop.api.evaluate`` and prints its Markdown report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .errors import NesyloopError


def eval_command(
    task: Annotated[str | None, typer.Option(
        "--task", "-t", help="gsm8k, svamp, asdiv, multiarith, bbh, agieval, arc-easy, "
        "arc-challenge, user (your --data file), or bazaar.")] = None,
    student: Annotated[list[str] | None, typer.Option(
        "--student", "-s", help="A student: checkpoint folder, .gguf, smollm2 or a hub name "
        "(repeat to compare several).")] = None,
    predictions: Annotated[Path | None, typer.Option(
        "--predictions", help="Score this JSONL of another model's outputs instead of "
        "students: one {prediction, id or question[, subtask]} a line.")] = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="With --predictions: write the scores here as JSON.")] = None,
    split: Annotated[str | None, typer.Option(
        "--split", help="train, dev, test or all (default: test; with --predictions: all).")
    ] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="At most N questions (per subtask for bbh and agieval).")] = None,
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
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens")] = None,
) -> None:
    """Evaluate students on a benchmark (strict/flexible accuracy, per subtask, predictions),
    or score another model's predictions with --predictions."""
    from . import api

    try:
        if task is None:
            from .evaluation import TASK_NAMES

            raise NesyloopError(f"--task: give the task to evaluate on: {', '.join(TASK_NAMES)}")
        if (student is None) == (predictions is None):
            raise NesyloopError("give exactly one of --student (models to run) and "
                                "--predictions (a JSONL of outputs to score)")
        res = api.evaluate(student, task, split, limit=limit, kb=kb, out=out, shots=shots,
                           data=data, hub=hub, subtasks=subtask, header=not no_header,
                           config=config, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           predictions=predictions, json_out=json_out)
    except NesyloopError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo("")
    typer.echo(res["report"])
