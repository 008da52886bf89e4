"""Supervised fine-tuning of a student on (prompt, completion) pairs, loss on the completion only.

The input is ``build_input(prompt) + completion + eos``, tokenised as prompt ids then completion
ids (the same split generation sees). Prompt and padding tokens get label -100. Training runs on
the transformers :class:`Trainer` (so ``accelerate launch`` spreads it over several GPUs; its
loss applies the output layer to the completion tokens only where that is exact: loss.py),
with length-grouped batches padded to the longest, optional LoRA (merged on export), bf16
autocast where it pays off, resume from the latest checkpoint in ``work_dir``, and an atomic
export: the final model is written to a temp sibling of ``out_dir`` and then renamed.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import DataError
from .fmt import build_input, resolve_style
from .load import load_student, quiet, save_checkpoint
from .loss import IGNORE


class TrainSettings(BaseModel):
    """``[train]``: nesyloop's own keys, plus any field of transformers' ``TrainingArguments``
    by its own name, passed through as is (``lr_scheduler_type = "cosine"``, ``optim``,
    ``max_grad_norm``, ...). The fields declared here are the ones whose defaults are
    nesyloop's; :data:`OWNED` lists those nesyloop sets itself, which a config may not."""

    model_config = ConfigDict(extra="allow")

    # nesyloop's own keys
    max_len: int = Field(384, ge=8)  # longest training sequence (prompt + completion)
    prompt_style: Literal["auto", "chat", "plain"] = "auto"
    # attention kernel while training: "auto" is eager on a CPU (for short sequences it trains
    # faster than sdpa there: bench/bench_student.py) and the model's default on a GPU
    attention: Literal["auto", "eager", "sdpa"] = "auto"
    bf16: Literal["auto"] | bool = "auto"  # "auto": where it pays off (use_bf16)
    # "completion-only": the output layer on the labelled positions alone where that is the
    # model's own loss (loss.py; SmolLM2 with LoRA 1.43x faster); "model": the model's forward
    loss: Literal["completion-only", "model"] = "completion-only"
    # cut each batch into groups of rows of similar length, each padded to its own longest (the
    # same loss, less padding to compute: loss.py; 1.28x on a 2-core CPU); "auto": on a CPU,
    # where padding costs time. Off by default: it rounds otherwise, and the main job's figures
    # are those of whole padded batches (docs/methods.md, Training)
    split_batches: Literal["auto"] | bool = False
    lora: bool = False  # LoRA through PEFT, merged on export
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_targets: str | list[str] = "all-linear"
    # a launcher the training stages run under, e.g. "accelerate launch --multi_gpu
    # --num_processes 4" (students/launch.py); empty: train in the run's own process
    launch: str = ""
    # TrainingArguments fields with nesyloop's defaults
    num_train_epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    per_device_train_batch_size: int = Field(32, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_steps: float = Field(0.05, ge=0)  # transformers >= 5: below 1, a share of the steps
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    max_steps: int = -1  # > 0: stop after this many optimiser steps (overrides the epochs)
    save_steps: int = Field(200, ge=1)  # checkpoints (for resume)
    logging_steps: int = Field(20, ge=1)  # the loss curves of report.md
    # batches of similar length (less padding), or drawn at random (transformers' default;
    # the main job's: length-grouped batches held its scratch student back, docs/methods.md)
    train_sampling_strategy: Literal["group_by_length", "random", "sequential",
                                     "batch_rebalance"] = "group_by_length"

    @model_validator(mode="after")
    def _check_extra(self) -> TrainSettings:
        """A key no TrainingArguments field has, a renamed one, or one nesyloop sets itself is
        refused here too (config files get the same one-line error when they load)."""
        from ..config_checks import train_key_error

        for key in self.model_extra or {}:
            if (bad := train_key_error("train", key)) is not None:
                raise ValueError(bad)
        return self

    def trainer_args(self) -> dict[str, Any]:
        """The TrainingArguments fields set here (nesyloop's defaults and the config's own)."""
        return self.model_dump(exclude=OWN_KEYS)


# [train] keys that are nesyloop's, not TrainingArguments'
OWN_KEYS = frozenset({"max_len", "prompt_style", "attention", "bf16", "loss", "split_batches",
                      "lora", "lora_r", "lora_alpha", "lora_targets", "launch"})

# TrainingArguments fields nesyloop sets itself (training_args), and why a config may not
OWNED: dict[str, str] = {
    "output_dir": "checkpoints go to the stage's .work/ folder, where a re-run resumes from them",
    "save_strategy": "a stage that can resume is checkpointed every save_steps",
    "resume_from_checkpoint": "nesyloop resumes from the stage's last complete checkpoint",
    "report_to": "training is reported in train_stats.json and report.md",
    "remove_unused_columns": "the collator needs every column of the encoded pairs",
    "use_cpu": "nesyloop trains on the accelerator when there is one, else on the CPU",
    "disable_tqdm": "progress bars follow run.progress",
    "include_num_input_tokens_seen": "train_stats.json counts the tokens trained on with it",
    "eval_strategy": "training has no evaluation set ([eval] scores the trained student)",
}

# TrainingArguments values nesyloop uses unless a config sets them (transformers' differ)
ARG_DEFAULTS: dict[str, Any] = {
    "save_total_limit": 2,
    "ddp_find_unused_parameters": False,
    "log_level": "error",
}


@functools.cache
def training_arg_names() -> frozenset[str]:
    """The fields of transformers' TrainingArguments (imports transformers and torch, about
    4 s, so configs pay for it only when they set such a field nesyloop does not declare)."""
    import dataclasses

    from transformers import TrainingArguments

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments) if f.init)


def training_args(settings: TrainSettings, work: str | os.PathLike, save: bool = True,
                  progress: bool = True):
    """The Trainer's TrainingArguments: nesyloop's defaults, then the config's ``[train]``
    fields, then what nesyloop owns (``OWNED``). ``save``: checkpoint into ``work``."""
    from transformers import TrainingArguments

    return TrainingArguments(**{
        **ARG_DEFAULTS,
        **settings.trainer_args(),
        "bf16": use_bf16(settings.bf16),
        "output_dir": str(work),
        "save_strategy": "steps" if save else "no",
        "report_to": "none",
        "remove_unused_columns": False,
        "use_cpu": not _accelerator(),  # CPU runs (bf16 autocast, gloo DDP) must ask for it
        "disable_tqdm": not progress,
        "include_num_input_tokens_seen": "non_padding",
    })


# --------------------------------------------------------------------------- tokenising


def prompt_ids(tokenizer, input_text: str, style: str) -> list[int]:
    """Token ids of an already-built input text (no extra special tokens after a chat template)."""
    return tokenizer(input_text, add_special_tokens=style != "chat")["input_ids"]


def completion_labels(
    tokenizer, prompt_text: str, completion_text: str, max_len: int = 384, style: str = "plain"
) -> dict[str, list[int]]:
    """``input_ids`` = prompt ids + completion ids + eos; ``labels`` = -100 on the prompt, ids after.

    ``prompt_text`` is the built input (see :func:`build_input`). Too long: the completion's end
    is cut first; a prompt that leaves no room keeps its last tokens (so at least a quarter of
    ``max_len``, or the whole completion, stays trained).
    """
    p = prompt_ids(tokenizer, prompt_text, style)
    c = tokenizer(completion_text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(p) + len(c) > max_len:
        keep_c = max(min(len(c), max_len // 4), max_len - len(p))
        c = c[:keep_c]
        p = p[len(p) - (max_len - len(c)) :] if len(p) > max_len - len(c) else p
    return {"input_ids": p + c, "labels": [IGNORE] * len(p) + c}


class Collator:
    """Pad a batch to its longest example (right padding, labels -100 on padding)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def encode_pairs(tokenizer, pairs: list[dict], max_len: int, style: str) -> list[dict[str, list[int]]]:
    style = resolve_style(tokenizer, style)
    rows = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair.get("prompt"), str) or not isinstance(pair.get("completion"), str):
            raise DataError(f"training pair {i}: needs string 'prompt' and 'completion'")
        text = build_input(tokenizer, pair["prompt"], style)
        rows.append(completion_labels(tokenizer, text, pair["completion"], max_len, style))
    return rows


# --------------------------------------------------------------------------- devices


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


# Measured on a 2-core EPYC with avx512_bf16 (bench/bench_student.py, default scratch student,
# batch 32): bf16 autocast trains ~1.5x faster than fp32 (7.3-7.5k vs 4.8-5.1k tokens/s) with the
# same loss, so "auto" turns it on for CPUs with avx512_bf16 or AMX.
CPU_BF16_AUTO = True


def _accelerator() -> bool:
    import torch

    acc = getattr(torch, "accelerator", None)
    return bool(acc.is_available()) if acc is not None else torch.cuda.is_available()


def attention_kernel(setting: str) -> str | None:
    """The attention implementation to train with, or None for the model's own default."""
    if setting != "auto":
        return setting
    return None if _accelerator() else "eager"


def use_split(setting: str | bool) -> bool:
    if setting != "auto":
        return bool(setting)
    return not _accelerator()


def use_bf16(setting: str | bool) -> bool:
    import torch

    if setting != "auto":
        return bool(setting)
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return CPU_BF16_AUTO and cpu_has_bf16()


# --------------------------------------------------------------------------- training


def _progress_callback():
    from transformers.trainer_callback import ProgressCallback

    class LossBar(ProgressCallback):
        """The Trainer's bar, showing the loss on the bar instead of printing log dicts."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)

    return LossBar


def _complete(checkpoint: Path) -> bool:
    """The Trainer writes ``trainer_state.json`` last, after weights, optimizer and RNG state: a
    checkpoint whose state file is missing or cut short was interrupted while being written."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return any(checkpoint.glob("*.safetensors")) or any(checkpoint.glob("*.bin"))


def last_checkpoint(work_dir: str | os.PathLike | None) -> str | None:
    """The newest complete ``checkpoint-N`` in ``work_dir``. A checkpoint a kill interrupted
    mid-write is removed (the Trainer writes into the folder non-atomically), so the run resumes
    from the one before it instead of failing on the half-written one."""
    if work_dir is None or not Path(work_dir).is_dir():
        return None
    found = []
    for path in Path(work_dir).iterdir():
        step = path.name.removeprefix("checkpoint-")
        if path.is_dir() and path.name.startswith("checkpoint-") and step.isdigit():
            found.append((int(step), path))
    for _, path in sorted(found, reverse=True):
        if _complete(path):
            return str(path)
        shutil.rmtree(path, ignore_errors=True)
    return None


def _tokens_seen(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(state.get("num_input_tokens_seen") or 0)


def _student(base: str | os.PathLike, settings: TrainSettings):
    """The model to train, with its training attention kernel, and its tokenizer."""
    model, tokenizer = load_student(base)
    kernel = attention_kernel(settings.attention)
    if kernel is not None:
        model.set_attn_implementation(kernel)
    return model, tokenizer


def _with_lora(model, settings: TrainSettings):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                     target_modules=settings.lora_targets, lora_dropout=0.0,
                     task_type="CAUSAL_LM")
    with quiet():
        return get_peft_model(model, cfg)


def _trainer(model, tokenizer, args, rows: list[dict], progress: bool,
             loss: str = "completion-only", split: bool = False):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .loss import trainer_class

    with quiet():
        trainer = trainer_class()(model=model, args=args, train_dataset=rows,
                                  data_collator=Collator(tokenizer.pad_token_id),
                                  processing_class=tokenizer)
    trainer.completion_only = loss == "completion-only"
    trainer.split = split
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_progress_callback())
    return trainer


def _stats(trainer, result, resume: str | None, n_rows: int) -> dict[str, Any]:
    state, args = trainer.state, trainer.args
    tokens = int(state.num_input_tokens_seen) - _tokens_seen(resume)  # this session's
    train_s = float(result.metrics.get("train_runtime", 0.0)) or 1e-9
    return {
        "train_loss": float(result.training_loss),
        "steps": int(state.global_step),
        "tokens": tokens,
        "tokens_per_s": tokens / train_s,
        "wall_s": 0.0,
        "resumed_from": Path(resume).name if resume else None,
        "bf16": bool(args.bf16),
        "attention": trainer.model.config._attn_implementation,
        "split_batches": bool(trainer.split),
        "examples": n_rows,
        "world_size": int(args.world_size),
        "losses": [h["loss"] for h in state.log_history if "loss" in h],
    }


def train_sft(
    base: str | os.PathLike,
    pairs: list[dict],
    out_dir: str | os.PathLike,
    settings: TrainSettings | None = None,
    work_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``base`` on ``pairs`` ({"prompt", "completion"}) and save a plain checkpoint to ``out_dir``."""
    import torch
    from transformers import set_seed

    settings = settings or TrainSettings()
    out_dir = Path(out_dir)
    if not pairs:
        raise DataError("train_sft: no training pairs")
    t0 = time.perf_counter()
    set_seed(settings.seed)
    model, tokenizer = _student(base, settings)
    rows = encode_pairs(tokenizer, pairs, settings.max_len, settings.prompt_style)
    if settings.lora:
        model = _with_lora(model, settings)
    model.config.use_cache = False

    scratch_work = work_dir is None
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="nesyloop-train-"))
    work.mkdir(parents=True, exist_ok=True)
    resume = last_checkpoint(work)
    args = training_args(settings, work, save=not scratch_work, progress=progress)
    trainer = _trainer(model, tokenizer, args, rows, progress, settings.loss,
                       use_split(settings.split_batches))
    try:
        with quiet():
            result = trainer.train(resume_from_checkpoint=resume)
        stats = _stats(trainer, result, resume, len(rows))
        if trainer.is_world_process_zero():
            export(trainer.model, tokenizer, out_dir, settings.lora)
        stats["wall_s"] = time.perf_counter() - t0
        if trainer.is_world_process_zero():
            (out_dir / "train_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    finally:
        if scratch_work:
            shutil.rmtree(work, ignore_errors=True)
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return stats


def export(model, tokenizer, out_dir: Path, merged_lora: bool) -> Path:
    """Save model + tokenizer to ``out_dir`` atomically (LoRA merged first)."""
    if merged_lora:
        with quiet():
            model = model.merge_and_unload()
    model.config.use_cache = True
    return save_checkpoint(model, tokenizer, out_dir)
