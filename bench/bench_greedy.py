"""Benchmark greedy generation that drops finished rows from a batch against transformers'
``generate`` (a script, not a test).

    python bench/bench_greedy.py --run runs/default --json out.json

For each prediction stage named (``--stage``, repeatable), the prompts it recorded (knowledge
blocks included) and the model it ran are generated as the stage does (all splits in one call,
greedy, the stop string, batch 256) two ways: with ``generate`` (the baseline: every row of a
batch decodes until its longest answer ends) and with :func:`nesyloop.gen.hf.greedy_dropping`
at drop shares 0.125, 0.25 (the default) and 0.5 (``--shares``). The ways alternate ``--repeats`` times
(this machine's speed drifts over minutes); medians of the wall time are reported, with ratios
to the baseline and whether texts and token counts are the baseline's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_pooled import stage_prompts  # noqa: E402  (bench/ is the script's folder)

from nesyloop.gen import hf  # noqa: E402
from nesyloop.gen.base import GenSettings, Request  # noqa: E402
from nesyloop.io import write_json  # noqa: E402
from nesyloop.students.prompt import STUDENT_STOP  # noqa: E402

BASELINE = "generate (baseline)"


def generate(backend, prompts: list[str], share: float | None, max_tokens: int):
    backend.drop_finished = share is not None
    hf.DROP_SHARE = share or hf.DROP_SHARE
    settings = GenSettings(max_tokens=max_tokens, temperature=0.0, stop=STUDENT_STOP)
    start = time.perf_counter()
    comps = backend.generate([Request.raw(p, settings) for p in prompts])
    return [(c.text, c.completion_tokens) for c in comps], time.perf_counter() - start


def bench_stage(run_dir: Path, stage: str, batch: int, repeats: int, max_tokens: int,
                shares: list[float]) -> dict:
    ways = {BASELINE: None, **{f"drop at {x}": x for x in shares}}
    splits, model = stage_prompts(run_dir, stage)
    prompts = [p for ps in splits.values() for p in ps]
    backend = hf.HFBackend(model, batch_size=batch, progress=False)
    walls: dict[str, list[float]] = {w: [] for w in ways}
    outs: dict[str, list] = {}
    for _ in range(repeats):
        for way, share in ways.items():
            outs[way], wall = generate(backend, prompts, share, max_tokens)
            walls[way].append(wall)
    rows = []
    for way in ways:
        med = statistics.median(walls[way])
        same = sum(a == b for a, b in zip(outs[way], outs[BASELINE], strict=True)) / len(prompts)
        rows.append({"way": way, "wall_s": round(med, 2), "runs": [round(w, 2) for w in walls[way]],
                     "ratio": round(statistics.median(walls[BASELINE]) / med, 3),
                     "same_outputs": same})
        print(f"{stage:24s} {way:20s} {med:7.2f} s  {rows[-1]['ratio']:.2f}x  "
              f"same texts and counts: {100 * same:.1f}%", flush=True)
    backend.close()
    return {"stage": stage, "model": str(model), "prompts": len(prompts), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"))
    ap.add_argument("--stage", action="append",
                    help="prediction stage (repeatable; default: predict-std-cot, predict-nesycd+fdd)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--shares", type=float, nargs="+", default=[0.125, 0.25, 0.5],
                    help="drop shares to compare with generate")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    stages = args.stage or ["predict-std-cot", "predict-nesycd+fdd"]
    results = [bench_stage(args.run, s, args.batch_size, args.repeats, args.max_tokens, args.shares)
               for s in stages]
    if args.json:
        write_json(args.json, {"batch_size": args.batch_size, "stages": results})


if __name__ == "__main__":
    main()
