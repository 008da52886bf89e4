"""Checks of a config beyond its types: values no run can use (NaN, empty names, sizes no
machine holds, splits the task does not make) are refused when the config loads, with the key
named, instead of failing after teacher requests and training."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# keys whose empty string means something ("no header", "no query prefix")
EMPTY_OK = frozenset({"task.bench.header_text", "nesycd.task_description"})

SEED_MAX = 2**32 - 1  # numpy's (and so transformers.set_seed's) range
SIZE_MAX = 1_000_000  # problems per split, tokens, widths: far above any machine's budget

# upper bounds of numeric keys; lower bounds are the models' own (Field(ge=...))
LIMITS: dict[str, float] = {
    **{f"task.bazaar.{k}": SIZE_MAX for k in ("train", "dev", "test", "test_rare", "test_deep",
                                               "dev_deep", "dev_rare", "tail_max_uses",
                                               "dev_drift", "test_drift", "dev_novel",
                                               "test_novel")},
    "task.bench.limit": 10 * SIZE_MAX, "task.bazaar.zipf": 100,
    "teacher.samples": 100, "teacher.max_tokens": SIZE_MAX, "teacher.batch_size": 100_000,
    "teacher.openai.concurrency": 10_000, "teacher.openai.max_retries": 100,
    "teacher.openai.timeout_s": 86_400, "teacher.openai.backoff_s": 3_600,
    "student.scratch.hidden": 65_536, "student.scratch.layers": 1_000,
    "student.scratch.heads": 1_024, "student.scratch.intermediate": SIZE_MAX,
    "student.scratch.max_len": SIZE_MAX, "student.scratch.vocab_size": SIZE_MAX,
    "student.server.concurrency": 10_000, "student.server.start_timeout_s": 86_400,
    "eval.batch_size": 100_000, "eval.max_new_tokens": SIZE_MAX,
    "nesycd.retrieval.top_k": 100, "nesycd.max_response_words": SIZE_MAX,
    "nesycd.gate_tokens": 1_000, "nesycd.mix.kb_cot": 100, "nesycd.mix.cot": 100,
    "nesycd.mix.answer": 100,
    "fdd.rounds": 100, "fdd.harder_variants": 100,
    "fdd.similar_variants": 100, "fdd.max_seeds": 10 * SIZE_MAX, "fdd.feedback_samples": 100,
    "fdd.feedback_min_correct": 100, "fdd.majority_samples": 100, "fdd.leak_ngram": 1_000,
    "fdd.replay": 100, "fdd.feedback_temperature": 100,
    "teacher.temperature": 100,
}
TRAIN_LIMITS: dict[str, float] = {
    "num_train_epochs": 10_000, "max_steps": 10**9, "per_device_train_batch_size": 65_536,
    "gradient_accumulation_steps": 65_536, "max_len": SIZE_MAX, "lora_r": 65_536,
    "lora_alpha": 1_000_000, "save_steps": 10**9, "logging_steps": 10**9,
    "learning_rate": 10.0, "weight_decay": 10.0, "warmup_steps": 10**9,
}
SEEDS = ("run.seed", "task.bazaar.seed", "task.bench.seed", "student.scratch.seed")


# keys of earlier versions: a config that still uses one fails naming the new key. [train] keys
# (in [method_train.<method>] too) took the names of transformers' TrainingArguments; the
# teacher's backend-only keys moved to [teacher.oracle] and [teacher.openai]
RENAMED: dict[str, dict[str, str]] = {
    "train": {"epochs": "num_train_epochs", "lr": "learning_rate",
              "batch_size": "per_device_train_batch_size",
              "grad_accum": "gradient_accumulation_steps", "warmup_ratio": "warmup_steps"},
    "teacher": {"error_rate": "oracle.error_rate",
                **{k: f"openai.{k}" for k in ("base_url", "api_key_env", "concurrency", "rpm",
                                              "tpm", "max_retries", "timeout_s", "backoff_s",
                                              "raw_prompts")}},
    "fdd": {"variants": "harder_variants",  # and fdd.similar_variants: one count per kind
            "final_feedback": "joined.final_feedback"},  # the joined loop's own setting
}


def _tables(raw: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """The raw tables whose keys may have been renamed: where -> (kind, table)."""
    out = {k: (k, raw[k]) for k in RENAMED if isinstance(raw.get(k), dict)}
    per_method = raw.get("method_train")
    if isinstance(per_method, dict):
        out.update({f"method_train.{m}": ("train", t) for m, t in per_method.items()
                    if isinstance(t, dict)})
    return out


def check_keys(raw: dict[str, Any]) -> str | None:
    """A renamed key (naming the new one); a [train] key that is neither nesyloop's nor a
    field of transformers' TrainingArguments, or one nesyloop sets itself; a TrainingArguments
    value transformers refuses. None when there is none."""
    tables = _tables(raw)
    for where, (kind, table) in tables.items():
        for k in table:
            if kind == "fdd" and k == "variants":
                return (f"key 'fdd.{k}' was replaced by 'fdd.harder_variants' and "
                        f"'fdd.similar_variants' (new problems per easy and per hard seed)")
            if kind == "fdd" and k in RENAMED[kind]:
                return f"key 'fdd.{k}' moved to '{RENAMED[kind][k]}'"
            if kind == "teacher" and k in RENAMED[kind]:
                return f"key '{where}.{k}' was renamed to '{where}.{RENAMED[kind][k]}'"
    trains = {w: t for w, (kind, t) in tables.items() if kind == "train"}
    for where, table in trains.items():
        for k in table:
            if (bad := train_key_error(where, k)) is not None:
                return bad
    return _check_training_args(trains) if any(map(_undeclared, trains.values())) else None


def _undeclared(table: dict[str, Any]) -> list[str]:
    from .students.train import TrainSettings

    return [k for k in table if k not in TrainSettings.model_fields]


def train_key_error(where: str, key: str) -> str | None:
    """Why ``key`` cannot be a key of the [train] table at ``where`` (renamed, set by nesyloop
    itself, or no TrainingArguments field); None when it can. Names nesyloop does not declare
    are looked up in TrainingArguments, which imports transformers (about 4 s)."""
    from .students.train import OWNED, TrainSettings, training_arg_names

    if key in RENAMED["train"]:
        return f"key '{where}.{key}' was renamed to '{where}.{RENAMED['train'][key]}'"
    if key in TrainSettings.model_fields:
        return None
    if key in OWNED:
        return f"key '{where}.{key}': set by nesyloop itself ({OWNED[key]})"
    if key not in training_arg_names():
        return (f"key '{where}.{key}': unknown (neither a [train] key of nesyloop nor a field "
                f"of transformers' TrainingArguments)")
    return None


def _check_training_args(trains: dict[str, dict[str, Any]]) -> str | None:
    """The values of TrainingArguments fields nesyloop does not declare, as TrainingArguments
    checks them (only configs that set such a field pay for importing transformers)."""
    base = trains.get("train", {})
    for where, t in trains.items():
        merged = {**base, **t}
        if (msg := _args_error(merged)) is None:
            continue
        # the key to blame: the one without which TrainingArguments accepts the rest
        mine = [k for k in _undeclared(merged) if k in t or where != "train" and k in base]
        at = next((f"{where}.{k}" for k in mine
                   if _args_error({n: v for n, v in merged.items() if n != k}) is None), where)
        return f"key '{at}': transformers' TrainingArguments refused it: {msg}"
    return None


def _args_error(train: dict[str, Any]) -> str | None:
    """Why TrainingArguments refuses these [train] settings (None when it accepts them, or when
    nesyloop's own validation will name the problem)."""
    import tempfile

    from pydantic import ValidationError

    from .students.train import TrainSettings, training_args

    try:
        settings = TrainSettings.model_validate(train)
    except ValidationError:
        return None  # the config's own validation names the key
    try:
        with tempfile.TemporaryDirectory() as work:
            training_args(settings, work, progress=False)
    except Exception as err:  # noqa: BLE001 - TrainingArguments raises several kinds
        msg = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return msg if len(msg) <= 300 else msg[:297] + "..."
    return None


def check_raw(raw: Any, key: str = "") -> str | None:
    """The first value of the raw TOML no setting accepts, whatever its type: a renamed or
    unknown key (:func:`check_keys`), a NaN or infinite number, an empty string, an empty or
    repeated list of names. None when there is none."""
    if isinstance(raw, dict):
        if not key and (bad := check_keys(raw)):
            return bad
        for k, v in raw.items():
            bad = check_raw(v, f"{key}.{k}" if key else str(k))
            if bad:
                return bad
        return None
    if isinstance(raw, float) and not math.isfinite(raw):
        return f"key '{key}': {raw} is not a usable number"
    if isinstance(raw, str) and not raw.strip() and key not in EMPTY_OK:
        return f"key '{key}': must not be empty"
    if isinstance(raw, list):
        listed = ("methods", "eval.splits", "task.bench.subtasks")
        if not raw and (key in listed or key.endswith("lora_targets")):
            return f"key '{key}': the list is empty; name at least one"
        names = [v for v in raw if isinstance(v, str)]
        dup = next((v for i, v in enumerate(names) if v in names[:i]), None)
        if dup is not None and key in listed:
            return f"key '{key}': {dup!r} is listed twice"
        for i, v in enumerate(raw):
            bad = check_raw(v, f"{key}.{i}")
            if bad:
                return bad
    return None


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def check_limits(cfg: Any) -> str | None:
    """The first numeric key above its bound, or a seed out of range (None when none)."""
    for key, hi in LIMITS.items():
        v = _get(cfg, key)
        if v is not None and v > hi:
            return f"key '{key}': at most {hi:,} (got {v:,})"
    for key in SEEDS:
        v = _get(cfg, key)
        if not 0 <= v <= SEED_MAX:
            return f"key '{key}': a seed from 0 to {SEED_MAX} (got {v})"
    trains = {"train": cfg.train, **{f"method_train.{m}": cfg.train_for(m)
                                      for m in cfg.method_train}}
    for where, t in trains.items():
        for k, hi in TRAIN_LIMITS.items():
            if getattr(t, k) > hi:
                return f"key '{where}.{k}': at most {hi:,} (got {getattr(t, k):,})"
        if not 0 <= t.seed <= SEED_MAX:
            return f"key '{where}.seed': a seed from 0 to {SEED_MAX} (got {t.seed})"
    return None


def check_shapes(cfg: Any) -> str | None:
    """Settings that are each valid but cannot work together (None when they can)."""
    sc = cfg.student.scratch
    if cfg.student.model == "scratch" and sc.hidden % sc.heads:
        return (f"key 'student.scratch.heads': hidden ({sc.hidden}) must be a multiple of "
                f"heads ({sc.heads})")
    if cfg.student.model == "scratch" and (sc.hidden // sc.heads) % 2:
        return (f"key 'student.scratch.heads': hidden / heads ({sc.hidden // sc.heads}) must "
                f"be even (rotary position embeddings)")
    srv = cfg.student.server
    if cfg.student.engine == "server" and (srv.command is None) == (srv.base_url is None):
        return ("key 'student.server': engine 'server' needs exactly one of command (a server "
                "nesyloop starts per checkpoint) and base_url (one you run); "
                + ("both are set" if srv.command else "neither is set"))
    models = {"student.model": cfg.student.model}
    if cfg.teacher.backend == "hf":
        models["teacher.model"] = cfg.teacher.model
    for key, m in models.items():  # a local path that is not there (hub names are not checked)
        if (m.startswith(("/", "./", "../")) or m.endswith(".gguf")) and not Path(m).exists():
            return f"key '{key}': {m!r}: no such model folder or .gguf file"
    mix = cfg.nesycd.mix
    if mix.kb_cot + mix.cot + mix.answer == 0:
        return "key 'nesycd.mix': kb_cot, cot and answer are all 0: S_E would have nothing to learn"
    if cfg.task.name != "bazaar":
        return None
    sizes = cfg.task.bazaar.sizes()
    for split in cfg.eval.splits:
        if split not in sizes:
            from .tasks.bazaar import SPLITS
            from .tasks.bazaar.generator import SEASON2_SPLITS

            known = ", ".join(SPLITS + SEASON2_SPLITS)
            made = [s for s in ("dev-deep", "dev-rare", *SEASON2_SPLITS) if s == split]
            extra = (f"; {split} is made when task.bazaar.{split.replace('-', '_')} > 0"
                     if made else "")
            return (f"key 'eval.splits': {split!r} is not a split of task 'bazaar' "
                    f"(its splits: {known}){extra}")
        if sizes[split] == 0:
            return (f"key 'eval.splits': split {split!r} has 0 problems "
                    f"(task.bazaar.{split.replace('-', '_')} = 0)")
    if sizes["train"] == 0 and any(m != "zero-shot" for m in cfg.methods):
        return "key 'task.bazaar.train': 0 training problems, but the methods train a student"
    return None
