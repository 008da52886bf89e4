"""Run untrusted Python programs (program-of-thought solutions from a model) out of process.

Programs never run inside nesyloop's own process. A batch of programs goes to one child Python
(``-I -S``: isolated, no site packages) under CPU-time and memory limits; each program runs in a
fresh namespace with a small set of builtins and a wall-clock alarm, and the child reports each
program's ``answer`` variable (or the error) as JSON on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

_CHILD = r"""
import json, math, signal, sys
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEM, MEM))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU, CPU))
except Exception:
    pass
SAFE = {k: __builtins__.__dict__[k] if hasattr(__builtins__, "__dict__") else __builtins__[k]
        for k in ("abs", "min", "max", "sum", "round", "int", "float", "range", "len", "divmod",
                  "pow", "sorted", "list", "dict", "tuple", "set", "str", "bool", "enumerate",
                  "zip", "map", "filter", "all", "any", "reversed", "print", "isinstance")}
def alarm(*_):
    raise TimeoutError("timed out")
signal.signal(signal.SIGALRM, alarm)
out = []
for code in json.loads(sys.stdin.read()):
    env = {"__builtins__": SAFE, "math": math}
    try:
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT)
        exec(compile(code, "<program>", "exec"), env)
        signal.setitimer(signal.ITIMER_REAL, 0)
        if "answer" not in env:
            out.append({"ok": False, "error": "no variable named answer"})
        else:
            out.append({"ok": True, "answer": repr(env["answer"])})
    except BaseException as err:
        signal.setitimer(signal.ITIMER_REAL, 0)
        out.append({"ok": False, "error": type(err).__name__ + ": " + str(err)[:200]})
sys.stdout.write(json.dumps(out))
"""


@dataclass(frozen=True)
class ProgramResult:
    ok: bool
    answer: str | None = None  # repr() of the program's ``answer``
    error: str | None = None


def run_programs(codes: list[str], timeout_s: float = 2.0, mem_mb: int = 512,
                 cpu_s: int = 60) -> list[ProgramResult]:
    """Run each program in a child process; returns one result per program, in order."""
    if not codes:
        return []
    child = (_CHILD.replace("MEM", str(mem_mb * 1024 * 1024)).replace("CPU", str(cpu_s))
             .replace("TIMEOUT", repr(float(timeout_s))))
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", child], input=json.dumps(codes),
                              capture_output=True, text=True,
                              timeout=timeout_s * len(codes) + 30)
        results = json.loads(proc.stdout)
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        if len(codes) == 1:
            return [ProgramResult(False, error="the sandbox did not finish")]
        half = len(codes) // 2  # isolate the program that broke the child
        return run_programs(codes[:half], timeout_s, mem_mb, cpu_s) + run_programs(
            codes[half:], timeout_s, mem_mb, cpu_s)
    return [ProgramResult(r["ok"], r.get("answer"), r.get("error")) for r in results]
