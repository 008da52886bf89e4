"""Token log-probabilities in the backend protocol (``GenSettings.top_logprobs``,
``Completion.logprobs``, OpenAI's ``logprobs`` shape): the request cache key of requests that do
not ask for them is unchanged (pinned), the hf backend's numbers equal a plain forward pass of
the model, the generic ``confidence`` computed from them equals the hf backend's former
implementation, and ``nesyloop serve`` returns them to the ``openai`` client."""

from __future__ import annotations

import http.client
import json
import math
import os
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import openai
import pytest
from pydantic import ValidationError
from toydata import toy_pairs

from nesyloop.gen.base import (BaseBackend, Completion, GenSettings, Request, TokenLogprob,
                               TopLogprob, top2_gap)
from nesyloop.gen.hf import HFBackend, _eos_ids
from nesyloop.runs.cache import request_key
from nesyloop.serve import Server

# ---------------------------------------------------------------------------- settings, cache key

# computed with runs/cache.py before top_logprobs existed: a drift here re-asks every cached
# teacher request of every user
PINNED_KEYS = [
    (SimpleNamespace(kind="openai", model="gpt-4o-mini"),
     Request.chat([{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "How many figs?"}],
                  GenSettings(max_tokens=64, temperature=0.7, n=3, stop=("\n\n",), seed=7)),
     "572e907c514db59a2d0fd42709f26d028c62d20f66ae3fab38df06bfe1714469",
     '{"messages": [["system", "Be brief."], ["user", "How many figs?"]], "prompt": null, '
     '"settings": {"max_tokens": 64, "n": 3, "seed": 7, "stop": ["\\n\\n"], "temperature": 0.7, '
     '"top_p": 1.0}}'),
    (SimpleNamespace(kind="hf", model="student", cache_id="student@v1"),
     Request.raw("Question: 2 + 2 =\nAnswer:"),
     "407520caa896c32fecb04e348df7d94d5ec372e05b315b808315b855993cfadd",
     '{"messages": null, "prompt": "Question: 2 + 2 =\\nAnswer:", "settings": {"max_tokens": '
     '256, "n": 1, "seed": 0, "stop": [], "temperature": 0.0, "top_p": 1.0}}'),
]


@pytest.mark.parametrize("i", range(len(PINNED_KEYS)))
def test_request_key_without_logprobs_is_unchanged(i):
    backend, request, key, body = PINNED_KEYS[i]
    assert request_key(backend, request) == (key, body)
    explicit = Request(messages=request.messages, prompt=request.prompt,
                       settings=request.settings.model_copy(update={"top_logprobs": None}))
    assert request_key(backend, explicit) == (key, body)
    asked = Request(messages=request.messages, prompt=request.prompt,
                    settings=GenSettings(**{**request.settings.model_dump(), "top_logprobs": 2}))
    other, other_body = request_key(backend, asked)
    assert other != key and json.loads(other_body)["settings"]["top_logprobs"] == 2


def test_top_logprobs_bounds():
    assert GenSettings().top_logprobs is None
    assert GenSettings(top_logprobs=0).top_logprobs == 0
    assert GenSettings(top_logprobs=20).top_logprobs == 20
    for bad in (-1, 21, 2.5):
        with pytest.raises(ValidationError):
            GenSettings(top_logprobs=bad)
    # part of the settings' identity: the hf backend and serve's scheduler group by settings
    assert GenSettings(top_logprobs=2) != GenSettings()


# ---------------------------------------------------------------------------- generic confidence


class Scripted(BaseBackend):
    """Answers every request with the same two tokens and their top-2 log-probabilities."""

    kind = "scripted"
    supports_logprobs = True

    def __init__(self):
        self.seen: list[Request] = []

    def generate(self, requests):
        self.seen += requests
        toks = [TokenLogprob("a", math.log(0.7), [TopLogprob("a", math.log(0.7)),
                                                  TopLogprob("b", math.log(0.2))]),
                TokenLogprob("c", math.log(0.5), [TopLogprob("c", math.log(0.5)),
                                                  TopLogprob("d", math.log(0.5))])]
        return [Completion(texts=["ac"], logprobs=[toks] if r.settings.top_logprobs else None)
                for r in requests]


def test_generic_confidence_from_logprobs():
    b = Scripted()
    assert b.confidence(["p", "q"], 5) == pytest.approx([0.25, 0.25])  # ((.7-.2)+(.5-.5))/2
    s = b.seen[0].settings
    assert (s.max_tokens, s.temperature, s.top_logprobs, s.n) == (5, 0.0, 2, 1)
    assert b.seen[0].prompt == "p" and b.confidence([], 3) == []
    assert top2_gap([]) is None
    assert top2_gap([TokenLogprob("x", 0.0, [TopLogprob("x", 0.0)])]) == 1.0

    class NoLogprobs(Scripted):
        supports_logprobs = False

    quiet = NoLogprobs()
    assert quiet.confidence(["p", "q"], 5) == [None, None] and quiet.seen == []


# ---------------------------------------------------------------------------- the hf backend


def pairs(n: int, seed: int) -> list[dict]:
    return toy_pairs(n, seed, max_a=99, prefix="Q:", suffix=". Done.")


def train_briefly(base, out, steps: int = 40):
    """A few AdamW steps on the toy sums (prompt, completion, end of text), in plain torch, so
    that the student's top-2 gaps are far from uniform and it ends its answers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    rows = [tok(p["prompt"] + p["completion"])["input_ids"] + [tok.eos_token_id]
            for p in pairs(256, 0)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = [rows[i] for i in torch.randint(len(rows), (16,), generator=gen).tolist()]
        width = max(map(len, batch))
        ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in batch])
        labels = torch.tensor([r + [-100] * (width - len(r)) for r in batch])
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    from nesyloop.students.scratch import ScratchSettings, create_scratch_student

    root = tmp_path_factory.mktemp("logprobs")
    texts = [p["prompt"] + p["completion"] for p in pairs(300, 1)]
    base = create_scratch_student(texts, root / "base",
                                  ScratchSettings(hidden=64, layers=2, heads=2, vocab_size=400))
    return train_briefly(base, root / "student")


@pytest.fixture(scope="module")
def backend(student):
    return HFBackend(student, batch_size=4, progress=False)


def prompts() -> list[str]:
    return [f"Q: {a} + {b} =" if a % 3 else f"Q: {a} + {b} = ? Q: {a} + {b} =" for a, b in
            [(5, 3), (41, 2), (7, 7), (90, 9), (12, 1), (3, 0), (66, 6)]]


def forward_logprobs(backend: HFBackend, prompt_ids: list[int], gen: list[int]):
    """The model's log-softmax at each generated position, from one plain forward pass."""
    import torch

    ids = torch.tensor([prompt_ids + gen])
    with torch.inference_mode():
        logits = backend.lm(input_ids=ids).logits[0].float()
    lp = torch.log_softmax(logits[len(prompt_ids) - 1:-1], dim=-1)
    return lp


def check_against_forward(backend, request, comp, k):
    """Every sample's log-probabilities and top ``k`` equal a forward pass over its tokens."""
    tok = backend.tokenizer
    prompt_ids = backend.encode(request)
    for entries in comp.logprobs:
        ids = [_token_id(backend, e.token) for e in entries]
        lp = forward_logprobs(backend, prompt_ids, ids)
        for t, e in enumerate(entries):
            assert e.logprob == pytest.approx(float(lp[t, ids[t]]), abs=1e-4)
            top = lp[t].topk(k)
            assert len(e.top_logprobs) == k
            assert [x.logprob for x in e.top_logprobs] == pytest.approx(
                top.values.tolist(), abs=1e-4)
            assert [x.token for x in e.top_logprobs] == tok.batch_decode(
                [[i] for i in top.indices.tolist()], clean_up_tokenization_spaces=False)


def _token_id(backend, text: str) -> int:
    """The id of the token whose text is ``text`` (unique for the tokens the student makes)."""
    if "_test_ids" not in backend.__dict__:
        ids: dict[str, list[int]] = {}
        for i in range(len(backend.tokenizer)):
            ids.setdefault(backend.tokenizer.decode([i], clean_up_tokenization_spaces=False),
                           []).append(i)
        backend.__dict__["_test_ids"] = ids
    found = backend.__dict__["_test_ids"][text]
    assert len(found) == 1, (text, found)
    return found[0]


def test_greedy_logprobs_are_the_models(backend):
    reqs = [Request.raw(p, GenSettings(max_tokens=8, top_logprobs=3, n=2)) for p in prompts()]
    comps = backend.generate(reqs)
    plain = backend.generate([Request.raw(p, GenSettings(max_tokens=8, n=2)) for p in prompts()])
    eos = {backend.tokenizer.decode([i]) for i in _eos_ids(backend.tokenizer, backend.lm)}
    assert all(c.logprobs is None for c in plain)
    for r, c, p in zip(reqs, comps, plain):
        assert c.texts == p.texts and c.completion_tokens == p.completion_tokens
        assert len(c.logprobs) == 2 and c.logprobs[0] == c.logprobs[1]
        entries = c.logprobs[0]
        assert 2 * len(entries) == c.completion_tokens
        text = "".join(e.token for e in entries if e.token not in eos)
        assert backend.tokenizer.decode(backend.tokenizer(text, add_special_tokens=False)[
            "input_ids"], skip_special_tokens=True) == c.text
        for e in entries:  # greedy: the chosen token is the most likely one
            assert e.token == e.top_logprobs[0].token and e.logprob == e.top_logprobs[0].logprob
            assert [x.logprob for x in e.top_logprobs] == sorted(
                [x.logprob for x in e.top_logprobs], reverse=True)
        check_against_forward(backend, r, c, 3)
    assert any(e.token in eos for c in comps for e in c.logprobs[0])  # end of text included


def test_sampled_logprobs_are_the_raw_distribution(backend):
    """Sampled at temperature 1.7 and top-p 0.6, each sample's log-probabilities are still the
    model's own (not temperature-scaled, no -inf for the tokens top-p cuts)."""
    r = Request.raw(prompts()[1], GenSettings(max_tokens=6, temperature=1.7, top_p=0.6, n=3,
                                              seed=3, top_logprobs=5))
    c = backend.generate([r])[0]
    again = backend.generate([Request.raw(r.prompt, r.settings.model_copy(
        update={"top_logprobs": None}))])[0]
    assert c.texts == again.texts and len(c.logprobs) == 3
    assert sum(len(x) for x in c.logprobs) == c.completion_tokens
    check_against_forward(backend, r, c, 5)
    zero = backend.generate([Request.raw(r.prompt, GenSettings(max_tokens=3, top_logprobs=0))])[0]
    assert zero.logprobs and all(e.top_logprobs == [] for e in zero.logprobs[0])


def test_stop_strings_keep_the_counted_tokens(backend):
    c = backend.generate([Request.raw(prompts()[0], GenSettings(max_tokens=10, stop=(".",),
                                                                top_logprobs=1))])[0]
    assert "." not in c.text and len(c.logprobs[0]) == c.completion_tokens
    assert "." in "".join(e.token for e in c.logprobs[0])


def former_hf_confidence(backend: HFBackend, prompts: list[str], n_tokens: int) -> list[float]:
    """HFBackend.confidence as it was before the generic one replaced it (kept as the
    reference): softmax of generate's scores, top-2 gap, mean up to the first eos."""
    import torch

    encoded = [backend.encode(Request.raw(p, GenSettings())) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out = [0.0] * len(prompts)
    eos = set(_eos_ids(backend.tokenizer, backend.lm))
    for b in range(0, len(order), backend.batch_size):
        idx = order[b:b + backend.batch_size]
        ids, mask = backend._left_pad([encoded[i] for i in idx])
        with torch.inference_mode():
            res = backend.lm.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                      max_new_tokens=n_tokens, output_scores=True,
                                      return_dict_in_generate=True,
                                      pad_token_id=backend.tokenizer.pad_token_id,
                                      eos_token_id=list(eos), temperature=None, top_p=None,
                                      top_k=None)
        probs = torch.stack([torch.softmax(s.float(), -1) for s in res.scores], 1)
        top2 = probs.topk(2, dim=-1).values
        gaps = (top2[..., 0] - top2[..., 1]).cpu()
        gen = res.sequences[:, ids.shape[1]:].cpu().tolist()
        for row, i in enumerate(idx):
            steps = next((t + 1 for t, x in enumerate(gen[row]) if x in eos), len(gen[row]))
            out[i] = float(gaps[row, :max(1, steps)].mean())
    return out


@pytest.mark.parametrize("n_tokens", [1, 3, 12])
def test_generic_confidence_equals_the_former_hf_one(backend, n_tokens):
    assert "confidence" not in HFBackend.__dict__  # BaseBackend's, from logprobs
    ps = prompts() + ["Q: 1 + 1 = 2. Done.", "", "Q:"]
    got = backend.confidence(ps, n_tokens)
    want = former_hf_confidence(backend, ps, n_tokens)
    assert got == pytest.approx(want, abs=1e-5)
    assert all(0.0 <= c <= 1.0 for c in got)


# ---------------------------------------------------------------------------- nesyloop serve


@pytest.fixture(scope="module")
def server(backend):
    with Server(backend, model_name="tiny") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=60)


def post(srv: Server, path: str, body: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=60)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def test_chat_logprobs_over_the_openai_client(client, backend):
    msgs = [{"role": "user", "content": "Q: 41 + 2 ="}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0,
                                       logprobs=True, top_logprobs=3)
    want = backend.generate([Request.chat(msgs, GenSettings(max_tokens=6, top_logprobs=3))])[0]
    content = r.choices[0].logprobs.content
    assert r.choices[0].message.content == want.text
    assert len(content) == len(want.logprobs[0]) == r.usage.completion_tokens
    for got, exp in zip(content, want.logprobs[0]):
        assert got.token == exp.token and got.logprob == pytest.approx(exp.logprob, abs=1e-6)
        assert got.bytes == list(exp.token.encode("utf-8"))
        assert len(got.top_logprobs) == 3
        assert [(x.token, x.logprob) for x in got.top_logprobs] == [
            (x.token, pytest.approx(x.logprob, abs=1e-6)) for x in exp.top_logprobs]
    bare = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6,
                                          temperature=0, logprobs=True)
    assert [t.top_logprobs for t in bare.choices[0].logprobs.content] == [[]] * len(content)
    assert [t.logprob for t in bare.choices[0].logprobs.content] == pytest.approx(
        [t.logprob for t in content], abs=1e-6)
    none = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6,
                                          temperature=0)
    assert none.choices[0].logprobs is None
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6,
                                                 temperature=0, logprobs=True, top_logprobs=3,
                                                 stream=True))
    streamed = [t for ch in chunks for c in ch.choices if c.logprobs for t in c.logprobs.content]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]


def test_legacy_completion_logprobs(client, backend):
    ps = ["Q: 5 + 3 =", "Q: 90 + 9 ="]
    r = client.completions.create(model="tiny", prompt=ps, max_tokens=5, temperature=0,
                                  logprobs=2, n=2)
    want = backend.generate([Request.raw(p, GenSettings(max_tokens=5, n=2, top_logprobs=2))
                             for p in ps])
    assert len(r.choices) == 4
    for ch in r.choices:
        exp = want[ch.index // 2].logprobs[ch.index % 2]
        lp = ch.logprobs
        assert lp.tokens == [e.token for e in exp]
        assert lp.token_logprobs == pytest.approx([e.logprob for e in exp], abs=1e-6)
        for top, e in zip(lp.top_logprobs, exp):
            assert 2 <= len(top) <= 3 and top[e.token] == pytest.approx(e.logprob, abs=1e-6)
            assert list(top)[:2] == [x.token for x in e.top_logprobs]
        assert lp.text_offset == [sum(len(t) for t in lp.tokens[:j]) for j in range(len(exp))]
    zero = client.completions.create(model="tiny", prompt=ps[0], max_tokens=3, temperature=0,
                                     logprobs=0)
    assert [list(t) for t in zero.choices[0].logprobs.top_logprobs] == [
        [t] for t in zero.choices[0].logprobs.tokens]


BAD = [  # (path, extra fields, the param the 400 names)
    ("/v1/chat/completions", {"logprobs": "yes"}, "logprobs"),
    ("/v1/chat/completions", {"logprobs": 2}, "logprobs"),
    ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("/v1/chat/completions", {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ("/v1/chat/completions", {"logprobs": True, "top_logprobs": "3"}, "top_logprobs"),
    ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 2.0}, "top_logprobs"),
    ("/v1/chat/completions", {"top_logprobs": 3}, "top_logprobs"),
    ("/v1/chat/completions", {"logprobs": False, "top_logprobs": 3}, "top_logprobs"),
    ("/v1/completions", {"logprobs": True}, "logprobs"),
    ("/v1/completions", {"logprobs": 21}, "logprobs"),
    ("/v1/completions", {"logprobs": -1}, "logprobs"),
    ("/v1/completions", {"logprobs": "2"}, "logprobs"),
]


@pytest.mark.parametrize("path,extra,param", BAD, ids=[f"{i}-{p}" for i, (_, _, p) in
                                                       enumerate(BAD)])
def test_bad_logprobs_fields_are_a_400(server, path, extra, param):
    body = {"model": "tiny", "max_tokens": 2, **extra,
            **({"messages": [{"role": "user", "content": "hi"}]} if "chat" in path
               else {"prompt": "hi"})}
    status, got = post(server, path, body)
    assert status == 400, got
    err = got["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["message"].startswith(param)
    status, ok = post(server, "/v1/completions", {"model": "tiny", "prompt": "hi",
                                                  "max_tokens": 2, "logprobs": 1})
    assert status == 200 and ok["choices"][0]["logprobs"]["tokens"]


def test_backends_without_logprobs_refuse_them():
    from nesyloop.tasks.bazaar import OracleBackend

    with Server(OracleBackend(), model_name="bazaar-oracle") as s:
        msgs = [{"role": "user", "content": "hi"}]
        status, got = post(s, "/v1/chat/completions", {"model": "bazaar-oracle",
                                                       "messages": msgs, "logprobs": True})
        assert status == 400 and got["error"]["code"] == "logprobs_not_supported"
        assert got["error"]["param"] == "logprobs"
        status, got = post(s, "/v1/chat/completions", {"model": "bazaar-oracle",
                                                       "messages": msgs, "logprobs": False})
        assert status == 200 and got["choices"][0]["logprobs"] is None


def test_a_student_with_a_kb_passes_its_logprobs_through(backend, tmp_path):
    from nesyloop.kb.store import KnowledgeBase
    from nesyloop.serve.backends import KBStudentBackend

    with KnowledgeBase(tmp_path / "kb.sqlite") as kb:
        kb.add("Recall currency values.", ["1 glim is 7 coins."])
    kb_student = KBStudentBackend(backend, tmp_path / "kb.sqlite")
    assert kb_student.supports_logprobs
    req = Request.raw("Question: How many coins is 1 glim?\nAnswer:",
                      GenSettings(max_tokens=4, temperature=0.0, top_logprobs=2))
    comp = kb_student.generate([req])[0]
    assert comp.logprobs is not None and len(comp.logprobs[0]) == comp.completion_tokens
    assert all(len(t.top_logprobs) == 2 for t in comp.logprobs[0])
