"""A teacher behind any OpenAI-compatible endpoint: the OpenAI API and other hosted ones, vLLM,
llama.cpp's server, SGLang, Ollama, or ``nesyloop serve``.

Requests go out through the official ``openai`` client (its own retries off) with real async
I/O: at most ``concurrency`` in flight, ``rpm``/``tpm`` limits (limits.py), retries with
exponential backoff and jitter on 429/5xx/timeouts/dropped connections honouring
``Retry-After`` (retry.py). A request that still fails comes back as a :class:`Completion`
with empty texts and ``error`` set, never as an exception that would lose the batch; only
errors every request would hit (401, 403, 404) stop the run. When a server returns fewer than
``n`` choices (many ignore ``n``), the missing samples are asked for one by one, each with its
own seed (``seed + j``). Raw prompts go to ``/v1/completions`` or are sent as one user message
(``raw_prompts``). The API key is read from the environment variable named by
``api_key_env`` when the client is made; it is never stored, logged or cached. A subclass that
sets ``supports_logprobs`` (the student's server engine) asks for token log-probabilities when
a request sets ``top_logprobs`` and reads them back as :class:`TokenLogprob` lists, from a
chat's ``logprobs.content`` or a completion's legacy ``tokens``/``token_logprobs``/
``top_logprobs`` (or ``content``, which llama.cpp's server sends there too).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from ...errors import NesyloopError
from ..base import BaseBackend, Completion, Request, TokenLogprob, TopLogprob, run_all
from .limits import RateLimiter
from .retry import Backoff, classify

NO_KEY = "no-key"  # sent when the key variable is unset: local servers ignore it


class TeacherUnreachable(NesyloopError):
    """Every request would fail the same way (authentication, wrong URL or model)."""


@dataclass
class _Reply:
    texts: list[str]
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[list[TokenLogprob]] | None = None  # per text, when asked for


class _Failed(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class OpenAIBackend(BaseBackend):
    kind = "openai"
    role = "teacher"  # how errors name the model

    def __init__(self, model: str, base_url: str, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, rpm: float | None = None, tpm: float | None = None,
                 max_retries: int = 5, timeout_s: float = 120.0, backoff_s: float = 1.0,
                 raw_prompts: str = "chat"):
        if raw_prompts not in ("chat", "completions"):
            raise ValueError(f"raw_prompts must be 'chat' or 'completions', got {raw_prompts!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = max(1, int(concurrency))
        self.max_retries = max(0, int(max_retries))
        self.timeout_s = timeout_s
        self.raw_prompts = raw_prompts
        self.limiter = RateLimiter(rpm, tpm)
        self.backoff = Backoff(backoff_s)
        # the cache key holds the model name, not the URL: the same model at another address
        # (a restarted local server) reuses the cache
        self.cache_id = model if raw_prompts == "chat" else f"{model}?raw_prompts=completions"
        self.n_supported: bool | None = None  # learnt from the first reply to an n > 1 request
        self.attempts = 0  # HTTP calls made (retries included)
        self._per_loop: dict[int, tuple[Any, Any, asyncio.Semaphore]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, t: Any) -> OpenAIBackend:
        """From a ``[teacher]`` section (config.TeacherSection) and its ``[teacher.openai]``."""
        o = t.openai
        return cls(t.model, o.base_url, api_key_env=o.api_key_env, concurrency=o.concurrency,
                   rpm=o.rpm, tpm=o.tpm, max_retries=o.max_retries, timeout_s=o.timeout_s,
                   backoff_s=o.backoff_s, raw_prompts=o.raw_prompts)

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    # --- event loops ---------------------------------------------------------------------
    def _state(self):
        """The client and semaphore of the running loop (an async client belongs to one)."""
        loop = asyncio.get_running_loop()
        st = self._per_loop.get(id(loop))
        if st is None or st[0] is not loop:
            import openai

            client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=os.environ.get(self.api_key_env) or NO_KEY,
                max_retries=0, timeout=self.timeout_s)
            st = (loop, client, asyncio.Semaphore(self.concurrency))
            self._per_loop[id(loop)] = st
        return st[1], st[2]

    def run_sync(self, coro: Coroutine) -> Any:
        """Run ``coro`` on this backend's own event loop (a thread kept for its lifetime, so
        connections are reused across batches) and return its result."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                            name="nesyloop-openai")
            self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:  # Ctrl-C: stop the work in flight (what came back is cached)
            fut.cancel()
            raise

    def generate(self, requests: list[Request]) -> list[Completion]:
        return self.run_sync(self.agenerate(list(requests)))

    async def agenerate(self, requests: list[Request]) -> list[Completion]:
        return await run_all([self.one(r) for r in requests])

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        mine = [st[1] for st in self._per_loop.values() if st[0] is loop]

        async def _close():
            for client in mine:
                await client.close()

        try:
            asyncio.run_coroutine_threadsafe(_close(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            loop.close()
            self._per_loop = {k: v for k, v in self._per_loop.items() if v[0] is not loop}

    # --- one request ---------------------------------------------------------------------
    async def one(self, req: Request) -> Completion:
        """One request (``n`` samples); failures after the retries come back as ``error``."""
        s = req.settings
        try:
            if s.n == 1 or self.n_supported is not False:
                first = await self._call(req, s.n, s.seed)
                replies = [first]
                if s.n > 1 and self.n_supported is None:
                    self.n_supported = len(first.texts) >= s.n
            else:
                replies = []
            texts = [t for r in replies for t in r.texts][:s.n]
            if len(texts) < s.n:  # the server ignored n: ask for the rest one by one
                rest = await run_all([self._call(req, 1, None if s.seed is None else s.seed + j)
                                      for j in range(len(texts), s.n)])
                texts += [r.texts[0] if r.texts else "" for r in rest]
                replies += rest
        except _Failed as err:
            return Completion(texts=[""] * s.n, error=err.message)
        lps = [lp for r in replies for lp in r.logprobs or []][:s.n]
        return Completion(texts=texts, prompt_tokens=sum(r.prompt_tokens for r in replies),
                          completion_tokens=sum(r.completion_tokens for r in replies),
                          logprobs=lps if len(lps) == s.n else None)

    async def _call(self, req: Request, n: int, seed: int | None) -> _Reply:
        """One API call with retries; raises :class:`_Failed` once they are used up."""
        from ...costs.budget import prompt_tokens_estimate, worst_case

        client, sem = self._state()
        wp, _ = worst_case(req)
        reserve = wp + req.settings.max_tokens * n
        attempt = 0
        while True:
            async with sem:
                await self.limiter.acquire(reserve)
                self.attempts += 1
                try:
                    reply = await self._send(client, req, n, seed)
                except Exception as exc:  # noqa: BLE001 - every failure gets a verdict
                    self.limiter.settle(reserve, 0 if _not_sent(exc) else reserve)
                    verdict = classify(exc)
                else:
                    if reply.prompt_tokens == 0 and reply.completion_tokens == 0:
                        # no usage in the reply: estimate it
                        reply.prompt_tokens = prompt_tokens_estimate(req) * max(1, n)
                        reply.completion_tokens = sum(max(1, len(t) // 4) for t in reply.texts)
                    self.limiter.settle(reserve, reply.prompt_tokens + reply.completion_tokens)
                    return reply
            if verdict.fatal:
                raise TeacherUnreachable(
                    f"{self.role} {self.model!r} at {self.base_url}: {verdict.message}"
                    + (f"; is ${self.api_key_env} set to the API key?"
                       if verdict.message.startswith(("HTTP 401", "HTTP 403")) else ""))
            if not verdict.retry or attempt >= self.max_retries:
                tries = attempt + 1
                raise _Failed(f"{verdict.message} (after {tries} attempt{'s' * (tries > 1)})")
            await asyncio.sleep(self.backoff.delay(attempt, verdict.retry_after))
            attempt += 1

    async def _send(self, client, req: Request, n: int, seed: int | None) -> _Reply:
        s = req.settings
        kw: dict[str, Any] = {"model": self.model, "max_tokens": s.max_tokens,
                              "temperature": s.temperature, "top_p": s.top_p}
        if n > 1:
            kw["n"] = n
        if seed is not None:
            kw["seed"] = seed
        if s.stop:
            kw["stop"] = list(s.stop)
        k = s.top_logprobs if self.supports_logprobs else None
        if req.prompt is not None and self.raw_prompts == "completions":
            if k is not None:
                kw["logprobs"] = k
            resp = await client.completions.create(prompt=req.prompt, **kw)
            choices = sorted(resp.choices, key=lambda c: c.index)
            texts = [c.text or "" for c in choices]
        else:
            msgs = (req.message_dicts() if req.messages is not None
                    else [{"role": "user", "content": req.prompt}])
            if k is not None:
                kw.update(logprobs=True, top_logprobs=k)
            resp = await client.chat.completions.create(messages=msgs, **kw)
            choices = sorted(resp.choices, key=lambda c: c.index)
            texts = [c.message.content or "" for c in choices]
        u = resp.usage
        lps = None if k is None else [token_logprobs(c.logprobs, k) for c in choices]
        return _Reply(texts, getattr(u, "prompt_tokens", 0) or 0,
                      getattr(u, "completion_tokens", 0) or 0, lps)


def token_logprobs(obj: Any, k: int) -> list[TokenLogprob]:
    """A choice's ``logprobs`` as :class:`TokenLogprob` entries with the ``k`` most likely
    alternatives each, most likely first: the chat shape (``content: [{token, logprob,
    top_logprobs: [{token, logprob}]}]``) or the legacy completion one (``tokens``,
    ``token_logprobs``, ``top_logprobs: [{token: logprob}]``); empty when the server sent none."""
    d = obj.model_dump() if hasattr(obj, "model_dump") else (obj or {})
    if d.get("content") is not None:
        return [TokenLogprob(t["token"], float(t["logprob"]),
                             [TopLogprob(x["token"], float(x["logprob"]))
                              for x in (t.get("top_logprobs") or [])][:k])
                for t in d["content"]]
    tops = d.get("top_logprobs") or []
    out = []
    for j, (tok, lp) in enumerate(zip(d.get("tokens") or [], d.get("token_logprobs") or [],
                                      strict=False)):
        top = tops[j] if j < len(tops) and tops[j] else {}
        ranked = sorted(top.items(), key=lambda x: -x[1])[:k]  # stable: the server's order on ties
        out.append(TokenLogprob(tok, float(lp), [TopLogprob(t, float(v)) for t, v in ranked]))
    return out


def _not_sent(exc: BaseException) -> bool:
    """Whether a failed attempt certainly used no tokens (the server refused it)."""
    import openai

    return isinstance(exc, openai.APIStatusError)
