"""Benchmark student training: nesyloop's ``train_sft`` against TRL's ``SFTTrainer`` (a script,
not a test; needs ``pip install trl``, the ``bench`` extra).

    python bench/bench_train.py --json bench/results/train.json

The data are the main job's first training pairs, made the way its stages make them: Bazaar's
training problems, the oracle teacher's rationales (wrong 10% of the time on purpose) kept when
their answer is right, as std-cot pairs; the student is the main job's scratch student (default
size, its tokenizer trained on those pairs) with the main job's ``[train]`` settings (batch 8,
learning rate 1e-3, attention and bf16 "auto"), each contender ``--steps`` optimiser steps from
the same initial weights and seed:

* ``nesyloop``: ``train_sft`` (length-grouped batches padded to their longest);
* ``nesyloop-random``: the same with random batches (``train_sampling_strategy = "random"``),
  the batches TRL's default draws;
* ``trl``: ``SFTTrainer`` with its defaults for prompt-completion data (completion-only loss,
  gradient checkpointing, random batches padded to their longest, entropy and token accuracy
  logged every step);
* ``trl-tuned``: the same with nesyloop's two speed choices (no gradient checkpointing,
  length-grouped batches);
* ``trl-padding-free``: ``padding_free=True``, no gradient checkpointing: each batch of 8 pairs
  is one flattened sequence, its boundaries in ``position_ids``;
* ``trl-packed``: ``packing=True`` (best-fit decreasing), no gradient checkpointing, one packed
  row per step as long as the mean batch of the others (the same tokens per step).

Tokens/s counts prompt and completion tokens, not padding (the Trainer's
``num_input_tokens_seen`` with "non_padding", over its ``train_runtime``). The contenders run in
turn, ``--repeats`` times, and medians are reported (this machine's speed drifts); each trained
model's loss on the same 256 training pairs is reported beside its training loss (the batches,
and so the losses, differ with the batch order). ``--only`` picks contenders. Three checks
come first: TRL tokenises every pair as nesyloop does (the same ids and labels), the two losses on
one batch agree, and a padding-free batch gives the padded batch's logits with the attention
kernel the CPU trains with (transformers builds a block-diagonal mask from ``position_ids``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nesyloop.config import load_config  # noqa: E402
from nesyloop.gen.base import GenSettings  # noqa: E402
from nesyloop.gen.registry import make_teacher  # noqa: E402
from nesyloop.io import write_jsonl  # noqa: E402
from nesyloop.methods.simple import cot_pairs  # noqa: E402
from nesyloop.roles.rationale import distill_rationales  # noqa: E402
from nesyloop.students.load import load_student, quiet  # noqa: E402
from nesyloop.students.scratch import count_parameters, create_scratch_student  # noqa: E402
from nesyloop.students.train import (  # noqa: E402
    IGNORE, Collator, TrainSettings, attention_kernel, cpu_has_bf16, encode_pairs, train_sft,
    use_bf16)
from nesyloop.tasks.bazaar.generator import generate_splits  # noqa: E402

# SFTConfig fields each TRL contender sets beyond the shared ones (trl_config)
# [train] fields each train_sft contender sets (TrainSettings passes them to TrainingArguments)
NESYLOOP_VARIANTS = {"nesyloop": {}, "nesyloop-random": {"train_sampling_strategy": "random"}}
NO_GC = {"activation_checkpointing": False}  # TRL's default: on
TRL_VARIANTS = {
    "trl": {},
    "trl-tuned": {**NO_GC, "train_sampling_strategy": "group_by_length"},
    "trl-padding-free": {**NO_GC, "padding_free": True, "max_length": None},
    "trl-packed": {**NO_GC, "packing": True, "per_device_train_batch_size": 1},
}


def main_job_pairs(tmp: Path) -> list[dict[str, str]]:
    """std-cot's training pairs of the main job: its Bazaar training split, its teacher's
    rationales filtered on the gold answer, read back by the std-cot method's own function."""
    cfg = load_config()
    train = generate_splits(cfg.task.bazaar)["train"]
    t = cfg.teacher
    teacher = make_teacher(t, world_seed=cfg.task.bazaar.seed, seed=cfg.run.seed)
    gen = GenSettings(max_tokens=t.max_tokens, temperature=t.temperature, top_p=t.top_p,
                      n=t.samples, seed=cfg.run.seed)
    kept, _ = distill_rationales(teacher, train, gen, t.batch_size, progress=False)
    write_jsonl(tmp / "kept.jsonl", kept)
    return cot_pairs(tmp, tmp)


def student(base: Path, settings: TrainSettings):
    """The model as train_sft trains it (its attention kernel for training), and its tokenizer."""
    model, tok = load_student(base)
    if (kernel := attention_kernel(settings.attention)) is not None:
        model.set_attn_implementation(kernel)
    return model, tok


def trl_config(settings: TrainSettings, work: Path, **over):
    """SFTConfig: TRL's defaults, with the [train] values train_sft passes (steps, batch,
    learning rate, schedule, seed, bf16), its token count and no checkpoints or reports."""
    import torch
    from trl import SFTConfig

    return SFTConfig(**{**settings.trainer_args(), "bf16": use_bf16(settings.bf16),
                        "output_dir": str(work), "save_strategy": "no", "report_to": "none",
                        "use_cpu": not torch.cuda.is_available(), "disable_tqdm": True,
                        "include_num_input_tokens_seen": "non_padding",
                        "max_length": settings.max_len, **over})


def trl_trainer(base: Path, pairs: list[dict], settings: TrainSettings, work: Path, **over):
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    model, tok = student(base, settings)
    with quiet():
        trainer = SFTTrainer(model=model, args=trl_config(settings, work, **over),
                             train_dataset=Dataset.from_list(pairs), processing_class=tok)
    trainer.remove_callback(PrinterCallback)
    return trainer


def run_trl(base: Path, pairs: list[dict], settings: TrainSettings, work: Path, **over) -> dict:
    trainer = trl_trainer(base, pairs, settings, work, **over)
    with quiet():
        result = trainer.train()
    state = trainer.state
    return {"tokens": int(state.num_input_tokens_seen), "steps": int(state.global_step),
            "tokens_per_s": state.num_input_tokens_seen / result.metrics["train_runtime"],
            "train_loss": float(result.training_loss),
            "losses": [h["loss"] for h in state.log_history if "loss" in h], "model": trainer.model}


def run_nesyloop(base: Path, pairs: list[dict], settings: TrainSettings, work: Path) -> dict:
    st = train_sft(base, pairs, work / "model", settings, progress=False)
    return {**{k: st[k] for k in ("tokens", "steps", "tokens_per_s", "train_loss", "losses")},
            "model": load_student(work / "model")[0]}


def fixed_loss(model, rows: list[dict], pad_id: int, batch: int = 32) -> float:
    """A trained model's completion-only loss on the same fixed rows (eval mode, per token)."""
    import torch

    collate, nll, count = Collator(pad_id), 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            padded = collate(rows[i : i + batch])
            n = int((padded["labels"][:, 1:] != IGNORE).sum())
            nll += model(**padded).loss.item() * n
            count += n
    return nll / count


def checks(base: Path, pairs: list[dict], settings: TrainSettings, work: Path) -> dict:
    """TRL's prepared rows against nesyloop's; both losses on the first batch (the same model,
    eval mode); the logits of that batch flattened padding-free against padded."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    trainer = trl_trainer(base, pairs, settings, work)
    model, tok, prepared = trainer.model.eval(), trainer.processing_class, trainer.train_dataset
    rows = encode_pairs(tok, pairs, settings.max_len, settings.prompt_style)
    same = sum(p["input_ids"] == r["input_ids"] and p["labels"] == r["labels"]
               for p, r in zip(prepared, rows, strict=True))
    n = settings.per_device_train_batch_size
    padded = Collator(tok.pad_token_id)(rows[:n])
    flat = DataCollatorForLanguageModeling(tok.pad_token_id, padding_free=True)(rows[:n])
    with torch.no_grad():
        ours = model(**padded)
        theirs = trainer.compute_loss(model, trainer.data_collator(prepared.select(range(n))))
        flat_loss = trainer.compute_loss(model, dict(flat))
        flat_logits = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"]).logits
    lengths = padded["attention_mask"].sum(1).tolist()
    pieces = flat_logits[0].split(lengths)
    logit_diff = max((pieces[i] - ours.logits[i, :k]).abs().max().item()
                     for i, k in enumerate(lengths))
    return {"identical_rows": same, "rows": len(rows), "batch": n,
            "loss_nesyloop": ours.loss.item(), "loss_trl": theirs.item(),
            "loss_diff": abs(ours.loss.item() - theirs.item()),
            "loss_trl_padding_free": flat_loss.item(),
            "padding_free_max_logit_diff": logit_diff,
            "attention": model.config._attn_implementation,
            "trl_default_checkpointing": bool(trainer.args.activation_checkpointing),
            "mean_pair_tokens": statistics.mean(len(r["input_ids"]) for r in rows),
            "max_pair_tokens": max(len(r["input_ids"]) for r in rows)}


def contenders(base: Path, pairs: list[dict], settings: TrainSettings, batch_tokens: int) -> dict:
    """name -> a function of a work folder that trains once and returns its figures."""
    runs = {name: lambda work, s=settings.model_copy(update=over):
            run_nesyloop(base, pairs, s, work) for name, over in NESYLOOP_VARIANTS.items()}
    for name, over in TRL_VARIANTS.items():
        if over.get("packing"):
            over = {**over, "max_length": batch_tokens}  # one row: the others' tokens per step
        runs[name] = lambda work, over=over: run_trl(base, pairs, settings, work, **over)
    return runs


def measure(runs: dict, repeats: int, tmp: Path, score) -> dict:
    """Each contender in turn, ``repeats`` times: median tokens/s; the last run's losses, and
    ``score`` of the model it trained (its loss on the same fixed pairs)."""
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    last: dict[str, dict] = {}
    for r in range(repeats):
        for name, fn in runs.items():
            last[name] = fn(tmp / f"{name}-{r}")
            speeds[name].append(last[name]["tokens_per_s"])
            model = last[name].pop("model")
            if r == repeats - 1:
                last[name]["fixed_loss"] = score(model)
            del model
    base = statistics.median(speeds["trl"]) if "trl" in speeds else None
    return {name: {"tokens_per_s": statistics.median(v), "runs": v,
                   "vs_trl": statistics.median(v) / base if base else None,
                   "tokens": last[name]["tokens"],
                   "steps": last[name]["steps"], "train_loss": last[name]["train_loss"],
                   "last_loss": (last[name]["losses"] or [last[name]["train_loss"]])[-1],
                   "fixed_loss": last[name]["fixed_loss"]}
            for name, v in speeds.items()}


def main() -> None:
    import datasets
    import torch

    datasets.disable_progress_bars()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="optimiser steps per training run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="[train] seed (batch order, dropout)")
    ap.add_argument("--only", help="comma-separated contenders (default: all)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    settings = load_config().train.model_copy(update={"max_steps": args.steps, "seed": args.seed,
                                                      "logging_steps": 10})
    res: dict = {"threads": torch.get_num_threads(), "cpu_bf16": cpu_has_bf16(),
                 "bf16": use_bf16(settings.bf16), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="nesyloop-bench-") as tmp:
        tmp = Path(tmp)
        pairs = main_job_pairs(tmp)
        base = create_scratch_student([p["prompt"] + p["completion"] for p in pairs],
                                      tmp / "base", load_config().student.scratch)
        model, tok = load_student(base)
        res["params"], res["fixed_pairs"] = count_parameters(model), min(256, len(pairs))
        fixed = encode_pairs(tok, pairs[: res["fixed_pairs"]], settings.max_len,
                             settings.prompt_style)
        res["pairs"], res["steps"], res["seed"] = len(pairs), args.steps, args.seed
        res["batch"] = settings.per_device_train_batch_size
        res["checks"] = c = checks(base, pairs, settings, tmp / "checks")
        batch_tokens = round(res["batch"] * c["mean_pair_tokens"])
        warm = settings.model_copy(update={"max_steps": 3})  # one-time costs, before timing
        run_nesyloop(base, pairs[:64], warm, tmp / "warm-up")
        runs = contenders(base, pairs, settings, batch_tokens)
        if args.only:
            runs = {k: runs[k] for k in args.only.split(",")}
        res["train"] = measure(runs, args.repeats, tmp,
                               lambda m: fixed_loss(m, fixed, tok.pad_token_id))
    res["load_after"], res["seconds"] = os.getloadavg(), time.perf_counter() - t0
    report(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")


def report(res: dict) -> None:
    c = res["checks"]
    print(f"{res['pairs']} pairs, {c['mean_pair_tokens']:.1f} tokens each, "
          f"{res['params'] / 1e6:.2f} M params, attention {c['attention']}, bf16 {res['bf16']}, "
          f"{res['steps']} steps x batch {res['batch']}")
    print(f"TRL's rows identical to nesyloop's: {c['identical_rows']}/{c['rows']}; loss on one "
          f"batch: nesyloop {c['loss_nesyloop']:.6f}, TRL {c['loss_trl']:.6f} (diff "
          f"{c['loss_diff']:.1e}), TRL padding-free {c['loss_trl_padding_free']:.6f}; "
          f"padding-free logits vs padded: max diff {c['padding_free_max_logit_diff']:.1e}")
    for name, r in res["train"].items():
        ratio = f"{r['vs_trl']:.2f}x trl" if r["vs_trl"] else ""
        print(f"{name:<17} {r['tokens_per_s']:7.0f} tokens/s  {ratio}  "
              f"({r['tokens']} tokens; train loss {r['train_loss']:.3f}, last "
              f"{r['last_loss']:.3f}; on {res['fixed_pairs']} fixed pairs {r['fixed_loss']:.3f})")
    print(f"{res['seconds']:.0f} s; load {res['load_before'][0]:.1f} -> {res['load_after'][0]:.1f}")


if __name__ == "__main__":
    main()
