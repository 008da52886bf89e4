"""Benchmark the stop-string check of the hf backend (a script, not a test).

    python bench/bench_stop.py --model runs/default/train-std-cot/model \
        --data runs/default/data/test.jsonl --json out.json

Generates the student's answers (greedy, stop string "\\nQuestion:", as every prediction stage
does) twice on the same prompts with the same model: once decoding every row's tail at every
step (the baseline) and once decoding only rows whose newest token can end a stop string (what
nesyloop does), and reports tokens/s of each, their ratio, and whether the texts are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nesyloop.gen import hf  # noqa: E402
from nesyloop.gen.base import GenSettings, Request  # noqa: E402
from nesyloop.io import read_jsonl  # noqa: E402
from nesyloop.students.prompt import STUDENT_STOP, student_prompt  # noqa: E402


class DecodeEveryRow(hf.StopOnStrings):
    """The baseline: no trigger filter, every row decoded at every step."""

    @classmethod
    def _trigger_ids(cls, tokenizer, stops):
        return None


def run(backend: hf.HFBackend, prompts: list[str], max_tokens: int) -> tuple[list[str], float, int]:
    settings = GenSettings(max_tokens=max_tokens, temperature=0.0, stop=STUDENT_STOP)
    start = time.perf_counter()
    comps = backend.generate([Request.raw(p, settings) for p in prompts])
    wall = time.perf_counter() - start
    return [c.text for c in comps], wall, sum(c.completion_tokens for c in comps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("runs/default/train-std-cot/model"))
    ap.add_argument("--data", type=Path, default=Path("runs/default/data/test.jsonl"))
    ap.add_argument("--n", type=int, default=256, help="questions")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    prompts = [student_prompt(r["question"]) for r in read_jsonl(args.data)[:args.n]]
    backend = hf.HFBackend(args.model, batch_size=args.batch_size, progress=False)
    run(backend, prompts[:8], 16)  # warm-up
    fast_texts, fast_s, tokens = run(backend, prompts, args.max_tokens)
    original = hf.StopOnStrings
    hf.StopOnStrings = DecodeEveryRow
    try:
        base_texts, base_s, base_tokens = run(backend, prompts, args.max_tokens)
    finally:
        hf.StopOnStrings = original
    res = {"model": str(args.model), "questions": len(prompts), "batch_size": args.batch_size,
           "baseline_tokens_per_s": round(base_tokens / base_s, 1),
           "trigger_tokens_per_s": round(tokens / fast_s, 1),
           "ratio": round(base_s / fast_s, 3),
           "identical_texts": fast_texts == base_texts, "tokens": tokens}
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
