"""The joined loop's own stages: a round's knowledge (blocks and counterfactual pairs) and its
training pairs.

Every pair of the round (its new problems plus replayed old ones, exactly as FDD's round trains
on) goes before the student with a knowledge block from the KB the round starts from: the
problem's own entry when the student got it wrong in an earlier feedback and the teacher
analysed the error (``train_knowledge = "own"``), otherwise what retrieval finds for its
question, as at inference — sometimes the facts it needs, sometimes not, so the student learns
both to use a block and to look past a useless one. The round trains on as many pairs as
FDD's, each a little longer (and its counterfactual ones under ``counterfactual_pairs =
"add"``).

Counterfactual pairs (``[joined] counterfactual``): for that share of the round's problems with
a block, the block states a fact the student cannot recall — ``rename``: one of its entities is
renamed everywhere (question, block, rationale) to another entity of the same kind from the KB,
whose true value the block then does not give; ``value``: one number of the block is changed
and the teacher solves the problem again taking the changed block as true — and the pair
replaces the problem's CoT pair, or joins it (``counterfactual_pairs = "add"``). A student that
answers from memory gets these wrong, so it learns to read the block, which is what it must do
for a fact it has rarely seen or one that changed (docs/methods.md has the dev figures).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...io import read_jsonl, write_json, write_jsonl
from ...kb.abstract import apply, apply_prompt
from ...kb.counterfactual import change_number, rename_entity
from ...runs.rundir import StageContext
from ...students.prompt import pot_prompt, student_prompt
from ...tasks.base import Example
from ..fdd.stages import POOL, round_pairs
from ..nesycd.stages import example_blocks

KNOWLEDGE = "knowledge.jsonl"  # per problem of the round: its block and where it came from
COUNTERFACTUAL = "counterfactual.jsonl"  # the kept counterfactual pairs


def _counterfactuals(make_teacher, pool: dict[str, dict], blocks: list[dict[str, Any]],
                     share: float, seed: int, gen, batch_size: int, progress: bool
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """The teacher's rationales for ``share`` of the problems with a block, one number of the
    block changed: (kept, rejected, teacher usage)."""
    from ...roles.base import run_role
    from ...roles.counterfactual import CounterfactualRole

    rng = random.Random(seed)
    chosen = [b for b in blocks if b["knowledge"] and pool[b["id"]]["rationales"]
              and rng.random() < share]
    asks = []
    for b in chosen:
        changed = change_number(b["knowledge"], rng, pool[b["id"]]["question"])
        if changed is not None:
            asks.append(Example.from_dict({**pool[b["id"]], "meta": {
                "knowledge": changed[0], "changed": changed[1]}}))
    if not asks:
        return [], [], {}
    teacher, close = make_teacher()
    try:
        replies = run_role(teacher, CounterfactualRole(), asks, gen, batch_size,
                           desc="counterfactual", progress=progress)
    finally:
        usage = close()
    kept, rejected = [], []
    for ex, (r, *_) in zip(asks, replies, strict=True):
        rec = {"id": ex.id, "question": ex.question, "knowledge": ex.meta["knowledge"],
               "changed": ex.meta["changed"], "gold": ex.answer, "answer": r["pred"],
               "rationale": r["rationale"]}
        (kept if r["kept"] else rejected).append({**rec, "reason": r["reason"]})
    return kept, rejected, usage


def _renamed(pool: dict[str, dict], blocks: list[dict[str, Any]], share: float, seed: int,
             items: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Counterfactual pairs by renaming (:func:`rename_entity`) with the KB's sentences
    ``items``: (kept, rejected)."""
    rng = random.Random(seed)
    kept, rejected = [], []
    for b in blocks:
        r = pool[b["id"]]
        if not (b["knowledge"] and r["rationales"] and rng.random() < share):
            continue
        out = rename_entity(r["question"], b["knowledge"], r["rationales"][0], items, rng)
        rec = {"id": b["id"], "question": r["question"], "knowledge": b["knowledge"]}
        if out is None:
            rejected.append({**rec, "reason": "no entity of the block can be renamed"})
            continue
        kept.append({**rec, "question": out[0], "knowledge": out[1], "rationale": out[2],
                     "renamed": list(out[3]), "answer": r["answer"]})
    return kept, rejected


def knowledge_stage(make_teacher, pool_dir: Path, rnd: int, fdd, seed: int, kb_path: Path, ns,
                    description: str, joined, gen, batch_size: int, progress: bool = True
                    ) -> Callable[[StageContext], dict[str, Any]]:
    """Round ``rnd``'s knowledge: ``knowledge.jsonl`` (per problem of its pairs, the block) and
    ``counterfactual.jsonl`` (+ ``rejected.jsonl``), by ``joined.counterfactual_by``."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        pairs = round_pairs(pool_dir, fdd.thoughts, rnd, fdd.retrain, fdd.replay, seed)(ctx)
        pool = {r["id"]: r for r in read_jsonl(pool_dir / POOL)}
        rename = joined.counterfactual > 0 and joined.counterfactual_by == "rename"
        blocks, items = example_blocks(
            kb_path, sorted({p["id"] for p in pairs}), {i: r["question"] for i, r in pool.items()},
            ns.model_copy(update={"augment": "all"}), description, sentences=rename)
        write_jsonl(ctx.out / KNOWLEDGE, blocks)
        share, usage = joined.counterfactual, {}
        if not share or fdd.thoughts == "pot":
            kept, rejected = [], []
        elif joined.counterfactual_by == "rename":
            kept, rejected = _renamed(pool, blocks, share, seed + rnd, items)
        else:
            kept, rejected, usage = _counterfactuals(make_teacher, pool, blocks, share,
                                                     seed + rnd, gen, batch_size, progress)
        write_jsonl(ctx.out / COUNTERFACTUAL, kept)
        write_jsonl(ctx.out / "rejected.jsonl", rejected)
        return {"round": rnd, "problems": len(blocks),
                "with_knowledge": sum(b["knowledge"] is not None for b in blocks),
                "carrying_own_entry": sum(b["own_entry"] for b in blocks),
                "counterfactual": len(kept), "counterfactual_rejected": len(rejected),
                "rejected_reasons": dict(Counter(r["reason"] for r in rejected)), **usage}

    return fn


def knowledge_round_pairs(pool_dir: Path, rnd: int, fdd, seed: int, knowledge_dir: Path,
                          add: bool = False) -> Callable[[StageContext], list[dict[str, Any]]]:
    """Round ``rnd``'s pairs (:func:`..fdd.stages.round_pairs`), each prompt with the block of
    its problem (``knowledge_dir``: the round's knowledge stage); a problem with a
    counterfactual has its (first) CoT pair replaced by it (``add``: it comes just before)."""
    plain = round_pairs(pool_dir, fdd.thoughts, rnd, fdd.retrain, fdd.replay, seed)

    def fn(ctx: StageContext) -> list[dict[str, Any]]:
        pairs = plain(ctx)
        questions = {r["id"]: r["question"] for r in read_jsonl(pool_dir / POOL)}
        know = read_jsonl(knowledge_dir / KNOWLEDGE)
        blocks = {b["id"]: b["knowledge"] for b in know}
        maps = {b["id"]: b.get("abstracted", []) for b in know}  # [retrieval] abstract
        counter = {c["id"]: c for c in read_jsonl(knowledge_dir / COUNTERFACTUAL)}
        make = {"cot": student_prompt, "pot": pot_prompt}
        out = []
        for p in pairs:
            i, block, m = p["id"], blocks[p["id"]], maps[p["id"]]
            if p["task"] == "cot" and i in counter:
                c = counter.pop(i)  # abstracted like its true pair (the same names)
                out.append({**p, "prompt": student_prompt(*apply_prompt(
                    c["question"], c["knowledge"], m)), "completion": apply(
                    " " + c["rationale"], m), "task": "cf-cot"})
                if not add:
                    continue
            out.append({**p, "prompt": make[p["task"]](*apply_prompt(questions[i], block, m)),
                        "completion": apply(p["completion"], m),
                        "task": f"kb-{p['task']}" if block else p["task"]})
        write_json(ctx.out / "mixture.json", {
            "pairs_per_task": dict(Counter(p["task"] for p in out)), "problems": len(blocks),
            "with_knowledge": sum(b is not None for b in blocks.values())})
        return out

    return fn
