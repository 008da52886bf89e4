"""Run untrusted Python programs (program-of-thought solutions from a model) out of process.

Every run ends in one verdict: ``ok`` (with ``repr`` of the program's ``answer``, or ``ans``),
``timeout``, ``memory``, ``forbidden`` or ``error`` (with the message). Layers of defence:

1. Static check in the parent, before anything runs: size limit, syntax, imports only from an
   allowlist, no dunder names/attributes/strings, no frame/code/traceback attributes
   (``gi_frame``, ``f_globals``, ``tb_frame``...), and no use of ``eval``, ``exec``, ``getattr``,
   ``open``, ``__import__`` and friends (see ``_DENY_NAMES``).
2. Each program runs in a child process of its own, in a session of its own, forked by a
   sandbox process: ``python -I -S`` (isolated, no site packages) in a temp dir, a session of
   its own, with an almost empty environment, which loaded the allowed modules once and runs
   no program itself (one per core for a batch of programs).
3. The child sets rlimits before running the program: address space (memory), CPU time,
   ``FSIZE=0`` (no file writes), few file descriptors and ``NPROC=0`` (no fork, for non-root).
4. The program gets a small set of builtins. ``__import__`` only hands out read-only copies of
   allowlisted modules (public, non-module attributes only, so no ``statistics.sys``); denied
   builtins are stubs that trip a ``forbidden`` verdict even if the program catches the error.
5. The program's stdin, stdout and stderr are ``/dev/null`` and the sandbox process's own
   channels are closed in the child; ``repr(answer)`` is capped; the child reports on a pipe of
   its own, of which the sandbox process reads at most ``_MAX_READ`` bytes.
6. A wall-clock timer in the child (SIGALRM), a backstop in the sandbox process, which kills
   the child's whole session, and one in nesyloop, which kills a sandbox process that does not
   answer (the program's verdict: ``timeout``; the next program gets a new sandbox process).
"""

from __future__ import annotations

import ast
import marshal
import os
import queue
import signal
import struct
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


# The sandbox process: ``python -I -S`` in a temp dir, a session of its own, an almost empty
# environment. It loads the allowed modules once, then for each program it is sent forks a
# child that runs that program alone (its own session, limits, builtins) and reports on a
# pipe; the parent of the fork waits for the report, kills the child's session when the
# wall-clock limit passes, and replies with (report, exit status, killed). A fork of a warm
# interpreter starts far sooner than a new one (bench/bench_sandbox.py), and each program still
# runs in a process of its own: what one program does to its modules or memory dies with it.
_SERVER = r"""
import marshal, os, resource, select, struct, sys, time
import _signal as signal  # not signal: it imports enum, a slow start
requests = os.fdopen(os.dup(0), "rb", buffering=0)
replies = os.fdopen(os.dup(1), "wb", buffering=0)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
os.close(null)
Namespace, Module = type(sys.implementation), type(sys)
class Sink:
    def write(self, s): return len(s)
    def flush(self): pass
sys.stdout = sys.stderr = Sink()
def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = requests.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
def receive():
    head = read_exact(4)
    return None if head is None else marshal.loads(read_exact(struct.unpack("<I", head)[0]))
LOADED = {}
for name in receive():
    try:
        LOADED[name] = __import__(name)
    except ImportError:
        pass
def program(cfg, report):
    os.setsid()
    requests.close()
    replies.close()
    report = os.fdopen(report, "w")
    mods = {}
    for name in cfg["allowed"]:
        try:
            m = LOADED[name] if name in LOADED else __import__(name)
        except ImportError:
            continue
        mods[name] = Namespace(**{k: v for k, v in vars(m).items()
                                  if not k.startswith("_") and not isinstance(v, Module)})
    for lim, val in ((resource.RLIMIT_AS, cfg["mem"]), (resource.RLIMIT_CPU, cfg["cpu"]),
                     (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NOFILE, 16),
                     (resource.RLIMIT_NPROC, 0)):
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
        "abs min max sum round int float complex range len divmod pow sorted list dict tuple "
        "set frozenset str bool enumerate zip map filter all any reversed print isinstance chr "
        "ord hex bin oct iter next slice repr hash Exception ValueError TypeError "
        "ZeroDivisionError ArithmeticError KeyError IndexError StopIteration "
        "AssertionError").split()}
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
def wait_report(pid, r, deadline, cap):
    data, killed = b"", False
    while len(data) < cap:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            killed = True
            break
        chunk = os.read(r, cap - len(data))
        if not chunk:
            break
        data += chunk
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    status = os.waitpid(pid, 0)[1]
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return data, rc, killed
while True:
    cfg = receive()
    if cfg is None:
        break
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            program(cfg, w)
        finally:
            os._exit(0)
    os.close(w)
    reply = marshal.dumps(wait_report(pid, r, time.monotonic() + cfg["timeout"] + 1.0,
                                      cfg["read"]))
    os.close(r)
    replies.write(struct.pack("<I", len(reply)) + reply)
"""


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Server:
    """One sandbox process (``_SERVER``), started with the modules it loads; :meth:`run` sends
    it a program and returns ``(report, exit status, killed)``, or None when the process itself
    failed to answer in time (it is then killed; start another)."""

    def __init__(self, allowed: tuple[str, ...]):
        self._tmp = tempfile.TemporaryDirectory(prefix="nesyloop-sandbox-")
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _SERVER],
                                     cwd=self._tmp.name, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env={"PATH": "/usr/bin:/bin"}, start_new_session=True,
                                     close_fds=True)
        self.alive = self._send(list(allowed))

    def _send(self, obj) -> bool:
        blob = marshal.dumps(obj)
        try:
            self.proc.stdin.write(struct.pack("<I", len(blob)) + blob)
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def _read(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.proc.stdout.read(n - len(buf))
            except (OSError, ValueError):
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _kill(self) -> None:
        self.alive = False
        _killpg(self.proc)

    def run(self, cfg: dict, timeout_s: float) -> tuple[bytes, int, bool] | None:
        if not (self.alive and self._send(cfg)):
            self.close()  # gone already: reap it and its temp dir
            return None
        timer = threading.Timer(timeout_s + 5.0, self._kill)  # its own limit, + startup
        timer.start()
        try:
            head = self._read(4)
            blob = self._read(struct.unpack("<I", head)[0]) if head else None
        finally:
            timer.cancel()
        if blob is None:
            self.close()
            return None
        return marshal.loads(blob)

    def close(self) -> None:
        self._kill()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.proc.wait()
        self._tmp.cleanup()


def _config(code: str, timeout_s: float, mem_mb: int, cpu_s: int,
            allowed: tuple[str, ...]) -> dict:
    return {"code": code, "timeout": float(timeout_s), "mem": mem_mb * 1024 * 1024,
            "cpu": int(max(1, cpu_s)), "allowed": list(allowed), "cap": MAX_ANSWER_CHARS,
            "denied": sorted(_DENY_NAMES - {"__import__", "__builtins__"}), "read": _MAX_READ}


def _verdict(reply: tuple[bytes, int, bool] | None) -> ProgramResult:
    """A program's result from the sandbox process's reply (None: no reply at all)."""
    if reply is None:
        return ProgramResult("timeout", error="time limit reached (the sandbox stopped)")
    data, rc, killed = reply
    try:
        res = ast.literal_eval(data.decode("utf-8", "replace").splitlines()[0])
        return ProgramResult(res["verdict"], res.get("answer"), res.get("error"))
    except Exception:  # noqa: BLE001, S110 - no (or a garbled) report: judge how the child ended
        pass
    if killed or rc == -signal.SIGXCPU:
        return ProgramResult("timeout", error="time limit reached")
    if rc == -signal.SIGKILL:
        return ProgramResult("memory", error="killed (out of memory)")
    return ProgramResult("error", error=f"the sandbox child died (exit status {rc})")


def _run_child(code: str, timeout_s: float, mem_mb: int, cpu_s: int,
               allowed: tuple[str, ...]) -> ProgramResult:
    """Run one program in a sandbox process of its own, without the static check."""
    server = _Server(allowed)
    try:
        return _verdict(server.run(_config(code, timeout_s, mem_mb, cpu_s, allowed), timeout_s))
    finally:
        server.close()


def _used(code: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The allowed modules a (checked) program imports, and math, always there."""
    tree = ast.parse(code)
    used = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    used |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    return tuple(m for m in allowed if m == "math" or m in used)


def run_program(code: str, timeout_s: float = 2.0, mem_mb: int = 512, cpu_s: int = 60,
                allowed: tuple[str, ...] = DEFAULT_ALLOWED) -> ProgramResult:
    """Check one program, then run it in a sandbox process of its own; returns its verdict."""
    bad = check_program(code, allowed)
    if bad:
        return bad
    return _run_child(code, timeout_s, mem_mb, cpu_s, _used(code, allowed))


def run_programs(codes: list[str], timeout_s: float = 2.0, mem_mb: int = 512, cpu_s: int = 60,
                 allowed: tuple[str, ...] = DEFAULT_ALLOWED) -> list[ProgramResult]:
    """Check each program, then run each in a child process of its own, forked by one of a few
    sandbox processes (one per core) that load the allowed modules once; results in input
    order."""
    results: list[ProgramResult | None] = [check_program(c, allowed) for c in codes]
    todo = [i for i, bad in enumerate(results) if bad is None]
    if not todo:
        return results  # type: ignore[return-value]
    # everything ``ast`` does happens in this thread: CPython 3.11's parser is not safe to run
    # in two threads at once (SystemError: AST constructor recursion depth mismatch)
    cfgs = {i: _config(codes[i], timeout_s, mem_mb, cpu_s, _used(codes[i], allowed))
            for i in todo}
    n = min(len(todo), os.cpu_count() or 2)
    servers: queue.Queue[_Server | None] = queue.Queue()
    for _ in range(n):
        servers.put(None)  # started by the first program that needs it

    def one(i: int) -> tuple[bytes, int, bool] | None:
        server = servers.get()
        try:
            if server is None or not server.alive:
                server = _Server(allowed)
            return server.run(cfgs[i], timeout_s)
        finally:
            servers.put(server)

    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            for i, reply in zip(todo, pool.map(one, todo)):
                results[i] = _verdict(reply)
    finally:
        while not servers.empty():
            server = servers.get()
            if server is not None:
                server.close()
    return results  # type: ignore[return-value]
