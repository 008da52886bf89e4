"""FDD's settings: the ``[fdd]`` table of a config (docs/methods.md has the choices made where
the paper is silent)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FddSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(2, ge=0)  # R evolution rounds after round 0 (the initial student)
    thoughts: Literal["cot", "pot", "both"] = "cot"  # training targets
    inference: Literal["cot", "pot", "pot-then-cot"] = "cot"  # how the student answers
    harder_variants: int = Field(1, ge=1)  # new problems per easy seed problem and round
    similar_variants: int = Field(1, ge=1)  # new problems per hard seed problem and round
    seeds: Literal["new", "pool"] = "new"  # evolve last round's new problems, or the whole pool
    max_seeds: int | None = Field(None, ge=1)  # cap on seed problems per round (sampled)
    feedback_samples: int = Field(1, ge=1)  # k student samples per problem
    feedback_min_correct: int = Field(1, ge=1)  # easy: at least m of the k samples right
    feedback_temperature: float = Field(0.7, gt=0.0)  # sampling temperature when k > 1
    agreement: Literal["cot-pot", "majority"] = "cot-pot"  # keep a synthesised problem when...
    majority_samples: int = Field(3, ge=2)  # k teacher CoT samples for "majority"
    near_duplicate: float = Field(0.8, gt=0.0, le=1.0)  # Jaccard of word 3-grams
    leak_ngram: int = Field(8, ge=1)  # n of the n-gram overlap check with evaluation splits
    leak_threshold: float = Field(0.8, gt=0.0, le=1.0)  # share of n-grams in one eval item
    retrain: Literal["base", "continue"] = "base"  # each round from the base model or S_{r-1}
    replay: float = Field(1.0, ge=0.0)  # continue: old-pool pairs per new pair
    min_dev_gain: float | None = None  # stop when dev accuracy gains fewer points than this
    # the [eval] splits a round before the last is scored on (None: all); the last round is
    # scored on every split (the rounds' table and plot show the others on these only)
    round_splits: list[str] | None = None

    def n_variants(self, kind: str) -> int:
        """New problems per seed: ``kind`` "harder" (easy seeds) or "similar" (hard seeds)."""
        return self.harder_variants if kind == "harder" else self.similar_variants

    def evolve_settings(self) -> dict[str, Any]:
        """What the evolve stage's output depends on (its fingerprint settings)."""
        return self.model_dump(mode="json", exclude={"rounds", "retrain", "replay",
                                                     "min_dev_gain", "inference",
                                                     "round_splits"})

    @model_validator(mode="after")
    def _check(self) -> FddSettings:
        if self.feedback_min_correct > self.feedback_samples:
            raise ValueError(f"feedback_min_correct ({self.feedback_min_correct}) must be <= "
                             f"feedback_samples ({self.feedback_samples})")
        if self.thoughts == "cot" and self.inference != "cot":
            raise ValueError(f"inference {self.inference!r} needs thoughts 'pot' or 'both'")
        if self.thoughts == "pot" and self.inference != "pot":
            raise ValueError("a PoT-only student answers with inference = 'pot'")
        return self
