"""The student's ``server`` engine (gen/http/student_server.py) against real servers on
127.0.0.1: a quick run whose predictions go through ``nesyloop serve`` started per checkpoint
gives the ``hf`` engine's greedy predictions; a server that dies mid-stage stops the run with one
line and a re-run resumes; a command that exits or never answers fails in one line naming the
command and its log; Ctrl-C stops the server's whole process group; a server the user runs
(``base_url``) gives the same texts, log-probabilities and confidence (NesyCD's gate) as ``hf``;
llama.cpp's server serves the shipped SmolLM2 student; bad ``[student.server]`` keys are one
line naming the key. No mocks: the dying server is the real
one, made to exit by a wrapper script."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from nesyloop import api
from nesyloop.config import StudentServer, load_config
from nesyloop.errors import ConfigError, NesyloopError
from nesyloop.gen.base import GenSettings, Request
from nesyloop.gen.http.process import ServerProcess, free_port
from nesyloop.gen.http.student_server import StudentServerError
from nesyloop.gen.registry import make_student

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PY = shlex.quote(sys.executable)
SERVE = f"{PY} -m nesyloop.cli serve --model {{model}} --port {{port}} --max-generation-seconds 0"
PREDICT = "predict-std-cot"
SPLITS = ("test", "test-rare", "test-deep")
# `nesyloop serve`, made to exit (code 3) when its backend is asked a second time: a real
# server that dies in the middle of a stage
DYING = """
import os, sys
from nesyloop.gen.registry import make_student
from nesyloop.serve import Server
model, port = sys.argv[1], int(sys.argv[2])
student = make_student(model, progress=False)
generate, calls = student.generate, []
def dying(requests):
    calls.append(len(requests))
    if len(calls) > 1:
        print("dying on purpose", flush=True)
        os._exit(3)
    return generate(requests)
student.generate = dying
srv = Server(student, port=port, model_name=model, max_generation_s=None).bind()
print("serving", srv.url, flush=True)
srv.serve_forever()
"""


def config(**server):
    """The quick preset, std-cot only (data, rationales, the scratch student trained for 80
    steps, which writes varied rationales of 40-64 tokens, its predictions): engine "server"
    with ``server`` as [student.server] when given, else "hf"."""
    student = {"engine": "server", "server": server} if server else {}
    return load_config(None, quick=True, overrides={
        "methods": ["std-cot"], "run": {"progress": False},
        "method_train": {"std-cot": {"max_steps": 80, "learning_rate": 5e-3}},
        "student": student})


def predictions(run: Path) -> dict[str, list[str]]:
    from nesyloop.io import read_jsonl

    return {s: [r["output"] for r in read_jsonl(run / PREDICT / f"{s}.jsonl")] for s in SPLITS}


def fresh_copy(run: Path, to: Path) -> Path:
    """The run with its shared stages (data, student-init) and without its predictions."""
    shutil.copytree(run, to)
    for stage in (PREDICT, "score-std-cot"):
        shutil.rmtree(to / stage)
    return to


def serving_port(log: Path) -> int:
    m = re.search(r"http://127\.0\.0\.1:(\d+)/v1", log.read_text())
    assert m, log.read_text()
    return int(m.group(1))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited


def pids_with(word: str) -> list[int]:
    """Live processes whose command line holds ``word`` as one argument."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if d.name.isdigit() and word.encode() in args and alive(int(d.name)):
            out.append(int(d.name))
    return out


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module", autouse=True)
def teacher_cache(tmp_path_factory):
    """The runs' teacher request cache: this module's own, not the user's."""
    old = os.environ.get("NESYLOOP_CACHE")
    os.environ["NESYLOOP_CACHE"] = str(tmp_path_factory.mktemp("cache") / "requests.sqlite")
    yield
    if old is None:
        os.environ.pop("NESYLOOP_CACHE", None)
    else:
        os.environ["NESYLOOP_CACHE"] = old


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "hf"
    api.run(config(), out=out, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def student(hf_run):
    return hf_run / "train-std-cot" / "model"


# --- a quick run through `nesyloop serve`, started per checkpoint ----------------------------
def test_quick_run_through_the_server_engine_matches_hf(hf_run, tmp_path):
    out = fresh_copy(hf_run, tmp_path / "server")
    lines: list[str] = []
    api.run(config(command=SERVE), out=out, log=lines.append)
    assert "[skip] train-std-cot (unchanged)" in lines  # the engine is in no fingerprint
    assert f"[run ] {PREDICT}" in lines
    want, got = predictions(hf_run), predictions(out)
    assert got == want and sum(map(len, got.values())) == 56
    assert len({o for outs in got.values() for o in outs}) > 20  # varied answers, not one
    log = out / PREDICT / "student-server.log"  # the server's output, kept with the stage
    assert "serving" in log.read_text()
    port = serving_port(log)
    assert refused(port) and not pids_with(str(port))  # stopped with the stage
    assert not (out / ".work").exists() or not any((out / ".work").iterdir())


# --- a server that dies mid-stage: one line, and a re-run resumes ----------------------------
def test_a_server_that_dies_mid_stage_fails_in_one_line_and_a_rerun_resumes(hf_run, tmp_path):
    script = tmp_path / "dying_server.py"
    script.write_text(DYING)
    out = fresh_copy(hf_run, tmp_path / "run")
    with pytest.raises(StudentServerError) as err:
        api.run(config(command=f"{PY} {script} {{model}} {{port}}"), out=out, log=lambda _: None)
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, NesyloopError)
    assert re.search(r"student server `.*dying_server\.py .*` exited with code 3 during "
                     r"generation: dying on purpose \(log: .*student-server\.log\)$", msg), msg
    log = Path(re.search(r"\(log: (.*)\)$", msg).group(1))
    assert log.is_file() and log.parent.parent == out / ".work"  # kept: the stage failed
    assert not (out / PREDICT).exists() and (out / "train-std-cot" / "manifest.json").exists()
    assert not pids_with(str(serving_port(log)))

    lines: list[str] = []  # the same run again, the server fixed
    api.run(config(command=SERVE), out=out, log=lines.append)
    assert "[skip] train-std-cot (unchanged)" in lines and f"[run ] {PREDICT}" in lines
    assert predictions(out) == predictions(hf_run)
    assert not log.exists()  # the finished stage's work folder is gone


# --- a command that exits or never answers ----------------------------------------------------
def test_a_command_that_never_answers_times_out_naming_its_log(student, tmp_path):
    # prints its own pid and a child's, then sleeps: both must be stopped (process group)
    hang = (f"{PY} -c \"import subprocess, sys, time; c = subprocess.Popen(['sleep', '300']); "
            "print('pids', c.pid, flush=True); time.sleep(300)\" {model} --port={port}")
    settings = StudentServer(command=hang, start_timeout_s=2)
    log = tmp_path / "logs" / "server.log"
    t0 = time.perf_counter()
    with pytest.raises(StudentServerError) as err:
        make_student(student, engine="server", server=settings, log_path=log)
    assert time.perf_counter() - t0 < 20
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"student server `{sys.executable} -c ")
    assert str(student.resolve()) in msg and "--port=" in msg
    assert "did not answer GET /v1/models within 2 s: pids " in msg
    assert msg.endswith(f"(log: {log})") and log.is_file()
    child = int(re.search(r"pids (\d+)", log.read_text()).group(1))
    time.sleep(0.2)
    assert not alive(child)  # the server's own child went with it


def test_a_command_that_exits_at_start_fails_in_one_line(student, tmp_path):
    bad = f"{PY} -c \"import sys; sys.exit('no such flag: --frobnicate')\" {{model}} {{port}}"
    with pytest.raises(StudentServerError, match=r"exited at start \(code 1\): no such flag: "
                       r"--frobnicate \(log: .*server\.log\)$"):
        make_student(student, engine="server", server=StudentServer(command=bad),
                     log_path=tmp_path / "server.log")
    missing = StudentServer(command="no-such-program-xyz --model {model} --port {port}")
    with pytest.raises(NesyloopError, match="cannot run 'no-such-program-xyz': no such program"):
        make_student(student, engine="server", server=missing, log_path=tmp_path / "x.log")


# --- Ctrl-C stops the server --------------------------------------------------------------------
def test_ctrl_c_during_a_stage_stops_the_server(hf_run, tmp_path):
    out = fresh_copy(hf_run, tmp_path / "run")
    log = out / ".work"
    ports: list[int] = []

    def interrupt_once_serving():
        deadline = time.time() + 50
        while time.time() < deadline:
            for f in log.glob("*/student-server.log") if log.exists() else []:
                if "serving" in f.read_text():
                    ports.append(serving_port(f))
                    time.sleep(0.3)  # requests in flight
                    os.kill(os.getpid(), signal.SIGINT)
                    return
            time.sleep(0.05)

    # Ctrl-C as in a terminal, even where the suite was started in the background with SIGINT
    # ignored (a shell without job control does that)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=interrupt_once_serving, daemon=True)
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            api.run(config(command=SERVE), out=out, log=lambda _: None)
    finally:
        watcher.join()
        signal.signal(signal.SIGINT, before)
    assert ports and refused(ports[0]) and not pids_with(str(ports[0]))
    assert not (out / PREDICT).exists()


# --- a server the user runs: texts, log-probabilities, confidence ------------------------------
KEY_ENV = "NESYLOOP_TEST_STUDENT_KEY"


@pytest.fixture(scope="module")
def user_server(student, tmp_path_factory):
    """`nesyloop serve` of the student as a user runs it, wanting a bearer token."""
    os.environ[KEY_ENV] = "s3cret-student-token"
    port = free_port()
    argv = [sys.executable, "-m", "nesyloop.cli", "serve", "--model", str(student.resolve()),
            "--port", str(port), "--token-env", KEY_ENV]
    try:
        with ServerProcess(argv, port, tmp_path_factory.mktemp("user") / "serve.log",
                           start_timeout_s=120, api_key_env=KEY_ENV) as srv:
            yield srv
    finally:
        os.environ.pop(KEY_ENV, None)


def test_a_server_the_user_runs_gives_hf_texts_logprobs_and_confidence(student, user_server,
                                                                      tmp_path):
    from nesyloop.students.prompt import student_prompt

    remote = make_student(student, engine="server", server=StudentServer(
        base_url=user_server.url, concurrency=4, api_key_env=KEY_ENV))
    local = make_student(student, batch_size=8, progress=False)
    try:
        prompts = [student_prompt(q) for q in ("How many figs does Ada sell?", "What is 2 + 3?",
                                               "Who sells the cheapest dates?")]
        s = GenSettings(max_tokens=12, top_logprobs=3)
        got = remote.generate([Request.raw(p, s) for p in prompts])
        want = local.generate([Request.raw(p, s) for p in prompts])
        for g, w in zip(got, want, strict=True):
            assert g.texts == w.texts and g.completion_tokens == w.completion_tokens
            assert [t.token for t in g.logprobs[0]] == [t.token for t in w.logprobs[0]]
            for gt, wt in zip(g.logprobs[0], w.logprobs[0], strict=True):
                assert gt.logprob == pytest.approx(wt.logprob, abs=1e-5)
                assert [(x.token, pytest.approx(x.logprob, abs=1e-5)) for x in gt.top_logprobs
                        ] == [(x.token, x.logprob) for x in wt.top_logprobs]
        assert remote.supports_logprobs  # so NesyCD's gate reads it
        assert remote.confidence(prompts, 4) == pytest.approx(local.confidence(prompts, 4),
                                                             abs=1e-5)
    finally:
        remote.close()
        local.close()
    assert not refused(user_server.port)  # the user's server is not ours to stop
    other = shutil.copytree(student, tmp_path / "other-model")  # a checkpoint it does not serve
    with pytest.raises(StudentServerError, match=r"does not serve '.*other-model' \(it lists: "
                       r"'.*model'\); load the checkpoint under that name"):
        make_student(other, engine="server",
                     server=StudentServer(base_url=user_server.url, api_key_env=KEY_ENV))
    with pytest.raises(StudentServerError) as err:  # no key: one line naming the variable
        make_student(student, engine="server", server=StudentServer(base_url=user_server.url))
    assert "HTTP Error 401" in str(err.value) and "s3cret" not in str(err.value)
    assert str(err.value).endswith("is $NESYLOOP_STUDENT_API_KEY set to the server's key?")


# --- llama.cpp's server: the shipped SmolLM2 GGUF --------------------------------------------
def test_llamacpp_server_serves_the_smollm2_student(tmp_path):
    """A third-party server through ``command``: llama-cpp-python's, on the GGUF that student
    "smollm2" names (a trained scratch student has no GGUF: docs/recipes.md says why). SmolLM2
    has a chat template, so raw prompts go as one user message, as the hf engine wraps them."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from nesyloop.students.prompt import student_prompt

    cmd = (f"{PY} -m llama_cpp.server --model {{model}} --port {{port}} --n_ctx 1024 "
           "--verbose False")
    b = make_student("smollm2", engine="server", log_path=tmp_path / "llama.log",
                     server=StudentServer(command=cmd, concurrency=2))
    try:
        assert b.model.endswith(".gguf") and b.raw_prompts == "chat"
        prompts = [student_prompt("What is 2 + 3?"), student_prompt("Name a fruit.")]
        comps = b.generate([Request.raw(p, GenSettings(max_tokens=12, top_logprobs=2))
                            for p in prompts])
        for c in comps:
            assert c.text.strip() and 0 < c.completion_tokens <= 12
            assert len(c.logprobs[0]) == c.completion_tokens
            for t in c.logprobs[0]:  # greedy: the chosen token is the most likely one
                assert t.token == t.top_logprobs[0].token and len(t.top_logprobs) == 2
                assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
        assert all(0.0 <= x <= 1.0 for x in b.confidence(prompts, 4))
    finally:
        b.close()
    assert refused(int(b.base_url.rsplit(":", 1)[1].split("/")[0]))


# --- bad config: one line naming the key ------------------------------------------------------
@pytest.mark.parametrize("section,where", [
    ({"engine": "server"}, "key 'student.server': engine 'server' needs exactly one of command"),
    ({"engine": "server", "server": {"command": "x {model} {port}", "base_url": "http://a/v1"}},
     "both are set"),
    ({"engine": "vllm"},
     "key 'student.engine': unknown engine 'vllm' (expected one of hf, server)"),
    ({"server": {"command": "vllm serve {model}"}},
     "key 'student.server.command': needs {port}"),
    ({"server": {"command": "serve '{model} {port}"}},
     "key 'student.server.command': cannot split"),
    ({"server": {"base_url": "localhost:8000"}}, "key 'student.server.base_url': expected an http"),
    ({"server": {"concurrency": 0}}, "key 'student.server.concurrency'"),
    ({"server": {"concurrency": 10**6}}, "key 'student.server.concurrency': at most 10,000"),
    ({"server": {"start_timeout_s": -1}}, "key 'student.server.start_timeout_s'"),
    ({"server": {"api_key_env": "sk-secret"}}, "key 'student.server.api_key_env': expected the "
                                                "name of an environment variable"),
    ({"server": {"port": 8000}}, "unknown key 'student.server.port'"),
])
def test_bad_student_server_config_is_one_line_naming_the_key(section, where):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides={"student": section})
    assert where in str(err.value) and "\n" not in str(err.value)
    assert "sk-secret" not in str(err.value)
