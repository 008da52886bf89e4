"""Benchmark two speed choices of the student side on a finished main job (a script, not a test).

    python bench/bench_kernels.py --run runs/default --json out.json

* Training: tokens/s of ``train_sft`` with eager attention against sdpa (transformers' default),
  from the run's initial scratch student on the pairs of its last FDD round (batch 8, bf16 where
  the CPU has it, as the main job trains).
* Generation: tokens/s of the hf backend with nesyloop's block-grown kv cache against
  transformers' default cache (one ``torch.cat`` per layer per step), with the run's
  ``nesycd+fdd`` student on its own test-deep prompts (retrieved knowledge included, batch 64,
  greedy, the prediction stages' stop string), and whether the texts are identical.

Each pair is alternated ``--repeats`` times (for training, in the other order every second
repeat) and medians are reported, because this machine's speed drifts over minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nesyloop.gen import hf  # noqa: E402
from nesyloop.gen.base import GenSettings, Request  # noqa: E402
from nesyloop.io import read_jsonl  # noqa: E402
from nesyloop.students.prompt import STUDENT_STOP  # noqa: E402
from nesyloop.students.train import TrainSettings, cpu_has_bf16, train_sft  # noqa: E402


def median_runs(runs: dict[str, list[float]]) -> dict:
    return {k: {"median": statistics.median(v), "runs": v} for k, v in runs.items()}


def training(run: Path, steps: int, repeats: int) -> dict:
    last = max(run.glob("train-fdd-r*"), key=lambda d: int(d.name.rsplit("-r", 1)[1]))
    pairs = read_jsonl(last / "train_pairs.jsonl")
    base = run / "student-init" / "model"
    speeds: dict[str, list[float]] = {"sdpa": [], "eager": []}
    with tempfile.TemporaryDirectory(prefix="nesyloop-bench-") as tmp:
        for r in range(repeats):  # the order flips each repeat: a drifting machine favours neither
            for kernel in (["sdpa", "eager"] if r % 2 == 0 else ["eager", "sdpa"]):
                s = TrainSettings(max_steps=steps, per_device_train_batch_size=8, attention=kernel, logging_steps=10)
                st = train_sft(base, pairs, Path(tmp) / f"{kernel}-{r}", s, progress=False)
                speeds[kernel].append(st["tokens_per_s"])
    res = median_runs(speeds)
    res["ratio"] = res["eager"]["median"] / res["sdpa"]["median"]
    res["pair_ratios"] = [e / d for e, d in zip(speeds["eager"], speeds["sdpa"])]
    res["steps"], res["pairs"] = steps, len(pairs)
    return res


def generation(run: Path, repeats: int, limit: int) -> dict:
    records = read_jsonl(run / "predict-nesycd+fdd" / "test-deep.jsonl")[:limit]
    settings = GenSettings(max_tokens=256, temperature=0.0, stop=STUDENT_STOP)
    reqs = [Request.raw(r["prompt"], settings) for r in records]
    backend = hf.HFBackend(run / "train-nesycd+fdd" / "model", batch_size=64, progress=False)
    block_cache = hf.block_cache
    speeds: dict[str, list[float]] = {"default": [], "block": []}
    texts: dict[str, list[str]] = {}
    try:
        for _ in range(repeats):
            for name, runs in speeds.items():
                hf.block_cache = block_cache if name == "block" else (lambda model: None)
                t0 = time.perf_counter()
                comps = backend.generate(reqs)
                runs.append(sum(c.completion_tokens for c in comps) / (time.perf_counter() - t0))
                texts[name] = [c.text for c in comps]
    finally:
        hf.block_cache = block_cache
    res = median_runs(speeds)
    res["ratio"] = res["block"]["median"] / res["default"]["median"]
    res["same_texts"] = texts["block"] == texts["default"]
    res["prompts"] = len(reqs)
    res["mean_prompt_tokens"] = statistics.mean(r["prompt_tokens"] for r in records)
    return res


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"), help="a finished main job")
    ap.add_argument("--steps", type=int, default=60, help="training steps per measurement")
    ap.add_argument("--prompts", type=int, default=300, help="test-deep prompts to generate for")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", default="train,generate",
                    help="which comparisons to run (comma-separated)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    parts = set(args.parts.split(","))
    res = {"threads": torch.get_num_threads(), "cpu_bf16": cpu_has_bf16(), "run": str(args.run)}
    if "train" in parts:
        t = res["train"] = training(args.run, args.steps, args.repeats)
        print(f"train tokens/s   sdpa {t['sdpa']['median']:.0f}  eager {t['eager']['median']:.0f}"
              f"  ratio {t['ratio']:.2f}x  ({t['steps']} steps x {args.repeats}, batch 8)")
    if "generate" in parts:
        g = res["generate"] = generation(args.run, args.repeats, args.prompts)
        print(f"generate tok/s   default cache {g['default']['median']:.0f}  block cache "
              f"{g['block']['median']:.0f}  ratio {g['ratio']:.2f}x  (identical texts: "
              f"{g['same_texts']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
