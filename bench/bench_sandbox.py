"""Benchmark program execution in the sandbox (a script, not a test).

    python bench/bench_sandbox.py --n 400 --json out.json

The programs are the Bazaar oracle's programs of thought for ``n`` training problems, as FDD
runs them (teacher filtering, agreement checks, student PoT answers). Each program runs in its
own child process. The baseline runs them one after another; nesyloop's ``program_answers``
runs distinct programs in parallel (one worker per core) and each identical program once. The
same programs are run (duplicated once, as k samples of a teacher often are) and the values
must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nesyloop.sandbox import run_program  # noqa: E402
from nesyloop.scoring.program import program_answers, value_of  # noqa: E402
from nesyloop.tasks.bazaar import BazaarSettings, generate_splits  # noqa: E402


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
    fast = [a.value for a in program_answers(texts)]
    t_fast = time.perf_counter() - t0
    res = {"programs": len(texts), "distinct": len(set(texts)), "cores": os.cpu_count(),
           "sequential_s": round(t_base, 2),
           "nesyloop_s": round(t_fast, 2),
           "programs_per_s_sequential": round(len(texts) / t_base, 1),
           "programs_per_s_nesyloop": round(len(texts) / t_fast, 1),
           "ratio": round(t_base / t_fast, 2),
           "same_values": base == fast,
           "all_gold": all(v == ex.answer for v, ex in zip(fast, train * 2, strict=True))}
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
