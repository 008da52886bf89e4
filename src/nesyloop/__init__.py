"""nesyloop: distil a teacher LLM's reasoning into a small student, with a human-readable
knowledge base (NesyCD) and feedback-driven data growth (FDD).

Heavy modules (torch, transformers) load lazily, so ``import nesyloop`` is cheap.
"""

from .errors import ConfigError, DataError, NesyloopError
from .gen.base import Backend, Completion, GenSettings, Request
from .tasks.base import Example

__version__ = "0.1.0"

__all__ = ["Backend", "Completion", "ConfigError", "DataError", "Example", "GenSettings",
           "NesyloopError", "Request", "load_config", "run"]


def __getattr__(name: str):
    if name in ("load_config", "run", "Config", "Pipeline"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)
