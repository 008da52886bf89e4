"""Benchmark program execution in the sandbox (a script, not a test).

    python bench/bench_sandbox.py --n 400 --json out.json

The programs are the Bazaar oracle's programs of thought for ``n`` training problems, as FDD
runs them (teacher filtering, agreement checks, student PoT answers), duplicated once (as k
samples of a teacher often are). Every way runs each program in a child process of its own,
and the values must agree:

- sequential (baseline): one new sandbox interpreter per program, one after another;
- one per core: the distinct programs once, a new interpreter per program, one per core at a
  time (nesyloop until 2026-12-03);
- nesyloop (``program_answers``): the distinct programs once, each in a child forked by one of
  a few warm sandbox processes (one per core) that loaded the allowed modules once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nesyloop.sandbox import (DEFAULT_ALLOWED, _config, _Server, _used,  # noqa: E402
                              _verdict, run_program)
from nesyloop.scoring.program import program_answers, value_of  # noqa: E402
from nesyloop.tasks.bazaar import BazaarSettings, generate_splits  # noqa: E402


def _fresh_interpreter(cfg: dict):
    """One program in a sandbox process started for it alone (the previous way)."""
    server = _Server(tuple(cfg["allowed"]))
    try:
        return server.run(cfg, cfg["timeout"])
    finally:
        server.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    train = generate_splits(BazaarSettings(train=args.n, dev=0, test=0, test_rare=0,
                                           test_deep=0))["train"]
    texts = [f"```python\n{ex.program}```" for ex in train] * 2  # two samples per problem

    programs = [ex.program for ex in train] * 2
    t0 = time.perf_counter()
    base = [value_of(run_program(code)) for code in programs]
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    distinct = list(dict.fromkeys(programs))
    cfgs = [_config(code, 2.0, 512, 60, _used(code, DEFAULT_ALLOWED)) for code in distinct]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        ran = dict(zip(distinct, map(_verdict, pool.map(_fresh_interpreter, cfgs))))
    per_core = [value_of(ran[code]) for code in programs]
    t_core = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = [a.value for a in program_answers(texts)]
    t_fast = time.perf_counter() - t0
    n = len(texts)
    res = {"programs": n, "distinct": len(distinct), "cores": os.cpu_count(),
           "sequential_s": round(t_base, 2), "per_core_s": round(t_core, 2),
           "nesyloop_s": round(t_fast, 2),
           "programs_per_s_sequential": round(n / t_base, 1),
           "programs_per_s_per_core": round(n / t_core, 1),
           "programs_per_s_nesyloop": round(n / t_fast, 1),
           "ratio": round(t_base / t_fast, 2), "ratio_vs_per_core": round(t_core / t_fast, 2),
           "same_values": base == per_core == fast,
           "all_gold": all(v == ex.answer for v, ex in zip(fast, train * 2, strict=True))}
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
