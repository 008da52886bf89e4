"""The joined loop's own settings: the ``[joined]`` table of a config (its rounds follow
``[fdd]``, its KB and retrieval ``[nesycd]``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class JoinedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the last round's student also answers the problems its round added, so its own errors
    # reach the KB it is evaluated with (one more feedback and error-analysis stage)
    final_feedback: bool = True
    # the first round whose student trains and answers with knowledge; the rounds before are
    # fdd's own (the same stages), their wrong answers still analysed into the KB
    from_round: int = Field(1, ge=1)
    # share of a round's problems whose training pair is replaced by a counterfactual one, so
    # the student learns to take a fact from its block, not from memory:
    counterfactual: float = Field(0.0, ge=0.0, le=1.0)
    # "rename": one entity of the block renamed everywhere (question, block, rationale) to
    # another of the same kind from the KB, whose true value the block then does not state (no
    # teacher request); "value": one number of the block changed, the problem solved anew by the
    # teacher taking the changed block as true
    counterfactual_by: Literal["rename", "value"] = "rename"
    # a counterfactual pair "replace"s its problem's CoT pair, or is "add"ed beside it
    counterfactual_pairs: Literal["replace", "add"] = "replace"
