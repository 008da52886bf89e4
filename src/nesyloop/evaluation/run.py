"""``nesyloop eval``: one or more students on a task split, scored strict and flexible, with a
per-subtask breakdown, saved predictions, and a comparison table.

The prompts are the pipeline's (``student_prompt`` on the task's question, the header folded
in), so a student trained by ``nesyloop run`` on a benchmark is evaluated on the input it was
trained with; ``shots=3`` uses the few-shot CoT prompts instead (tasks/bench/prompts.py). With
a knowledge base, every question gets NesyCD's retrieval prompt (``retrieval_prompts``).
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import NesyloopError
from ..io import atomic_write_text, check_out_dir, check_out_file, write_json, write_jsonl
from ..scoring import score_output, summarize
from ..tasks import task_splits
from ..tasks.base import Example
from ..tasks.bench import BENCH_TASKS, SPLITS, BenchSettings
from ..tasks.bench.prompts import eval_prompts, stops
from .predictions import score_predictions
from .tables import render

EVAL_SPLITS = (*SPLITS, "all")
TASK_NAMES = ("bazaar", *BENCH_TASKS)


def task_examples(task: str, split: str, settings: BenchSettings, cfg,
                  ) -> tuple[list[Example], list[Example]]:
    """(the split's examples, the training examples few-shot prompts draw from)."""
    splits = task_splits(task, cfg.task.bazaar, settings)
    valid = (*splits, "all")
    if split not in valid:
        raise NesyloopError(f"--split: {split!r} is not a split of {task}; valid: "
                            f"{', '.join(valid)}")
    if split == "all":
        return [ex for rows in splits.values() for ex in rows], splits.get("train", [])
    return splits[split], splits.get("train", [])


def _label(student: str | Path, taken: set[str]) -> str:
    p = Path(str(student))
    name = p.parent.name if p.name == "model" and p.parent.name else p.name or str(student)
    name = re.sub(r"[^\w.+-]+", "_", name).strip("_") or "student"
    label, i = name, 2
    while label in taken:
        label, i = f"{name}-{i}", i + 1
    taken.add(label)
    return label


def _settings(task: str, cfg, data, hub, subtasks, header, limit, split) -> BenchSettings:
    base = cfg.task.bench if cfg.task.name == task else BenchSettings()
    over: dict[str, Any] = {"hub": hub or base.hub, "header": header}
    if data is not None:
        over["path"] = str(data)
    if subtasks:
        over["subtasks"] = list(subtasks)
    if limit is not None and split in SPLITS:
        over["limits"] = {**base.limits, split: limit}
    elif limit is not None:  # "all": every split capped
        over["limit"], over["limits"] = limit, {}
    return base.model_copy(update=over)


def _predict(backend, examples: list[Example], prompts: list[str], extra: list[dict],
             max_new_tokens: int, stop: tuple[str, ...]) -> list[dict[str, Any]]:
    """Scored prediction records (the pipeline's, plus each question's subtask)."""
    from ..methods.common import generate_records

    records = generate_records(backend, examples, prompts, max_new_tokens, extra, stop)
    return [{**r, "subtask": ex.meta.get("subtask"),
             **score_output(r["output"], ex.answer, ex.answer_type, ex.options)}
            for ex, r in zip(examples, records, strict=True)]


def _metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    by_sub: dict[str, list] = defaultdict(list)
    for r in records:
        if r.get("subtask"):
            by_sub[r["subtask"]].append(r)
    return {"overall": summarize(records),
            "subtasks": {s: summarize(rows) for s, rows in sorted(by_sub.items())}}


SUBTASK_TASKS = ("bbh", "agieval", "user")


def _check_task(task: str, split: str, subtasks: list[str] | None) -> None:
    if task not in TASK_NAMES:
        raise NesyloopError(f"--task: unknown task {task!r}; valid: {', '.join(TASK_NAMES)}")
    if task != "bazaar" and split not in EVAL_SPLITS:  # bazaar's: checked when it is built
        raise NesyloopError(f"--split: {split!r} is not a split of {task}; valid: "
                            f"{', '.join(EVAL_SPLITS)}")
    if subtasks and task not in SUBTASK_TASKS:
        raise NesyloopError(f"--subtask: {task} has no subtasks (only "
                            f"{', '.join(SUBTASK_TASKS)} do)")


# upper bounds of the generation options: beyond them a typo, not a setting
MAX_BATCH_SIZE = 4096
MAX_NEW_TOKENS = 32768


def _check_numbers(**values: int | None) -> None:
    caps = {"batch_size": MAX_BATCH_SIZE, "max_new_tokens": MAX_NEW_TOKENS}
    for name, v in values.items():
        flag = f"--{name.replace('_', '-')}"
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise NesyloopError(f"{flag}: must be a whole number of at least 1 (got {v!r})")
        if v is not None and name in caps and v > caps[name]:
            raise NesyloopError(f"{flag}: at most {caps[name]} (got {v})")


def _check_kb(kb: str | Path | None, shots: int) -> None:
    if kb is not None and shots:
        raise NesyloopError("--kb: retrieval prompts are zero-shot; use --shots 0 with --kb")
    if kb is None:
        return
    if not Path(kb).is_file():
        raise NesyloopError(f"--kb: {kb} is not a file")
    with open(kb, "rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            raise NesyloopError(f"--kb: {kb} is not a knowledge base (not an SQLite file)")
    from ..kb.store import open_kb  # not a KB, a newer schema, or damaged: one line, now

    open_kb(kb).close()


def _check_students(students: list[str | Path]) -> None:
    """Every student resolves to a local checkpoint, GGUF file, smollm2 or a hub name, before
    any data is loaded or anything is written."""
    from ..students.load import resolve_student

    for st in students:
        if not str(st).strip():
            raise NesyloopError("--student: an empty name; give a checkpoint folder, a .gguf "
                                "file, smollm2 or a hub name")
        resolve_student(st)


def _only_subtasks(examples: list[Example], task: str, subtasks: list[str] | None
                   ) -> list[Example]:
    """A user file's ``subtask`` field filtered by ``--subtask`` (BBH and AGIEval do it when
    loading)."""
    if task != "user" or not subtasks:
        return examples
    have = {ex.meta.get("subtask") for ex in examples}
    bad = next((s for s in subtasks if s not in have), None)
    if bad is not None:
        raise NesyloopError(f"--subtask: no example of the user data has subtask {bad!r}")
    return [ex for ex in examples if ex.meta.get("subtask") in subtasks]


def _load(task: str, split: str, cfg, data, hub, subtasks, header, limit
          ) -> tuple[list[Example], list[Example], BenchSettings]:
    settings = _settings(task, cfg, data, hub, subtasks, header, limit, split)
    examples, train = task_examples(task, split, settings, cfg)
    examples = _only_subtasks(examples, task, subtasks)
    if task == "bazaar" and limit is not None:
        examples = examples[:limit]
    if not examples:
        raise NesyloopError(f"{task} [{split}]: no examples")
    return examples, train, settings


def _run_student(student, examples, prompts, task, kb, cfg, bs, new_tokens, shots,
                 progress, log_path: Path) -> list[dict[str, Any]]:
    """One student's scored records, through the config's engine (``student.engine``; a
    server it starts logs to ``log_path``)."""
    from ..gen.registry import make_student

    backend = make_student(student, engine=cfg.student.engine, batch_size=bs, progress=progress,
                           server=cfg.student.server, log_path=log_path)
    try:
        extra: list[dict[str, Any]] = [{} for _ in examples]
        ps = prompts
        if kb is not None:
            from ..methods.nesycd.stages import retrieval_prompts, task_description

            desc = task_description(cfg) if cfg.task.name == task else ""
            build, _count = retrieval_prompts(Path(kb), cfg.nesycd, desc, cfg.nesycd.gate)
            ps, extra = build(examples, backend)
        return _predict(backend, examples, ps, extra, new_tokens, stops(shots))
    finally:
        backend.close()


def evaluate(students: list[str | Path] | None, task: str, split: str | None = None, *,
             limit: int | None = None, kb: str | Path | None = None,
             out: str | Path | None = None, shots: int = 0, data: str | Path | None = None,
             hub: bool = False, subtasks: list[str] | None = None, header: bool = True,
             config: str | Path | None = None, batch_size: int | None = None,
             max_new_tokens: int | None = None, predictions: str | Path | None = None,
             json_out: str | Path | None = None, progress: bool = True,
             log=print) -> dict[str, Any]:
    """Evaluate ``students`` (checkpoint folders, ``.gguf`` files, ``smollm2`` or hub names) on
    ``task``'s ``split`` (default test); writes ``<out>/<student>.jsonl`` (scored predictions),
    ``metrics.json`` and ``report.md``, all at the end (a failure leaves nothing). ``limit``
    caps the split (per subtask); ``kb`` retrieves from a NesyCD knowledge base for every
    question; ``config`` supplies retrieval, batch and (for the same task) ``[task.bench]``
    settings. With ``predictions`` (a JSONL of another model's outputs) instead of students,
    scores those (see :func:`evaluate_predictions`). Returns the metrics with the report."""
    from ..config import load_config

    if predictions is not None:
        if students:
            raise NesyloopError("--predictions: give either --student or --predictions, not both")
        bad = [f for f, v in (("--kb", kb), ("--limit", limit), ("--out", out),
                              ("--batch-size", batch_size), ("--max-new-tokens", max_new_tokens))
               if v is not None] + (["--shots"] if shots else [])
        if bad:
            raise NesyloopError(f"{bad[0]}: does not apply to --predictions (nothing is "
                                f"generated; the scores go to --json)")
        return evaluate_predictions(predictions, task, split, json_out=json_out, data=data,
                                    hub=hub, subtasks=subtasks, header=header, config=config,
                                    log=log)
    split = split or "test"
    if not students:
        raise NesyloopError("--student: give at least one student, or --predictions FILE")
    if json_out is not None:
        raise NesyloopError("--json: only with --predictions (students' scores go to "
                            "OUT/metrics.json)")
    if shots not in (0, 3):
        raise NesyloopError(f"--shots: must be 0 or 3 (got {shots})")
    _check_task(task, split, subtasks)
    _check_numbers(limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens)
    _check_kb(kb, shots)
    out_dir = check_out_dir(out or f"runs/eval/{task}-{split}", "--out")
    _check_students(students)
    cfg = load_config(config)
    examples, train, settings = _load(task, split, cfg, data, hub, subtasks, header, limit)
    bs = batch_size or cfg.eval.batch_size
    new_tokens = max_new_tokens or cfg.eval.max_new_tokens
    prompts = eval_prompts(task, examples, shots, settings, train)
    log(f"{task} [{split}]: {len(examples)} questions, {shots}-shot"
        f"{f', KB {kb}' if kb else ''}; results in {out_dir}")
    results: dict[str, dict[str, Any]] = {}
    scored: dict[str, list[dict[str, Any]]] = {}
    taken: set[str] = set()
    for student in students:
        label = _label(student, taken)
        started = time.time()
        log(f"eval {label}")
        scored[label] = _run_student(student, examples, prompts, task, kb, cfg, bs,
                                     new_tokens, shots, progress,
                                     out_dir / f"{label}.server.log")
        results[label] = {"student": str(student), **_metrics(scored[label]),
                          "predictions": str(out_dir / f"{label}.jsonl"),
                          "wall_s": round(time.time() - started, 1)}
    notes = [f"Task `{task}`, split `{split}`, {len(examples)} questions, {shots}-shot"
             + (f", knowledge base `{kb}` (retrieval on every question)" if kb else "")
             + ". " + _SCORING_NOTE]
    text = render(f"nesyloop eval: {task}", notes, results)
    summary = {"task": task, "split": split, "shots": shots, "kb": str(kb) if kb else None,
               "n": len(examples), "students": results}
    for label, recs in scored.items():
        write_jsonl(out_dir / f"{label}.jsonl", recs)
    write_json(out_dir / "metrics.json", summary)
    atomic_write_text(out_dir / "report.md", text)
    return {**summary, "report": text, "out": str(out_dir)}


_SCORING_NOTE = ("Accuracy (%): strict takes only an explicit final answer, flexible also falls "
                 "back to the last number/option/line; a hedged final answer (two candidates) "
                 "or one that is not an option is wrong in both (docs/scoring.md).")


def evaluate_predictions(path: str | Path, task: str, split: str | None = None, *,
                         json_out: str | Path | None = None, data: str | Path | None = None,
                         hub: bool = False, subtasks: list[str] | None = None,
                         header: bool = True, config: str | Path | None = None,
                         log=print) -> dict[str, Any]:
    """Score a JSONL of predictions made elsewhere against ``task`` (all its splits unless
    ``split`` is given): strict/flexible overall and per subtask, written to ``json_out`` as
    ``{"subtasks": {name: {strict, flexible, n}}, "overall": {..}}``. Returns that with the
    report text and the scored records."""
    from ..config import load_config

    split = split or "all"
    _check_task(task, split, subtasks)
    if json_out is not None:
        check_out_file(json_out, "--json")
    if not Path(path).is_file():
        raise NesyloopError(f"--predictions: {path} is not a file")
    cfg = load_config(config)
    examples = _load(task, split, cfg, data, hub, subtasks, header, None)[0]
    what = f"{task}" + ("" if split == "all" else f" [{split}]")
    records = score_predictions(path, examples, what)
    metrics = _metrics(records)
    label = re.sub(r"[^\w.+-]+", "_", Path(path).stem) or "predictions"
    notes = [f"Task `{task}`, {len(records)} predictions from `{path}`. " + _SCORING_NOTE]
    text = render(f"nesyloop eval: {task} (predictions)", notes, {label: metrics})
    result = {"subtasks": metrics["subtasks"], "overall": metrics["overall"]}
    if json_out is not None:
        write_json(json_out, result)
    log(f"scored {len(records)} predictions of {path} against {what}")
    return {**result, "report": text, "records": records}
