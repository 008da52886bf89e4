"""One interface for text generation: teachers and students, local or remote, oracle.

A backend takes a batch of :class:`Request` and returns one :class:`Completion` per request
(``n`` samples each). ``agenerate`` is the async form; by default it runs ``generate`` in a
worker thread so event loops stay free (HTTP backends override it with real async I/O).

Token log-probabilities follow the OpenAI API's ``logprobs``: ``GenSettings.top_logprobs = k``
asks for them (``logprobs=True, top_logprobs=k``), and ``Completion.logprobs`` holds, per
returned text, one :class:`TokenLogprob` per generated token (the shape of the chat API's
``choices[i].logprobs.content``). A backend that can give them sets ``supports_logprobs``;
the others ignore ``top_logprobs`` and return ``logprobs=None``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


class GenSettings(BaseModel):
    """Generation settings shared by every backend (part of every cache key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    # token log-probabilities (OpenAI's ``logprobs=True, top_logprobs=k``): None = none
    # returned; k = each generated token's log-probability and the k most likely alternatives.
    # Left out of the request cache key while None (runs/cache.py), so old keys stay valid.
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Request:
    """A chat request (``messages``) or a raw completion request (``prompt``)."""

    messages: tuple[tuple[str, str], ...] | None = None  # ((role, content), ...)
    prompt: str | None = None
    settings: GenSettings = field(default_factory=GenSettings)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a Request needs exactly one of messages or prompt")

    @classmethod
    def chat(cls, messages: list[Message], settings: GenSettings | None = None, **meta: Any) -> Request:
        msgs = tuple((m["role"], m["content"]) for m in messages)
        return cls(messages=msgs, settings=settings or GenSettings(), meta=meta)

    @classmethod
    def raw(cls, prompt: str, settings: GenSettings | None = None, **meta: Any) -> Request:
        return cls(prompt=prompt, settings=settings or GenSettings(), meta=meta)

    def message_dicts(self) -> list[Message]:
        return [{"role": r, "content": c} for r, c in (self.messages or ())]

    def text(self) -> str:
        """All the request's text joined (for backends that read plain text, like the oracle)."""
        if self.prompt is not None:
            return self.prompt
        return "\n\n".join(c for _, c in self.messages or ())


@dataclass(frozen=True)
class TopLogprob:
    """One of the most likely tokens at a position: OpenAI's ``{token, logprob}``."""

    token: str
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, its log-probability under the model, and the
    ``top_logprobs`` most likely tokens at its position, most likely first (OpenAI's
    ``choices[i].logprobs.content[j]``)."""

    token: str
    logprob: float
    top_logprobs: list[TopLogprob] = field(default_factory=list)


@dataclass
class Completion:
    """``n`` sampled texts for one request, with token counts. A request that failed for good
    (after a remote backend's retries) has empty texts and ``error`` set; it is never cached.
    ``logprobs``: when the request asked for them (``top_logprobs``) and the backend gives them,
    one list of :class:`TokenLogprob` per text, covering the tokens ``completion_tokens``
    counts (the end-of-text token included, and a stop string's tokens although the text is cut
    before it); else None."""

    texts: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None
    logprobs: list[list[TokenLogprob]] | None = None

    @property
    def text(self) -> str:
        return self.texts[0]


@runtime_checkable
class Backend(Protocol):
    """What every generation backend provides.

    ``confidence`` is the student's certainty per raw prompt, read from token log-probabilities
    in the shape of the OpenAI API's ``logprobs``: generate ``n_tokens`` greedy tokens with the
    top-2 log-probabilities of each (``logprobs``/``top_logprobs`` = 2), and average the gap
    between the two probabilities over the tokens up to the first end of text (1 = certain).
    NesyCD's confidence gate skips retrieval when it reaches ``gate_threshold``.
    :class:`BaseBackend` computes it so from ``generate`` for a backend that sets
    ``supports_logprobs``; one without log-probabilities answers ``None`` per prompt, which the
    gate reads as "not confident": retrieval always happens."""

    kind: str  # "oracle", "hf", "openai", ...
    model: str  # model name or path (part of the cache key)

    def generate(self, requests: list[Request]) -> list[Completion]: ...

    async def agenerate(self, requests: list[Request]) -> list[Completion]: ...

    def confidence(self, prompts: list[str], n_tokens: int = 4) -> list[float | None]: ...

    def close(self) -> None: ...


class BaseBackend:
    """Convenience base: subclasses implement ``generate``; ``agenerate`` runs it in a thread.

    ``supports_logprobs``: True when ``generate`` fills ``Completion.logprobs`` for requests
    that set ``top_logprobs``; ``confidence`` is then computed from them."""

    kind = "base"
    model = ""
    supports_logprobs = False

    def generate(self, requests: list[Request]) -> list[Completion]:  # pragma: no cover
        raise NotImplementedError

    async def agenerate(self, requests: list[Request]) -> list[Completion]:
        return await asyncio.to_thread(self.generate, list(requests))

    def confidence(self, prompts: list[str], n_tokens: int = 4) -> list[float | None]:
        """Per raw prompt, the mean gap between the top-2 token probabilities over its first
        ``n_tokens`` greedy tokens (see :class:`Backend`), from ``generate`` with
        ``top_logprobs=2``; ``None`` for every prompt without ``supports_logprobs``."""
        if not self.supports_logprobs or not prompts:
            return [None] * len(prompts)
        settings = GenSettings(max_tokens=n_tokens, temperature=0.0, top_logprobs=2)
        comps = self.generate([Request.raw(p, settings) for p in prompts])
        return [top2_gap(c.logprobs[0]) if c.error is None and c.logprobs else None
                for c in comps]

    def close(self) -> None:
        """Release resources (models, connections)."""


def top2_gap(tokens: list[TokenLogprob]) -> float | None:
    """The mean gap between the two most likely tokens' probabilities over ``tokens`` (each
    with ``top_logprobs`` >= 2; one alternative only: the gap to 0); None without tokens."""
    gaps = []
    for t in tokens:
        top = [math.exp(x.logprob) for x in t.top_logprobs[:2]]
        if not top:
            return None
        gaps.append(top[0] - (top[1] if len(top) > 1 else 0.0))
    return sum(gaps) / len(gaps) if gaps else None


def apply_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """Cut ``text`` at the first occurrence of any stop string (the stop string is dropped)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


async def run_all(coros: list[Coroutine]) -> list[Any]:
    """Await every coroutine concurrently; on the first exception cancel the rest and raise it
    (a plain exception, not an ExceptionGroup)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return []
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    if failed:
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise failed[0].exception()  # type: ignore[misc]
    return [t.result() for t in tasks]
