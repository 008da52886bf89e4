"""The OpenAI wire format for ``nesyloop serve``: request bodies -> :class:`Request` batches,
completions -> response objects and server-sent-event chunks, and the error shape.

Only the fields nesyloop can honour are read (``model``, ``messages``/``prompt``, ``n``,
``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``,
``stream``, ``stream_options.include_usage``, and token log-probabilities: a chat's
``logprobs``/``top_logprobs``, a completion's ``logprobs: int``); other fields are ignored, as
most OpenAI-compatible servers do. A wrong-typed field is a 400 that names the field.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..gen.base import Completion, GenSettings, Request, TokenLogprob

MAX_N = 64
MAX_TOP_LOGPROBS = 20  # OpenAI's cap for top_logprobs (its legacy logprobs stops at 5)
MIN_LOGPROB = -9999.0  # what OpenAI and vLLM send for a probability of 0 (JSON has no -inf)
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 2**31 - 1
SEED_FOLD = 2**40  # seeds are int64; ones outside +-SEED_FOLD are reduced modulo it
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "code", "param"}}``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (status, message, type_,
                                                                         code, param)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code,
                          "param": self.param}}


def bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", code="invalid_value", param=param)


@dataclass
class Call:
    """One parsed API call: the backend requests (one per prompt) and how to answer."""

    kind: str  # "chat" or "completion"
    model: str
    requests: list[Request]
    stream: bool
    include_usage: bool
    timed_out: bool = False  # generation was cut at the time limit: finish_reason "length"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object: strict JSON (no NaN/Infinity), 400 otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(400, f"request body is not UTF-8 ({err})", code="invalid_json") from None
    try:
        body = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", code="invalid_json") from None
    except ValueError as err:  # JSONDecodeError, NaN/Infinity, integers over 4300 digits
        raise ApiError(400, f"request body is not valid JSON ({str(err)[:200]})",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    return body


def _int(body: dict, name: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad(name, f"expected an integer, got {json.dumps(v)[:40]}")
    if v < lo or (hi is not None and v > hi):
        raise bad(name, f"must be in [{lo}, {hi if hi is not None else 'inf'}], got {v}")
    return v


def _num(body: dict, name: str, default: float, lo: float, hi: float,
         lo_open: bool = False) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise bad(name, f"expected a number, got {json.dumps(v)[:40]}")
    if not math.isfinite(v):
        raise bad(name, f"expected a finite number, got {v}")
    if v > hi or v < lo or (lo_open and v == lo):
        raise bad(name, f"must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}")
    return float(v)


def logprobs_of(kind: str, body: dict[str, Any]) -> int | None:
    """How many top log-probabilities a body asks for per token (None: no log-probabilities).
    A chat: ``logprobs: true`` and ``top_logprobs`` (0-20, default 0; only with ``logprobs``
    true, as OpenAI). A completion (the legacy API): ``logprobs``, an integer 0-20."""
    if kind != "chat":
        return _int(body, "logprobs", None, 0, MAX_TOP_LOGPROBS)
    on = body.get("logprobs")
    if on is not None and not isinstance(on, bool):
        raise bad("logprobs", f"expected a boolean, got {json.dumps(on)[:40]}")
    k = _int(body, "top_logprobs", None, 0, MAX_TOP_LOGPROBS)
    if k is not None and not on:
        raise bad("top_logprobs", "needs logprobs: true")
    return (k or 0) if on else None


def settings_of(body: dict[str, Any], top_logprobs: int | None = None) -> GenSettings:
    """The generation settings of a request body (OpenAI defaults: temperature 1, no seed);
    ``top_logprobs`` from :func:`logprobs_of`."""
    max_tokens = _int(body, "max_completion_tokens", None, 1, MAX_TOKENS_LIMIT)
    max_tokens = _int(body, "max_tokens", max_tokens or DEFAULT_MAX_TOKENS, 1, MAX_TOKENS_LIMIT)
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise bad("stop", "expected a string or a list of strings")
    return GenSettings(max_tokens=max_tokens, n=_int(body, "n", 1, 1, MAX_N),
                       temperature=_num(body, "temperature", 1.0, 0.0, 2.0),
                       top_p=_num(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
                       stop=stops, seed=_seed(body), top_logprobs=top_logprobs)


def _seed(body: dict[str, Any]) -> int | None:
    """``seed``: an int64 (400 otherwise); large ones are folded into [0, SEED_FOLD), where
    every backend can seed its generator with them."""
    seed = _int(body, "seed", None, -(2**63), 2**63 - 1)
    if seed is not None and not -SEED_FOLD < seed < SEED_FOLD:
        seed %= SEED_FOLD
    return seed


def _content(i: int, content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text parts are understood
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):
                raise bad(f"messages[{i}].content", "only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"messages[{i}].content", "expected a string or a list of text parts")


def parse_call(kind: str, body: dict[str, Any]) -> Call:
    """Validate a chat or completion body into backend requests (400 naming the bad field)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model", "required string field is missing or empty")
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise bad("stream", "expected a boolean")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise bad("stream_options", "expected an object")
    settings = settings_of(body, logprobs_of(kind, body))
    if kind == "chat":
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise bad("messages", "expected a non-empty list of messages")
        parsed = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                raise bad(f"messages[{i}]", "expected an object with role and content")
            role = m.get("role")
            if role not in ROLES:
                raise bad(f"messages[{i}].role", f"expected one of {sorted(ROLES)}, got {role!r}")
            parsed.append({"role": ROLES[role], "content": _content(i, m.get("content"))})
        requests = [Request.chat(parsed, settings)]
    else:
        if body.get("echo"):
            raise bad("echo", "not supported")
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = prompt
        else:
            raise bad("prompt", "expected a string or a non-empty list of strings")
        requests = [Request.raw(p, settings) for p in prompts]
    return Call(kind, model, requests, bool(stream), bool(opts.get("include_usage")))


def finish_reason(text: str, max_tokens: int, count_tokens) -> str:
    """"length" when the text used up ``max_tokens``, else "stop" (eos or a stop string)."""
    return "length" if count_tokens(text) >= max_tokens else "stop"


def usage(comps: list[Completion]) -> dict[str, int]:
    p = sum(c.prompt_tokens for c in comps)
    c = sum(c.completion_tokens for c in comps)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def choices(call: Call, comps: list[Completion], count_tokens,
            ) -> list[tuple[int, str, str, dict[str, Any] | None]]:
    """(index, text, finish_reason, logprobs object) for every sample of every prompt, in
    OpenAI's order."""
    out = []
    for p, comp in enumerate(comps):
        s = call.requests[p].settings
        for j, text in enumerate(comp.texts):
            reason = ("length" if call.timed_out else
                      finish_reason(text, s.max_tokens, count_tokens))
            lps = comp.logprobs[j] if comp.logprobs and s.top_logprobs is not None else None
            out.append((p * s.n + j, text, reason, logprobs_json(call.kind, lps)))
    return out


def _lp(x: float) -> float:
    return x if x > MIN_LOGPROB else MIN_LOGPROB  # -inf (and NaN) as OpenAI sends them


def logprobs_json(kind: str, tokens: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """A choice's ``logprobs`` in OpenAI's shape. A chat: ``{"content": [{token, logprob,
    bytes, top_logprobs: [{token, logprob, bytes}]}], "refusal": null}`` (``bytes``: the UTF-8
    of the token's text). A completion (legacy): ``{tokens, token_logprobs, top_logprobs:
    [{token: logprob}] (the top ones and the sampled one), text_offset}`` (offsets into the
    text)."""
    if tokens is None:
        return None
    if kind == "chat":
        def one(tok: str, lp: float) -> dict[str, Any]:
            return {"token": tok, "logprob": _lp(lp), "bytes": list(tok.encode("utf-8"))}

        return {"content": [{**one(t.token, t.logprob), "top_logprobs": [
            one(x.token, x.logprob) for x in t.top_logprobs]} for t in tokens], "refusal": None}
    tops = []
    for t in tokens:
        top = {x.token: _lp(x.logprob) for x in t.top_logprobs}
        top.setdefault(t.token, _lp(t.logprob))
        tops.append(top)
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t.token)
    return {"tokens": [t.token for t in tokens], "token_logprobs": [_lp(t.logprob) for t in tokens],
            "top_logprobs": tops, "text_offset": offsets}


def response(call: Call, comps: list[Completion], model: str, count_tokens,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole (non-streamed) response object."""
    chat = call.kind == "chat"
    out: dict[str, Any] = {
        "id": new_id(call.kind), "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()), "model": model, "system_fingerprint": None,
        "choices": [
            {"index": i, "finish_reason": r, "logprobs": lp,
             **({"message": {"role": "assistant", "content": t}} if chat else {"text": t})}
            for i, t, r, lp in choices(call, comps, count_tokens)],
        "usage": usage(comps)}
    if extra:
        out["nesyloop"] = extra
    return out


def pieces(text: str, k: int = 4) -> list[str]:
    """``text`` in up to ``k`` chunks cut at spaces (the cheap stream: generate, then send)."""
    words = text.split(" ")
    step = max(1, -(-len(words) // k))
    parts = [" ".join(words[i:i + step]) for i in range(0, len(words), step)]
    return [p + " " if i < len(parts) - 1 else p for i, p in enumerate(parts)] or [""]


def stream_events(call: Call, comps: list[Completion], model: str, count_tokens,
                  extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chunk objects of a streamed response (each sent as ``data: {...}``)."""
    chat = call.kind == "chat"
    head = {"id": new_id(call.kind), "object": "chat.completion.chunk" if chat else
            "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None}

    def chunk(i: int, text: str | None, reason: str | None, first: bool = False,
              lp: dict[str, Any] | None = None) -> dict:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": i, "delta": delta, "finish_reason": reason, "logprobs": lp}
        else:
            choice = {"index": i, "text": text or "", "finish_reason": reason, "logprobs": lp}
        return {**head, "choices": [choice]}

    events = []
    for i, text, reason, lp in choices(call, comps, count_tokens):
        if chat:
            events.append(chunk(i, None, None, first=True))
        # the text is sent in pieces cut at spaces, not tokens: all of its log-probabilities
        # come with the first piece
        events.extend(chunk(i, p, None, lp=lp if k == 0 else None)
                      for k, p in enumerate(pieces(text)))
        events.append(chunk(i, None if chat else "", reason))
    if call.include_usage or extra:
        tail: dict[str, Any] = {**head, "choices": []}
        if call.include_usage:
            tail["usage"] = usage(comps)
        if extra:
            tail["nesyloop"] = extra
        events.append(tail)
    return events
