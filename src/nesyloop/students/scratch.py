"""A tiny Llama trained from scratch on the task's own text (no download).

``train_tokenizer`` builds a byte-level BPE whose digits are one token each (so the student sees
numbers digit by digit), or, with ``numbers = "whole"``, whose frequent numbers are single tokens
with their leading space, like words; ``create_scratch_student`` pairs it with a small,
randomly initialised :class:`LlamaConfig` model and saves both with ``save_pretrained`` so the
folder loads like any other checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .load import save_checkpoint

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


class ScratchSettings(BaseModel):
    """Size of a from-scratch student (defaults: about 4.7 M parameters)."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(256, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    intermediate: int | None = Field(None, ge=1)  # None: 4 * hidden
    max_len: int = Field(384, ge=8)
    vocab_size: int = Field(2000, ge=300)
    numbers: Literal["digits", "whole"] = "digits"  # how the tokenizer cuts numbers
    seed: int = 0


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000, max_len: int = 384,
                    numbers: str = "digits"):
    """Train a byte-level BPE on ``texts``; exact decode. ``numbers="digits"``: every digit is a
    token of its own; ``"whole"``: a number and its leading space are one piece for BPE, so the
    frequent ones become single tokens (the rest split into learnt digit groups)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if numbers == "digits" else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((t for t in texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=max_len,
        clean_up_tokenization_spaces=False,
    )


def scratch_config(settings: ScratchSettings, tokenizer):
    from transformers import LlamaConfig

    if settings.hidden % settings.heads:
        from ..errors import ConfigError

        raise ConfigError(f"scratch student: hidden={settings.hidden} is not divisible by heads={settings.heads}")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden,
        intermediate_size=settings.intermediate or 4 * settings.hidden,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.heads,
        max_position_embeddings=settings.max_len,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def create_scratch_student(
    texts: Iterable[str], out_dir: str | os.PathLike, settings: ScratchSettings | None = None
) -> Path:
    """Train a tokenizer on ``texts``, build a random (seeded) small Llama, save both to ``out_dir``."""
    import torch
    from transformers import LlamaForCausalLM

    settings = settings or ScratchSettings()
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(list(texts), settings.vocab_size, settings.max_len,
                                settings.numbers)
    config = scratch_config(settings, tokenizer)
    cpu_state = torch.random.get_rng_state()
    torch.manual_seed(settings.seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(cpu_state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return save_checkpoint(model, tokenizer, out_dir)


def count_parameters(model) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
