"""Stages shared by every method: data, student init, teacher rationales, train, predict, score.

Each function is one stage of a run: it reads upstream artifacts from disk and writes its own
(JSONL, HF checkpoints, metrics JSON) into ``ctx.out``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..gen.base import GenSettings, Request
from ..io import read_jsonl, write_json, write_jsonl
from ..runs.rundir import StageContext
from ..scoring import score_output, summarize
from ..tasks.base import Example

STUDENT_STOP = ("\nQuestion:",)


def student_prompt(question: str) -> str:
    """The student's input for a question (wrapped in a chat template for chat models)."""
    return f"Question: {question}\nAnswer:"


def answer_target(ex: Example) -> str:
    return f" The answer is {ex.answer}."


def load_split(data_dir: Path, split: str) -> list[Example]:
    return [Example.from_dict(d) for d in read_jsonl(data_dir / f"{split}.jsonl")]


def write_examples(path: Path, examples: list[Example]) -> int:
    return write_jsonl(path, (ex.to_dict() for ex in examples))


def train_stage(base: str | Path, pairs_fn: Callable[[], list[dict[str, str]]], train_settings,
                ) -> Callable[[StageContext], dict[str, Any]]:
    """A stage that fine-tunes ``base`` on (prompt, completion) pairs into ``<stage>/model``."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        from ..students.train import train_sft

        pairs = pairs_fn()
        write_jsonl(ctx.out / "train_pairs.jsonl", pairs)
        stats = train_sft(base, pairs, ctx.out / "model", train_settings, work_dir=ctx.work)
        write_json(ctx.out / "train_stats.json", stats)
        return {"pairs": len(pairs), **stats}

    return fn


def predict_stage(model: str | Path, data_dir: Path, splits: list[str], batch_size: int,
                  max_new_tokens: int, progress: bool = True,
                  ) -> Callable[[StageContext], dict[str, Any]]:
    """Batched greedy generation of the student on every eval split."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        from ..gen.hf import HFBackend

        backend = HFBackend(str(model), batch_size=batch_size, progress=progress)
        settings = GenSettings(max_tokens=max_new_tokens, temperature=0.0, stop=STUDENT_STOP)
        info: dict[str, Any] = {}
        for split in splits:
            examples = load_split(data_dir, split)
            reqs = [Request.raw(student_prompt(ex.question), settings) for ex in examples]
            comps = backend.generate(reqs)
            write_jsonl(ctx.out / f"{split}.jsonl", (
                {"id": ex.id, "question": ex.question, "gold": ex.answer,
                 "answer_type": ex.answer_type, "options": ex.options, "output": c.text,
                 "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}
                for ex, c in zip(examples, comps, strict=True)))
            info[split] = {"n": len(examples),
                           "completion_tokens": sum(c.completion_tokens for c in comps)}
        backend.close()
        return info

    return fn


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
