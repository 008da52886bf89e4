"""Answer extraction and scoring: one module for teacher filtering, error mining and evaluation."""

from nesyloop.scoring.extract import RULES, Extraction, extract, normalize_number, rule_chain
from nesyloop.scoring.score import answers_match, score_output, summarize

__all__ = [
    "Extraction",
    "RULES",
    "answers_match",
    "extract",
    "normalize_number",
    "rule_chain",
    "score_output",
    "summarize",
]
