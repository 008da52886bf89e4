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
OutOpt = Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory.")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="Tiny smoke-test preset (< 2 min).")]
MethodOpt = Annotated[Optional[list[str]], typer.Option(
    "--method", "-m", help="Only these methods (repeatable).")]


class _Guard:
    """Turns what a command raises into one line and an exit status: a NesyloopError or a
    failed write (OSError) ``error: ...`` and 2; Ctrl-C ``interrupted: ...`` and 130. A run
    folder this command created and left without a finished stage is removed again."""

    def __init__(self, resume: str = "re-run the same command to resume"):
        self.resume = resume
        self.out: Path | None = None
        self.existed = True

    def watch(self, out: Path) -> Path:
        self.out, self.existed = out, out.exists()
        return out

    def __enter__(self) -> _Guard:
        return self

    def __exit__(self, kind, err, tb) -> None:
        if kind is None:
            return
        if issubclass(kind, KeyboardInterrupt):
            kept = self._drop_empty()
            where = f" (finished stages are kept in {self.out})" if kept else ""
            typer.echo(f"interrupted: {self.resume}{where}", err=True)
            raise typer.Exit(130) from None
        if issubclass(kind, NesyloopError):
            msg = str(err)
        elif issubclass(kind, OSError):
            name = err.filename2 or err.filename  # os.replace's second name: the target
            msg = f"{name}: {err.strerror or err}" if name else f"{type(err).__name__}: {err}"
            msg = " ".join(msg.split())
        else:
            return
        self._drop_empty()
        typer.echo(f"error: {msg}", err=True)
        raise typer.Exit(2) from None

    def _drop_empty(self) -> bool:
        """Remove the run folder when this command made it and no stage in it finished;
        True when it is kept."""
        out = self.out
        if out is None or not out.is_dir():
            return False
        if self.existed or any(out.glob("*/manifest.json")):
            return True
        shutil.rmtree(out, ignore_errors=True)
        return False


def _load(config: Optional[Path], quick: bool):
    """The config, with a note on stderr when ``--quick`` replaces values the file sets."""
    from . import api
    from .config import quick_replaced

    cfg = api.load_config(config, quick=quick)
    replaced = quick_replaced(config) if quick else []
    if replaced:
        typer.echo(f"note: --quick replaces {len(replaced)} setting(s) of {config} with the "
                   f"preset's: {'; '.join(replaced)} (drop --quick to use yours)", err=True)
    return cfg


def _out_dir(out: Optional[str], cfg=None) -> Path:
    """``--out`` (or the config's run.out), refused before anything is written when it cannot
    hold a run (an empty ``--out ""`` would otherwise mean the current folder)."""
    from .io import check_out_dir

    if out is None:
        return check_out_dir(Path(cfg.run.out), "run.out")
    if not out.strip():
        raise NesyloopError("--out: empty; give the folder to write to")
    return check_out_dir(Path(out), "--out")


def _go(config: Optional[Path], out: Optional[str], quick: bool, until: str | None = None,
        methods: list[str] | None = None) -> None:
    from . import api

    with _Guard() as guard:
        cfg = _load(config, quick)
        run_dir = guard.watch(_out_dir(out, cfg))
        metrics = api.run(cfg, out=run_dir, until=until, methods=methods)
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
    out: Annotated[str, typer.Option("--out", "-o", help="Where the trained checkpoint goes.")],
    config: Annotated[Optional[Path], typer.Option(help="Take [train] settings from this config.")] = None,
    work: Annotated[Optional[Path], typer.Option(
        help="Checkpoints, to resume from after a crash (default: <out>.work, removed at the end).")] = None,
) -> None:
    """Fine-tune one student on a pairs file: the unit `accelerate launch` spreads over GPUs."""
    from . import api
    from .students.train import train_sft

    with _Guard("re-run the same command to resume from its last checkpoint") as guard:
        cfg = api.load_config(config)
        rows = _read_pairs(pairs)
        dest = guard.watch(_out_dir(out))
        ckpt = work or dest.with_name(dest.name + ".work")  # to resume from after a crash
        stats = train_sft(base, rows, dest, cfg.train, work_dir=ckpt)
        _leave_process_group()
        if work is None:
            shutil.rmtree(ckpt, ignore_errors=True)
    typer.echo(json.dumps({k: v for k, v in stats.items() if k != "losses"}))


def _leave_process_group() -> None:
    """Under a launcher: wait until every rank is done (rank 0 exports the model), then
    leave the process group, so no rank exits with gloo's threads still running (an abort)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _read_pairs(pairs: Path) -> list[dict]:
    """The records of a pairs file; one line naming the file (and line) when it is missing,
    a folder, not UTF-8, not JSONL (io.iter_jsonl_lines), empty, or a record lacks its
    strings."""
    from .errors import DataError
    from .io import iter_jsonl_lines

    lines = list(iter_jsonl_lines(pairs))
    if not lines:
        raise DataError(f"{pairs}: no training pairs (the file holds no records)")
    for i, r in lines:
        if not isinstance(r.get("prompt"), str) or not isinstance(r.get("completion"), str):
            raise DataError(f"{pairs}:{i}: expected string fields 'prompt' and 'completion'")
    return [r for _, r in lines]


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

    with _Guard("nothing was spent; re-run the command") as guard:
        a = Assumptions(student_error_rate=error_rate, evolve_keep_rate=keep_rate,
                        agreement_rate=agree_rate, completion_share=completion_share)
        cfg = _load(config, quick)
        run_dir = guard.watch(_out_dir(out, cfg))
        est = api.estimate(cfg, out=run_dir, methods=method or None, assumptions=a)
    typer.echo(json.dumps(est.to_dict(), indent=2) if as_json else est.table())


@app.command("config")
def show_config(config: ConfigArg = None, quick: QuickOpt = False) -> None:
    """Validate a config and print it with every default filled in."""
    with _Guard("re-run the command"):
        cfg = _load(config, quick)
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


@app.command("sandbox")
def sandbox(
    file: Annotated[Path, typer.Argument(help="A Python program (e.g. a model's PoT solution).")],
    timeout: Annotated[float, typer.Option("--timeout", help="Wall-clock limit (s).")] = 2.0,
    mem_mb: Annotated[int, typer.Option("--mem-mb", help="Memory limit (MB).")] = 512,
) -> None:
    """Run one untrusted program in the sandbox and print its verdict as JSON."""
    import math

    from .sandbox import run_program

    try:
        if not (math.isfinite(timeout) and 0 < timeout <= 86_400):
            raise NesyloopError(f"--timeout: seconds above 0 and at most 86400 (got {timeout})")
        if not 16 <= mem_mb <= 1_048_576:
            raise NesyloopError(f"--mem-mb: from 16 to 1048576 MB (got {mem_mb})")
        code = file.read_text(encoding="utf-8")
    except NesyloopError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except (OSError, UnicodeDecodeError) as err:
        typer.echo(f"error: {file}: cannot read the program ({err})", err=True)
        raise typer.Exit(2) from None
    res = run_program(code, timeout_s=timeout, mem_mb=mem_mb)
    typer.echo(json.dumps(res.to_dict()))
    raise typer.Exit(0 if res.ok else 1)


from .cli_kb_items import kb_app  # the kb commands, the item ones included

app.add_typer(kb_app, name="kb")

from .cli_eval import eval_command

app.command("eval")(eval_command)

from .cli_serve import serve as _serve

app.command("serve")(_serve)


def main() -> None:
    """The console script: a usage error (unknown command or option, a value of the wrong
    type) is one ``error:`` line naming the command, exit 2, instead of a usage box."""
    try:
        code = app(prog_name="nesyloop", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("interrupted: re-run the same command to resume\n")
        sys.exit(130)
    except typer.TyperException as err:  # click's UsageError / BadParameter, vendored by typer
        ctx = getattr(err, "ctx", None)
        where = ctx.command_path if ctx is not None else "nesyloop"
        msg = " ".join(err.format_message().split())
        sys.stderr.write(f"error: {where}: {msg} (see '{where} --help')\n")
        sys.exit(getattr(err, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
