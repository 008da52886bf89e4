"""Run untrusted Python programs (program-of-thought solutions from a model) out of process.

Every run ends in one verdict: ``ok`` (with ``repr`` of the program's ``answer``, or ``ans``),
``timeout``, ``memory``, ``forbidden`` or ``error`` (with the message). Layers of defence:

1. Static check in the parent, before anything runs: size limit, syntax, imports only from an
   allowlist, no dunder names/attributes/strings, no frame/code/traceback attributes
   (``gi_frame``, ``f_globals``, ``tb_frame``...), and no use of ``eval``, ``exec``, ``getattr``,
   ``open``, ``__import__`` and friends (see ``_DENY_NAMES``).
2. Each program runs in its own child ``python -I -S`` (isolated, no site packages) in a fresh
   temp dir, a new session, with an almost empty environment.
3. The child sets rlimits before running the program: address space (memory), CPU time,
   ``FSIZE=0`` (no file writes), few file descriptors and ``NPROC=0`` (no fork, for non-root).
4. The program gets a small set of builtins. ``__import__`` only hands out read-only copies of
   allowlisted modules (public, non-module attributes only, so no ``statistics.sys``); denied
   builtins are stubs that trip a ``forbidden`` verdict even if the program catches the error.
5. The program's stdout/stderr go nowhere; ``repr(answer)`` is capped; the child reports on a
   private copy of its stdout and the parent reads at most ``_MAX_READ`` bytes.
6. A wall-clock timer in the child (SIGALRM) and a backstop in the parent, which kills the whole
   process group.
"""

from __future__ import annotations

import ast
import marshal
import os
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

# ``operator`` is left out on purpose: attrgetter/methodcaller reach attributes by a string the
# static check cannot see.
DEFAULT_ALLOWED = ("math", "fractions", "decimal", "statistics", "itertools", "functools",
                   "collections")
MAX_PROGRAM_CHARS = 20_000
MAX_ANSWER_CHARS = 1000
_MAX_READ = 64 * 1024
_DENY_NAMES = frozenset(
    "eval exec compile open input getattr setattr delattr hasattr globals locals vars dir "  # noqa: SIM905
    "breakpoint help memoryview exit quit type object super classmethod staticmethod property "
    "__import__ __builtins__".split())
_DENY_ATTR_PREFIXES = ("_", "f_", "gi_", "cr_", "ag_", "tb_", "co_")
VERDICTS = ("ok", "timeout", "memory", "forbidden", "error")


@dataclass(frozen=True)
class ProgramResult:
    verdict: str  # one of VERDICTS
    answer: str | None = None  # repr() of the program's ``answer`` (or ``ans``), when ok
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def to_dict(self) -> dict:
        return asdict(self)


def check_program(code: str, allowed: tuple[str, ...] = DEFAULT_ALLOWED) -> ProgramResult | None:
    """The static check: a ``forbidden``/``error`` result, or None when the program may run."""
    if len(code) > MAX_PROGRAM_CHARS:
        return ProgramResult("forbidden", error=f"program longer than {MAX_PROGRAM_CHARS} chars")
    try:
        tree = ast.parse(code, "<program>")
    except SyntaxError as err:
        return ProgramResult("error", error=f"SyntaxError: {err.msg} (line {err.lineno})")
    except (ValueError, RecursionError, MemoryError) as err:
        return ProgramResult("error", error=f"{type(err).__name__}: cannot parse the program")

    def bad(node: ast.AST, what: str) -> ProgramResult:
        return ProgramResult("forbidden", error=f"{what} (line {getattr(node, 'lineno', '?')})")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in allowed:
                    return bad(node, f"import of {alias.name!r} is not allowed")
        elif isinstance(node, ast.ImportFrom) and (node.level or node.module not in allowed):
            return bad(node, f"import from {node.module!r} is not allowed")
        names: list[str] = []
        if isinstance(node, ast.Name):
            if node.id in _DENY_NAMES:
                return bad(node, f"use of {node.id!r} is not allowed")
            names.append(node.id)
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith(_DENY_ATTR_PREFIXES) or node.attr == "mro":
                return bad(node, f"attribute {node.attr!r} is not allowed")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.arg) or (isinstance(node, ast.keyword) and node.arg):
            names.append(node.arg)
        elif isinstance(node, ast.alias):
            names += [node.name, node.asname or ""]
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names += node.names
        elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            if "__" in text:
                return bad(node, "a string containing '__' is not allowed")
        for name in names:
            if name.startswith("__"):
                return bad(node, f"dunder name {name!r} is not allowed")
    return None


_CHILD = r"""
import marshal, os, resource, sys
import _signal as signal  # not signal: it imports enum, a slow start
cfg = marshal.loads(sys.stdin.buffer.read())
report = os.fdopen(os.dup(1), "w")
Namespace, Module = type(sys.implementation), type(sys)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
os.close(null)
class Sink:
    def write(self, s): return len(s)
    def flush(self): pass
sys.stdout = sys.stderr = Sink()
mods = {}
for name in cfg["allowed"]:
    try:
        m = __import__(name)
    except ImportError:
        continue
    mods[name] = Namespace(**{k: v for k, v in vars(m).items()
                              if not k.startswith("_") and not isinstance(v, Module)})
for lim, val in ((resource.RLIMIT_AS, cfg["mem"]), (resource.RLIMIT_CPU, cfg["cpu"]),
                 (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NOFILE, 16), (resource.RLIMIT_NPROC, 0)):
    try:
        resource.setrlimit(lim, (val, val + (lim == resource.RLIMIT_CPU)))
    except (ValueError, OSError):
        pass
class Forbidden(Exception):
    pass
class Timeout(BaseException):
    pass
tripped = []
def deny(name):
    def stub(*args, **kwargs):
        tripped.append(name + " is not allowed")
        raise Forbidden(tripped[-1])
    return stub
def imp(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name in mods:
        return mods[name]
    tripped.append("import of %r is not allowed" % name)
    raise Forbidden(tripped[-1])
def alarm(*_):
    tripped.append(None)
    raise Timeout("timed out")
B = __builtins__.__dict__ if hasattr(__builtins__, "__dict__") else __builtins__
SAFE = {k: B[k] for k in (
    "abs min max sum round int float complex range len divmod pow sorted list dict tuple set "
    "frozenset str bool enumerate zip map filter all any reversed print isinstance chr ord hex bin "
    "oct iter next slice repr hash Exception ValueError TypeError ZeroDivisionError "
    "ArithmeticError KeyError IndexError StopIteration AssertionError").split()}
for k in cfg["denied"]:
    SAFE[k] = deny(k)
SAFE["__import__"] = imp
env = {"__builtins__": SAFE}
if "math" in mods:
    env["math"] = mods["math"]
signal.signal(signal.SIGALRM, alarm)
try:
    code = compile(cfg["code"], "<program>", "exec")
    signal.setitimer(signal.ITIMER_REAL, cfg["timeout"])
    exec(code, env)
    key = "answer" if "answer" in env else "ans" if "ans" in env else None
    if key is None:
        res = {"verdict": "error", "error": "no variable named answer"}
    else:
        r = repr(env[key])
        if len(r) > cfg["cap"]:
            r = r[:cfg["cap"]] + "... [truncated, %d chars]" % len(r)
        res = {"verdict": "ok", "answer": r}
    signal.setitimer(signal.ITIMER_REAL, 0)
except MemoryError:
    signal.setitimer(signal.ITIMER_REAL, 0)
    env.clear()
    res = {"verdict": "memory", "error": "MemoryError: over the memory limit"}
except BaseException as err:
    signal.setitimer(signal.ITIMER_REAL, 0)
    env.clear()
    res = {"verdict": "error", "error": type(err).__name__ + ": " + str(err)[:300]}
if None in tripped:
    res = {"verdict": "timeout", "error": "wall-clock limit reached"}
elif tripped:
    res = {"verdict": "forbidden", "error": tripped[0]}
report.write(repr(res) + "\n")
report.flush()
os._exit(0)
"""


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _run_child(code: str, timeout_s: float, mem_mb: int, cpu_s: int,
               allowed: tuple[str, ...]) -> ProgramResult:
    """Run one program in its own child process, without the static check."""
    cfg = {"code": code, "timeout": float(timeout_s), "mem": mem_mb * 1024 * 1024,
           "cpu": int(max(1, cpu_s)), "allowed": list(allowed), "cap": MAX_ANSWER_CHARS,
           "denied": sorted(_DENY_NAMES - {"__import__", "__builtins__"})}
    with tempfile.TemporaryDirectory(prefix="nesyloop-sandbox-") as tmp:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _CHILD], cwd=tmp,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"},
                                start_new_session=True, close_fds=True)
        killed = threading.Event()

        def backstop() -> None:
            killed.set()
            _killpg(proc)

        timer = threading.Timer(timeout_s + 2.0, backstop)  # + startup, + SIGALRM ignored
        timer.start()
        try:
            try:
                proc.stdin.write(marshal.dumps(cfg))
                proc.stdin.close()
            except BrokenPipeError:
                pass
            data = proc.stdout.read(_MAX_READ)
        finally:
            timer.cancel()
            _killpg(proc)
            proc.stdout.close()
            rc = proc.wait()
    try:
        res = ast.literal_eval(data.decode("utf-8", "replace").splitlines()[0])
        return ProgramResult(res["verdict"], res.get("answer"), res.get("error"))
    except Exception:  # noqa: BLE001, S110 - no (or a garbled) report: judge how the child ended
        pass
    if killed.is_set() or rc == -signal.SIGXCPU:
        return ProgramResult("timeout", error="time limit reached")
    if rc == -signal.SIGKILL:
        return ProgramResult("memory", error="killed (out of memory)")
    return ProgramResult("error", error=f"the sandbox child died (exit status {rc})")


def run_program(code: str, timeout_s: float = 2.0, mem_mb: int = 512, cpu_s: int = 60,
                allowed: tuple[str, ...] = DEFAULT_ALLOWED) -> ProgramResult:
    """Check one program, then run it in its own child process; returns its verdict."""
    bad = check_program(code, allowed)
    if bad:
        return bad
    used = {a.name for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Import) for a in n.names}
    used |= {n.module for n in ast.walk(ast.parse(code)) if isinstance(n, ast.ImportFrom)}
    # load only the modules the program imports (and math, always there): a faster start
    return _run_child(code, timeout_s, mem_mb, cpu_s,
                      tuple(m for m in allowed if m == "math" or m in used))


def run_programs(codes: list[str], timeout_s: float = 2.0, mem_mb: int = 512, cpu_s: int = 60,
                 allowed: tuple[str, ...] = DEFAULT_ALLOWED) -> list[ProgramResult]:
    """Run each program in its own child process, a few at a time; results in input order."""
    if not codes:
        return []
    with ThreadPoolExecutor(max_workers=min(len(codes), os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda c: run_program(c, timeout_s, mem_mb, cpu_s, allowed), codes))
