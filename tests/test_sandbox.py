"""Untrusted programs run out of process, with limits."""

import os

from nesyloop.sandbox import run_programs


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
    ], timeout_s=0.5)
    assert res[0].ok and res[0].answer == "13"
    assert not res[1].ok and "ZeroDivisionError" in res[1].error
    assert not res[2].ok and "answer" in res[2].error
    assert not res[3].ok and "TimeoutError" in res[3].error
    assert not res[4].ok and not marker.exists()  # no open() in the sandbox
    assert not res[5].ok  # no import
    assert res[6].ok and res[6].answer == "8"


def test_runs_in_another_process():
    # a program that kills its interpreter cannot take nesyloop down with it
    res = run_programs(["answer = 5", "raise SystemExit(3)"])
    assert res[0].answer == "5" and not res[1].ok
    assert os.getpid() > 0
