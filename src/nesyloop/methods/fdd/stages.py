"""FDD's stages (Feedback-Driven Distillation, Zhu et al., arXiv 2411.14698), each a plain
function of its inputs on disk.

- ``programs``: teacher PoT rationales for the training problems, kept when the program runs in
  the sandbox and returns the gold answer.
- ``pool``: the round-0 pool, one record per training problem with its kept CoT rationales and
  programs (``pool.jsonl``, plus ``cot.jsonl``: one line per rationale).
- ``feedback``: the current student answers the seed problems; easy = at least m of k right.
- ``evolve``: the teacher writes harder variants of easy problems and similar problems for hard
  ones, solves them (CoT and PoT, or k CoT samples), and a problem is kept when the answers
  agree and it duplicates neither the pool nor an evaluation item.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...io import read_jsonl, write_jsonl
from ...kb.abstract import restore
from ...runs.rundir import StageContext
from ...scoring import answers_match
from ...synth.filters import LeakageIndex, NearDuplicateIndex
from ...tasks.base import Example
from ..common import StudentFactory, load_split, student_engine
from ..thoughts import answer, thought_pairs

POOL = "pool.jsonl"
COT = "cot.jsonl"  # one line per CoT rationale of the pool: {id, question, rationale}
FEEDBACK = "demos.jsonl"  # the same format as NesyCD's demonstrations


def write_pool(out: Path, pool: list[dict[str, Any]]) -> None:
    write_jsonl(out / POOL, pool)
    write_jsonl(out / COT, ({"id": r["id"], "question": r["question"], "rationale": t}
                            for r in pool for t in r["rationales"]))


def pool_stats(pool: list[dict[str, Any]]) -> dict[str, Any]:
    return {"pool": len(pool), "origin": dict(Counter(r["origin"] for r in pool)),
            "with_cot": sum(bool(r["rationales"]) for r in pool),
            "with_pot": sum(bool(r["programs"]) for r in pool)}


# --- initialisation ---------------------------------------------------------------------------
def programs_stage(make_teacher, data_dir: Path, gen, batch_size: int, progress: bool = True
                   ) -> Callable[[StageContext], dict[str, Any]]:
    def fn(ctx: StageContext) -> dict[str, Any]:
        from ...roles.pot import distill_programs

        teacher, close = make_teacher()
        try:
            kept, rejected = distill_programs(teacher, load_split(data_dir, "train"), gen,
                                              batch_size, progress)
        finally:
            usage = close()
        write_jsonl(ctx.out / "kept.jsonl", kept)
        write_jsonl(ctx.out / "rejected.jsonl", rejected)
        reasons = Counter(r["reason"].split(":")[0].split(" (")[0] for r in rejected)
        return {"kept": len(kept), "rejected": len(rejected), "rejected_reasons": dict(reasons),
                **usage}

    return fn


def pool0_stage(data_dir: Path, rat_dir: Path, prog_dir: Path | None
                ) -> Callable[[StageContext], dict[str, Any]]:
    def fn(ctx: StageContext) -> dict[str, Any]:
        cots: dict[str, list[str]] = {}
        for r in read_jsonl(rat_dir / "kept.jsonl"):
            cots.setdefault(r["id"], []).append(r["rationale"])
        progs: dict[str, list[str]] = {}
        if prog_dir is not None:
            for r in read_jsonl(prog_dir / "kept.jsonl"):
                progs.setdefault(r["id"], []).append(r["program"])
        pool = [{"id": ex.id, "question": ex.question, "answer": ex.answer,
                 "answer_type": ex.answer_type, "options": ex.options,
                 "rationales": cots.get(ex.id, []), "programs": progs.get(ex.id, []),
                 "origin": "train", "round": 0, "parent": None}
                for ex in load_split(data_dir, "train")]
        write_pool(ctx.out, pool)
        return {**pool_stats(pool), "new": len(pool)}

    return fn


def seed_records(pool_dir: Path, seeds: str, rnd: int) -> list[dict[str, Any]]:
    """The problems a round's feedback is about: the whole pool, or those added in ``rnd``."""
    pool = read_jsonl(pool_dir / POOL)
    return pool if seeds == "pool" else [r for r in pool if r["round"] == rnd]


# --- feedback ---------------------------------------------------------------------------------
# per question: its knowledge block, what was retrieved, the placeholders of the block's entities
Retrieve = Callable[[list[str]], tuple[list[str | None], list[list[dict[str, Any]]],
                                       list[list[tuple[str, str]]]]]


def feedback_stage(student: StudentFactory, model: Path, pool_dir: Path, rnd: int, fdd,
                   max_new_tokens: int, seed: int, retrieve: Retrieve | None = None
                   ) -> Callable[[StageContext], dict[str, Any]]:
    """The student on the round's seed problems (``fdd.seeds``, at most ``fdd.max_seeds``):
    ``demos.jsonl`` (NesyCD's format, so wrong answers can go to error analysis) with
    ``n_correct`` and ``easy`` per problem. ``retrieve`` (the joined loop): each question's
    knowledge block goes before it, as at inference (recorded as ``knowledge``/``retrieved``)."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        recs = seed_records(pool_dir, fdd.seeds, rnd)
        if fdd.max_seeds is not None and len(recs) > fdd.max_seeds:
            recs = sorted(random.Random(seed + rnd).sample(recs, fdd.max_seeds),
                          key=lambda r: r["id"])
        examples = [Example.from_dict(r) for r in recs]
        blocks, found, maps = retrieve([r["question"] for r in recs]) if retrieve \
            else (None, None, [[] for _ in recs])
        with student_engine(student, model, ctx) as backend:
            answers = answer(backend, examples, fdd.inference, max_new_tokens, knowledge=blocks,
                             n=fdd.feedback_samples, temperature=fdd.feedback_temperature,
                             seed=seed, mappings=maps)
        out = []
        for k, (r, ans) in enumerate(zip(recs, answers, strict=True)):
            n_ok = sum(a["correct"] for a in ans)
            first = ans[0]
            out.append({"id": r["id"], "question": r["question"], "answer": r["answer"],
                        "input": first["prompt"],
                        # the teacher analyses the rationale with the block's own names
                        "response": restore(first["output"], maps[k]),
                        "pred": first["pred"], "correct": first["correct"], "n_correct": n_ok,
                        "easy": n_ok >= fdd.feedback_min_correct, "round": rnd})
            if blocks is not None:
                out[-1].update(knowledge=blocks[k], retrieved=found[k],
                               **({"abstracted": maps[k]} if maps[k] else {}))
        write_jsonl(ctx.out / FEEDBACK, out)
        easy = sum(r["easy"] for r in out)
        return {"n": len(out), "correct": sum(r["correct"] for r in out),
                "wrong": sum(not r["correct"] for r in out), "easy": easy,
                "hard": len(out) - easy, "round": rnd,
                **({"with_knowledge": sum(b is not None for b in blocks)} if blocks else {})}

    return fn


# --- data evolution ---------------------------------------------------------------------------
def eval_items(data_dir: Path) -> list[tuple[str, str]]:
    """(split/id, question) of every evaluation item in the run's data (all splits but train)."""
    items = []
    for path in sorted(data_dir.glob("*.jsonl")):
        if path.stem != "train":
            items += [(f"{path.stem}/{r['id']}", r["question"]) for r in read_jsonl(path)]
    return items


def _agree(cands: list[dict[str, Any]], cot: list[list[dict]], pot: list[list[dict]] | None,
           fdd) -> None:
    """Set ``answer``/``rationales``/``programs`` or a ``reason`` on each candidate."""
    for c, cs, ps in zip(cands, cot, pot or [None] * len(cands), strict=True):
        preds = [r["pred"] for r in cs]
        failed = [r["teacher_error"] for r in [*cs, *(ps or [])] if r.get("teacher_error")]
        if failed:  # not solved: the problem is rejected, a re-run asks again
            c["reason"] = f"teacher request failed: {failed[0]}"
            continue

        def same(a, b, c=c):
            return answers_match(a, b, c["answer_type"], c["options"])

        if fdd.agreement == "majority":
            votes = Counter(p for p in preds if p is not None)
            top, count = votes.most_common(1)[0] if votes else (None, 0)
            if count * 2 <= len(preds):
                c["reason"] = f"no majority among {len(preds)} teacher answers ({preds})"
                continue
            value = top
        else:
            prog = ps[0] if ps else None
            if preds[0] is None:
                c["reason"] = "teacher CoT gave no final answer"
                continue
            if prog is None or prog["value"] is None:
                verdict = prog["verdict"] if prog else "no program"
                c["reason"] = f"teacher program gave no answer ({verdict})"
                continue
            if not same(prog["value"], preds[0]):
                c["reason"] = f"CoT and PoT disagree ({preds[0]} vs {prog['value']})"
                continue
            value = preds[0]
        c["answer"] = value
        c["rationales"] = [r["rationale"] for r in cs if same(r["pred"], value)][:1]
        c["programs"] = [p["program"] for p in (ps or [])
                         if p["value"] is not None and same(p["value"], value)]


def evolve_stage(make_teacher, pool_dir: Path, feedback_dir: Path, data_dir: Path, rnd: int,
                 fdd, teacher_gen: Callable[[int], Any], batch_size: int, progress: bool = True
                 ) -> Callable[[StageContext], dict[str, Any]]:
    """Round ``rnd``'s new problems, filtered, and the grown pool (``pool.jsonl``)."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        from ...roles.base import run_role
        from ...roles.evolve import EvolveRole
        from ...roles.pot import teacher_programs
        from ...roles.rationale import RationaleRole

        pool = read_jsonl(pool_dir / POOL)
        fb = read_jsonl(feedback_dir / FEEDBACK)
        for f in fb:  # NesyCD's demonstrations (round 0) have one greedy answer each
            f.setdefault("easy", f["correct"])
        by_id = {r["id"]: r for r in pool}
        rejected: list[dict[str, Any]] = []
        cands: list[dict[str, Any]] = []
        teacher, close = make_teacher()
        try:
            for kind, easy in (("harder", True), ("similar", False)):
                seeds = [Example.from_dict(by_id[f["id"]]) for f in fb if f["easy"] == easy]
                per_seed = run_role(teacher, EvolveRole(kind), seeds,
                                    teacher_gen(fdd.n_variants(kind)), batch_size,
                                    desc=f"evolve ({kind})", progress=progress)
                for ex, recs in zip(seeds, per_seed, strict=True):
                    for j, rec in enumerate(recs):
                        rec.update(id=f"{ex.id}~r{rnd}{kind[0]}{j}",
                                   answer_type=ex.answer_type, options=ex.options)
                        (rejected if rec["reason"] else cands).append(rec)
            generated = len(cands) + len(rejected)
            cands = _filter_copies(cands, pool, data_dir, fdd, rejected)
            exs = [Example(id=c["id"], question=c["question"], answer="",
                           answer_type=c["answer_type"], options=c["options"]) for c in cands]
            k = fdd.majority_samples if fdd.agreement == "majority" else 1
            # no gold yet: only each reply's extracted answer (``pred``) is used
            cot = run_role(teacher, RationaleRole(), exs, teacher_gen(k), batch_size,
                           desc="solve (CoT)", progress=progress)
            need_pot = fdd.agreement == "cot-pot" or fdd.thoughts != "cot"
            pot = teacher_programs(teacher, exs, teacher_gen(1), batch_size, progress,
                                   desc="solve (PoT)") if need_pot else None
        finally:
            usage = close()
        _agree(cands, cot, pot, fdd)
        new: list[dict[str, Any]] = []
        for c in cands:
            if c.get("reason"):
                rejected.append(c)
                continue
            new.append({"id": c["id"], "question": c["question"], "answer": c["answer"],
                        "answer_type": c["answer_type"], "options": c["options"],
                        "rationales": c["rationales"], "programs": c["programs"],
                        "origin": c["kind"], "round": rnd, "parent": c["parent"]})
        grown = pool + new
        write_pool(ctx.out, grown)
        write_jsonl(ctx.out / "new.jsonl", new)
        write_jsonl(ctx.out / "rejected.jsonl", rejected)
        reasons = Counter(_reason_kind(r["reason"]) for r in rejected)
        return {**pool_stats(grown), "round": rnd, "seeds": len(fb),
                "easy": sum(f["easy"] for f in fb), "hard": sum(not f["easy"] for f in fb),
                "generated": generated, "new": len(new),
                "new_by_kind": dict(Counter(r["origin"] for r in new)),
                "rejected": len(rejected), "rejected_reasons": dict(reasons), **usage}

    return fn


def _filter_copies(cands: list[dict[str, Any]], pool: list[dict[str, Any]], data_dir: Path, fdd,
                   rejected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop exact/near duplicates of the pool (and of earlier candidates) and problems that
    overlap an evaluation split, before the teacher is asked to solve them."""
    dup = NearDuplicateIndex(fdd.near_duplicate)
    texts = [r["question"] for r in pool]
    dup.add_all(texts)
    leak = LeakageIndex(eval_items(data_dir), fdd.leak_ngram, fdd.leak_threshold)
    held = held_out_phrases(data_dir)
    out = []
    for c in cands:
        hit = dup.find(c["question"])
        if hit is not None:
            c["reason"] = f"{hit[0]} duplicate of the pool ({texts[hit[1]][:60]}...)"
        elif (lk := leak.overlap(c["question"])) is not None:
            c["reason"] = f"overlaps an evaluation item ({lk[0]}, {lk[1]:.0%} of n-grams)"
        elif (name := held(c["question"])) is not None:
            c["reason"] = f"uses a held-out fact ({name!r})"
        if c.get("reason"):
            rejected.append(c)
            continue
        dup.add(c["question"])
        texts.append(c["question"])
        out.append(c)
    return out


def held_out_phrases(data_dir: Path) -> Callable[[str], str | None]:
    """The data stage's held-out facts (``held-out.json``, when the task holds facts out): a
    function giving the first phrase of one that a question names (case ignored), or None."""
    import json
    import re

    path = data_dir / "held-out.json"
    phrases = json.loads(path.read_text(encoding="utf-8"))["phrases"] if path.exists() else []
    if not phrases:
        return lambda question: None
    pattern = re.compile(r"(?<![a-z])(" + "|".join(map(re.escape, phrases)) + ")")

    def find(question: str) -> str | None:
        m = pattern.search(question.lower())
        return None if m is None else m.group(1)

    return find


def _reason_kind(reason: str) -> str:
    """A reason without its specifics, for the tally (``"near duplicate of the pool"``)."""
    return reason.split(" (")[0]


# --- training pairs ---------------------------------------------------------------------------
def round_pairs(pool_dir: Path, thoughts: str, rnd: int, retrain: str, replay: float, seed: int
                ) -> Callable[[StageContext], list[dict[str, str]]]:
    """The pool's training pairs; with ``retrain = "continue"``, the pairs of this round's new
    problems plus ``replay`` old pairs per new pair (sampled). Round 0 continuing (from S_P,
    which already learnt the CoT pairs; mixed thoughts only): the programs, plus ``replay``
    replayed CoT pairs per program when the student keeps both thoughts."""

    def fn(_ctx: StageContext) -> list[dict[str, str]]:
        pool = read_jsonl(pool_dir / POOL)
        if retrain == "base" or (rnd == 0 and thoughts == "cot"):
            return thought_pairs(pool, thoughts)
        if rnd == 0:
            new = thought_pairs(pool, "pot")
            old = thought_pairs(pool, "cot") if thoughts == "both" else []
        else:
            new = thought_pairs([r for r in pool if r["round"] == rnd], thoughts)
            old = thought_pairs([r for r in pool if r["round"] != rnd], thoughts)
        k = min(len(old), round(len(new) * replay))
        return new + random.Random(seed + rnd).sample(old, k)

    return fn

