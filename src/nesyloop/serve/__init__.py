"""``nesyloop serve``: an OpenAI-compatible HTTP server for any nesyloop backend (the Bazaar
oracle teacher, a student, a student with its knowledge base), with deterministic fault
injection (latency, 429, 500, dropped connections) for testing clients. See docs/serving.md."""

from .backends import KBStudentBackend, question_of, serve_backend
from .faults import Faults, parse_faults
from .server import Server, body_hash
from .wire import ApiError

__all__ = ["ApiError", "Faults", "KBStudentBackend", "Server", "body_hash", "parse_faults",
           "question_of", "serve_backend"]
