"""The ``nesyloop`` command line. Commands mirror the stages of a run; each one runs (or resumes)
the run up to that stage, so ``nesyloop train`` after ``nesyloop rationales`` reuses its work."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import NesyloopError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distil a teacher LLM's reasoning into a small student (NesyCD + FDD).")

ConfigArg = Annotated[Optional[Path], typer.Argument(
    help="A TOML config; the built-in default (the main job on Bazaar) when omitted.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory.")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="Tiny smoke-test preset (< 2 min).")]
MethodOpt = Annotated[Optional[list[str]], typer.Option(
    "--method", "-m", help="Only these methods (repeatable).")]


def _go(config: Optional[Path], out: Optional[Path], quick: bool, until: str | None = None,
        methods: list[str] | None = None) -> None:
    from . import api

    try:
        cfg = api.load_config(config, quick=quick)
        if methods:
            from .config import METHODS

            bad = [m for m in methods if m not in METHODS]
            if bad:
                raise NesyloopError(f"--method: {bad[0]!r} is not one of {list(METHODS)}")
        metrics = api.run(cfg, out=out, until=until, methods=methods)
    except NesyloopError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    run_dir = Path(out or cfg.run.out)
    if until is None and metrics:
        typer.echo("")
        typer.echo((run_dir / "report.md").read_text(encoding="utf-8"))


@app.command()
def run(config: ConfigArg = None, out: OutOpt = None, quick: QuickOpt = False,
        method: MethodOpt = None) -> None:
    """Run (or resume) the whole loop and write report.md and metrics.json."""
    _go(config, out, quick, None, method)


@app.command()
def data(config: ConfigArg = None, out: OutOpt = None, quick: QuickOpt = False) -> None:
    """Build the task's splits (data/<split>.jsonl)."""
    _go(config, out, quick, "data")


@app.command()
def rationales(config: ConfigArg = None, out: OutOpt = None, quick: QuickOpt = False) -> None:
    """Ask the teacher for rationales and filter them (rationales/kept.jsonl, rejected.jsonl)."""
    _go(config, out, quick, "rationales")


@app.command()
def train(config: ConfigArg = None, out: OutOpt = None, quick: QuickOpt = False,
          method: MethodOpt = None) -> None:
    """Train the students of each method (train-<method>/model)."""
    _go(config, out, quick, "train", method)


@app.command()
def predict(config: ConfigArg = None, out: OutOpt = None, quick: QuickOpt = False,
            method: MethodOpt = None) -> None:
    """Generate the students' answers on the eval splits (predict-<method>/<split>.jsonl)."""
    _go(config, out, quick, "predict", method)


@app.command()
def score(config: ConfigArg = None, out: OutOpt = None, quick: QuickOpt = False,
          method: MethodOpt = None) -> None:
    """Score the predictions (score-<method>/) and write the report."""
    _go(config, out, quick, None, method)


@app.command("train-student")
def train_student(
    pairs: Annotated[Path, typer.Argument(help="JSONL of {prompt, completion} records.")],
    base: Annotated[str, typer.Option(help="Base student: checkpoint, .gguf, smollm2, hub name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the trained checkpoint goes.")],
    config: Annotated[Optional[Path], typer.Option(help="Take [train] settings from this config.")] = None,
) -> None:
    """Fine-tune one student on a pairs file: the unit `accelerate launch` spreads over GPUs."""
    from . import api
    from .io import read_jsonl
    from .students.train import train_sft

    try:
        cfg = api.load_config(config)
        rows = read_jsonl(pairs)
        for i, r in enumerate(rows, 1):
            if not isinstance(r.get("prompt"), str) or not isinstance(r.get("completion"), str):
                raise NesyloopError(f"{pairs}:{i}: expected string fields 'prompt' and 'completion'")
        work = out.with_name(out.name + ".work")  # checkpoints to resume from after a crash
        stats = train_sft(base, rows, out, cfg.train, work_dir=work)
        shutil.rmtree(work, ignore_errors=True)
    except NesyloopError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({k: v for k, v in stats.items() if k != "losses"}))


@app.command("estimate")
def estimate(
    config: ConfigArg = None, out: OutOpt = None, quick: QuickOpt = False,
    method: MethodOpt = None,
    error_rate: Annotated[float, typer.Option(
        "--error-rate", help="Assumed share of problems the student gets wrong.")] = 0.6,
    keep_rate: Annotated[float, typer.Option(
        "--keep-rate", help="Assumed share of evolved problems the filters keep.")] = 0.95,
    agree_rate: Annotated[float, typer.Option(
        "--agree-rate", help="Assumed share of solved problems the agreement check keeps.")] = 0.8,
    completion_share: Annotated[float, typer.Option(
        "--completion-share", help="Assumed reply length as a share of max_tokens.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Teacher requests, tokens and cost per teacher stage, before anything is spent."""
    from . import api
    from .costs.estimate import Assumptions

    try:
        a = Assumptions(student_error_rate=error_rate, evolve_keep_rate=keep_rate,
                        agreement_rate=agree_rate, completion_share=completion_share)
        cfg = api.load_config(config, quick=quick)
        est = api.estimate(cfg, out=out, methods=method or None, assumptions=a)
    except NesyloopError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(est.to_dict(), indent=2) if as_json else est.table())


@app.command("config")
def show_config(config: ConfigArg = None, quick: QuickOpt = False) -> None:
    """Validate a config and print it with every default filled in."""
    from . import api

    try:
        cfg = api.load_config(config, quick=quick)
    except NesyloopError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


@app.command("sandbox")
def sandbox(
    file: Annotated[Path, typer.Argument(help="A Python program (e.g. a model's PoT solution).")],
    timeout: Annotated[float, typer.Option("--timeout", help="Wall-clock limit (s).")] = 2.0,
    mem_mb: Annotated[int, typer.Option("--mem-mb", help="Memory limit (MB).")] = 512,
) -> None:
    """Run one untrusted program in the sandbox and print its verdict as JSON."""
    from .sandbox import run_program

    try:
        code = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        typer.echo(f"error: {file}: cannot read the program ({err})", err=True)
        raise typer.Exit(2) from None
    res = run_program(code, timeout_s=timeout, mem_mb=mem_mb)
    typer.echo(json.dumps(res.to_dict()))
    raise typer.Exit(0 if res.ok else 1)


from .cli_kb import kb_app

app.add_typer(kb_app, name="kb")

from .cli_eval import eval_command

app.command("eval")(eval_command)

from .cli_serve import serve as _serve

app.command("serve")(_serve)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; re-run the same command to resume\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
