"""The Bazaar world: the embedded default task, and its exact oracle teacher.

Arithmetic word problems of a market town that need multi-step reasoning and sparse invented
knowledge (container sizes, prices, currency rates, tolls/fees/rewards) with a long tail.
"""

from .evolve import evolve_harder, evolve_similar
from .facts import FACT_KINDS, Fact, World, build_world
from .generator import SPLITS, BazaarSettings, generate_splits
from .grammar import Problem, Step, parse_question, render_question
from .oracle import NON_ANSWER, OracleBackend, detect_role
from .solver import Solution, is_valid, solve

DESCRIPTION = "Bazaar word problems."  # the retrieval query prefix (see kb/retrieve.py)

__all__ = [
    "DESCRIPTION",
    "FACT_KINDS",
    "NON_ANSWER",
    "SPLITS",
    "BazaarSettings",
    "Fact",
    "OracleBackend",
    "Problem",
    "Solution",
    "Step",
    "World",
    "build_world",
    "detect_role",
    "evolve_harder",
    "evolve_similar",
    "generate_splits",
    "is_valid",
    "parse_question",
    "render_question",
    "solve",
]
