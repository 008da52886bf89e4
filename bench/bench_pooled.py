"""Benchmark a prediction stage's generation with every split in one call against one call per
split (a script, not a test).

    python bench/bench_pooled.py --run runs/default --stage predict-nesycd+fdd --json out.json

The prompts are the ones the stage recorded (retrieved knowledge included), the model the one
it ran (``train-<method>``). Three ways to generate them, greedy with the stop string as the
stage does: one ``generate`` call per split at batch 128 (the baseline: the main job until
2026-12-03), all splits in one call at batch 128, 256 and 512. They alternate
``--repeats`` times (this machine's speed drifts over minutes); medians of the wall time are
reported, with ratios to the baseline and whether the texts are the baseline's.
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

WAYS = {"per split, batch 128": (False, 128), "pooled, batch 128": (True, 128),
        "pooled, batch 256": (True, 256), "pooled, batch 512": (True, 512)}


def generate(backend, splits: dict[str, list[str]], pooled: bool, batch: int, max_tokens: int):
    backend.batch_size = batch
    if pooled:
        return run(backend, [p for ps in splits.values() for p in ps], max_tokens)
    texts, wall, tokens = [], 0.0, 0
    for prompts in splits.values():
        t, w, n = run(backend, prompts, max_tokens)
        texts, wall, tokens = texts + t, wall + w, tokens + n
    return texts, wall, tokens


def stage_prompts(run_dir: Path, stage: str) -> tuple[dict[str, list[str]], Path]:
    """The prompts a prediction stage recorded, per split, and the model it ran."""
    splits = {f.stem: [r["prompt"] for r in read_jsonl(f)]
              for f in sorted((run_dir / stage).glob("*.jsonl"))}
    return splits, run_dir / stage.replace("predict-", "train-") / "model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"))
    ap.add_argument("--stage", default="predict-nesycd+fdd")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    splits, model = stage_prompts(args.run, args.stage)
    backend = hf.HFBackend(model, batch_size=128, progress=False)
    walls: dict[str, list[float]] = {w: [] for w in WAYS}
    texts: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for way, (pooled, batch) in WAYS.items():
            texts[way], wall, _ = generate(backend, splits, pooled, batch, args.max_tokens)
            walls[way].append(wall)
    base = next(iter(WAYS))
    rows = []
    for way in WAYS:
        med = statistics.median(walls[way])
        same = sum(a == b for a, b in zip(texts[way], texts[base], strict=True)) / len(texts[base])
        rows.append({"way": way, "wall_s": round(med, 2), "runs": [round(w, 2) for w in walls[way]],
                     "ratio": round(statistics.median(walls[base]) / med, 3), "same_texts": same})
        print(f"{way:22s} {med:7.2f} s  {rows[-1]['ratio']:.2f}x  same texts: {100 * same:.1f}%")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"stage": args.stage, "model": str(model),
                                         "prompts": {k: len(v) for k, v in splits.items()},
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
