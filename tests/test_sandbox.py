"""Untrusted programs run out of process, one child each, with limits; every run gets a verdict."""

import json
import os

import pytest
from typer.testing import CliRunner

from nesyloop.cli import app
from nesyloop.sandbox import (
    MAX_ANSWER_CHARS,
    ProgramResult,
    _run_child,
    check_program,
    run_programs,
)

T = 1.0  # short wall-clock limit for the tests


def test_answers_errors_and_isolation(tmp_path):
    marker = tmp_path / "pwned"
    res = run_programs([
        "x = 3 * 4\nanswer = x + 1",
        "answer = 1 / 0",
        "y = 2",
        "while True:\n    pass",
        f"open({str(marker)!r}, 'w').write('x')\nanswer = 1",
        "import os\nanswer = os.getpid()",
        "answer = math.floor(2.5) + sum(range(4))",
    ], timeout_s=T)
    assert [r.verdict for r in res] == ["ok", "error", "error", "timeout", "forbidden",
                                        "forbidden", "ok"]
    assert res[0].ok and res[0].answer == "13"
    assert not res[1].ok and "ZeroDivisionError" in res[1].error
    assert "answer" in res[2].error
    assert not marker.exists()
    assert res[6].answer == "8"


def test_ok_programs():
    res = run_programs([
        "answer = [1, 2] * 2",
        "ans = 7",  # the FDD prompts call it ans
        "from fractions import Fraction\nanswer = Fraction(1, 3) + Fraction(1, 6)",
        "import math, statistics\nanswer = statistics.mean([1, 2, 3]) + math.gcd(4, 6)",
        "def f(n):\n    return 1 if n < 2 else n * f(n - 1)\nanswer = f(10)",
    ], timeout_s=T)
    assert all(r.ok for r in res), res
    assert [r.answer for r in res] == ["[1, 2, 1, 2]", "7", "Fraction(1, 2)", "4", "3628800"]
    assert res[0] == ProgramResult("ok", "[1, 2, 1, 2]") and res[0].error is None


def test_syntax_and_runtime_errors():
    syn, run, exit_ = run_programs(["answer = (", "answer = [][1]", "raise SystemExit(3)"],
                                   timeout_s=T)
    assert syn.verdict == "error" and "SyntaxError" in syn.error
    assert run.verdict == "error" and "IndexError" in run.error
    assert exit_.verdict == "error" and "SystemExit" in exit_.error


def test_hostile_programs():
    hostile = {
        "while True: pass": "timeout",
        "def f():\n    try:\n        while True: pass\n    except BaseException:\n"
        "        while True: pass\nf()": "timeout",  # swallowing the alarm does not help
        "x = ' ' * 10**10\nanswer = 1": "memory",
        "x = []\nwhile True:\n    x.append([0] * 10000)": "memory",
        "import os\nos.fork()": "forbidden",
        "import subprocess": "forbidden",
        "import socket\nsocket.create_connection(('example.com', 80))": "forbidden",
        "from os import system": "forbidden",
        "__import__('os')": "forbidden",
        "getattr(1, 'real')": "forbidden",
        "answer = ().__class__.__bases__[0].__subclasses__()": "forbidden",
        "eval('1')": "forbidden",
        "exec('x = 1')": "forbidden",
        "answer = __builtins__": "forbidden",
        "open('/tmp/x', 'w')": "forbidden",
        "g = (i for i in [1])\nanswer = g.gi_frame": "forbidden",
        "answer = '{0.__class__}'.format(1)": "forbidden",
        "f = eval": "forbidden",
        "import collections.abc": "forbidden",
        "x = 1\n" * 5000: "forbidden",  # over the size limit
    }
    res = run_programs(list(hostile), timeout_s=T, mem_mb=256)
    assert [r.verdict for r in res] == list(hostile.values()), res
    forbidden = [r for r in res if r.verdict == "forbidden"]
    assert all("line" in r.error or "longer" in r.error for r in forbidden)


def test_modules_are_handed_out_without_their_imports():
    res = run_programs(["import statistics\nanswer = statistics.sys",
                        "import fractions\nanswer = fractions.math"], timeout_s=T)
    assert all(r.verdict == "error" and "AttributeError" in r.error for r in res)


def test_child_layer_stops_what_the_static_check_would(tmp_path):
    # the static check is skipped here: the child's own defences must still hold
    target = tmp_path / "f"
    for code in ("import socket", "import os\nos.fork()", f"open({str(target)!r}, 'w')",
                 "eval('1')", "try:\n    import os\nexcept Exception:\n    pass\nanswer = 1"):
        assert check_program(code) is not None
        res = _run_child(code, T, 256, 5, ("math",))
        assert res.verdict == "forbidden", (code, res)
    assert not target.exists()
    assert _run_child("answer = math.sqrt(4)", T, 256, 5, ("math",)) == ProgramResult("ok", "2.0")


def test_huge_outputs():
    printing, big = run_programs(["for i in range(10**7):\n    print(i)",
                                  "answer = 'x' * 10**6"], timeout_s=T)
    assert printing.verdict == "timeout"
    assert big.ok and len(big.answer) < MAX_ANSWER_CHARS + 100 and "truncated" in big.answer
    quick, = run_programs(["print('hello' * 1000)\nanswer = 1"], timeout_s=T)
    assert quick == ProgramResult("ok", "1")


def test_batch_keeps_order():
    codes = [f"answer = {i} * 2" if i % 3 else f"answer = {i} +" for i in range(12)]
    res = run_programs(codes, timeout_s=T)
    for i, r in enumerate(res):
        assert (r.answer == str(i * 2)) if i % 3 else (r.verdict == "error")
    assert run_programs([]) == []


def test_a_program_cannot_take_nesyloop_down():
    res = run_programs(["answer = 5", "raise SystemExit(3)"])
    assert res[0].answer == "5" and not res[1].ok
    assert os.getpid() > 0


@pytest.mark.parametrize("code,verdict,rc", [("answer = 6 * 7", "ok", 0),
                                             ("import os", "forbidden", 1)])
def test_cli_sandbox(tmp_path, code, verdict, rc):
    prog = tmp_path / "prog.py"
    prog.write_text(code, encoding="utf-8")
    out = CliRunner().invoke(app, ["sandbox", str(prog), "--timeout", "1", "--mem-mb", "256"])
    assert out.exit_code == rc, out.output
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["verdict"] == verdict and set(got) == {"verdict", "answer", "error"}
    if verdict == "ok":
        assert got["answer"] == "42"


def test_cli_sandbox_missing_file(tmp_path):
    out = CliRunner().invoke(app, ["sandbox", str(tmp_path / "nope.py")])
    assert out.exit_code == 2
    assert "error:" in out.output and "nope.py" in out.output


def test_what_a_program_changes_dies_with_its_process(monkeypatch):
    """Programs run in children forked from one warm sandbox process (one per core; here one):
    a class one program changes is the class the next ones see unchanged."""
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    change = "from fractions import Fraction\nFraction.limit_denominator = 5\nanswer = 1"
    use = "from fractions import Fraction\nanswer = Fraction(1, 3).limit_denominator(10)"
    res = run_programs([change, use, change, use], timeout_s=T)
    assert [r.answer for r in res] == ["1", "Fraction(1, 3)", "1", "Fraction(1, 3)"]


def test_a_stuck_sandbox_process_is_stopped_and_replaced():
    import signal
    import time

    from nesyloop.sandbox import _config, _Server, _verdict

    server = _Server(("math",))
    os.kill(server.proc.pid, signal.SIGSTOP)  # it will not answer
    t0 = time.time()
    res = _verdict(server.run(_config("answer = 1", 0.2, 256, 5, ("math",)), 0.2))
    assert res.verdict == "timeout" and "sandbox stopped" in res.error
    assert time.time() - t0 < 30 and not server.alive and server.proc.poll() is not None
    assert run_programs(["answer = 2"], timeout_s=T)[0].answer == "2"
