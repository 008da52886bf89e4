"""NesyCD knowledge base: teacher-written learning summaries and supplementary knowledge."""

from .store import ACTIONS, SCHEMA_VERSION, Entry, KnowledgeBase

__all__ = ["ACTIONS", "SCHEMA_VERSION", "Entry", "KnowledgeBase"]
