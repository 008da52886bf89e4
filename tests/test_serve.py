"""``nesyloop serve``: real servers on 127.0.0.1 (ephemeral ports) queried with the official
``openai`` client and raw HTTP: the oracle teacher, a tiny trained student, a student with its
knowledge base, errors, fault injection, and the CLI as a subprocess."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import openai
import pytest
from toydata import toy_pairs
from typer.testing import CliRunner

from nesyloop.cli import app
from nesyloop.config import load_config
from nesyloop.gen.base import Completion, GenSettings, Request, apply_stop
from nesyloop.gen.registry import make_teacher
from nesyloop.kb.store import KnowledgeBase
from nesyloop.roles import prompts as P
from nesyloop.serve import Faults, Server, body_hash, parse_faults, question_of, serve_backend
from nesyloop.students.prompt import STUDENT_STOP, student_prompt
from nesyloop.tasks.bazaar import BazaarSettings, generate_splits

MODEL = "bazaar-oracle"


@pytest.fixture(scope="module")
def questions() -> list[str]:
    splits = generate_splits(BazaarSettings(train=6, dev=1, test=1, test_rare=1, test_deep=1))
    return [ex.question for ex in splits["train"]]


@pytest.fixture(scope="module")
def oracle():
    """The in-process oracle, built as the pipeline builds it from the default config."""
    cfg = load_config(None)
    return make_teacher(cfg.teacher, world_seed=cfg.task.bazaar.seed, seed=cfg.run.seed)


@pytest.fixture(scope="module")
def srv():
    with Server(serve_backend("oracle")) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=30)


def rationale_messages(q: str) -> list[dict]:
    return [{"role": "system", "content": P.RATIONALE_SYSTEM},
            {"role": "user", "content": P.RATIONALE_USER.format(question=q)}]


def post(srv: Server, path: str, body: bytes | dict, headers: dict | None = None,
         ) -> tuple[int, dict, dict]:
    """A raw HTTP POST: (status, headers, JSON body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    try:
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json",
                                                       **(headers or {})})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), json.loads(r.read() or b"null")
    finally:
        conn.close()


# ---------------------------------------------------------------------------- the oracle


def test_chat_answers_like_the_in_process_oracle(client, oracle, questions):
    for q in questions[:3]:
        msgs = rationale_messages(q)
        r = client.chat.completions.create(model=MODEL, messages=msgs, n=3, temperature=0.7,
                                           max_tokens=384, seed=0)
        want = oracle.generate([Request.chat(msgs, GenSettings(n=3, temperature=0.7,
                                                               max_tokens=384))])[0]
        assert [c.message.content for c in r.choices] == want.texts
        assert [c.index for c in r.choices] == [0, 1, 2]
        assert {c.finish_reason for c in r.choices} == {"stop"}
        assert r.object == "chat.completion" and r.model == MODEL and r.id.startswith("chatcmpl-")
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (want.prompt_tokens,
                                                                      want.completion_tokens)
        assert r.usage.total_tokens == want.prompt_tokens + want.completion_tokens
        assert "Therefore, the answer is" in r.choices[0].message.content


def test_completions_prompt_lists_stop_and_max_tokens(client, oracle, questions):
    prompts = [P.RATIONALE_USER.format(question=q) for q in questions[:2]]
    r = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=384)
    assert r.object == "text_completion" and len(r.choices) == 4
    for p, prompt in enumerate(prompts):
        want = oracle.generate([Request.raw(prompt, GenSettings(n=2, max_tokens=384))])[0].texts
        assert [r.choices[p * 2 + j].text for j in range(2)] == want
    full = r.choices[0].text
    cut = client.completions.create(model=MODEL, prompt=prompts[0], stop=["Therefore", "zzz"],
                                    max_tokens=384)
    assert cut.choices[0].text == apply_stop(full, ["Therefore"])
    assert len(cut.choices[0].text) < len(full)
    one = client.completions.create(model=MODEL, prompt=prompts[0], stop="Therefore",
                                    max_tokens=384)
    assert one.choices[0].text == cut.choices[0].text
    short = client.completions.create(model=MODEL, prompt=prompts[0], max_tokens=3)
    assert len(short.choices[0].text.split()) <= 3 and short.choices[0].finish_reason == "length"
    msgs = [{"role": "user", "content": prompts[0]}]
    chat_short = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=3)
    again = client.chat.completions.create(model=MODEL, messages=msgs, max_completion_tokens=3)
    assert again.choices[0].message.content == chat_short.choices[0].message.content
    assert again.choices[0].finish_reason == "length"


def test_streaming_chat_and_completions_match_whole_answers(client, questions):
    msgs = rationale_messages(questions[0])
    whole = client.chat.completions.create(model=MODEL, messages=msgs, n=2, max_tokens=384)
    chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, n=2, max_tokens=384,
                                                 stream=True,
                                                 stream_options={"include_usage": True}))
    texts = {0: "", 1: ""}
    finish = {}
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert len(chunks) > 6  # really cut into pieces
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]
    assert finish == {0: "stop", 1: "stop"}
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    prompt = P.RATIONALE_USER.format(question=questions[1])
    done = client.completions.create(model=MODEL, prompt=prompt, max_tokens=384)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=384, stream=True) if c.choices)
    assert streamed == done.choices[0].text


def test_models_list_and_unknown_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "nesyloop"
    with pytest.raises(openai.NotFoundError, match="gpt-4o"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


# ---------------------------------------------------------------------------- errors


def test_http_errors_in_openai_shape(oracle):
    with Server(oracle, token="s3cret-token", max_request_bytes=400) as s:
        ok_body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        auth = {"Authorization": "Bearer s3cret-token"}
        status, _, body = post(s, "/v1/chat/completions", ok_body, auth)
        assert status == 200 and body["choices"][0]["message"]["role"] == "assistant"

        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic xyz"}):
            status, _, body = post(s, "/v1/chat/completions", ok_body, headers)
            assert status == 401 and body["error"]["type"] == "authentication_error"
            assert "s3cret" not in json.dumps(body)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url, api_key="nope", max_retries=0).models.list()
        assert openai.OpenAI(base_url=s.url, api_key="s3cret-token").models.list().data

        big = {**ok_body, "messages": [{"role": "user", "content": "x" * 1000}]}
        status, headers, body = post(s, "/v1/chat/completions", big, auth)
        assert status == 413 and body["error"]["code"] == "request_too_large"
        assert "400 bytes" in body["error"]["message"]
        good = openai.OpenAI(base_url=s.url, api_key="s3cret-token", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            good.chat.completions.create(model=MODEL, messages=big["messages"])
        assert info.value.status_code == 413
        assert good.chat.completions.create(model=MODEL, messages=ok_body["messages"]).choices

        status, _, body = post(s, "/v1/chat/completions", b"{not json", auth)
        assert status == 400 and body["error"]["code"] == "invalid_json"
        for bad, field in [({**ok_body, "n": "two"}, "n"),
                           ({**ok_body, "temperature": 5}, "temperature"),
                           ({**ok_body, "stop": 3}, "stop"), ({"model": MODEL}, "messages"),
                           ({**ok_body, "messages": [{"role": "robot", "content": "x"}]},
                            "messages[0].role"),
                           ({"messages": ok_body["messages"]}, "model")]:
            status, _, body = post(s, "/v1/chat/completions", bad, auth)
            assert status == 400, bad
            assert body["error"]["param"] == field and body["error"]["message"].startswith(field)
        status, _, body = post(s, "/v1/completions", {"model": MODEL, "prompt": 7}, auth)
        assert status == 400 and body["error"]["param"] == "prompt"

        status, _, body = post(s, "/v1/embeddings", ok_body, auth)
        assert status == 404 and body["error"]["code"] == "unknown_url"
        status, _, body = post(s, "/v1/chat/completions", {**ok_body, "model": "other"}, auth)
        assert status == 404 and body["error"]["code"] == "model_not_found"
        stats = s.stats
        assert stats["errors"]["401"] >= 3 and stats["errors"]["413"] == 2
        assert stats["errors"]["400"] == 8 and stats["errors"]["404"] == 2
        assert stats["completions"] == 2


class Exploding:
    kind, model = "boom", "boom"

    def generate(self, requests):
        raise RuntimeError("out of memory (on purpose)")


def test_backend_failure_is_a_500():
    with Server(Exploding()) as s:
        status, _, body = post(s, "/v1/completions", {"model": "boom", "prompt": "x"})
    assert status == 500 and "out of memory" in body["error"]["message"]
    assert body["error"]["type"] == "server_error"


class Slow:
    """Records how many generate calls overlap (the server must serialise them)."""

    kind, model = "slow", "slow"

    def __init__(self):
        self.active = self.most = 0
        self.lock = threading.Lock()

    def generate(self, requests):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return [Completion([r.text().upper()] * r.settings.n, 1, 1) for r in requests]


def test_concurrent_requests_are_answered_and_backend_calls_serialised():
    backend = Slow()
    with Server(backend, faults=Faults(latency_s=0.2)) as s, ThreadPoolExecutor(8) as pool:
        t = time.perf_counter()
        outs = list(pool.map(lambda i: post(s, "/v1/completions", {
            "model": "slow", "prompt": f"p{i}"}), range(8)))
        elapsed = time.perf_counter() - t
    assert [o[2]["choices"][0]["text"] for o in outs] == [f"P{i}" for i in range(8)]
    assert backend.most == 1 and elapsed >= 8 * 0.05 + 0.2


# ---------------------------------------------------------------------------- faults


def test_faults_spec_parsing():
    f = parse_faults("latency=0.05,429=0.3,retry_after=1,500=0.2,drop=0.1,seed=4,max_faults=2")
    assert f == Faults(latency_s=0.05, p429=0.3, retry_after_s=1.0, p500=0.2, pdrop=0.1, seed=4,
                       max_faults=2)
    assert parse_faults("") is None
    for spec, needle in [("lag=1", "'lag'"), ("429=x", "429='x'"), ("seed=1.5", "seed"),
                         ("429", "key=value"), ("500=1.5", "p500"), ("429=0.6,500=0.6", "<= 1")]:
        with pytest.raises(Exception, match=needle):
            parse_faults(spec)


def test_each_fault_kind_on_raw_requests(oracle):
    body = {"model": MODEL, "prompt": "Question: hi\nAnswer:"}
    with Server(oracle, faults=Faults(p429=1.0, retry_after_s=2.5)) as s:
        status, headers, err = post(s, "/v1/completions", body)
        assert status == 429 and headers["Retry-After"] == "3"
        assert headers["retry-after-ms"] == "2500"
        assert err["error"]["type"] == "rate_limit_error"
        s.faults = Faults(p500=1.0)
        status, _, err = post(s, "/v1/completions", body)
        assert status == 500 and err["error"]["code"] == "injected_fault"
        s.faults = Faults(pdrop=1.0)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            post(s, "/v1/completions", body)
        s.faults = Faults(latency_s=0.3)
        t = time.perf_counter()
        status, _, _ = post(s, "/v1/completions", body)
        assert status == 200 and time.perf_counter() - t >= 0.3
        s.faults = None  # recovered
        assert post(s, "/v1/completions", body)[0] == 200
        stats = s.stats
    digest = body_hash(json.dumps(body).encode())
    assert stats["faults"] == {"429": 1, "500": 1, "drop": 1, "latency": 1}
    assert stats["attempts"] == {digest: 5} and stats["served"] == {digest: 2}
    assert stats["requests"] == 5 and stats["errors"] == {}


def retry_until_served(s: Server, body: dict) -> list[int]:
    seen = []
    while True:
        try:
            status = post(s, "/v1/completions", body)[0]
        except (http.client.RemoteDisconnected, ConnectionResetError):
            status = 0
        seen.append(status)
        if status == 200:
            return seen


def test_mixed_faults_are_deterministic_and_retries_get_through(oracle):
    faults = Faults(p429=0.3, retry_after_s=0.0, p500=0.2, pdrop=0.1, seed=3)
    bodies = [{"model": MODEL, "prompt": f"Question: number {i}\nAnswer:"} for i in range(30)]
    runs = []
    for _ in range(2):
        with Server(oracle, faults=faults) as s:
            runs.append(([retry_until_served(s, b) for b in bodies], s.stats))
    (seq, stats), (seq2, stats2) = runs
    assert seq == seq2 and stats["faults"] == stats2["faults"]  # same faults on every run
    kinds = stats["faults"]
    assert kinds["429"] > 0 and kinds["500"] > 0 and kinds["drop"] > 0
    assert sum(len(x) for x in seq) == 30 + sum(kinds.values()) == stats["requests"]
    assert sorted(stats["served"].values()) == [1] * 30  # each distinct request served once
    assert {s for x in seq for s in x} == {200, 429, 500, 0}
    with Server(oracle, faults=Faults(p429=0.3, p500=0.2, pdrop=0.1, seed=4)) as s:
        other = [retry_until_served(s, b) for b in bodies]
    assert other != seq  # another seed, other faults
    with Server(oracle, faults=Faults(p500=1.0, max_faults=2)) as s:
        assert retry_until_served(s, bodies[0]) == [500, 500, 200]


def test_openai_client_retries_through_faults(oracle, questions):
    # 429s carry retry-after-ms (50 ms); after a 500 or a drop the client backs off >= 0.5 s
    faults = Faults(latency_s=0.01, p429=0.5, retry_after_s=0.05, p500=0.1, pdrop=0.1, seed=1,
                    max_faults=2)
    with Server(oracle, faults=faults) as s:
        c = openai.OpenAI(base_url=s.url, api_key="x", max_retries=4, timeout=10)
        for q in questions:
            r = c.chat.completions.create(model=MODEL, messages=rationale_messages(q),
                                          max_tokens=384)
            assert "Therefore, the answer is" in r.choices[0].message.content
        stats = s.stats
    assert sum(stats["faults"].get(k, 0) for k in ("429", "500", "drop")) > 0
    assert len(stats["served"]) == len(questions) and set(stats["served"].values()) == {1}


# ---------------------------------------------------------------------------- students


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    from nesyloop.students.scratch import ScratchSettings, create_scratch_student
    from nesyloop.students.train import TrainSettings, train_sft

    root = tmp_path_factory.mktemp("serve-student")
    pairs = toy_pairs(200, 0, prefix="Question:", suffix="\nQuestion:")
    base = create_scratch_student([p["prompt"] + p["completion"] for p in pairs], root / "base",
                                  ScratchSettings(hidden=32, layers=1, heads=2, vocab_size=300))
    out = root / "student"
    train_sft(base, pairs, out, TrainSettings(max_steps=10, per_device_train_batch_size=16,
                                            learning_rate=3e-3),
              progress=False)
    return out


def test_student_server_generates_like_the_backend(student):
    backend = serve_backend("hf", model=str(student))
    with Server(backend, model_name="tiny") as s:
        c = openai.OpenAI(base_url=s.url, api_key="x", max_retries=0)
        r = c.completions.create(model="tiny", prompt=["Question: 3 + 4 =", "Question: 9 + 9 ="],
                                 max_tokens=6, temperature=0, stop=["\n"])
        want = backend.generate([Request.raw(p, GenSettings(max_tokens=6, temperature=0,
                                                            stop=("\n",)))
                                 for p in ["Question: 3 + 4 =", "Question: 9 + 9 ="]])
        assert [ch.text for ch in r.choices] == [w.text for w in want]
        assert r.usage.prompt_tokens == sum(w.prompt_tokens for w in want) > 0
        sampled = c.completions.create(model="tiny", prompt="Question: 1 + 1 =", max_tokens=4,
                                       temperature=1.0, n=3, seed=5)
        again = c.completions.create(model="tiny", prompt="Question: 1 + 1 =", max_tokens=4,
                                     temperature=1.0, n=3, seed=5)
        assert len(sampled.choices) == 3
        assert [x.text for x in sampled.choices] == [x.text for x in again.choices]
        msgs = [{"role": "user", "content": "Question: 2 + 2 ="}]
        chat = c.chat.completions.create(model="tiny", max_tokens=4, temperature=0, messages=msgs)
        assert isinstance(chat.choices[0].message.content, str)
        assert chat.choices[0].finish_reason in ("stop", "length")


def test_question_of_strips_the_student_format():
    assert question_of(Request.raw("Question: How many figs?\nAnswer:")) == "How many figs?"
    assert question_of(Request.raw("How many figs?")) == "How many figs?"
    chat = Request.chat([{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "first"},
                         {"role": "assistant", "content": "ok"},
                         {"role": "user", "content": "Question: second\nAnswer:"}])
    assert question_of(chat) == "second"


def test_student_with_kb_retrieves_and_counts(student, tmp_path):
    kb_path = tmp_path / "kb.sqlite"
    with KnowledgeBase(kb_path) as kb:
        fig = kb.add("Figs come in crates.", ["A crate of figs holds 12 figs."])
        salt = kb.add("Salt is sold by the sack.", ["A sack of salt costs 7 coins."])
    backend = serve_backend("hf", model=str(student), kb=str(kb_path))
    with Server(backend, model_name="tiny-kb") as s:
        c = openai.OpenAI(base_url=s.url, api_key="x", max_retries=0)
        q = "How many coins do 3 sacks of salt cost?"
        r = c.chat.completions.create(model="tiny-kb", max_tokens=6, temperature=0,
                                      messages=[{"role": "user", "content": q}])
        info = r.model_extra["nesyloop"]
        assert info["retrieved"] == [salt] and "7 coins" in info["knowledge"]
        prompt = student_prompt(q, info["knowledge"])
        want = backend.student.generate([Request.raw(prompt, GenSettings(
            max_tokens=6, temperature=0, stop=STUDENT_STOP))])[0].text
        assert r.choices[0].message.content == want
        r2 = c.completions.create(model="tiny-kb", prompt="Question: How many figs in 2 crates?"
                                  "\nAnswer:", max_tokens=4, temperature=0)
        assert r2.model_extra["nesyloop"]["retrieved"] == [fig]
        streamed = list(c.completions.create(model="tiny-kb", prompt="figs crates", max_tokens=4,
                                             temperature=0, stream=True))
        assert streamed[-1].model_extra["nesyloop"]["retrieved"] == [fig]
    with KnowledgeBase(kb_path) as kb:
        assert (kb.get(salt).retrieved, kb.get(fig).retrieved) == (1, 2)


# ---------------------------------------------------------------------------- the CLI


def test_cli_bad_arguments_are_one_line_errors(tmp_path):
    runner = CliRunner()
    for args, needle in [(["--kb", str(tmp_path / "kb.sqlite")], "--kb needs --model"),
                         (["--model", str(tmp_path / "nope")], "no such model folder"),
                         (["--model", "smollm2", "--kb", str(tmp_path / "missing.sqlite")],
                          "missing.sqlite"),
                         (["--backend", "vllm"], "--backend"),
                         (["--faults", "429=0.5,jitter=2"], "'jitter'"),
                         (["--token-env", "NESYLOOP_TEST_UNSET_VAR"], "NESYLOOP_TEST_UNSET_VAR"),
                         (["--port", "70000"], "--port"),
                         (["--max-prompt-tokens", "0"], "--max-prompt-tokens"),
                         (["--client-timeout", "0"], "--client-timeout"),
                         (["--max-generation-seconds", "-1"], "--max-generation-seconds"),
                         (["--max-connections", "0"], "--max-connections")]:
        res = runner.invoke(app, ["serve", *args])
        assert res.exit_code == 2, (args, res.output)
        err = res.stderr.strip()
        assert err.startswith("error:") and needle in err and "\n" not in err, (args, err)


def test_cli_serves_until_terminated(tmp_path):
    env = {**os.environ, "NESYLOOP_TEST_SERVE_TOKEN": "tok-12345-secret"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nesyloop.cli", "serve", "--port", "0",
         "--token-env", "NESYLOOP_TEST_SERVE_TOKEN", "--faults", "latency=0.01,seed=2",
         "--model-name", "oracle-http", "--max-prompt-tokens", "40"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        c = openai.OpenAI(base_url=url, api_key="tok-12345-secret", max_retries=0, timeout=30)
        assert [m.id for m in c.models.list().data] == ["oracle-http"]
        r = c.chat.completions.create(model="oracle-http", max_tokens=64,
                                      messages=[{"role": "user", "content": "hello"}])
        assert r.choices[0].message.content
        assert "prompts up to 40 tokens" in line
        with pytest.raises(openai.BadRequestError, match="over this server's limit of 40"):
            c.chat.completions.create(model="oracle-http", max_tokens=8,
                                      messages=[{"role": "user", "content": "word " * 41}])
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "tok-12345-secret" not in line + out + err
