"""Benchmark the student engines: ``server`` (``nesyloop serve``) against ``hf`` (a script, not a
test).

    python bench/bench_engine.py --json bench/results/engine-cpu2.json

Generates the same student's greedy answers (stop string "\\nQuestion:", as every prediction
stage does) to the same prompts through the in-process ``hf`` engine (the baseline, batched
``--batch-size``) and through the ``server`` engine, which starts ``nesyloop serve --batch-size
B`` for the checkpoint as ``[student.server] command`` does and sends ``--concurrency``
requests at a time over HTTP. The two alternate ``--repeat`` times (this machine's speed
drifts over minutes); it reports the median tokens/s of each, the ratio, whether the texts are
the same, and the server's start-up time (paid once per checkpoint, not in the ratio). Each
engine computes with ``--threads`` torch threads (default 1: on 2 cores, two processes with
two threads each slow each other down many times over). Without ``--model`` the student is a
default-size scratch student trained for ``--steps`` steps on small word problems
(bench_student.py's).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_student import task  # noqa: E402  (bench/ is the script's folder)

from nesyloop.config import StudentServer  # noqa: E402
from nesyloop.gen.base import GenSettings, Request  # noqa: E402
from nesyloop.gen.registry import make_student  # noqa: E402
from nesyloop.io import write_json  # noqa: E402
from nesyloop.students.prompt import STUDENT_STOP  # noqa: E402


def trained_student(folder: Path, steps: int) -> Path:
    """A default-size scratch student trained ``steps`` steps on the word problems."""
    from nesyloop.students.scratch import ScratchSettings, create_scratch_student
    from nesyloop.students.train import TrainSettings, train_sft

    rng = random.Random(0)
    pairs = [task(rng) for _ in range(2000)]
    base = create_scratch_student([p["prompt"] + p["completion"] for p in pairs],
                                  folder / "base", ScratchSettings())
    settings = TrainSettings(max_steps=steps, per_device_train_batch_size=32,
                             learning_rate=3e-3, logging_steps=10)
    train_sft(base, pairs, folder / "model", settings, progress=False)
    return folder / "model"


def timed(backend, requests: list[Request]) -> tuple[list[str], int, float]:
    """Texts, completion tokens and seconds of one pass."""
    start = time.perf_counter()
    comps = backend.generate(requests)
    wall = time.perf_counter() - start
    return [c.text for c in comps], sum(c.completion_tokens for c in comps), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a student checkpoint (default: trained here)")
    ap.add_argument("--steps", type=int, default=40, help="training steps without --model")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64, help="both engines' batch")
    ap.add_argument("--concurrency", type=int, default=64, help="server: requests in flight")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each engine "
                    "(0: torch's default); 1 keeps the two processes off each other's cores")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server's, at its start

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or trained_student(Path(tmp), args.steps)
        rng = random.Random(1)
        settings = GenSettings(max_tokens=args.max_tokens, temperature=0.0, stop=STUDENT_STOP)
        requests = [Request.raw(task(rng)["prompt"], settings) for _ in range(args.prompts)]
        command = (f"{shlex.quote(sys.executable)} -m nesyloop.cli serve --model {{model}} "
                   f"--port {{port}} --batch-size {args.batch_size} --max-generation-seconds 0")
        hf = make_student(model, "hf", batch_size=args.batch_size, progress=False)
        server = make_student(model, "server", progress=False, log_path=Path(tmp) / "serve.log",
                              server=StudentServer(command=command,
                                                   concurrency=args.concurrency))
        try:
            start_s = server.server.start_s
            for b in (hf, server):  # warm-up: first-call costs out of the timings
                b.generate(requests[:8])
            speeds: dict[str, list[float]] = {"hf": [], "server": []}
            texts: dict[str, list[str]] = {}
            for _ in range(args.repeat):
                for name, b in (("hf", hf), ("server", server)):
                    texts[name], tokens, wall = timed(b, requests)
                    speeds[name].append(tokens / wall)
                    print(f"  {name}: {tokens} tokens in {wall:.1f} s", file=sys.stderr)
        finally:
            hf.close()
            server.close()
    base = statistics.median(speeds["hf"])
    rows = []
    for name in ("hf", "server"):
        tps = statistics.median(speeds[name])
        same = sum(x == y for x, y in zip(texts[name], texts["hf"], strict=True)) / len(requests)
        rows.append({"engine": name, "tokens_per_s": round(tps, 1), "ratio": round(tps / base, 3),
                     "same_texts": round(same, 4), "runs": [round(x, 1) for x in speeds[name]]})
        print(f"{name:>6}: {tps:8.1f} tokens/s  {tps / base:.2f}x  same texts as hf: "
              f"{100 * same:.1f}%")
    out = {"model": str(args.model or f"scratch (default size, {args.steps} steps)"),
           "prompts": len(requests), "max_tokens": args.max_tokens,
           "batch_size": args.batch_size, "concurrency": args.concurrency,
           "threads": args.threads,
           "server_start_s": round(start_s, 1), "rows": rows,
           "mean_completion_tokens": round(tokens / len(requests), 1), "cpus": os.cpu_count(),
           "machine": platform.machine(), "date": time.strftime("%Y-%m-%d", time.gmtime())}
    print(f"server start-up (once per checkpoint): {start_s:.1f} s")
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
