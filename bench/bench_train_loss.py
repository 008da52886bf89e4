"""Benchmark the completion-only loss of training (a script, not a test).

    python bench/bench_train_loss.py --run runs/default --json out.json

Time per training step of nesyloop's Trainer with its completion-only loss
(``students/loss.py``: the output layer and the cross-entropy on the labelled positions only)
against the same Trainer with the model's own forward (logits for every position, prompt and
padding included), on a finished main job's joined round: its pairs rebuilt from the run's
artifacts (knowledge blocks and counterfactual twins in their prompts), random batches of 8,
bf16 where the CPU has it, as the main job trains. Two copies of the run's initial scratch
student (or ``--student``, e.g. ``smollm2``, with ``--lora`` as ``[train] lora``) take the
same batches in one process, the two steps of each batch in alternating order, so that this
machine's drift in speed (it moves by a fifth within hours) falls on both alike. Each step is
a forward, a backward and an optimiser step; the first ``--warmup`` are not timed. The losses of the two are printed side by side (the same loss, summed in another
order, so they part only in late digits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nesyloop.io import write_json  # noqa: E402
from nesyloop.methods.joined.stages import knowledge_round_pairs  # noqa: E402
from nesyloop.runs.rundir import StageContext  # noqa: E402
from nesyloop.students import loss  # noqa: E402
from nesyloop.students.train import cpu_has_bf16  # noqa: E402


def joined_pairs(run: Path, tmp: Path) -> list[dict]:
    """The pairs the run's last joined round trained on."""
    cfg = json.loads((run / "config.json").read_text())
    know = max(run.glob("nesycd+fdd-knowledge-r*"), key=lambda d: int(d.name.rsplit("-r", 1)[1]))
    rnd = int(know.name.rsplit("-r", 1)[1])
    fdd = argparse.Namespace(**cfg["fdd"])
    add = cfg.get("joined", {}).get("counterfactual_pairs", "add") == "add"
    build = knowledge_round_pairs(run / f"fdd-evolve-r{rnd}", rnd, fdd, cfg["run"]["seed"], know, add)
    return build(StageContext(name="bench", out=tmp, work=tmp))


def _trainers(student: str, lora: bool, pairs: list[dict], tmp: Path) -> tuple[dict, list[dict]]:
    from nesyloop.students import train as tr

    settings = tr.TrainSettings(per_device_train_batch_size=8, train_sampling_strategy="random",
                                lora=lora)
    out, rows = {}, None
    for name in ("model-forward", "completion-only"):
        model, tok = tr._student(student, settings)
        if lora:
            model = tr._with_lora(model, settings)
        if rows is None:  # the same tokenizer both times
            rows = tr.encode_pairs(tok, pairs, settings.max_len, settings.prompt_style)
        args = tr.training_args(settings, tmp / name, save=False, progress=False)
        trainer = tr._trainer(model, tok, args, rows, progress=False,
                              loss="model" if name == "model-forward" else "completion-only")
        trainer.create_optimizer_and_scheduler(num_training_steps=10_000)
        trainer.model = trainer.model_wrapped = trainer.accelerator.prepare(trainer.model)
        trainer.model.train()
        out[name] = trainer
    return out, rows


def _step(trainer, batch: dict) -> float:
    labelled = (batch["labels"][:, 1:] != loss.IGNORE).sum()
    value = trainer.training_step(trainer.model, dict(batch), num_items_in_batch=labelled)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return float(value)


def main() -> None:
    import random

    import torch

    from nesyloop.students.train import Collator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"), help="a finished main job")
    ap.add_argument("--steps", type=int, default=200, help="timed steps (each way)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--student", default=None,
                    help="the student to train (default: the run's initial scratch student; "
                         "e.g. smollm2)")
    ap.add_argument("--lora", action="store_true", help="train LoRA adapters, as [train] lora")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    secs = {"model-forward": 0.0, "completion-only": 0.0}
    losses: dict[str, list[float]] = {k: [] for k in secs}
    with tempfile.TemporaryDirectory(prefix="nesyloop-bench-") as tmp:
        pairs = joined_pairs(args.run, Path(tmp))
        student = args.student or str(args.run / "student-init" / "model")
        trainers, rows = _trainers(student, args.lora, pairs, Path(tmp))
        random.Random(0).shuffle(rows)
        collate = Collator(trainers["model-forward"].processing_class.pad_token_id)
        n = args.warmup + args.steps
        batches = [collate(rows[i % len(rows): i % len(rows) + 8]) for i in range(0, 8 * n, 8)]
        for i, batch in enumerate(batches):
            for name in (list(secs) if i % 2 else list(secs)[::-1]):
                t0 = time.perf_counter()
                value = _step(trainers[name], batch)
                if i >= args.warmup:
                    secs[name] += time.perf_counter() - t0
                losses[name].append(value)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[args.warmup:])
    res = {k: {"s": v, "tokens_per_s": tokens / v} for k, v in secs.items()}
    res.update(ratio=secs["model-forward"] / secs["completion-only"], steps=args.steps,
               pairs=len(pairs), threads=torch.get_num_threads(), cpu_bf16=cpu_has_bf16(),
               max_loss_gap=max(abs(a - b) for a, b in zip(*losses.values())), run=str(args.run),
               student=student, lora=args.lora)
    print(f"train tokens/s  model forward {res['model-forward']['tokens_per_s']:.0f}  "
          f"completion-only {res['completion-only']['tokens_per_s']:.0f}  ratio "
          f"{res['ratio']:.3f}x  ({args.steps} steps each, batch 8, {len(pairs)} pairs; largest "
          f"loss gap {res['max_loss_gap']:.2e})")
    if args.json:
        write_json(args.json, res)


if __name__ == "__main__":
    main()
