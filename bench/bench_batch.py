"""Benchmark the generation batch size of the hf backend (a script, not a test).

    python bench/bench_batch.py --model runs/default/train-std-cot/model \
        --data runs/default/data/test.jsonl --json out.json

Generates the student's answers (greedy, stop string "\\nQuestion:", as every prediction stage
does) on the same prompts with the same model at each batch size (`[eval] batch_size`; the
first is the baseline), alternating the sizes ``--repeat`` times (this machine's speed drifts
over minutes), and reports the median tokens/s of each, its ratio to the baseline, and whether
the texts equal the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_stop import run  # noqa: E402  (bench/ is the script's folder)

from nesyloop.gen import hf  # noqa: E402
from nesyloop.io import read_jsonl  # noqa: E402
from nesyloop.students.prompt import student_prompt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a student checkpoint folder")
    ap.add_argument("--data", type=Path, required=True, help="a split's JSONL (questions)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    prompts = [student_prompt(r["question"]) for r in read_jsonl(args.data)][:args.limit]
    backend = hf.HFBackend(args.model, batch_size=args.sizes[0], progress=False)
    speeds: dict[int, list[float]] = {b: [] for b in args.sizes}
    texts: dict[int, list[str]] = {}
    for _ in range(args.repeat):
        for b in args.sizes:
            backend.batch_size = b
            out, wall, tokens = run(backend, prompts, args.max_tokens)
            speeds[b].append(tokens / wall)
            texts[b] = out
    base = args.sizes[0]
    rows = []
    for b in args.sizes:
        tps = statistics.median(speeds[b])
        same = sum(x == y for x, y in zip(texts[b], texts[base], strict=True)) / len(prompts)
        rows.append({"batch_size": b, "tokens_per_s": round(tps, 1),
                     "ratio": round(tps / statistics.median(speeds[base]), 3),
                     "same_texts": round(same, 4)})
        print(f"batch {b:4d}: {tps:8.1f} tokens/s  {rows[-1]['ratio']:.2f}x  "
              f"same texts as batch {base}: {100 * same:.1f}%")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "prompts": len(prompts),
                                         "max_tokens": args.max_tokens, "rows": rows},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
