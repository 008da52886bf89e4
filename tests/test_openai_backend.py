"""The OpenAI-compatible teacher against a real ``nesyloop serve`` server running the Bazaar
oracle on 127.0.0.1: the same rationales as the in-process oracle; latency, 429s, 500s and
dropped connections survived with nothing lost or paid twice; persistent failures recorded,
not cached, and filled by the next run; rpm/tpm limits; the budget cap; ``nesyloop estimate``;
the API key never written anywhere; the n > 1 fallback; the local ``hf`` teacher."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nesyloop import api
from nesyloop.cli import app
from nesyloop.costs import BudgetExceeded, worst_case
from nesyloop.errors import ConfigError, NesyloopError
from nesyloop.gen.base import Completion, GenSettings, Request
from nesyloop.gen.http import OpenAIBackend
from nesyloop.gen.registry import make_teacher
from nesyloop.io import read_json, read_jsonl
from nesyloop.methods.common import load_split
from nesyloop.roles.rationale import RationaleRole
from nesyloop.runs.cache import RequestCache, request_key
from nesyloop.serve import Faults, Server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FAST = {"backoff_s": 0.01, "timeout_s": 20}
N_TRAIN = 96  # the --quick preset's training problems


def config(tmp: Path, url: str | None = None, methods=("std-cot",), extra=None, **teacher):
    common = {k: teacher.pop(k) for k in ("prices", "budget_usd") if k in teacher}
    t = ({"backend": "openai", **common, "openai": {"base_url": url, **FAST, **teacher}} if url
         else teacher)
    return api.load_config(None, quick=True, overrides={
        "methods": list(methods), "teacher": t,
        "run": {"cache": str(tmp / "cache.sqlite"), "progress": False}, **(extra or {})})


def rationales(cfg, out: Path, logs: list | None = None):
    api.run(cfg, out=out, until="rationales", log=(logs.append if logs is not None else
                                                   (lambda _m: None)))
    return read_jsonl(out / "rationales" / "kept.jsonl"), read_json(
        out / "rationales" / "manifest.json")


@pytest.fixture(scope="module")
def oracle():
    cfg = api.load_config(None, quick=True)
    return make_teacher(cfg.teacher, world_seed=cfg.task.bazaar.seed, seed=cfg.run.seed)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, oracle):
    """The in-process oracle's rationales (kept.jsonl) on the quick preset."""
    tmp = tmp_path_factory.mktemp("ref")
    kept, _ = rationales(config(tmp), tmp / "run")
    return kept


def _chat(i: int, max_tokens: int = 20) -> Request:
    return Request.chat([{"role": "user", "content": f"Question: request number {i}"}],
                        GenSettings(max_tokens=max_tokens))


def served_once(srv: Server) -> bool:
    return set(srv.stats["served"].values()) == {1}


# --- (a) the same artifacts as the in-process oracle ------------------------------------------
def test_quick_std_cot_over_http_matches_in_process_oracle(tmp_path, oracle, reference):
    with Server(oracle) as srv:
        short = {"train": {"max_steps": 2, "per_device_train_batch_size": 8},
                 "eval": {"splits": ["test"], "max_new_tokens": 8}}
        metrics = api.run(config(tmp_path, srv.url, extra=short), out=tmp_path / "run",
                          log=lambda _m: None)
        assert srv.stats["completions"] == N_TRAIN and served_once(srv)
    assert read_jsonl(tmp_path / "run" / "rationales" / "kept.jsonl") == reference
    assert set(metrics) == {"std-cot"} and metrics["std-cot"]["test"]["n"] > 0
    info = read_json(tmp_path / "run" / "rationales" / "manifest.json")["info"]
    assert info["requests_issued"] == N_TRAIN and info["requests_failed"] == 0
    assert "Teacher cost:" in (tmp_path / "run" / "report.md").read_text()


# --- (b) faults: nothing lost, nothing paid twice ---------------------------------------------
def test_faults_are_survived_without_loss_or_double_payment(tmp_path, oracle, reference):
    faults = Faults(latency_s=0.005, p429=0.2, retry_after_s=0.05, p500=0.2, pdrop=0.15,
                    seed=3, max_faults=2)
    with Server(oracle, faults=faults) as srv:
        kept, man = rationales(config(tmp_path, srv.url, max_retries=3), tmp_path / "run")
        stats = srv.stats
    assert kept == reference
    assert {"latency", "429", "500", "drop"} <= set(stats["faults"])
    assert len(stats["served"]) == N_TRAIN and served_once(srv)
    counts = RequestCache(tmp_path / "cache.sqlite").issued_counts()
    assert len(counts) == N_TRAIN and set(counts.values()) == {1}
    assert man["info"]["requests_failed"] == 0 and "partial_of" not in man


def test_retry_after_is_honoured(oracle):
    with Server(oracle) as srv:
        b = OpenAIBackend(oracle.model, srv.url, backoff_s=0.001, max_retries=2)
        b.generate([_chat(0)])  # warm up (client, event loop, connection)
        srv.faults = Faults(p429=1.0, retry_after_s=0.6, max_faults=1)
        t0 = time.perf_counter()
        comp = b.generate([_chat(1)])[0]
        elapsed = time.perf_counter() - t0
        b.close()
    assert comp.error is None and srv.stats["faults"] == {"429": 1}
    assert elapsed >= 0.6  # waited what Retry-After asked, not the 1 ms backoff


# --- (c) persistent failures ------------------------------------------------------------------
def test_persistent_failure_is_recorded_not_cached_and_filled_by_the_rerun(tmp_path, oracle,
                                                                          reference):
    out, logs = tmp_path / "run", []
    with Server(oracle, faults=Faults(p500=1.0)) as srv:
        cfg = config(tmp_path, srv.url, max_retries=1)
        kept, man = rationales(cfg, out, logs)
        assert kept == [] and man["info"]["requests_failed"] == N_TRAIN
        assert srv.stats["faults"] == {"500": 2 * N_TRAIN}  # one try + one retry each
        rejected = read_jsonl(out / "rationales" / "rejected.jsonl")
        assert len(rejected) == 2 * N_TRAIN  # every sample of every question, with the reason
        assert {r["reason"] for r in rejected} == {
            "teacher request failed: HTTP 500 (after 2 attempts)"}
        assert len(RequestCache(tmp_path / "cache.sqlite")) == 0
        assert any("[warn] 96 teacher requests failed" in m for m in logs)
        srv.faults = None  # the server recovers
        logs.clear()
        kept, man = rationales(cfg, out, logs)
    assert "[run ] rationales" in logs  # a stage with failures is never trusted as done
    assert kept == reference and "partial_of" not in man
    assert man["info"]["requests_issued"] == N_TRAIN and served_once(srv)


def test_partial_failure_rerun_sends_only_the_failed_requests(tmp_path, oracle, reference):
    out = tmp_path / "run"
    with Server(oracle, faults=Faults(p500=0.4, seed=1)) as srv:
        cfg = config(tmp_path, srv.url, max_retries=0)
        _, man = rationales(cfg, out)
        failed = man["info"]["requests_failed"]
        assert 0 < failed < N_TRAIN and man["info"]["requests_issued"] == N_TRAIN - failed
        srv.faults = None
        kept, man2 = rationales(cfg, out)
    assert man2["info"]["requests_issued"] == failed
    assert man2["info"]["requests_cached"] == N_TRAIN - failed
    assert kept == reference and served_once(srv)


# --- (d) rate limits ----------------------------------------------------------------------------
def test_rpm_limit_spaces_requests(oracle):
    with Server(oracle) as srv:
        b = OpenAIBackend(oracle.model, srv.url, rpm=600, concurrency=8)  # 10/s, bursts of 10
        b.generate([_chat(100)])  # warm up (client, event loop, connection)
        time.sleep(0.2)  # the bucket is full again
        t0 = time.perf_counter()
        comps = b.generate([_chat(i) for i in range(25)])
        elapsed = time.perf_counter() - t0
        b.close()
    assert all(c.error is None for c in comps)
    assert elapsed >= 1.4  # 15 requests beyond the burst at 10 per second


def test_tpm_limit_spaces_tokens(oracle):
    with Server(oracle) as srv:
        b = OpenAIBackend(oracle.model, srv.url, tpm=3000, concurrency=8)  # 50 tokens/s
        reqs = [_chat(i, max_tokens=10) for i in range(12)]
        t0 = time.perf_counter()
        comps = b.generate(reqs)
        elapsed = time.perf_counter() - t0
        b.close()
    used = sum(c.prompt_tokens + c.completion_tokens for c in comps)
    reserve = max(sum(worst_case(r)) for r in reqs)
    assert all(c.error is None for c in comps) and used > 100
    assert elapsed >= (used - 50 - reserve) / 50  # a lower bound: the bucket refills at 50/s


# --- (e) the budget cap -------------------------------------------------------------------------
def test_budget_cap_stops_cleanly_and_a_higher_cap_goes_on(tmp_path, oracle, reference):
    out, prices = tmp_path / "run", {"prompt_per_mtok": 1000.0, "completion_per_mtok": 1000.0}
    with Server(oracle) as srv:
        cfg = config(tmp_path, srv.url, concurrency=1, prices=prices, budget_usd=5.0)
        with pytest.raises(BudgetExceeded) as err:
            rationales(cfg, out)
        msg = str(err.value)
        assert "\n" not in msg and "of the $5.0000 cap" in msg and "re-run" in msg
        assert not (out / "rationales").exists() and not list(out.glob(".tmp-rationales*"))
        cache = RequestCache(tmp_path / "cache.sqlite")
        bought = srv.stats["completions"]
        assert 0 < bought < N_TRAIN and len(cache) == bought
        # exactly the first k questions were bought, and the (k+1)th could have broken the cap
        train = load_split(out / "data", "train")
        t = cfg.teacher
        gen = GenSettings(max_tokens=t.max_tokens, temperature=t.temperature, top_p=t.top_p,
                          n=t.samples, seed=cfg.run.seed)
        reqs = [Request.chat(RationaleRole().format_input(ex), gen) for ex in train]
        stored = [cache.get(request_key(oracle_like(t), r)[0]) for r in reqs]
        assert all(c is not None for c in stored[:bought]) and stored[bought] is None
        spent = sum(t.prices.cost(c.prompt_tokens, c.completion_tokens) for c in stored[:bought])
        assert spent <= 5.0 < spent + t.prices.cost(*worst_case(reqs[bought]))
        assert f"spent ${spent:.4f}" in msg
        cache.close()
        kept, man = rationales(config(tmp_path, srv.url, prices=prices, budget_usd=100.0), out)
    assert kept == reference and served_once(srv)  # nothing bought twice
    assert man["info"]["requests_cached"] == bought
    assert man["info"]["requests_issued"] == N_TRAIN - bought


def test_budget_reserves_the_worst_case_of_requests_in_flight(tmp_path, oracle):
    """With 8 in flight, each reserves its worst case (~$0.85 here) before it is sent: a $1 cap
    lets exactly one through, although its real cost (~$0.14) would leave room for more."""
    prices = {"prompt_per_mtok": 1000.0, "completion_per_mtok": 1000.0}
    with Server(oracle) as srv:
        cfg = config(tmp_path, srv.url, concurrency=8, prices=prices, budget_usd=1.0)
        with pytest.raises(BudgetExceeded):
            rationales(cfg, tmp_path / "run")
        assert srv.stats["completions"] == 1
    cache = RequestCache(tmp_path / "cache.sqlite")
    assert len(cache) == 1
    cache.close()


def oracle_like(t):
    """The cache identity of the openai teacher ``t`` (no connection is made)."""
    return OpenAIBackend.from_config(t)


# --- (f) nesyloop estimate ----------------------------------------------------------------------
def test_estimate_counts_the_rationale_requests_exactly(tmp_path, oracle):
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(f'methods = ["std-cot", "nesycd"]\n[run]\ncache = "{tmp_path}/c.sqlite"\n'
                        f'progress = false\n[teacher]\nprices = {{ prompt_per_mtok = 2.0, '
                        f'completion_per_mtok = 8.0 }}\n', encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(app, ["estimate", str(cfg_path), "--quick", "--out",
                              str(tmp_path / "run"), "--json"])
    assert res.exit_code == 0, res.output
    est = json.loads(res.output)
    rows = {r["stage"]: r for r in est["rows"]}
    assert rows["rationales"]["to_send"] == N_TRAIN and rows["rationales"]["cached"] == 0
    assert rows["kb"]["cached"] is None and est["cost_usd"] > 0  # assumed: the student's errors
    cfg = api.load_config(cfg_path, quick=True)
    _, man = rationales(cfg, tmp_path / "run")
    assert man["info"]["requests_issued"] == rows["rationales"]["to_send"]
    again = api.estimate(cfg, out=tmp_path / "run")
    assert again.row("rationales").cached == N_TRAIN and again.row("rationales").to_send == 0
    table = runner.invoke(app, ["estimate", str(cfg_path), "--quick", "--out",
                                str(tmp_path / "run"), "--error-rate", "0.3"]).output
    assert "rationales" in table and "student error rate 0.30" in table
    bad = runner.invoke(app, ["estimate", "--quick", "--error-rate", "2"])
    assert bad.exit_code == 2 and "student_error_rate must be in [0, 1]" in bad.output


# --- (g) the API key --------------------------------------------------------------------------
SECRET = "sk-nesyloop-test-4f1c9e2a7b"


def test_api_key_comes_from_the_env_and_is_never_written(tmp_path, oracle, monkeypatch, capsys):
    env = "NESYLOOP_TEST_TEACHER_KEY"
    out, logs = tmp_path / "run", []
    with Server(oracle, token=SECRET) as srv:
        cfg = config(tmp_path, srv.url, api_key_env=env)
        monkeypatch.delenv(env, raising=False)
        with pytest.raises(NesyloopError, match=rf"HTTP 401 .*\${env} set"):
            rationales(cfg, out, logs)
        monkeypatch.setenv(env, SECRET)
        kept, _ = rationales(cfg, out, logs)
    assert kept
    captured = capsys.readouterr()
    blobs = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert blobs and all(SECRET.encode() not in b for b in blobs)  # cache DB (+WAL), run dir
    assert SECRET not in "\n".join(logs) + captured.out + captured.err
    with pytest.raises(ConfigError) as err:  # a key pasted where its variable's name goes
        api.load_config(None, overrides={"teacher": {"openai": {"api_key_env": SECRET}}})
    assert SECRET not in str(err.value) and "teacher.openai.api_key_env" in str(err.value)


# --- servers that ignore n ------------------------------------------------------------------
class OneSample:
    """A backend that ignores ``n`` (returns one sample), like many servers."""

    kind, model = "oracle", "bazaar-oracle"

    def __init__(self, inner):
        self.inner = inner

    def generate(self, requests):
        return [Completion([c.texts[0]], c.prompt_tokens, c.completion_tokens)
                for c in self.inner.generate(requests)]


def test_n_falls_back_to_single_requests_with_their_own_seeds(oracle):
    s = GenSettings(n=3, temperature=0.7, seed=5, max_tokens=64)
    q = load_split_questions()
    with Server(OneSample(oracle)) as srv:
        b = OpenAIBackend(oracle.model, srv.url, concurrency=2)
        first = b.generate([Request.chat([{"role": "user", "content": q[0]}], s)])[0]
        assert b.n_supported is False and len(first.texts) == 3
        assert srv.stats["completions"] == 3  # the n=3 call, then seeds 6 and 7
        second = b.generate([Request.chat([{"role": "user", "content": q[1]}], s)])[0]
        assert len(second.texts) == 3 and srv.stats["completions"] == 6  # singles at once
        b.close()
    assert first.prompt_tokens > 0 and second.completion_tokens > 0


def load_split_questions() -> list[str]:
    cfg = api.load_config(None, quick=True)
    from nesyloop.tasks.bazaar import generate_splits

    return [f"Question: {ex.question}" for ex in generate_splits(cfg.task.bazaar)["train"][:2]]


# --- the local hf teacher ---------------------------------------------------------------------
def test_hf_teacher_runs_the_rationale_role(tmp_path):
    from nesyloop.students.scratch import ScratchSettings, create_scratch_student

    texts = [f"Question: what is {i} plus {i}? Therefore, the answer is {2 * i}."
             for i in range(50)]
    model = create_scratch_student(texts, tmp_path / "teacher",
                                   ScratchSettings(hidden=32, layers=1, heads=2, vocab_size=300))
    cfg = config(tmp_path, None, backend="hf", model=str(model), samples=1, max_tokens=8,
                 batch_size=32)
    logs: list[str] = []
    kept, man = rationales(cfg, tmp_path / "run", logs)
    rejected = read_jsonl(tmp_path / "run" / "rationales" / "rejected.jsonl")
    assert len(kept) + len(rejected) == N_TRAIN and man["info"]["requests_issued"] == N_TRAIN
    assert all(r["reason"] for r in rejected)  # an untrained model's replies, each with a reason
    _, man2 = rationales(cfg, tmp_path / "run2")  # another run: every request from the cache
    assert man2["info"]["requests_cached"] == N_TRAIN and man2["info"]["requests_issued"] == 0


# --- failed requests through every teacher role; settings; small parts -------------------------
def test_every_role_turns_a_failed_request_into_a_rejected_record(tmp_path, oracle):
    from types import SimpleNamespace

    from nesyloop.methods.fdd.stages import _agree
    from nesyloop.roles.base import run_role
    from nesyloop.roles.error_analysis import analyse_errors
    from nesyloop.roles.evolve import EvolveRole
    from nesyloop.roles.pot import distill_programs
    from nesyloop.runs.cache import CachedBackend
    from nesyloop.tasks.bazaar import generate_splits

    train = generate_splits(api.load_config(None, quick=True).task.bazaar)["train"][:3]
    cache = RequestCache(tmp_path / "cache.sqlite")
    with Server(oracle, faults=Faults(p500=1.0)) as srv:
        inner = OpenAIBackend(oracle.model, srv.url, max_retries=0)
        teacher = CachedBackend(inner, cache)
        s = GenSettings(n=1, max_tokens=64)
        wrong = [{"id": ex.id, "question": ex.question, "answer": ex.answer,
                  "response": "It is 3. Therefore, the answer is 3."} for ex in train]
        entries, rejected = analyse_errors(teacher, wrong, s, progress=False)
        kept, prog_rejected = distill_programs(teacher, train, s, progress=False)
        evolved = run_role(teacher, EvolveRole("harder"), train, s, progress=False)
        cands = [{"answer_type": ex.answer_type, "options": ex.options} for ex in train]
        cot = run_role(teacher, RationaleRole(), train, s, progress=False)
        _agree(cands, cot, [[{"value": None, "verdict": "no program"}]] * 3,
               SimpleNamespace(agreement="cot-pot"))
        inner.close()
    reason = "teacher request failed: HTTP 500 (after 1 attempt)"
    assert entries == [] and {r["reason"] for r in rejected} == {reason}
    assert kept == [] and {r["reason"] for r in prog_rejected} == {reason}
    assert {r[0]["reason"] for r in evolved} == {reason} and all(r[0]["question"] is None
                                                                 for r in evolved)
    assert {c["reason"] for c in cands} == {reason}
    assert len(cache) == 0 and teacher.usage.requests_failed == 4 * 3
    assert "12 failed" in teacher.postfix()
    cache.close()


def test_a_wrong_model_name_stops_with_one_clear_line(oracle):
    with Server(oracle) as srv:
        b = OpenAIBackend("no-such-model", srv.url)
        with pytest.raises(NesyloopError) as err:
            b.generate([_chat(0), _chat(1)])
        b.close()
    assert "HTTP 404 (not found: check teacher.openai.base_url and teacher.model)" in str(err.value)


@pytest.mark.parametrize("key,value,words", [
    ("openai", {"base_url": "localhost:8000/v1"}, "teacher.openai.base_url': expected an http"),
    ("openai", {"concurrency": 0}, "teacher.openai.concurrency'"),
    ("budget_usd", -1, "teacher.budget_usd'"),
    ("prices", {"prompt_per_mtok": 1, "completion": 2}, "teacher.prices.completion'"),
])
def test_teacher_settings_are_validated_by_name(key, value, words):
    with pytest.raises(ConfigError, match=words):
        api.load_config(None, overrides={"teacher": {key: value}})


def test_retry_after_headers_and_backoff():
    from nesyloop.gen.http.retry import Backoff, retry_after_s

    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # past
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None
    b = Backoff(base_s=1.0, cap_s=8.0)
    for attempt, hi in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 8.0)]:
        d = b.delay(attempt)
        assert hi / 2 <= d <= hi
    assert 3.0 <= b.delay(0, retry_after=3.0) <= 3.3
