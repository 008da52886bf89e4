"""NesyCD's settings: the ``[nesycd]`` table of a config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ...kb.retrieve import RetrievalSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MixWeights(_Strict):
    """S_E's multi-task mixture: copies per eligible example per epoch (fractions are sampled)."""

    kb_cot: float = Field(1.0, ge=0)  # knowledge-augmented CoT (examples S_P got wrong)
    cot: float = Field(1.0, ge=0)  # plain CoT (every kept rationale)
    answer: float = Field(0.25, ge=0)  # answer prediction (every training question)


class NesycdSettings(_Strict):
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    # the knowledge a KB-augmented training example carries: what retrieval returns for its
    # question (as at inference) or the entry written from its own error ("own")
    train_knowledge: Literal["retrieved", "own"] = "retrieved"
    # which training examples get knowledge-augmented copies: those S_P got wrong (NesyCD), or
    # all (the others retrieve their block, relevant or not: the student learns to read one)
    augment: Literal["wrong", "all"] = "wrong"
    mix: MixWeights = Field(default_factory=MixWeights)
    # share of the knowledge-augmented pairs with one entity renamed everywhere (question,
    # block, rationale) to another of the same kind from the KB, whose true value the block then
    # does not state: the student learns to read the block (kb/counterfactual.py)
    rename: float = Field(0.0, ge=0.0, le=1.0)
    init: Literal["base", "sp"] = "base"  # S_E starts from the base student or from S_P
    max_response_words: int = Field(256, ge=8)  # student response shown to the teacher
    demonstrations: int = Field(2, ge=0, le=2)  # worked error-analysis examples in the prompt
    gate: bool = False  # skip retrieval when the student is confident
    gate_threshold: float = Field(0.5, ge=0.0, le=1.0)  # mean top-2 probability gap
    gate_tokens: int = Field(4, ge=1)  # first answer tokens the gap is averaged over
    task_description: str | None = None  # retrieval query prefix; None = the task's own
