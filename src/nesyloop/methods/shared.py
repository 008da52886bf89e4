"""The stages every method stands on, as functions of the :class:`RunContext`.

The pipeline runs the first three before any method: ``data`` (the task's splits),
``rationales`` (the teacher's, filtered; or the data set's worked solutions) and
``student-init`` (the scratch student's tokenizer and random weights). Methods then call
:func:`base_model`, :func:`train_student` and :func:`evaluate` (predict-<name>, score-<name>).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io import read_jsonl, write_jsonl
from ..runs.context import RunContext
from ..runs.rundir import StageContext, StageResult
from ..students.prompt import pot_prompt, student_prompt
from .common import load_split, predict_stage, score_stage, train_stage, write_examples

DATA = "data"
RATIONALES = "rationales"
STUDENT_INIT = "student-init"
SEASON2 = "data-season2"

# (stage context) -> training pairs {"prompt", "completion"}
PairsFn = Callable[[StageContext], list[dict[str, str]]]


def data_stage(ctx: RunContext) -> StageResult:
    task = ctx.cfg.task

    def fn(sc: StageContext) -> dict[str, Any]:
        from ..io import atomic_write_text
        from ..tasks import task_files, task_splits

        splits = task_splits(task.name, task.bazaar, task.bench)
        for name, text in task_files(task.name, task.bazaar).items():
            atomic_write_text(sc.out / name, text)
        return {s: write_examples(sc.out / f"{s}.jsonl", exs) for s, exs in splits.items()}

    return ctx.stage(DATA, data_settings(task), fn)


def season2_stage(ctx: RunContext, data: StageResult) -> StageResult | None:
    """Bazaar's season-2 splits that ``[eval] splits`` names (dev/test-drift, dev/test-novel)
    and its fact sheet (``season2-facts.csv``), beside the data stage: asking for them later
    reruns no training (tasks/bazaar/season.py)."""
    from ..tasks.bazaar.generator import SEASON2_KEYS, SEASON2_SPLITS

    task = ctx.cfg.task
    if task.name != "bazaar" or not set(ctx.cfg.eval.splits) & set(SEASON2_SPLITS):
        return None

    def fn(sc: StageContext) -> dict[str, Any]:
        from ..io import atomic_write_text
        from ..tasks.bazaar.season import SHEET_FILE, season2_splits

        splits, sheet = season2_splits(task.bazaar)
        atomic_write_text(sc.out / SHEET_FILE, sheet)
        return {s: write_examples(sc.out / f"{s}.jsonl", exs) for s, exs in splits.items()}

    return ctx.stage(SEASON2, {"season2": task.bazaar.model_dump(
        mode="json", include=set(SEASON2_KEYS))}, fn, deps=[data])


def split_dirs(ctx: RunContext, splits: list[str]) -> tuple[dict[str, Path], list[StageResult]]:
    """Where each split's examples are (the data stage's, or season 2's) and those stages."""
    from ..tasks.bazaar.generator import SEASON2_SPLITS

    s2 = ctx.season2
    later = s2 is not None and any(s in SEASON2_SPLITS for s in splits)
    dirs = {s: s2.path if later and s in SEASON2_SPLITS else data(ctx).path for s in splits}
    return dirs, [data(ctx)] + ([s2] if later else [])


def data_settings(task) -> dict[str, Any]:
    """What the data stage's splits depend on: the task and its world's or benchmark's
    settings."""
    if task.name == "bazaar":
        # season 2's splits are the season2 stage's (held_out, which shapes season 1, stays
        # when set), so that adding them reruns no training, and runs made before they existed
        # keep their fingerprints
        from ..tasks.bazaar.generator import SEASON2_KEYS

        b = task.bazaar
        return {"name": task.name, "bazaar": b.model_dump(mode="json", exclude={
            k for k in SEASON2_KEYS if k != "held_out" or not b.held_out})}
    return {"name": task.name, "bench": task.bench.model_dump(mode="json")}


def student_init_stage(ctx: RunContext, data: StageResult) -> StageResult | None:
    """The scratch student (tokenizer trained on the task's text, random weights)."""
    st = ctx.cfg.student
    if st.model != "scratch":
        return None

    abstracted = ctx.cfg.nesycd.retrieval.abstract

    def fn(sc: StageContext) -> dict[str, Any]:
        from ..kb.abstract import placeholder_text
        from ..students.scratch import create_scratch_student

        texts, names = [], placeholder_text() if abstracted else None
        for ex in read_jsonl(data.path / "train.jsonl"):
            texts.append(student_prompt(ex["question"]) + " "
                         + (ex.get("rationale") or f"The answer is {ex['answer']}."))
            # the other frames of its prompts (knowledge block, program), so that they are a
            # few tokens each, not one per letter
            texts.append(pot_prompt(ex["question"], knowledge=ex["question"]))
            if names:  # the placeholders, one token each
                texts.append(names)
        path = create_scratch_student(texts, sc.out / "model", st.scratch)
        return {"path": str(path)}

    settings = {"scratch": st.scratch.model_dump(mode="json"), "seed": ctx.cfg.run.seed,
                "corpus": "questions, rationales, prompt frames"
                + (", placeholders" if abstracted else "")}
    return ctx.stage(STUDENT_INIT, settings, fn, deps=[data])


def rationales_stage(ctx: RunContext, data: StageResult) -> StageResult:
    """The teacher's rationales for the training questions, filtered (kept.jsonl,
    rejected.jsonl with reasons)."""
    t = ctx.cfg.teacher

    def fn(sc: StageContext) -> dict[str, Any]:
        from ..roles.rationale import dataset_rationales, distill_rationales

        train = load_split(data.path, "train")
        usage: dict[str, Any] = {}
        if t.backend == "dataset":  # the data set's worked solutions, no model asked
            kept, rejected = dataset_rationales(train)
            if not kept:
                raise DataError(f"teacher.backend 'dataset': none of the {len(train)} "
                                f"training examples of task {ctx.cfg.task.name!r} has a "
                                f"usable worked solution")
        else:
            teacher, close = ctx.teacher()
            try:
                kept, rejected = distill_rationales(teacher, train, ctx.teacher_gen(),
                                                    t.batch_size, progress=ctx.cfg.run.progress)
            finally:
                usage = close()
        write_jsonl(sc.out / "kept.jsonl", kept)
        write_jsonl(sc.out / "rejected.jsonl", rejected)
        return {"questions": len(train), "samples": len(kept) + len(rejected),
                "kept": len(kept), "rejected": len(rejected),
                "covered_questions": len({r["id"] for r in kept}), **usage}

    settings = {"backend": "dataset"} if t.backend == "dataset" else \
        {**t.identity(), "seed": ctx.cfg.run.seed}  # the dataset ignores model settings
    return ctx.stage(RATIONALES, settings, fn, deps=[data])


def no_rationales(ctx: RunContext, rat: StageResult) -> str:
    """Why nothing can be trained: every teacher rationale was rejected, by reason (the most
    frequent first), and where the rejected rationales are."""
    from collections import Counter

    reasons = Counter(str(r.get("reason")).split(" (")[0].split(":")[0]
                      for r in read_jsonl(rat.path / "rejected.jsonl"))
    top = ", ".join(f"{why}: {n}" for why, n in reasons.most_common(3)) or "none returned"
    t = ctx.cfg.teacher
    return (f"the teacher's rationales were all rejected ({rat.info.get('samples', 0)} for "
            f"{rat.info.get('questions', 0)} questions; top reasons: {top}), so there is "
            f"nothing to train on: read {rat.path / 'rejected.jsonl'} (each with its reason) "
            f"and check [teacher] ({t.backend} {t.model!r})")


# --- what methods build on the shared stages ----------------------------------------------------
def data(ctx: RunContext) -> StageResult:
    assert ctx.data is not None, "the pipeline runs the data stage first"
    return ctx.data


def rationales(ctx: RunContext) -> StageResult:
    assert ctx.rationales is not None, "this method needs rationales (needs_rationales=True)"
    return ctx.rationales


def base_model(ctx: RunContext) -> tuple[Path | str, list[StageResult], dict[str, Any]]:
    """The base student, the stages it depends on, and its fingerprint settings."""
    if ctx.init is not None:
        return ctx.init.path / "model", [ctx.init], {"base": STUDENT_INIT}
    return ctx.cfg.student.model, [], {"base": str(ctx.cfg.student.model)}


def train_student(ctx: RunContext, name: str, pairs: PairsFn, deps: list[StageResult],
                  base: tuple[Path | str, list[StageResult], dict[str, Any]] | None = None,
                  settings: dict[str, Any] | None = None, train_as: tuple[str, ...] = ()
                  ) -> StageResult:
    """``train-<name>``: fine-tune ``base`` (default: :func:`base_model`) on ``pairs`` with
    ``[train]`` and the overrides of ``[method_train.<m>]`` for each ``m`` of ``train_as``
    (default: ``name``); ``settings``: the rest of what the pairs depend on (besides
    ``deps``)."""
    model, base_deps, base_settings = base or base_model(ctx)
    train = ctx.cfg.train_for(*(train_as or (name,)))
    # an unset launcher stays out of the fingerprint: runs from before the key keep theirs
    dump = train.model_dump(mode="json", exclude=set() if train.launch else {"launch"})
    fp = {**base_settings, "train": dump, **(settings or {})}
    return ctx.stage(f"train-{name}", fp, train_stage(model, pairs, train),
                     deps=[*deps, *base_deps])


def evaluate(ctx: RunContext, name: str, model: Path | str, deps: list[StageResult],
             settings: dict[str, Any], until: str | None = None, prompt_fn=None, after=None,
             inference: str = "cot", splits: list[str] | None = None
             ) -> dict[str, Any] | None:
    """predict-<name> and score-<name>: the shared tail of every method (None when ``until``
    is "predict"), on ``splits`` (default: ``[eval] splits``)."""
    ev = ctx.cfg.eval
    splits = splits or ev.splits
    extra = {} if inference == "cot" else {"inference": inference}
    dirs, sources = split_dirs(ctx, splits)
    pred = ctx.stage(
        f"predict-{name}", {**settings, "eval": {**ev.model_dump(mode="json"), "splits": splits},
                            **extra},
        predict_stage(ctx.student, model, dirs, splits, ev.max_new_tokens,
                      prompt_fn=prompt_fn, after=after, inference=inference),
        deps=[*sources, *deps])
    if until == "predict":
        return None
    score = ctx.stage(f"score-{name}", {"splits": splits}, score_stage(pred.path, splits),
                      deps=[pred])
    return score.info
