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
from ..io import atomic_write_text, write_json, write_jsonl
from ..scoring import score_output, summarize
from ..tasks import task_splits
from ..tasks.base import Example
from ..tasks.bench import BENCH_TASKS, SPLITS, BenchSettings
from ..tasks.bench.prompts import eval_prompts, stops
from .tables import render

EVAL_SPLITS = (*SPLITS, "all")
TASK_NAMES = ("bazaar", *BENCH_TASKS)


def task_examples(task: str, split: str, settings: BenchSettings, cfg,
                  ) -> tuple[list[Example], list[Example]]:
    """(the split's examples, the training examples few-shot prompts draw from)."""
    if task not in TASK_NAMES:
        raise NesyloopError(f"--task: unknown task {task!r}; valid: {', '.join(TASK_NAMES)}")
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


def evaluate(students: list[str | Path], task: str, split: str = "test", *,
             limit: int | None = None, kb: str | Path | None = None,
             out: str | Path | None = None, shots: int = 0, data: str | Path | None = None,
             hub: bool = False, subtasks: list[str] | None = None, header: bool = True,
             config: str | Path | None = None, batch_size: int | None = None,
             max_new_tokens: int | None = None, progress: bool = True,
             log=print) -> dict[str, Any]:
    """Evaluate ``students`` (checkpoint folders, ``.gguf`` files, ``smollm2`` or hub names) on
    ``task``'s ``split``; writes ``<out>/<student>.jsonl`` (scored predictions),
    ``metrics.json`` and ``report.md``. ``limit`` caps the split (per subtask); ``kb`` retrieves
    from a NesyCD knowledge base for every question; ``config`` supplies retrieval, batch and
    (for the same task) ``[task.bench]`` settings. Returns the metrics with the report text."""
    from ..config import load_config
    from ..gen.hf import HFBackend

    if not students:
        raise NesyloopError("--student: give at least one student")
    if shots not in (0, 3):
        raise NesyloopError(f"--shots: must be 0 or 3 (got {shots})")
    if kb is not None and shots:
        raise NesyloopError("--kb: retrieval prompts are zero-shot; use --shots 0 with --kb")
    if kb is not None and not Path(kb).is_file():
        raise NesyloopError(f"--kb: {kb} is not a file")
    cfg = load_config(config)
    settings = _settings(task, cfg, data, hub, subtasks, header, limit, split)
    examples, train = task_examples(task, split, settings, cfg)
    if task == "bazaar" and limit is not None:
        examples = examples[:limit]
    if not examples:
        raise NesyloopError(f"{task} [{split}]: no examples")
    bs = batch_size or cfg.eval.batch_size
    new_tokens = max_new_tokens or cfg.eval.max_new_tokens
    prompts = eval_prompts(task, examples, shots, settings, train)
    out_dir = Path(out or f"runs/eval/{task}-{split}")
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"{task} [{split}]: {len(examples)} questions, {shots}-shot"
        f"{f', KB {kb}' if kb else ''}; results in {out_dir}")
    results: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for student in students:
        label = _label(student, taken)
        started = time.time()
        log(f"eval {label}")
        backend = HFBackend(str(student), batch_size=bs, progress=progress)
        try:
            extra: list[dict[str, Any]] = [{} for _ in examples]
            ps = prompts
            if kb is not None:
                from ..methods.nesycd import retrieval_prompts, task_description

                desc = task_description(cfg) if cfg.task.name == task else ""
                build, _count = retrieval_prompts(Path(kb), cfg.nesycd, desc, cfg.nesycd.gate)
                ps, extra = build(examples, backend)
            records = _predict(backend, examples, ps, extra, new_tokens, stops(shots))
        finally:
            backend.close()
        write_jsonl(out_dir / f"{label}.jsonl", records)
        results[label] = {"student": str(student), **_metrics(records),
                          "predictions": str(out_dir / f"{label}.jsonl"),
                          "wall_s": round(time.time() - started, 1)}
    notes = [f"Task `{task}`, split `{split}`, {len(examples)} questions, {shots}-shot"
             + (f", knowledge base `{kb}` (retrieval on every question)" if kb else "")
             + ". Accuracy (%): strict takes only an explicit final answer, flexible also "
               "falls back to the last number/option/line."]
    text = render(f"nesyloop eval: {task}", notes, results)
    summary = {"task": task, "split": split, "shots": shots, "kb": str(kb) if kb else None,
               "n": len(examples), "students": results}
    write_json(out_dir / "metrics.json", summary)
    atomic_write_text(out_dir / "report.md", text)
    return {**summary, "report": text, "out": str(out_dir)}
