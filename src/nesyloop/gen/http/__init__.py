"""Generation over HTTP: the OpenAI-compatible teacher backend (openai_backend.py), its rate
limiter (limits.py) and its retry policy (retry.py)."""

from .openai_backend import OpenAIBackend

__all__ = ["OpenAIBackend"]
