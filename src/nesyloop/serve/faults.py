"""Fault injection for ``nesyloop serve``: latency, 429s, 500s and dropped connections.

The decision for a request is a pure function of the fault settings, the hash of the request
body and the attempt number (how many times the server has seen that body before), so a test
sees the same faults on every run, and a client that retries the same request eventually gets
through (every attempt draws afresh; ``max_faults`` caps the faults per distinct body).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, fields

from ..errors import ConfigError

# spelling in a ``--faults`` spec -> Faults field
SPEC_KEYS = {"latency": "latency_s", "latency_s": "latency_s", "429": "p429", "p429": "p429",
             "retry_after": "retry_after_s", "retry_after_s": "retry_after_s",
             "500": "p500", "p500": "p500", "drop": "pdrop", "pdrop": "pdrop", "seed": "seed",
             "max_faults": "max_faults"}
KINDS = ("429", "500", "drop")  # fault kinds that replace the answer (latency only delays it)


@dataclass(frozen=True)
class Faults:
    """What the server does wrong on purpose.

    ``latency_s`` is added to every POST; ``p429``/``p500``/``pdrop`` are the chances that an
    attempt is answered 429 (with ``Retry-After: retry_after_s``), 500, or has its connection
    closed without any response. ``max_faults``: after that many faulted attempts of one request
    body, later attempts of it are always served (None: no cap)."""

    latency_s: float = 0.0
    p429: float = 0.0
    retry_after_s: float = 1.0
    p500: float = 0.0
    pdrop: float = 0.0
    seed: int = 0
    max_faults: int | None = None

    def __post_init__(self) -> None:
        for name in ("latency_s", "retry_after_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"faults: {name} must be >= 0, got {getattr(self, name)}")
        for name in ("p429", "p500", "pdrop"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"faults: {name} must be in [0, 1], got {p}")
        total = self.p429 + self.p500 + self.pdrop
        if total > 1.0 + 1e-9:
            raise ConfigError(f"faults: p429 + p500 + pdrop must be <= 1, got {total:g}")
        if self.max_faults is not None and self.max_faults < 0:
            raise ConfigError(f"faults: max_faults must be >= 0, got {self.max_faults}")

    def decide(self, body_hash: str, attempt: int, faulted: int = 0) -> str | None:
        """The fault kind ("429", "500", "drop") for this attempt of a body, or None to serve it.
        ``faulted``: how many earlier attempts of the body were faulted (for ``max_faults``)."""
        if self.max_faults is not None and faulted >= self.max_faults:
            return None
        key = f"{self.seed}|{body_hash}|{attempt}".encode()
        u = random.Random(int(hashlib.sha256(key).hexdigest()[:16], 16)).random()
        for kind, p in (("429", self.p429), ("500", self.p500), ("drop", self.pdrop)):
            if u < p:
                return kind
            u -= p
        return None


def parse_faults(spec: str | None) -> Faults | None:
    """``"latency=0.05,429=0.3,retry_after=1,500=0.2,drop=0.1,seed=0"`` -> :class:`Faults`
    (None for an empty spec). A bad key or value raises a ConfigError naming it."""
    if spec is None or not spec.strip():
        return None
    types = {f.name: f.type for f in fields(Faults)}
    values: dict[str, float | int] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--faults: {part.strip()!r} is not key=value")
        if key not in SPEC_KEYS:
            raise ConfigError(f"--faults: unknown key {key!r} (known: {', '.join(SPEC_KEYS)})")
        name = SPEC_KEYS[key]
        as_int = "int" in str(types[name])
        try:
            values[name] = int(raw) if as_int else float(raw)
        except ValueError:
            kind = "an integer" if as_int else "a number"
            raise ConfigError(f"--faults: {key}={raw.strip()!r} is not {kind}") from None
    try:
        return Faults(**values)  # type: ignore[arg-type]
    except ConfigError as err:  # "faults: ..." -> "--faults: ..."
        raise ConfigError(f"--{err}") from None
