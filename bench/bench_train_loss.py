"""Benchmark the completion-only loss and split batches of training (a script, not a test).

    python bench/bench_train_loss.py --run runs/default --json out.json
    python bench/bench_train_loss.py --run runs/default --compare split --overheads 0,32,64,128

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

``--compare split``: the main job's loss (the model's forward) on whole padded batches against
the same with each batch cut into groups of similar length (``[train] split_batches``,
``students/loss.py``), once per cost of a group in ``--overheads`` (the padded tokens a cut
must save), every way on the same batches in rotating order.
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


def _ways(compare: str, overheads: list[int]) -> dict[str, dict]:
    """Each way's Trainer settings: its loss and the cost of a group (None: no split)."""
    if compare == "loss":
        return {"model-forward": {"loss": "model", "overhead": None},
                "completion-only": {"loss": "completion-only", "overhead": None}}
    ways = {"padded": {"loss": "model", "overhead": None}}
    ways.update({f"split-{c}": {"loss": "model", "overhead": c} for c in overheads})
    return ways


def _trainers(student: str, lora: bool, pairs: list[dict], tmp: Path,
              ways: dict[str, dict]) -> tuple[dict, list[dict]]:
    from nesyloop.students import train as tr

    settings = tr.TrainSettings(per_device_train_batch_size=8, train_sampling_strategy="random",
                                lora=lora)
    out, rows = {}, None
    for name, way in ways.items():
        model, tok = tr._student(student, settings)
        if lora:
            model = tr._with_lora(model, settings)
        if rows is None:  # the same tokenizer every time
            rows = tr.encode_pairs(tok, pairs, settings.max_len, settings.prompt_style)
        args = tr.training_args(settings, tmp / name, save=False, progress=False)
        trainer = tr._trainer(model, tok, args, rows, progress=False, loss=way["loss"],
                              split=way["overhead"] is not None)
        if way["overhead"] is not None:
            trainer.split_overhead = way["overhead"]
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


def _args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"), help="a finished main job")
    ap.add_argument("--compare", choices=("loss", "split"), default="loss",
                    help="loss: completion-only vs the model's forward; split: split batches "
                         "vs padded ones")
    ap.add_argument("--overheads", default="64",
                    help="--compare split: costs of a group to try, in tokens (comma-separated)")
    ap.add_argument("--steps", type=int, default=200, help="timed steps (each way)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--student", default=None,
                    help="the student to train (default: the run's initial scratch student; "
                         "e.g. smollm2)")
    ap.add_argument("--lora", action="store_true", help="train LoRA adapters, as [train] lora")
    ap.add_argument("--json", type=Path, help="write the results here")
    return ap.parse_args()


def _time(trainers: dict, batches: list[dict], warmup: int) -> tuple[dict, dict]:
    """Seconds and losses of each way over ``batches``, the ways in rotating order."""
    names = list(trainers)
    secs = {k: 0.0 for k in names}
    losses: dict[str, list[float]] = {k: [] for k in names}
    for i, batch in enumerate(batches):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            value = _step(trainers[name], batch)
            if i >= warmup:
                secs[name] += time.perf_counter() - t0
            losses[name].append(value)
    return secs, losses


def main() -> None:
    import random

    import torch

    from nesyloop.students.train import Collator

    args = _args()
    ways = _ways(args.compare, [int(c) for c in args.overheads.split(",")])
    with tempfile.TemporaryDirectory(prefix="nesyloop-bench-") as tmp:
        pairs = joined_pairs(args.run, Path(tmp))
        student = args.student or str(args.run / "student-init" / "model")
        trainers, rows = _trainers(student, args.lora, pairs, Path(tmp), ways)
        random.Random(0).shuffle(rows)
        collate = Collator(next(iter(trainers.values())).processing_class.pad_token_id)
        n = args.warmup + args.steps
        batches = [collate(rows[i % len(rows): i % len(rows) + 8]) for i in range(0, 8 * n, 8)]
        secs, losses = _time(trainers, batches, args.warmup)
    timed = batches[args.warmup:]
    tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    padded = sum(b["attention_mask"].numel() for b in timed)
    base, *others = list(ways)
    res = {k: {"s": v, "tokens_per_s": tokens / v, "ratio": secs[base] / v}
           for k, v in secs.items()}
    res.update(steps=args.steps, pairs=len(pairs), threads=torch.get_num_threads(),
               cpu_bf16=cpu_has_bf16(), real_share=tokens / padded, run=str(args.run),
               student=student, lora=args.lora, compare=args.compare,
               max_loss_gap={k: max(abs(a - b) for a, b in zip(losses[base], losses[k]))
                             for k in others})
    print(f"train tokens/s ({args.steps} steps each, batch 8, {len(pairs)} pairs, "
          f"{tokens / padded:.0%} of padded tokens real):")
    for k in ways:
        gap = f"  largest loss gap {res['max_loss_gap'][k]:.2e}" if k != base else ""
        print(f"  {k:16s} {res[k]['tokens_per_s']:7.0f}  {res[k]['ratio']:.3f}x{gap}")
    if args.json:
        write_json(args.json, res)


if __name__ == "__main__":
    main()
