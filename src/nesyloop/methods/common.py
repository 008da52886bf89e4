"""The stage functions every method uses: train, predict, score (and reading/writing splits).

Each function is one stage of a run: it reads upstream artifacts from disk and writes its own
(JSONL, HF checkpoints, metrics JSON) into ``ctx.out``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..gen.base import Backend, GenSettings, Request
from ..io import read_jsonl, write_json, write_jsonl
from ..runs.rundir import StageContext
from ..scoring import score_output, summarize
from ..students.prompt import STUDENT_STOP, student_prompt
from ..tasks.base import Example
from .thoughts import answer


def load_split(data_dir: Path, split: str) -> list[Example]:
    return [Example.from_dict(d) for d in read_jsonl(data_dir / f"{split}.jsonl")]


def write_examples(path: Path, examples: list[Example]) -> int:
    return write_jsonl(path, (ex.to_dict() for ex in examples))


def train_stage(base: str | Path, pairs_fn: Callable[[StageContext], list[dict[str, str]]],
                train_settings) -> Callable[[StageContext], dict[str, Any]]:
    """A stage that fine-tunes ``base`` on (prompt, completion) pairs into ``<stage>/model``.
    ``pairs_fn`` gets the stage context (to write side artifacts next to the model)."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        from ..students.train import train_sft

        pairs = pairs_fn(ctx)
        write_jsonl(ctx.out / "train_pairs.jsonl", pairs)
        if train_settings.launch:  # several processes (students/launch.py)
            from ..students.launch import launch_training

            stats = launch_training(train_settings.launch, base, ctx.out / "train_pairs.jsonl",
                                    ctx.out / "model", train_settings, ctx.work)
        else:
            stats = train_sft(base, pairs, ctx.out / "model", train_settings,
                              work_dir=ctx.work)
        write_json(ctx.out / "train_stats.json", stats)
        return {"pairs": len(pairs), **stats}

    return fn


# a student checkpoint (and where a server it starts logs) -> the engine that runs it
# (RunContext.student; gen.registry.make_student)
StudentFactory = Callable[..., Backend]
SERVER_LOG = "student-server.log"  # a server engine's output, in the stage's folder


@contextmanager
def student_engine(student: StudentFactory, model: str | Path,
                   ctx: StageContext) -> Iterator[Backend]:
    """The engine running ``model`` for the stage ``ctx``, closed when the block ends, also on
    error or Ctrl-C (a started server stops). A server's log goes to the stage's work folder,
    which a failed stage keeps (its errors name the file), and is copied into the stage's
    folder when the engine closes."""
    backend = student(model, log_path=ctx.work / SERVER_LOG)
    try:
        yield backend
    finally:
        backend.close()
        log = getattr(backend, "log_path", None)
        if log is not None and Path(log).is_file():
            shutil.copy2(log, ctx.out / SERVER_LOG)
# (examples, the student's backend) -> (prompts, per-record extras)
PromptFn = Callable[[list[Example], Any], tuple[list[str], list[dict[str, Any]]]]


def plain_prompts(examples: list[Example], _backend=None) -> tuple[list[str], list[dict[str, Any]]]:
    return [student_prompt(ex.question) for ex in examples], [{} for _ in examples]


def generate_records(backend, examples: list[Example], prompts: list[str],
                     max_new_tokens: int, extra: list[dict[str, Any]] | None = None,
                     stop: tuple[str, ...] = STUDENT_STOP) -> list[dict[str, Any]]:
    """Greedy student outputs for ``prompts``, as prediction records (gold and prompt kept)."""
    settings = GenSettings(max_tokens=max_new_tokens, temperature=0.0, stop=stop)
    comps = backend.generate([Request.raw(p, settings) for p in prompts])
    extra = extra or [{} for _ in examples]
    return [{"id": ex.id, "question": ex.question, "gold": ex.answer,
             "answer_type": ex.answer_type, "options": ex.options, "prompt": p, "output": c.text,
             "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, **x}
            for ex, p, c, x in zip(examples, prompts, comps, extra, strict=True)]


def thought_records(backend, examples: list[Example], inference: str, max_new_tokens: int,
                    extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Prediction records of a mixed-thoughts student (PoT answers executed in the sandbox);
    an ``extra`` record's ``knowledge`` (retrieval) goes before the question."""
    extra = extra or [{} for _ in examples]
    recs = answer(backend, examples, inference, max_new_tokens,
                  knowledge=[x.get("knowledge") for x in extra],
                  mappings=[x.get("abstracted") or [] for x in extra])
    return [{"id": ex.id, "question": ex.question, "gold": ex.answer,
             "answer_type": ex.answer_type, "options": ex.options, **rs[0], **x}
            for ex, rs, x in zip(examples, recs, extra, strict=True)]


def predict_stage(student: StudentFactory, model: str | Path, data_dir: Path | dict[str, Path],
                  splits: list[str],
                  max_new_tokens: int, prompt_fn: PromptFn | None = None,
                  after: Callable[[list[dict[str, Any]]], None] | None = None,
                  inference: str = "cot") -> Callable[[StageContext], dict[str, Any]]:
    """Batched greedy generation of the student ``model`` (run by the engine ``student``
    builds) on every eval split. ``prompt_fn`` builds the
    inputs (and per-record extras such as retrieved entries); ``after`` sees all records.
    ``inference`` other than "cot" asks a mixed-thoughts student for programs (see thoughts.py);
    its prompts are built from the ``knowledge`` that ``prompt_fn`` puts in each extra."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        info: dict[str, Any] = {}
        everything: list[dict[str, Any]] = []
        with student_engine(student, model, ctx) as backend:
            parts = []
            for split in splits:
                examples = load_split(data_dir[split] if isinstance(data_dir, dict)
                                      else data_dir, split)
                parts.append((examples, *(prompt_fn or plain_prompts)(examples, backend)))
            for split, records in zip(splits, _split_records(backend, parts, inference,
                                                             max_new_tokens), strict=True):
                write_jsonl(ctx.out / f"{split}.jsonl", records)
                everything += records
                info[split] = {"n": len(records),
                               "completion_tokens": sum(r["completion_tokens"] for r in records)}
        if after is not None:
            after(everything)
        return info

    return fn


def _split_records(backend, parts: list[tuple[list[Example], list[str], list[dict[str, Any]]]],
                   inference: str, max_new_tokens: int) -> list[list[dict[str, Any]]]:
    """Each split's prediction records, from its (examples, prompts, extras). CoT prompts of
    all splits go to the engine in one call: its batches are then full and sorted by length
    across splits (the scratch student's greedy texts are the ones per-split calls give;
    bench/bench_pooled.py)."""
    if inference != "cot":
        return [thought_records(backend, examples, inference, max_new_tokens, extra)
                for examples, _, extra in parts]
    records = generate_records(backend, [e for p in parts for e in p[0]],
                               [q for p in parts for q in p[1]], max_new_tokens,
                               [x for p in parts for x in p[2]])
    out, start = [], 0
    for examples, _, _ in parts:
        out.append(records[start : start + len(examples)])
        start += len(examples)
    return out


def score_stage(pred_dir: Path, splits: list[str]) -> Callable[[StageContext], dict[str, Any]]:
    """Strict and flexible scores per split, with the rule that matched for each record."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for split in splits:
            scored = []
            for rec in read_jsonl(pred_dir / f"{split}.jsonl"):
                s = score_output(rec["output"], rec["gold"], rec["answer_type"], rec["options"])
                scored.append({**rec, **s})
            write_jsonl(ctx.out / f"{split}.jsonl", scored)
            metrics[split] = summarize(scored)
        write_json(ctx.out / "metrics.json", metrics)
        return metrics

    return fn
