"""Build a generation backend from a config section. New backends (OpenAI-compatible HTTP, ...)
plug in here."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Backend


def make_teacher(teacher: Any, world_seed: int = 0, seed: int = 0) -> Backend:
    if teacher.backend == "oracle":
        from ..tasks.bazaar import OracleBackend

        backend = OracleBackend(world_seed=world_seed, error_rate=teacher.error_rate, seed=seed)
        # the cache key must change when the oracle's behaviour does
        backend.cache_id = (f"bazaar-oracle?world_seed={world_seed}"
                            f"&error_rate={teacher.error_rate}&seed={seed}&v={backend.version}")
        return backend
    if teacher.backend == "hf":
        from .hf import HFBackend

        return HFBackend(teacher.model, batch_size=teacher.batch_size)
    raise ConfigError(f"teacher.backend: unknown backend {teacher.backend!r}")
