"""Token estimates, prices, usage counters and the budget cap shared by a run.

Money is what the request cache stored during this run: every successful teacher reply adds its
prompt and completion tokens times the prices; cached replies cost nothing, failed requests are
not counted (they are not cached either). Before a request is sent, its worst case (estimated
prompt tokens + ``max_tokens`` per sample) is reserved against the cap; when the next request's
worst case could exceed the cap, no more requests are issued, the ones in flight finish and are
cached, and :class:`BudgetExceeded` is raised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from ..errors import NesyloopError
from ..gen.base import Request

# The estimate shown by ``nesyloop estimate``: about 4 characters per token (English BPE).
CHARS_PER_TOKEN = 4.0
# The reservation against the budget assumes denser text (digits, names): 3 characters a token.
WORST_CHARS_PER_TOKEN = 3.0
MESSAGE_OVERHEAD = 4  # role markers and separators per chat message


def _text_tokens(req: Request, chars_per_token: float) -> int:
    parts = [req.prompt] if req.prompt is not None else [c for _, c in req.messages or ()]
    return sum(math.ceil(len(p) / chars_per_token) + MESSAGE_OVERHEAD for p in parts) + 3


def prompt_tokens_estimate(req: Request) -> int:
    """About how many prompt tokens ``req`` costs (no tokenizer needed)."""
    return _text_tokens(req, CHARS_PER_TOKEN)


def worst_case(req: Request) -> tuple[int, int]:
    """``(prompt, completion)`` tokens ``req`` could cost at most (prompt from a dense estimate)."""
    return _text_tokens(req, WORST_CHARS_PER_TOKEN), req.settings.max_tokens * req.settings.n


class Prices(BaseModel):
    """USD per million tokens (0 = free: local servers, the oracle)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_per_mtok: float = Field(0.0, ge=0.0)
    completion_per_mtok: float = Field(0.0, ge=0.0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_mtok
                + completion_tokens * self.completion_per_mtok) / 1e6

    @property
    def free(self) -> bool:
        return self.prompt_per_mtok == 0 and self.completion_per_mtok == 0


COUNTERS = ("requests_issued", "requests_cached", "requests_failed", "prompt_tokens",
            "completion_tokens")


@dataclass
class Usage:
    """Counters of one use of the teacher (a stage) or of a whole run."""

    requests_issued: int = 0  # replies bought (misses that came back)
    requests_cached: int = 0  # hits (free)
    requests_failed: int = 0  # failed for good after retries (not cached: a re-run retries them)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    first_error: str | None = None

    def add(self, other: Usage) -> None:
        for k in COUNTERS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.cost_usd += other.cost_usd
        self.first_error = self.first_error or other.first_error

    @classmethod
    def from_info(cls, info: dict) -> Usage:
        """The counters a stage recorded in its manifest with :meth:`to_info` (others ignored)."""
        return cls(**{k: info[k] for k in (*COUNTERS, "cost_usd", "first_error") if k in info})

    def to_info(self) -> dict:
        out = {"requests_issued": self.requests_issued, "requests_cached": self.requests_cached,
               "requests_failed": self.requests_failed, "prompt_tokens": self.prompt_tokens,
               "completion_tokens": self.completion_tokens, "cost_usd": round(self.cost_usd, 6)}
        if self.first_error:
            out["first_error"] = self.first_error
        return out

    def line(self) -> str:
        tok = self.prompt_tokens + self.completion_tokens
        s = (f"{self.requests_issued} requests sent, {self.requests_cached} from the cache, "
             f"{tok:,} tokens, ${self.cost_usd:.4f}")
        return s + (f", {self.requests_failed} failed" if self.requests_failed else "")


class BudgetExceeded(NesyloopError):
    """The run's teacher budget (``teacher.budget_usd``) would be exceeded by the next request."""


@dataclass
class Budget:
    """The cap shared by every teacher stage of a run (``cap`` None: no cap, only accounting)."""

    cap: float | None = None
    spent: float = 0.0  # replies stored during this run
    reserved: float = 0.0  # worst cases of the requests in flight
    refused: float | None = field(default=None)  # the worst case that did not fit, once stopped

    def reserve(self, amount: float) -> bool:
        """Reserve ``amount`` for a request about to be sent; False once it could exceed the cap
        (and from then on: a run that hit its cap issues nothing more)."""
        if self.refused is not None:
            return False
        if self.cap is not None and self.spent + self.reserved + amount > self.cap + 1e-12:
            self.refused = amount
            return False
        self.reserved += amount
        return True

    def release(self, amount: float) -> None:
        self.reserved = max(0.0, self.reserved - amount)

    def spend(self, cost: float) -> None:
        self.spent += cost

    @property
    def stopped(self) -> bool:
        return self.refused is not None

    def exceeded(self) -> BudgetExceeded:
        return BudgetExceeded(
            f"teacher budget reached: spent ${self.spent:.4f} of the ${self.cap:.4f} cap "
            f"(teacher.budget_usd); the next request could cost up to ${self.refused or 0:.4f}. "
            f"Every reply bought is cached: raise teacher.budget_usd (see `nesyloop estimate`) "
            f"and re-run the same command to go on.")
