"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct from the shipped GGUF, saved once as a plain HF checkpoint (the
    GGUF dequantisation takes ~20 s; later loads of the checkpoint take ~1 s)."""
    from nesyloop.students.load import load_student, save_checkpoint

    model, tok = load_student("smollm2")
    return save_checkpoint(model, tok, tmp_path_factory.mktemp("smollm2") / "model")
