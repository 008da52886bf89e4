"""Mixed thoughts (FDD): a student trained on chain-of-thought (CoT) targets, program-of-thought
(PoT) targets, or both. The prompt's last word says which: ``Answer:`` asks for reasoning (the
same prompt as std-cot), ``Program:`` for a Python program. A PoT answer is the value of the
program, run in the sandbox; ``pot-then-cot`` falls back to CoT when the program does not run.
"""

from __future__ import annotations

from typing import Any

from ..gen.base import GenSettings, Request
from ..kb.abstract import apply_prompt
from ..scoring import score_output
from ..scoring.program import program_answers
from ..students.prompt import STUDENT_STOP, pot_prompt, pot_target, student_prompt
from ..tasks.base import Example

TRAIN_THOUGHTS = ("cot", "pot", "both")
INFERENCE = ("cot", "pot", "pot-then-cot")


def thought_pairs(records: list[dict[str, Any]], thoughts: str) -> list[dict[str, str]]:
    """Training pairs from pool records (``id``, ``question`` and lists ``rationales``,
    ``programs``); each pair names its record's ``id``."""
    pairs = []
    for r in records:
        if thoughts in ("cot", "both"):
            pairs += [{"prompt": student_prompt(r["question"]), "completion": " " + t,
                       "task": "cot", "id": r["id"]} for t in r["rationales"]]
        if thoughts in ("pot", "both"):
            pairs += [{"prompt": pot_prompt(r["question"]), "completion": pot_target(t),
                       "task": "pot", "id": r["id"]} for t in r["programs"]]
    return pairs


def _generate(backend, prompts: list[str], max_new_tokens: int, n: int, temperature: float,
              seed: int) -> list[list[tuple[str, int, int]]]:
    settings = GenSettings(max_tokens=max_new_tokens, temperature=temperature if n > 1 else 0.0,
                           n=n, stop=STUDENT_STOP, seed=seed)
    comps = backend.generate([Request.raw(p, settings) for p in prompts])
    return [[(t, c.prompt_tokens, c.completion_tokens // max(1, len(c.texts))) for t in c.texts]
            for c in comps]


def executed(text: str, ans) -> str:
    """A PoT output as scored: the program, then the value it computed (or why it failed)."""
    if ans.value is not None:
        return f"{text.rstrip()}\nThe program's result: the answer is {ans.value}."
    verdict = ans.result.verdict if ans.result else "no program"
    return f"{text.rstrip()}\n(the program gave no answer: {verdict})"


def answer(backend, examples: list[Example], inference: str, max_new_tokens: int,
           knowledge: list[str | None] | None = None, n: int = 1, temperature: float = 0.7,
           seed: int = 0, mappings: list | None = None) -> list[list[dict[str, Any]]]:
    """The student's ``n`` answers to each example in the ``inference`` mode: per example, a list
    of records with ``prompt``, ``output`` (for PoT: the program and its executed value),
    ``thought`` and, for PoT, ``program`` (the sandbox verdict). ``mappings``: per example, the
    placeholders of its block's names ([nesycd.retrieval] abstract), applied to its prompts."""
    if inference not in INFERENCE:
        raise ValueError(f"unknown inference mode {inference!r}")
    know = knowledge or [None] * len(examples)
    shown = [apply_prompt(ex.question, k, m) for ex, k, m in
             zip(examples, know, mappings or [[]] * len(examples), strict=True)]
    first = "cot" if inference == "cot" else "pot"
    make = student_prompt if first == "cot" else pot_prompt
    prompts = [make(q, k) for q, k in shown]
    outs = _generate(backend, prompts, max_new_tokens, n, temperature, seed)
    recs = [[{"prompt": p, "output": t, "thought": first, "prompt_tokens": pt,
              "completion_tokens": ct} for t, pt, ct in o] for p, o in zip(prompts, outs)]
    if first == "pot":
        flat = [r for rs in recs for r in rs]
        for r, ans in zip(flat, program_answers([r["output"] for r in flat]), strict=True):
            r["program"] = {k: v for k, v in ans.to_dict().items() if k != "program"}
            r["raw_output"] = r["output"]
            r["output"] = executed(r["output"], ans)
    if inference == "pot-then-cot":
        redo = [(i, j) for i, rs in enumerate(recs) for j, r in enumerate(rs)
                if r["program"]["value"] is None]
        if redo:
            cot_prompts = [student_prompt(*shown[i]) for i, _ in redo]
            cot = _generate(backend, cot_prompts, max_new_tokens, 1, 0.0, seed)
            for (i, j), p, o in zip(redo, cot_prompts, cot, strict=True):
                t, pt, ct = o[0]
                recs[i][j].update(fallback_from=recs[i][j]["output"], prompt=p, output=t,
                                  thought="cot", prompt_tokens=recs[i][j]["prompt_tokens"] + pt,
                                  completion_tokens=recs[i][j]["completion_tokens"] + ct)
    for ex, rs in zip(examples, recs, strict=True):
        for r in rs:
            s = score_output(r["output"], ex.answer, ex.answer_type, ex.options)
            r["pred"], r["correct"] = s["strict_pred"], bool(s["strict"])
    return recs
