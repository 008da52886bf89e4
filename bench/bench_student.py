"""Benchmark the student side on a default-size scratch student (a script, not a test).

    PYTHONPATH=src python bench/bench_student.py --json out.json

Measures, in one run on this machine:
  * training tokens/s (a few dozen optimizer steps), bf16 autocast off and on;
  * generation tokens/s of HFBackend batched (length-sorted, batch_size) vs one example at a
    time (batch_size=1) on the same prompts with the same model, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nesyloop.gen.base import GenSettings, Request  # noqa: E402
from nesyloop.gen.hf import HFBackend  # noqa: E402
from nesyloop.students.load import load_student  # noqa: E402
from nesyloop.students.scratch import ScratchSettings, count_parameters, create_scratch_student  # noqa: E402
from nesyloop.students.train import TrainSettings, cpu_has_bf16, train_sft  # noqa: E402

NAMES = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal"]
ITEMS = ["apples", "pens", "coins", "books", "cards", "shells"]


def task(rng: random.Random) -> dict:
    """A small word problem with a short worked rationale (tens of tokens each)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(1, 9)
    prompt = (
        f"{name} has {a} {item}. {name} buys {b} more {item}, then gives away {c}. "
        f"How many {item} does {name} have now?"
    )
    completion = f" {name} has {a} + {b} = {a + b} {item}. Then {a + b} - {c} = {a + b - c}. Answer: {a + b - c}"
    return {"prompt": prompt, "completion": completion}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--steps", type=int, default=30, help="training steps per precision")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 training run")
    args = ap.parse_args()

    import torch

    rng = random.Random(0)
    pairs = [task(rng) for _ in range(2048)]
    res: dict = {"threads": torch.get_num_threads(), "cpu_bf16": cpu_has_bf16()}
    with tempfile.TemporaryDirectory(prefix="nesyloop-bench-") as tmp:
        tmp = Path(tmp)
        texts = [p["prompt"] + p["completion"] for p in pairs]
        base = create_scratch_student(texts, tmp / "base", ScratchSettings())
        model, tok = load_student(base)
        res["params"] = count_parameters(model)
        res["vocab"] = len(tok)
        lens = [len(tok(p["prompt"] + p["completion"])["input_ids"]) for p in pairs[:256]]
        res["mean_example_tokens"] = sum(lens) / len(lens)
        del model

        # training throughput, fp32 then bf16 autocast (same data, same steps)
        for name, bf16 in [("fp32", False)] + ([] if args.no_bf16 else [("bf16", True)]):
            s = TrainSettings(max_steps=args.steps, per_device_train_batch_size=args.batch_size, bf16=bf16, logging_steps=10)
            st = train_sft(base, pairs, tmp / f"trained_{name}", s, progress=False)
            res[f"train_{name}"] = {k: st[k] for k in ("tokens", "tokens_per_s", "train_loss", "steps", "wall_s")}

        # generation throughput: batched vs one at a time, same model, same prompts
        prompts = [task(random.Random(10_000 + i))["prompt"] for i in range(args.prompts)]
        settings = GenSettings(max_tokens=args.max_tokens)
        reqs = [Request.raw(p, settings) for p in prompts]
        batched = HFBackend(tmp / "trained_fp32", batch_size=args.batch_size, progress=False)
        single = HFBackend(batched.model, batch_size=1, model=batched.lm, tokenizer=batched.tokenizer, progress=False)
        batched.generate(reqs[:2])  # warm-up
        gen, outs = {}, {}
        for name, backend in [("batched", batched), ("single", single)]:
            t0 = time.perf_counter()
            out = backend.generate(reqs)
            dt = time.perf_counter() - t0
            outs[name] = [c.texts for c in out]
            toks = sum(c.completion_tokens for c in out)
            gen[name] = {"completion_tokens": toks, "seconds": dt, "tokens_per_s": toks / dt}
        res["gen_same_texts"] = sum(a == b for a, b in zip(outs["batched"], outs["single"])) / len(reqs)
        res["gen"] = gen
        res["gen_batch_size"] = args.batch_size
        res["gen_speedup"] = gen["batched"]["tokens_per_s"] / gen["single"]["tokens_per_s"]

    rows = [
        ("scratch student", f"{res['params'] / 1e6:.2f} M params, vocab {res['vocab']}"),
        ("threads / cpu bf16", f"{res['threads']} / {res['cpu_bf16']}"),
        ("mean example tokens", f"{res['mean_example_tokens']:.1f}"),
    ]
    for name in ("fp32", "bf16"):
        if f"train_{name}" in res:
            r = res[f"train_{name}"]
            info = f"{r['tokens_per_s']:.0f}  ({r['steps']} steps, {r['tokens']} tokens)"
            rows.append((f"train {name} tokens/s", info))
    for name in ("batched", "single"):
        g = res["gen"][name]
        info = f"{g['tokens_per_s']:.1f}  ({g['completion_tokens']} tokens, {g['seconds']:.1f} s)"
        rows.append((f"gen {name} tokens/s", info))
    rows.append(("gen batched / single", f"{res['gen_speedup']:.1f}x  (same texts: {res['gen_same_texts']:.0%})"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
