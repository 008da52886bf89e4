"""Which failures of an HTTP teacher request are retried, and how long to wait.

Retried: 429 (waiting what ``Retry-After`` / ``retry-after-ms`` asks, when given), 408, 409,
5xx, timeouts and dropped connections, with exponential backoff and jitter otherwise. Fatal for
the whole run (a setting is wrong, every request would fail the same way): 401, 403, 404. Other
4xx (a prompt too long, a content filter) fail that item only, without retrying.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

RETRY_STATUS = {408, 409, 429}
FATAL_STATUS = {401: "authentication failed", 403: "permission denied",
                404: "not found: check teacher.openai.base_url and teacher.model"}
MAX_WAIT_S = 300.0  # never sleep longer than this on one Retry-After


@dataclass(frozen=True)
class Verdict:
    retry: bool
    fatal: bool
    message: str  # short, the same for every item that fails the same way (no request data)
    retry_after: float | None = None


def retry_after_s(headers) -> float | None:
    """Seconds a ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms`` header asks."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    try:
        if ms is not None:
            return min(MAX_WAIT_S, max(0.0, float(ms) / 1000.0))
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(MAX_WAIT_S, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(MAX_WAIT_S, max(0.0, when.timestamp() - time.time()))


def classify(exc: BaseException) -> Verdict:
    """The verdict on one failed attempt (exceptions of the ``openai`` client)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return Verdict(True, False, "timed out")
    if isinstance(exc, openai.APIConnectionError):
        return Verdict(True, False, "connection failed or dropped")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        headers = getattr(exc.response, "headers", None)
        if status in FATAL_STATUS:
            return Verdict(False, True, f"HTTP {status} ({FATAL_STATUS[status]})")
        if status in RETRY_STATUS or status >= 500:
            return Verdict(True, False, f"HTTP {status}", retry_after_s(headers))
        return Verdict(False, False, f"HTTP {status}: {_short(exc)}")
    if isinstance(exc, openai.APIResponseValidationError):
        return Verdict(True, False, "malformed response")
    return Verdict(False, False, f"{type(exc).__name__}: {str(exc)[:120]}")


def _short(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    msg = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(msg or exc).split())[:160]


class Backoff:
    """Exponential backoff with jitter: attempt k waits about ``base * 2**k`` (at most ``cap``),
    between half of it and all of it; a ``Retry-After`` is honoured (plus up to 10% jitter)."""

    def __init__(self, base_s: float = 1.0, cap_s: float = 60.0, rng: random.Random | None = None):
        self.base = base_s
        self.cap = cap_s
        self.rng = rng or random.Random()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return retry_after * (1.0 + 0.1 * self.rng.random())
        d = min(self.cap, self.base * (2 ** attempt))
        return d / 2 + self.rng.random() * d / 2
