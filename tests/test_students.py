"""Student side: scratch tokenizer/model, loading, completion-only loss, training, LoRA, resume, SmolLM2."""

from __future__ import annotations

import json
import math
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from nesyloop.errors import NesyloopError
from nesyloop.students.fmt import build_input, resolve_style
from nesyloop.students.load import load_student, resolve_student
from toydata import toy_pairs

from nesyloop.students.scratch import (
    ScratchSettings,
    count_parameters,
    create_scratch_student,
    scratch_config,
    train_tokenizer,
)
from nesyloop.students.train import IGNORE, Collator, TrainSettings, completion_labels, train_sft

TINY = ScratchSettings(hidden=64, layers=2, heads=2, max_len=64, vocab_size=400)


def toy_texts() -> list[str]:
    return [p["prompt"] + p["completion"] for p in toy_pairs(400, seed=1)] + ["The answer is 42.\n"]


@pytest.fixture(scope="module")
def scratch_dir(tmp_path_factory):
    return create_scratch_student(toy_texts(), tmp_path_factory.mktemp("scratch") / "student", TINY)


@pytest.fixture(scope="module")
def trained(scratch_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "student"
    settings = TrainSettings(max_steps=30, per_device_train_batch_size=16, learning_rate=3e-3,
                             logging_steps=5)
    stats = train_sft(scratch_dir, toy_pairs(), out, settings, progress=False)
    return out, stats


def test_tokenizer_round_trip_and_digits():
    tok = train_tokenizer(toy_texts(), vocab_size=400)
    for text in ["Question: 123 + 4567 = 4690", "héllo\n\twörld  🙂 ", "x=0.25, y=-17", ""]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(tok("12345 67", add_special_tokens=False)["input_ids"])
    digits = [p for p in pieces if any(c.isdigit() for c in p)]
    assert digits == list("1234567")
    assert tok.pad_token and tok.eos_token and tok.bos_token
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}) == 3


def test_tokenizer_whole_numbers():
    texts = [f"Tam has {a} coins. {a} + {b} = {a + b}." for a in range(2, 10) for b in range(2, 12)]
    whole = train_tokenizer(texts * 3, vocab_size=400, numbers="whole")
    digits = train_tokenizer(texts * 3, vocab_size=400)
    text = "Tam has 7 coins. 7 + 11 = 18. 12345 is rare."
    for tok in (whole, digits):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    pieces = whole.convert_ids_to_tokens(whole(" 7 + 11 = 18.", add_special_tokens=False)["input_ids"])
    assert pieces == ["Ġ7", "Ġ+", "Ġ11", "Ġ=", "Ġ18", "."]  # a frequent number is one token
    split = digits.convert_ids_to_tokens(digits(" 7 + 11 = 18.", add_special_tokens=False)["input_ids"])
    assert len(split) > len(pieces) and "Ġ18" not in split


def test_scratch_default_size_and_save_load(scratch_dir):
    from transformers import LlamaForCausalLM

    tok = train_tokenizer(toy_texts(), vocab_size=400)
    config = scratch_config(ScratchSettings(), tok)
    config.vocab_size = 2000  # what a task's text of normal size fills
    model = LlamaForCausalLM(config)
    assert 3_000_000 < count_parameters(model) < 8_000_000  # "a few million"

    model, tok = load_student(scratch_dir)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert tok.pad_token_id == model.config.pad_token_id
    assert resolve_student(scratch_dir) == (str(scratch_dir.resolve()), None)
    # seeded: creating again gives the same weights
    again = create_scratch_student(toy_texts(), scratch_dir.parent / "again", TINY)
    m2, _ = load_student(again)
    for (n1, p1), (_, p2) in zip(model.named_parameters(), m2.named_parameters()):
        assert torch.equal(p1, p2), n1


def test_resolve_errors_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NesyloopError, match="someorg/some-model"):
        resolve_student("someorg/some-model")
    with pytest.raises(NesyloopError, match="missing.gguf"):
        resolve_student(str(tmp_path / "missing.gguf"))
    with pytest.raises(NesyloopError, match="config.json"):
        resolve_student(str(tmp_path))
    folder, gguf = resolve_student("smollm2")
    assert gguf == "SmolLM2-135M-Instruct.Q4_1.gguf" and os.path.isfile(os.path.join(folder, gguf))


def test_build_input_styles(scratch_dir):
    _, tok = load_student(scratch_dir)
    assert resolve_style(tok, "auto") == "plain"
    assert build_input(tok, "Q: 1 + 1 =") == "Q: 1 + 1 ="
    with pytest.raises(NesyloopError):
        build_input(tok, "x", "chat")
    tok.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    assert build_input(tok, "hi") == "<|user|>hi\n<|assistant|>"
    assert build_input(tok, "hi", "plain") == "hi"


def test_completion_only_loss(scratch_dir):
    model, tok = load_student(scratch_dir)
    rows = [
        completion_labels(tok, "Question: 3 + 4 =", " 7", 64),
        completion_labels(tok, "Question: 12 + 30 = ?", " 42 because 12 + 30 = 42", 64),
    ]
    for prompt, row in zip(["Question: 3 + 4 =", "Question: 12 + 30 = ?"], rows):
        n_prompt = len(tok(prompt)["input_ids"])
        assert row["labels"][:n_prompt] == [IGNORE] * n_prompt
        assert all(x != IGNORE for x in row["labels"][n_prompt:])
        assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
        assert row["input_ids"][-1] == tok.eos_token_id
    batch = Collator(tok.pad_token_id)(rows)
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # manual: cross-entropy over completion tokens only (shifted), averaged over those tokens
    nll, count = 0.0, 0
    for b, row in enumerate(rows):
        for t in range(1, len(row["input_ids"])):
            if row["labels"][t] != IGNORE:
                nll -= torch.log_softmax(logits[b, t - 1], -1)[row["labels"][t]].item()
                count += 1
    completions = [" 7", " 42 because 12 + 30 = 42"]
    assert count == sum(len(tok(c, add_special_tokens=False)["input_ids"]) + 1 for c in completions)
    assert abs(loss.item() - nll / count) < 1e-4
    # truncation keeps the completion trained
    long = completion_labels(tok, "Question: " + "1 + " * 40 + "1 =", " 41", 32)
    assert len(long["input_ids"]) == 32 and long["labels"][-1] == tok.eos_token_id


def test_trl_completion_only_loss_equals_nesyloops(scratch_dir, tmp_path):
    """TRL's SFTTrainer (bench/bench_train.py times it against train_sft) tokenises the pairs
    as nesyloop does and gives the same completion-only loss (checked by hand above), also on
    a padding-free batch, whose boundaries the eager attention takes from position_ids."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from nesyloop.students.train import encode_pairs

    model, tok = load_student(scratch_dir)
    model.set_attn_implementation("eager")
    pairs = toy_pairs(6, suffix=" because 1 + 1 = 2.")
    rows = encode_pairs(tok, pairs, 64, "plain")
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False,
                     max_length=64)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs),
                         processing_class=tok)
    prepared = list(trainer.train_dataset)
    assert [(p["input_ids"], p["labels"]) for p in prepared] == \
        [(r["input_ids"], r["labels"]) for r in rows]
    flat = DataCollatorForLanguageModeling(tok.pad_token_id, padding_free=True)(rows)
    model.eval()
    with torch.no_grad():
        ours = model(**Collator(tok.pad_token_id)(rows)).loss.item()
        theirs = trainer.compute_loss(model, trainer.data_collator(prepared)).item()
        padding_free = trainer.compute_loss(model, dict(flat)).item()
    assert abs(theirs - ours) < 1e-5 and abs(padding_free - ours) < 1e-5


def test_training_reduces_loss(trained):
    out, stats = trained
    assert stats["steps"] == 30 and stats["tokens"] > 0 and stats["tokens_per_s"] > 0
    losses = stats["losses"]
    assert len(losses) >= 5 and losses[-1] < 0.6 * losses[0]
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / "train_stats.json").read_text())["steps"] == 30
    assert not any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())


def test_attention_kernel_auto_is_eager_on_cpu_and_not_saved(trained, scratch_dir, tmp_path):
    out, stats = trained
    assert stats["attention"] == "eager"  # attention = "auto" on this CPU-only machine
    assert "attn" not in (out / "config.json").read_text()  # a GPU user loads the model's default
    sdpa = train_sft(scratch_dir, toy_pairs(16), tmp_path / "s",
                     TrainSettings(max_steps=2, per_device_train_batch_size=8, attention="sdpa"),
                     progress=False)
    assert sdpa["attention"] == "sdpa"


def test_lora_merges_to_plain_checkpoint(scratch_dir, tmp_path):
    out = tmp_path / "lora"
    settings = TrainSettings(lora=True, lora_r=4, max_steps=4, per_device_train_batch_size=8,
                             learning_rate=1e-2, logging_steps=2)
    stats = train_sft(scratch_dir, toy_pairs(32), out, settings, progress=False)
    assert stats["steps"] == 4
    assert not (out / "adapter_config.json").exists()
    merged, _ = load_student(out)
    base, _ = load_student(scratch_dir)
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not any("lora" in n for n, _ in merged.named_parameters())
    changed = [
        n for (n, p), (_, q) in zip(merged.named_parameters(), base.named_parameters()) if not torch.equal(p, q)
    ]
    assert changed and all("proj" in n for n in changed)


def test_resume_from_work_dir(scratch_dir, tmp_path):
    work = tmp_path / "work"
    settings = TrainSettings(max_steps=4, save_steps=2, per_device_train_batch_size=8,
                             logging_steps=2)
    first = train_sft(scratch_dir, toy_pairs(64), tmp_path / "a", settings, work_dir=work, progress=False)
    assert first["resumed_from"] is None and (work / "checkpoint-4").is_dir()
    # a killed earlier attempt left checkpoint-4 behind, and was killed while writing two more:
    # one with weights but a cut-short state file, one with only its config
    cut = work / "checkpoint-5"
    shutil.copytree(work / "checkpoint-4", cut)
    (cut / "trainer_state.json").write_text('{"global_step": 5, "log_hist')
    (work / "checkpoint-6").mkdir()
    (work / "checkpoint-6" / "config.json").write_text("{}")
    # the next run continues from the last complete one
    more = settings.model_copy(update={"max_steps": 6})
    second = train_sft(scratch_dir, toy_pairs(64), tmp_path / "b", more, work_dir=work, progress=False)
    assert second["resumed_from"] == "checkpoint-4" and second["steps"] == 6
    assert 0 < second["tokens"] < first["tokens"]  # this session's two steps only


@pytest.fixture(scope="module")
def smollm2_lora(tmp_path_factory):
    """SmolLM2-135M from the shipped GGUF, a few LoRA steps, exported (loaded from GGUF once)."""
    out = tmp_path_factory.mktemp("smol") / "student"
    pairs = [{"prompt": f"What is {a} + {a}?", "completion": f"{2 * a}"} for a in range(8)]
    settings = TrainSettings(lora=True, max_steps=3, per_device_train_batch_size=4,
                             learning_rate=1e-3, max_len=48, logging_steps=1)
    stats = train_sft("smollm2", pairs, out, settings, progress=False)
    return out, stats


def test_smollm2_gguf_lora_trains_then_generates(smollm2_lora):
    from nesyloop.gen.base import GenSettings, Request
    from nesyloop.gen.hf import HFBackend

    out, stats = smollm2_lora
    assert stats["steps"] == 3 and stats["train_loss"] > 0
    backend = HFBackend(out, batch_size=4, progress=False)
    assert backend.style == "chat"
    reqs = [Request.raw("What is 2 + 2?", GenSettings(max_tokens=6)),
            Request.chat([{"role": "user", "content": "Say hi."}], GenSettings(max_tokens=6))]
    done = backend.generate(reqs)
    assert len(done) == 2 and all(c.completion_tokens >= 1 and c.prompt_tokens > 5 for c in done)
    assert all(isinstance(c.text, str) for c in done)


def test_warmup_ratio_reaches_the_trainer_as_a_ratio(tmp_path):
    """[train] warmup_steps (0.05) goes to TrainingArguments as is: transformers >= 5 reads it
    as a ratio of the total steps when below 1 (older versions read it as 0 steps: no warmup)."""
    from transformers import TrainingArguments

    ratio = TrainSettings().warmup_steps
    args = TrainingArguments(output_dir=str(tmp_path), warmup_steps=ratio, report_to="none")
    assert args.get_warmup_steps(200) == math.ceil(200 * ratio) > 0
