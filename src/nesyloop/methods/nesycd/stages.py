"""NesyCD's stages (Liao et al., AAAI 2025), each a plain function of its inputs on disk.

1. ``demos``: the CoT student S_P answers every training question (its demonstrations).
2. ``kb``: the teacher analyses each wrong answer; parsed replies become entries of a SQLite
   knowledge base (``kb/kb.sqlite``); replies that do not parse are kept with their reason.
3. ``train-nesycd``: S_E is trained on a mixture of knowledge-augmented CoT (questions S_P got
   wrong, with retrieved knowledge before the question), plain CoT and answer prediction.
4. prediction with retrieval: retrieve, insert, generate (optionally gated by confidence).

``kard`` reuses 3 and 4 with a KB of raw training rationales instead of teacher knowledge.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...io import read_jsonl, write_json, write_jsonl
from ...kb import abstract
from ...kb.abstract import Mapping
from ...kb.retrieve import Retriever, knowledge_text
from ...kb.counterfactual import rename_entity
from ...kb.store import KnowledgeBase, copy_kb
from ...runs.rundir import StageContext
from ...scoring import score_output
from ...students.prompt import answer_prompt, answer_target, student_prompt
from ...tasks.base import Example
from ..common import PromptFn, StudentFactory, generate_records, load_split, student_engine

KB_FILE = "kb.sqlite"


def task_description(cfg) -> str:
    if cfg.nesycd.task_description is not None:
        return cfg.nesycd.task_description
    if cfg.task.name == "bazaar":
        from ...tasks.bazaar import DESCRIPTION

        return DESCRIPTION
    return ""


# --- 1. demonstration collection ----------------------------------------------------------------
def demos_stage(student: StudentFactory, model: str | Path, data_dir: Path, max_new_tokens: int
                ) -> Callable[[StageContext], dict[str, Any]]:
    """S_P on the training split: input, response, extracted answer and correctness per example."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        examples = load_split(data_dir, "train")
        prompts = [student_prompt(ex.question) for ex in examples]
        with student_engine(student, model, ctx) as backend:
            records = generate_records(backend, examples, prompts, max_new_tokens)
        out = []
        for r in records:
            s = score_output(r["output"], r["gold"], r["answer_type"], r["options"])
            out.append({"id": r["id"], "question": r["question"], "answer": r["gold"],
                        "input": r["prompt"], "response": r["output"],
                        "pred": s["strict_pred"], "correct": bool(s["strict"])})
        write_jsonl(ctx.out / "demos.jsonl", out)
        n_ok = sum(r["correct"] for r in out)
        return {"n": len(out), "correct": n_ok, "wrong": len(out) - n_ok,
                "accuracy": round(n_ok / max(1, len(out)), 4)}

    return fn


# --- 2. symbolic knowledge distillation ------------------------------------------------------
def kb_stage(make_teacher: Callable[[], Any], sources: list[tuple[Path, int]], gen,
             demonstrations: int, max_words: int, batch_size: int, run_name: str,
             teacher_name: str, previous: Path | None = None, progress: bool = True,
             start_from: Path | None = None) -> Callable[[StageContext], dict[str, Any]]:
    """Error analysis of every wrong demonstration into ``kb.sqlite`` (+ entries/rejected JSONL).
    ``sources``: (folder with ``demos.jsonl``, round) pairs; each entry records its round.
    ``start_from``: a KB whose copy the new entries are added to (the joined loop's KB grows
    round by round; each round's KB stays as it was).

    A KB about to be replaced that people have edited (``previous``) is copied to
    ``<run>/kb-backups/`` first, so a rebuild never loses human work."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        from ...roles.error_analysis import analyse_errors

        info: dict[str, Any] = {}
        if previous is not None and previous.exists() and _edited(previous):
            stamp = time.strftime("%Y%m%d-%H%M%S")
            backup = previous.parent.parent / "kb-backups" / f"kb-{stamp}.sqlite"
            backup.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(previous, backup)
            info["backup_of_edited_kb"] = str(backup)
        wrong = [{**d, "round": rnd} for folder, rnd in sources
                 for d in read_jsonl(folder / "demos.jsonl") if not d["correct"]]
        teacher, close = make_teacher()
        try:
            entries, rejected = analyse_errors(teacher, wrong, gen, demonstrations, max_words,
                                               batch_size, progress)
        finally:
            usage = close()
        if start_from is not None:
            copy_kb(start_from, ctx.out / KB_FILE)
            info["grown_from"] = start_from.parent.name
        with KnowledgeBase(ctx.out / KB_FILE) as kb:
            before = len(kb.list())
            ids = kb.add_many(dict(summary=e["summary"], knowledge=e["knowledge"],
                                   source_id=e["id"], question=e["question"],
                                   student_response=e["student_response"],
                                   teacher=teacher_name, run=run_name, round=e["round"])
                              for e in entries)
            for e, i in zip(entries, ids, strict=True):
                e["entry_id"] = i
            info["kb_entries"] = before + len(entries)
        write_jsonl(ctx.out / "entries.jsonl", entries)
        write_jsonl(ctx.out / "rejected.jsonl", rejected)
        reasons = dict(Counter(r["reason"] for r in rejected))
        return {**info, "wrong_demos": len(wrong), "entries": len(entries),
                "entries_per_round": dict(Counter(str(e["round"]) for e in entries)),
                "rejected": len(rejected), "rejected_reasons": reasons,
                "repetition_cut": sum(e["cleaning"]["repetition_cut"] for e in entries),
                "truncated": sum(e["cleaning"]["truncated"] for e in entries), **usage}

    return fn


def _edited(path: Path) -> bool:
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM history WHERE action != 'add'").fetchone()[0] > 0
    except sqlite3.DatabaseError:
        return True  # unreadable: keep a copy rather than guess
    finally:
        db.close()


def kard_kb_stage(rat_dir: Path) -> Callable[[StageContext], dict[str, Any]]:
    """KARD-style knowledge: a KB whose entries are raw training rationales (one per question)."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        seen: set[str] = set()
        rows = []
        for r in read_jsonl(rat_dir / "kept.jsonl"):
            if r["id"] not in seen:
                seen.add(r["id"])
                rows.append(dict(summary=f"Worked example: {r['question']}",
                                 knowledge=[r["rationale"]], source_id=r["id"],
                                 question=r["question"], teacher="training rationale", round=0))
        with KnowledgeBase(ctx.out / KB_FILE) as kb:
            kb.add_many(rows)
        return {"entries": len(seen)}

    return fn


# --- 3. S_E's multi-task training data ----------------------------------------------------------
def _copies(rng: random.Random, weight: float) -> int:
    whole = int(weight)
    return whole + (rng.random() < weight - whole)


def _with_knowledge(rng: random.Random, ns, make: Callable[..., str], question: str,
                    block: str | None, target: str, task: str, mapping=()) -> list[dict]:
    """``mix.cot`` plain copies of one training target and, when the example carries knowledge,
    ``mix.kb_cot`` copies with the block before the question (task ``kb-<task>``; its entities
    abstracted by ``mapping``)."""
    out = [{"prompt": make(question), "completion": target, "task": task}
           for _ in range(_copies(rng, ns.mix.cot))]
    if block:
        q, b = abstract.apply_prompt(question, block, mapping)
        t = abstract.apply(target, mapping)
        out += [{"prompt": make(q, b), "completion": t, "task": f"kb-{task}"}
                for _ in range(_copies(rng, ns.mix.kb_cot))]
    return out


def _renamed(pair: dict, question: str, block: str | None, items: list[str],
             rng: random.Random, share: float) -> dict:
    """``pair``, or, for a knowledge-augmented one with probability ``share``, the same with an
    entity renamed everywhere (``[nesycd] rename``; :func:`..kb.counterfactual.rename_entity`)."""
    if not block or not pair["task"].startswith("kb-") or rng.random() >= share:
        return pair
    out = rename_entity(question, block, pair["completion"], items, rng)
    if out is None:
        return pair
    return {"prompt": student_prompt(out[0], out[1]), "completion": out[2], "task": "cf-kb-cot"}


def training_hits(kb: KnowledgeBase, own: dict[str, list], ids: list[str],
                   questions: dict[str, str], ns, description: str, exclude_own: bool
                   ) -> list[list]:
    """The entries each training example carries: its own (``train_knowledge = "own"``; an
    example without one, under ``augment = "all"``, retrieves) or retrieved ones (leaving out
    its own with ``exclude_own``)."""
    use_own = ns.train_knowledge == "own" and not exclude_own
    ask = [i for i in ids if not use_own or (ns.augment == "all" and not own.get(i))]
    found: dict[str, list] = {}
    if ask:
        retriever = Retriever(kb, ns.retrieval, description)
        excl = [[e.id for e in own.get(i, [])] if exclude_own else [] for i in ask]
        found = dict(zip(ask, retriever.retrieve_many([questions[i] for i in ask],
                                                      exclude=excl), strict=True))
    return [found[i] if i in found else [(e, 0.0) for e in own.get(i, [])[:ns.retrieval.top_k]]
            for i in ids]


def example_blocks(kb_path: Path, ids: list[str], questions: dict[str, str], ns,
                   description: str, exclude_own: bool = False, sentences: bool = False
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    """Per training example ``ids`` (sorted): the knowledge block it carries
    (:func:`training_hits`), the entries behind it and whether its own entry is one; and,
    with ``sentences``, the KB's distinct knowledge sentences (for renaming)."""
    with KnowledgeBase(kb_path) as kb:
        entries = kb.list(enabled_only=True)
        own: dict[str, list] = {}
        for e in entries:
            if e.source_id is not None:
                own.setdefault(e.source_id, []).append(e)
        hits = training_hits(kb, own, ids, questions, ns, description, exclude_own)
    items = sorted({k for e in entries for k in e.knowledge}) \
        if sentences or ns.retrieval.abstract else []
    out = [{"id": i, "entries": [e.id for e, _ in h],
            "own_entry": any(e.source_id == i for e, _ in h),
            "knowledge": knowledge_text([e for e, _ in h], ns.retrieval.insert)}
           for i, h in zip(ids, hits, strict=True)]
    if ns.retrieval.abstract:
        names = abstract.Abstractor(items)
        for x in out:
            x["abstracted"] = names.mapping(questions[x["id"]], x["knowledge"])
    return out, items


def se_pairs(problems_file: Path, cot_file: Path, demos_files: list[Path], kb_path: Path, ns,
             description: str, seed: int, exclude_own: bool = False,
             ) -> Callable[[StageContext], list[dict]]:
    """The mixture for S_E (see docs/methods.md) over the problems of ``problems_file`` (JSONL
    examples), their CoT rationales (``cot_file``: id, question, rationale) and the student's
    wrong answers (``demos_files``). Every pair has a ``task`` field; the knowledge each
    augmented example carried is written to ``knowledge.jsonl`` in the stage folder.
    ``exclude_own`` (kard) always retrieves, leaving out the example's own entries."""

    def fn(ctx: StageContext) -> list[dict]:
        wrong = {d["id"] for f in demos_files for d in read_jsonl(f) if not d["correct"]}
        kept = read_jsonl(cot_file)
        problems = read_jsonl(problems_file)
        questions = {r["id"]: r["question"] for r in kept}
        if ns.augment == "wrong":
            questions = {i: q for i, q in questions.items() if i in wrong}
        ids = sorted(questions)
        log, items = example_blocks(kb_path, ids, questions, ns, description, exclude_own,
                                    sentences=bool(ns.rename))
        blocks = {x["id"]: x["knowledge"] for x in log}
        maps = {x["id"]: x.get("abstracted", []) for x in log}
        write_jsonl(ctx.out / "knowledge.jsonl", log)
        rng, renames = random.Random(seed), random.Random(seed + 1)
        pairs: list[dict] = []
        for r in kept:
            block = blocks.get(r["id"])
            pairs += [_renamed(p, r["question"], block, items, renames, ns.rename)
                      for p in _with_knowledge(rng, ns, student_prompt, r["question"], block,
                                               " " + r["rationale"], "cot",
                                               maps.get(r["id"], []))]
        for ex in (Example.from_dict(d) for d in problems):
            for _ in range(_copies(rng, ns.mix.answer)):
                pairs.append({"prompt": answer_prompt(ex.question),
                              "completion": answer_target(ex.answer), "task": "answer"})
        write_json(ctx.out / "mixture.json", {
            "pairs_per_task": dict(Counter(p["task"] for p in pairs)),
            "wrong_with_rationale": len(ids),
            "with_knowledge": sum(bool(b) for b in blocks.values()),
            "carrying_own_entry": sum(x["own_entry"] for x in log)})
        return pairs

    return fn


# --- 4. inference with retrieval -------------------------------------------------------------
def retrieved_blocks(kb_path: Path, ns, description: str, questions: list[str]
                     ) -> tuple[list[str | None], list[list[dict[str, Any]]], list[Mapping]]:
    """Per question, the knowledge block retrieval finds in ``kb_path`` (None: nothing), what
    was retrieved (entry id and score) and, with ``retrieval.abstract``, the placeholders of the
    block's entities (:mod:`..kb.abstract`; [] otherwise)."""
    with KnowledgeBase(kb_path) as kb:
        hits = Retriever(kb, ns.retrieval, description).retrieve_many(questions)
        blocks = [knowledge_text([e for e, _ in h], ns.retrieval.insert) for h in hits]
        maps: list[Mapping] = [[] for _ in questions]
        if ns.retrieval.abstract:
            names = abstract.Abstractor.of_kb(kb)
            maps = [names.mapping(q, b) for q, b in zip(questions, blocks, strict=True)]
    return blocks, [[{"id": e.id, "score": round(s, 4)} for e, s in h] for h in hits], maps


def retrieval_prompts(kb_path: Path, ns, description: str, gate: bool,
                      ) -> tuple[PromptFn, Callable[[list[dict[str, Any]]], None]]:
    """A prompt builder for :func:`predict_stage`: retrieve, insert (unless the gate says the
    student is confident), and record what was retrieved; plus the hook that counts retrievals."""

    def prompts(examples: list[Example], backend) -> tuple[list[str], list[dict[str, Any]]]:
        plain = [student_prompt(ex.question) for ex in examples]
        conf = backend.confidence(plain, ns.gate_tokens) if gate else [None] * len(examples)
        blocks, found, maps = retrieved_blocks(kb_path, ns, description,
                                               [ex.question for ex in examples])
        out, extra = [], []
        for ex, p, block, f, m, c in zip(examples, plain, blocks, found, maps, conf,
                                         strict=True):
            gated = c is not None and c >= ns.gate_threshold
            block = None if gated else block
            out.append(student_prompt(*abstract.apply_prompt(ex.question, block, m))
                       if block else p)
            extra.append({"retrieved": [] if gated else f, "knowledge": block,
                          "confidence": c, "gated": gated,
                          **({"abstracted": m} if block and m else {})})
        return out, extra

    def count(records: list[dict[str, Any]]) -> None:
        ids = [r["id"] for rec in records for r in rec.get("retrieved", [])]
        if ids:
            with KnowledgeBase(kb_path) as kb:
                kb.mark_retrieved(ids)

    return prompts, count


def kb_version(kb_path: Path) -> str:
    with KnowledgeBase(kb_path) as kb:
        return kb.version()
