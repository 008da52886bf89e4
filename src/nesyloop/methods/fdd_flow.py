"""How ``fdd`` and ``nesycd+fdd`` compose the stages of :mod:`nesyloop.methods.fdd`.

Round 0 is the initial student on the initial pool (with CoT thoughts it *is* std-cot's S_P and
its feedback *is* NesyCD's demonstration stage: the stages are shared; with mixed thoughts and
``retrain = "continue"`` it is S_P taught the programs, with replayed CoT). Round r >= 1:
feedback of S_{r-1} on the seed problems -> evolve (pool r) -> train S_r -> evaluate. The
``nesycd+fdd`` loop then sends every round's wrong answers to the teacher's error analysis
(one KB, each entry with its round) and trains the final student NesyCD-style from the last
FDD student on the final pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..runs.rundir import StageResult
from .common import train_stage
from .fdd import (
    COT,
    FEEDBACK,
    POOL,
    evolve_stage,
    feedback_stage,
    pool0_stage,
    programs_stage,
    round_pairs,
)
from .flows import error_kb, kb_predict_settings, sp_student, teacher_settings
from .nesycd import KB_FILE, retrieval_prompts, se_pairs, task_description


@dataclass
class Round:
    index: int
    pool: StageResult
    model: StageResult
    metrics: dict[str, Any] | None = None
    feedback: StageResult | None = None

    def dev(self) -> float | None:
        m = (self.metrics or {}).get("dev")
        return None if m is None else 100.0 * m["strict"]


def _row(r: int) -> str:
    return f"fdd-r{r}"


def _pool0(p, data: StageResult, rat: StageResult) -> StageResult:
    f, t = p.cfg.fdd, p.cfg.teacher
    prog = None
    if f.thoughts != "cot":
        prog = p.run.stage("programs", {**t.identity(), "seed": p.cfg.run.seed},
                           programs_stage(p.teacher, data.path, p.teacher_gen(), t.batch_size,
                                          p.cfg.run.progress), deps=[data])
    return p.run.stage("fdd-pool-r0", {"programs": prog is not None},
                       pool0_stage(data.path, rat.path, prog.path if prog else None),
                       deps=[data, rat, *([prog] if prog else [])])


def _train(p, rnd: int, pool: StageResult, prev: StageResult | None, init) -> StageResult:
    f = p.cfg.fdd
    if rnd == 0 and f.thoughts == "cot":
        return sp_student(p, p.run.results["data"], init, p.run.results["rationales"])
    if f.retrain == "continue" and rnd == 0:  # mixed thoughts: S_P learns the programs
        prev = sp_student(p, p.run.results["data"], init, p.run.results["rationales"])
    if f.retrain == "continue" and prev is not None:
        base, base_deps, base_settings = prev.path / "model", [prev], {"base": prev.name}
    else:
        base, base_deps, base_settings = p.base_model(init)
    train = p.cfg.train_for("fdd")
    settings = {**base_settings, "train": train.model_dump(mode="json"), "round": rnd,
                **f.model_dump(mode="json", include={"thoughts", "retrain", "replay"}),
                "seed": p.cfg.run.seed}
    pairs = round_pairs(pool.path, f.thoughts, rnd, f.retrain, f.replay, p.cfg.run.seed)
    return p.run.stage(f"train-{_row(rnd)}", settings, train_stage(base, pairs, train),
                       deps=[pool, *base_deps])


def _evaluate(p, rnd: int, model: StageResult, data: StageResult, until: str | None):
    f = p.cfg.fdd
    if rnd == 0 and f.thoughts == "cot":  # std-cot's own evaluation (the same stages)
        return p.method("std-cot", data, p.run.results.get("student-init"),
                        p.run.results["rationales"], until)
    return p.evaluate(_row(rnd), model.path / "model", data, [model], {"model": model.name},
                      until, inference=f.inference)


def _feedback(p, rnd: int, model: StageResult, pool: StageResult) -> StageResult:
    f, ev = p.cfg.fdd, p.cfg.eval
    if rnd == 0 and f.thoughts == "cot" and f.feedback_samples == 1 and f.max_seeds is None:
        # S_P on the training problems: NesyCD's demonstrations, shared with nesycd
        from .flows import demos

        return demos(p, p.run.results["data"], model)
    settings = {"round": rnd, "eval": {"batch_size": ev.batch_size,
                                       "max_new_tokens": ev.max_new_tokens},
                "seed": p.cfg.run.seed,
                **f.model_dump(mode="json", include={"seeds", "max_seeds", "inference",
                                                     "feedback_samples", "feedback_min_correct",
                                                     "feedback_temperature"})}
    return p.run.stage(
        f"fdd-feedback-r{rnd}", settings,
        feedback_stage(model.path / "model", pool.path, rnd, f, ev.batch_size,
                       ev.max_new_tokens, p.cfg.run.seed, p.cfg.run.progress),
        deps=[pool, model])


def _evolve(p, rnd: int, pool: StageResult, feedback: StageResult, data: StageResult
            ) -> StageResult:
    f, t = p.cfg.fdd, p.cfg.teacher
    settings = {**teacher_settings(p), "round": rnd, **f.evolve_settings()}
    return p.run.stage(
        f"fdd-evolve-r{rnd}", settings,
        evolve_stage(p.teacher, pool.path, feedback.path, data.path, rnd, f, p.teacher_gen,
                     t.batch_size, p.cfg.run.progress),
        deps=[pool, feedback, data])


def fdd_rounds(p, data: StageResult, init, rat: StageResult, until: str | None,
               feedback_last: bool) -> list[Round]:
    """Rounds 0..R (fewer when the dev gain falls under ``min_dev_gain``)."""
    f = p.cfg.fdd
    pool = _pool0(p, data, rat)
    rounds = [Round(0, pool, _train(p, 0, pool, None, init))]
    evaluate = until != "train"  # ``nesyloop train``: the rounds' data and students only
    if evaluate:
        rounds[0].metrics = _evaluate(p, 0, rounds[0].model, data, until)
    for rnd in range(1, f.rounds + 1):
        prev = rounds[-1]
        prev.feedback = _feedback(p, prev.index, prev.model, prev.pool)
        pool = _evolve(p, rnd, prev.pool, prev.feedback, data)
        if pool.info["new"] == 0:
            from ..report_fdd import stop_note

            p.fdd_stop = stop_note(rnd, pool.name, pool.info)
            p.log(f"[fdd ] {p.fdd_stop}")
            break
        cur = Round(rnd, pool, _train(p, rnd, pool, prev.model, init))
        if evaluate:
            cur.metrics = _evaluate(p, rnd, cur.model, data, until)
        rounds.append(cur)
        if f.min_dev_gain is not None and cur.dev() is not None and prev.dev() is not None \
                and cur.dev() - prev.dev() < f.min_dev_gain:
            p.log(f"[fdd ] stop after round {rnd}: dev gain {cur.dev() - prev.dev():+.1f} < "
                  f"{f.min_dev_gain}")
            break
    if feedback_last:
        last = rounds[-1]
        last.feedback = _feedback(p, last.index, last.model, last.pool)
    return rounds


def final_round(rounds: list[Round]) -> Round:
    """The FDD student handed on: the best round on dev (the last one without dev scores)."""
    scored = [r for r in rounds if r.dev() is not None]
    return max(scored, key=lambda r: (r.dev(), r.index)) if scored else rounds[-1]


def run_fdd_method(p, name: str, data: StageResult, init, rat: StageResult | None,
                   until: str | None = None) -> dict[str, Any] | None:
    """``fdd`` or ``nesycd+fdd``; returns one metrics row per FDD round (and the joined one)."""
    assert rat is not None, "FDD needs teacher rationales"
    rounds = fdd_rounds(p, data, init, rat, until,
                        feedback_last=name == "nesycd+fdd" and p.cfg.fdd.final_feedback)
    p.fdd_rounds = rounds
    rows = {("std-cot" if r.index == 0 and p.cfg.fdd.thoughts == "cot" else _row(r.index)):
            r.metrics for r in rounds if r.metrics is not None}
    if name == "fdd":
        return rows if until not in ("train", "predict") else None
    res = nesycd_fdd(p, data, rounds, until)
    if res is not None:
        rows[name] = res
    return rows if until not in ("train", "predict") else None


def nesycd_fdd(p, data: StageResult, rounds: list[Round], until: str | None):
    ns = p.cfg.nesycd
    fbs = [r.feedback for r in rounds if r.feedback is not None]
    kb = error_kb(p, "kb-fdd", fbs)
    final = final_round(rounds)
    last_pool = rounds[-1].pool
    train = p.cfg.train_for("nesycd+fdd")
    description = task_description(p.cfg)
    thoughts = p.cfg.fdd.thoughts
    settings = {"base": final.model.name, "train": train.model_dump(mode="json"),
                "seed": p.cfg.run.seed,
                "nesycd": ns.model_dump(mode="json", include={"retrieval", "train_knowledge",
                                                              "mix", "task_description"}),
                **({"thoughts": thoughts} if thoughts != "cot" else {})}
    pairs = se_pairs(last_pool.path / POOL, last_pool.path / COT,
                     [fb.path / FEEDBACK for fb in fbs], kb.path / KB_FILE, ns, description,
                     p.cfg.run.seed, thoughts=thoughts)
    model = p.run.stage("train-nesycd+fdd", settings,
                        train_stage(final.model.path / "model", pairs, train),
                        deps=[last_pool, kb, final.model, *fbs])
    if until == "train":
        return None
    kb_path = kb.path / KB_FILE
    prompt_fn, after = retrieval_prompts(kb_path, ns, description, ns.gate)
    settings = {"model": model.name, **kb_predict_settings(kb_path, ns, description)}
    return p.evaluate("nesycd+fdd", model.path / "model", data, [model, kb], settings, until,
                      prompt_fn=prompt_fn, after=after, inference=p.cfg.fdd.inference)
