"""How the knowledge-base methods compose the stages of :mod:`nesyloop.methods.nesycd`.

``std-cot+kb``: S_P, retrieval at inference only. ``nesycd``: S_E with retrieval.
``nesycd-no-kb``: S_E without retrieval. ``kard``: a student trained and run with retrieved raw
training rationales instead of teacher knowledge. Stages shared by several methods (S_P, demos,
the KB, S_E) run once per run directory.
"""

from __future__ import annotations

from typing import Any

from ..runs.rundir import StageResult
from .common import train_stage
from .nesycd import (KB_FILE, demos_stage, kard_kb_stage, kb_stage, kb_version, retrieval_prompts,
                     se_pairs, task_description)

KB_METHODS = ("std-cot+kb", "nesycd", "nesycd-no-kb", "kard")


def sp_student(p, data: StageResult, init, rat: StageResult) -> StageResult:
    sp = p.train_model("std-cot", data, init, rat)
    assert sp is not None
    return sp


def demos(p, data: StageResult, sp: StageResult) -> StageResult:
    """S_P's answers to the training questions (NesyCD's demonstrations; FDD's round-0
    feedback when the student thinks in CoT)."""
    ev = p.cfg.eval
    return p.run.stage(
        "demos", {"batch_size": ev.batch_size, "max_new_tokens": ev.max_new_tokens},
        demos_stage(sp.path / "model", data.path, ev.batch_size, ev.max_new_tokens,
                    p.cfg.run.progress), deps=[data, sp])


def teacher_settings(p) -> dict[str, Any]:
    """The teacher part of a teacher stage's fingerprint settings."""
    from ..tasks.bazaar import OracleBackend

    t = p.cfg.teacher
    return {"teacher": t.identity(), "seed": p.cfg.run.seed,
            # the oracle's replies changed across versions (see OracleBackend.version)
            "teacher_version": OracleBackend.version if t.backend == "oracle" else None}


def error_kb(p, name: str, feedback: list[StageResult]) -> StageResult:
    """Teacher error analysis of the wrong answers in ``feedback`` (each stage's ``round`` in
    its info, 0 if absent) into ``<name>/kb.sqlite``."""
    ns, t = p.cfg.nesycd, p.cfg.teacher
    settings = {**teacher_settings(p), "demonstrations": ns.demonstrations,
                "max_response_words": ns.max_response_words}
    return p.run.stage(name, settings, kb_stage(
        p.teacher, [(fb.path, fb.info.get("round", 0)) for fb in feedback], p.teacher_gen(n=1),
        ns.demonstrations, ns.max_response_words, t.batch_size, run_name=p.out.name,
        teacher_name=f"{t.backend}:{t.model}", previous=p.run.path(name) / KB_FILE,
        progress=p.cfg.run.progress), deps=feedback)


def nesycd_kb(p, data: StageResult, init, rat: StageResult) -> StageResult:
    """demos (S_P on train) -> kb (teacher error analysis into kb/kb.sqlite)."""
    return error_kb(p, "kb", [demos(p, data, sp_student(p, data, init, rat))])


def trained_with_kb(p, name: str, kb: StageResult, data: StageResult, init, rat: StageResult,
                    exclude_own: bool = False) -> StageResult:
    """S_E (or the KARD student): multi-task training with knowledge from ``kb``."""
    ns = p.cfg.nesycd
    demos = p.run.results["demos"]
    if ns.init == "sp":
        sp = sp_student(p, data, init, rat)
        base, base_deps, base_settings = sp.path / "model", [sp], {"base": "std-cot"}
    else:
        base, base_deps, base_settings = p.base_model(init)
    train = p.cfg.train_for(name)
    settings = {**base_settings, "train": train.model_dump(mode="json"), "seed": p.cfg.run.seed,
                "nesycd": ns.model_dump(mode="json", include={"retrieval", "train_knowledge",
                                                              "mix", "init",
                                                              "task_description"})}
    pairs = se_pairs(data.path / "train.jsonl", rat.path / "kept.jsonl",
                     [demos.path / "demos.jsonl"], kb.path / KB_FILE, ns,
                     task_description(p.cfg), p.cfg.run.seed, exclude_own=exclude_own)
    return p.run.stage(f"train-{name}", settings, train_stage(base, pairs, train),
                       deps=[data, rat, demos, kb, *base_deps])


def run_kb_method(p, name: str, data: StageResult, init, rat: StageResult | None,
                  until: str | None = None) -> dict[str, Any] | None:
    assert rat is not None, "knowledge-base methods need teacher rationales"
    if name not in KB_METHODS:
        raise ValueError(f"unknown method {name!r}")
    kb = nesycd_kb(p, data, init, rat)
    if name == "std-cot+kb":
        model_stage = sp_student(p, data, init, rat)
    elif name == "kard":
        kb = p.run.stage("kard-kb", {}, kard_kb_stage(rat.path), deps=[rat])
        model_stage = trained_with_kb(p, "kard", kb, data, init, rat, exclude_own=True)
    else:
        model_stage = trained_with_kb(p, "nesycd", kb, data, init, rat)
    if until == "train":
        return None
    model = model_stage.path / "model"
    if name == "nesycd-no-kb":
        return p.evaluate(name, model, data, [model_stage], {"model": model_stage.name}, until)
    ns, description = p.cfg.nesycd, task_description(p.cfg)
    kb_path = kb.path / KB_FILE
    prompt_fn, after = retrieval_prompts(kb_path, ns, description, ns.gate)
    settings = {"model": model_stage.name, **kb_predict_settings(kb_path, ns, description)}
    return p.evaluate(name, model, data, [model_stage, kb], settings, until,
                      prompt_fn=prompt_fn, after=after)


def kb_predict_settings(kb_path, ns, description: str) -> dict[str, Any]:
    """What a prediction with retrieval depends on besides the model: the KB's content version
    (so an edit reruns prediction, and nothing upstream), retrieval and gate settings."""
    return {"kb_version": kb_version(kb_path), "retrieval": ns.retrieval.model_dump(mode="json"),
            "task_description": description,
            "gate": ns.model_dump(include={"gate", "gate_threshold", "gate_tokens"})
            if ns.gate else False}
