"""The completion-only loss (students/loss.py): the model's own loss, its output layer applied to
the labelled positions only, taken by the Trainer where that is exact and not elsewhere."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from nesyloop.students import loss as loss_mod
from nesyloop.students.load import load_student
from nesyloop.students.scratch import ScratchSettings, create_scratch_student
from nesyloop.students.train import Collator, TrainSettings, encode_pairs, train_sft
from toydata import toy_pairs

TINY = ScratchSettings(hidden=64, layers=2, heads=2, max_len=96, vocab_size=400)


@pytest.fixture(scope="module")
def scratch_dir(tmp_path_factory):
    texts = [p["prompt"] + p["completion"] for p in toy_pairs(300, seed=2)]
    return create_scratch_student(texts, tmp_path_factory.mktemp("loss") / "student", TINY)


def _batch(tok, n=6):
    pairs = toy_pairs(n, seed=3)
    for i, p in enumerate(pairs):  # lengths differ: padding and prompts of several sizes
        p["prompt"] = "Note: " * i + p["prompt"]
        p["completion"] += " ok" * (n - i)
    return Collator(tok.pad_token_id)(encode_pairs(tok, pairs, 96, "plain"))


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _check_same_loss(model, batch):
    own = model(**batch).loss
    ours = loss_mod.completion_loss(model, batch)
    assert abs(own.item() - ours.item()) < 1e-5
    g_own, g_ours = _grads(model, own), _grads(model, ours)
    assert g_own.keys() == g_ours.keys() and g_own
    for name in g_own:
        assert torch.allclose(g_own[name], g_ours[name], atol=1e-6, rtol=1e-4), name
    # with the Trainer's token count, a sum over this batch divided by it
    keep = (batch["labels"][:, 1:] != -100).sum()
    halved = loss_mod.completion_loss(model, batch, num_items=2 * keep)
    assert abs(halved.item() - own.item() / 2) < 1e-5


def test_same_loss_and_gradients_as_the_models_own(scratch_dir):
    model, tok = load_student(scratch_dir)
    model.train()
    batch = _batch(tok)
    assert (batch["attention_mask"] == 0).any()  # the batch is padded
    _check_same_loss(model, batch)


def test_same_loss_through_lora(scratch_dir):
    from peft import LoraConfig, get_peft_model

    model, tok = load_student(scratch_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  task_type="CAUSAL_LM"))
    for name, p in peft_model.named_parameters():  # LoRA's B starts at zero: make it count
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    assert loss_mod.has_plain_head(peft_model)
    _check_same_loss(peft_model, _batch(tok))


def test_other_heads_keep_the_models_forward():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    assert not loss_mod.has_plain_head(gpt2)


def _spy(monkeypatch):
    calls = []
    real = loss_mod.completion_loss

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(loss_mod, "completion_loss", counted)
    return calls


def test_training_takes_it_and_matches_the_plain_path(scratch_dir, tmp_path, monkeypatch):
    settings = TrainSettings(max_steps=8, per_device_train_batch_size=8, learning_rate=3e-3,
                             logging_steps=1, bf16=False)
    pairs = toy_pairs(64, seed=4)
    calls = _spy(monkeypatch)
    ours = train_sft(scratch_dir, pairs, tmp_path / "a", settings, progress=False)
    assert len(calls) == 8
    own = train_sft(scratch_dir, pairs, tmp_path / "b", settings.model_copy(
        update={"loss": "model"}), progress=False)  # [train] loss = "model": its own forward
    assert len(calls) == 8
    monkeypatch.setattr(loss_mod, "PLAIN_HEADS", frozenset())  # a head it does not know
    train_sft(scratch_dir, pairs[:16], tmp_path / "c", settings.model_copy(
        update={"max_steps": 2}), progress=False)
    assert len(calls) == 8
    assert len(ours["losses"]) == len(own["losses"]) == 8
    for a, b in zip(ours["losses"], own["losses"]):
        assert abs(a - b) < 1e-3 * max(1.0, abs(b))
    assert ours["tokens"] == own["tokens"]


def test_label_smoothing_keeps_the_trainers_loss(scratch_dir, tmp_path, monkeypatch):
    calls = _spy(monkeypatch)
    settings = TrainSettings(max_steps=2, per_device_train_batch_size=8, bf16=False,
                             label_smoothing_factor=0.1)
    stats = train_sft(scratch_dir, toy_pairs(16), tmp_path / "s", settings, progress=False)
    assert stats["steps"] == 2 and not calls


def test_length_groups_cut_where_the_padding_saved_pays_for_a_group():
    lengths = [10, 100, 12, 98]
    # two groups cost 2*12 + 2*100 + 2*20 = 264; one 4*100 + 20; each row alone 220 + 80
    assert loss_mod.length_groups(lengths, overhead=20) == [[0, 2], [3, 1]]
    assert loss_mod.length_groups(lengths, overhead=500) == [[0, 2, 3, 1]]
    assert loss_mod.length_groups([7, 7, 7], overhead=0) == [[0, 1, 2]]  # no padding to save
    assert loss_mod.length_groups([3, 9, 5], overhead=0) == [[0], [2], [1]]
    assert loss_mod.length_groups([5], overhead=64) == [[0]]


def test_split_batch_gives_the_same_loss_and_gradients(scratch_dir):
    model, tok = load_student(scratch_dir)
    model.train()
    batch = _batch(tok, n=8)
    parts = loss_mod.split_batch(batch, overhead=0)
    assert len(parts) > 1  # cut: each group as wide as its longest row, no row lost
    assert sum(len(p["input_ids"]) for p in parts) == len(batch["input_ids"])
    assert all(p["attention_mask"][:, -1].any() for p in parts)
    assert sum(p["attention_mask"].numel() for p in parts) < batch["attention_mask"].numel()
    count = loss_mod.labelled(batch)
    for whole, split in (
        (model(**batch).loss, sum(model(**p, num_items_in_batch=count).loss for p in parts)),
        (loss_mod.completion_loss(model, batch),
         sum(loss_mod.completion_loss(model, p, count) for p in parts)),
    ):
        assert abs(whole.item() - split.item()) < 1e-5
        g_whole, g_split = _grads(model, whole), _grads(model, split)
        assert g_whole.keys() == g_split.keys() and g_whole
        for name in g_whole:
            assert torch.allclose(g_whole[name], g_split[name], atol=1e-6, rtol=1e-4), name
    assert loss_mod.split_batch(batch, overhead=10_000) == [batch]  # no cut pays: as it came


def test_training_splits_batches_on_a_cpu_with_either_loss(scratch_dir, tmp_path, monkeypatch):
    widths = []
    real = loss_mod.split_batch

    def spied(inputs, overhead=loss_mod.GROUP_OVERHEAD):
        parts = real(inputs, overhead)
        widths.append(len(parts))
        return parts

    monkeypatch.setattr(loss_mod, "split_batch", spied)
    monkeypatch.setattr(loss_mod, "GROUP_OVERHEAD", 0)
    pairs = toy_pairs(64, seed=4)
    for i, p in enumerate(pairs):  # rows of very different lengths
        p["completion"] += " ok" * (i % 5) * 6
    settings = TrainSettings(max_steps=6, per_device_train_batch_size=8, learning_rate=3e-3,
                             logging_steps=1, bf16=False, loss="model")
    whole = train_sft(scratch_dir, pairs, tmp_path / "a", settings.model_copy(
        update={"split_batches": False}), progress=False)
    assert not widths and whole["split_batches"] is False
    for n, loss in enumerate(("model", "completion-only"), start=1):
        split = train_sft(scratch_dir, pairs, tmp_path / loss, settings.model_copy(
            update={"loss": loss, "split_batches": "auto"}), progress=False)  # on a CPU
        assert split["split_batches"] is True and len(widths) == 6 * n
        assert max(widths) > 1
        for a, b in zip(whole["losses"], split["losses"]):
            assert abs(a - b) < 1e-3 * max(1.0, abs(b))
        assert split["tokens"] == whole["tokens"]
