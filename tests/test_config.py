"""Config loading: defaults, quick preset, and one-line errors naming the key or file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nesyloop.config import load_config
from nesyloop.errors import ConfigError


def test_default_and_quick():
    cfg = load_config()
    assert cfg.task.name == "bazaar" and cfg.student.model == "scratch"
    assert cfg.methods == ["std-cot", "fdd", "nesycd", "nesycd+fdd"]
    assert cfg.nesycd.init == "sp" and cfg.train_for("nesycd").num_train_epochs == 1.0
    assert cfg.fdd.rounds == 2 and cfg.fdd.round_splits == ["dev"]
    assert cfg.joined.from_round == 2  # knowledge in the last round
    # random batches (length-grouped ones held the scratch student back: docs/methods.md)
    assert cfg.train.train_sampling_strategy == "random"
    assert cfg.nesycd.retrieval.item_shared == 0.5 and cfg.nesycd.retrieval.abstract
    assert cfg.train_for("std-cot").num_train_epochs == cfg.train.num_train_epochs == 3.0
    assert cfg.student.scratch.numbers == "whole" and cfg.joined.final_feedback is False
    # value twins beside 30% of the joined round's pairs (block following: docs/methods.md)
    j = cfg.joined
    assert (j.counterfactual, j.counterfactual_by, j.counterfactual_pairs) == (0.3, "value", "add")
    # season 2 (issue 16): held-out facts shape season 1; every method answers its splits
    b = cfg.task.bazaar
    assert b.held_out >= 0.1 and b.drift >= 0.25 and b.test_drift and b.test_novel
    assert cfg.eval.splits[-2:] == ["test-drift", "test-novel"]
    # the joined loop's rounds train like fdd's, then with its own overrides
    assert cfg.train_for("fdd", "nesycd+fdd") == cfg.train_for("fdd")
    over = load_config(overrides={"method_train": {"nesycd+fdd": {"learning_rate": 5e-4}}})
    joined = over.train_for("fdd", "nesycd+fdd")
    assert joined.learning_rate == 5e-4 and joined.num_train_epochs == 2.0
    q = load_config(quick=True)
    assert q.task.bazaar.train < cfg.task.bazaar.train
    assert q.student.scratch.hidden < cfg.student.scratch.hidden
    assert q.fdd.rounds == 2  # the quick e2e run kills and resumes round 1 of two
    assert q.eval.splits == cfg.eval.splits  # season 2 too (the tiny student answers fast)


@pytest.mark.parametrize("text, match", [
    ("[teacher]\nsampels = 3\n", r"unknown key 'teacher.sampels'"),
    ("[teacher]\nsamples = 'three'\n", r"key 'teacher.samples'"),
    ("[teacher]\nsamples = 0\n", r"key 'teacher.samples'"),
    ("methods = ['std-cot', 'magic']\n", r"key 'methods.1'"),
    ("[task.bazaar]\ntrain = -5\n", r"key 'task.bazaar.train'"),
    ("[run\nout = 1\n", r"invalid TOML"),
    ("[method_train.nesycd]\nepochz = 1\n", r"key 'method_train.nesycd.epochz'"),
    ("[method_train.magic]\nnum_train_epochs = 1\n", r"key 'method_train.magic'"),
    ("[nesycd.retrieval]\nmethod = 'grep'\n", r"key 'nesycd.retrieval.method'"),
    ("[nesycd]\ngate_threshold = 2\n", r"key 'nesycd.gate_threshold'"),
    ("[fdd]\nthoughts = 'poems'\n", r"key 'fdd.thoughts'"),
    ("[fdd]\nfeedback_samples = 2\nfeedback_min_correct = 3\n", r"key 'fdd': .*must be <="),
    ("[fdd]\ninference = 'pot'\n", r"key 'fdd': .*needs thoughts"),
    ("[fdd]\nleak_threshold = 0\n", r"key 'fdd.leak_threshold'"),
    ("[fdd]\nmin_dev_gain = 1\n", r"min_dev_gain needs 'dev'"),
])
def test_bad_config_one_line_error(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(p)
    assert "\n" not in str(info.value) and "bad.toml" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: config file not found"):
        load_config(tmp_path / "nope.toml")


def test_cli_bad_config_exits_nonzero_with_one_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[student]\nmodel = 3\nfoo = 1\n")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "nesyloop.cli", "run", str(p), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.toml" in lines[0]
    assert not out.exists()  # no half-written artifact


def test_cli_config_show(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nesyloop.cli", "config", "--quick"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and '"samples"' in proc.stdout


def test_example_configs_validate():
    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.toml"))
    assert files
    for f in files:
        load_config(f)


# --- [train]: nesyloop's keys plus transformers' TrainingArguments fields ----------------------


def test_training_arguments_field_passes_through_to_the_trainer(tmp_path):
    """A TrainingArguments field nesyloop does not declare reaches the Trainer as is, from
    [train] and from [method_train.<method>], and is part of the stage fingerprints."""
    from nesyloop.students.train import training_args

    cfg = load_config(None, quick=True, overrides={
        "train": {"lr_scheduler_type": "cosine", "save_total_limit": 3},
        "method_train": {"fdd": {"max_grad_norm": 0.5}}})
    settings = cfg.train_for("fdd")
    assert settings.model_dump(mode="json")["lr_scheduler_type"] == "cosine"
    args = training_args(settings, tmp_path / "work", progress=False)
    assert args.lr_scheduler_type == "cosine" and args.max_grad_norm == 0.5
    assert args.save_total_limit == 3  # a config may change nesyloop's defaults too
    assert args.output_dir == str(tmp_path / "work") and args.report_to in ("none", [], ["none"])
    assert training_args(cfg.train_for("std-cot"), tmp_path, progress=False).max_grad_norm == 1.0


def test_main_job_training_arguments_are_nesyloop_defaults(tmp_path):
    """The main job's TrainingArguments: the same values the hand-written mapping passed."""
    from nesyloop.students.train import training_args

    cfg = load_config()
    args = training_args(cfg.train_for("nesycd"), tmp_path, save=True, progress=False)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 1)
    assert (args.num_train_epochs, args.max_steps, args.learning_rate) == (1.0, 500, 1e-3)
    assert (args.warmup_steps, args.weight_decay, args.seed) == (0.05, 0.0, 0)
    assert args.lr_scheduler_type == "linear" and args.save_strategy == "steps"
    assert (args.save_steps, args.logging_steps, args.save_total_limit) == (200, 20, 2)
    assert args.train_sampling_strategy == "random" and not args.remove_unused_columns
    from nesyloop.students.train import TrainSettings
    assert TrainSettings().train_sampling_strategy == "group_by_length"  # nesyloop's default
    assert args.ddp_find_unused_parameters is False and args.log_level == "error"
    assert args.include_num_input_tokens_seen == "non_padding" and args.disable_tqdm
    assert training_args(cfg.train, tmp_path, save=False).save_strategy == "no"


def test_loading_a_config_does_not_import_transformers():
    """Only a config that sets a TrainingArguments field nesyloop does not declare pays for
    importing transformers (to check the name); the shipped configs do not."""
    code = ("import sys; from nesyloop.config import load_config; load_config(); "
            "load_config(None, quick=True); assert 'transformers' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("text, match", [
    ("[train]\nfoo = 1\n", r"key 'train.foo': unknown \(neither a \[train\] key of nesyloop nor a "
                           r"field of transformers' TrainingArguments\)"),
    ("[method_train.fdd]\nlr_sheduler_type = 'cosine'\n",
     r"key 'method_train.fdd.lr_sheduler_type': unknown"),
    ("[train]\noutput_dir = 'x'\n", r"key 'train.output_dir': set by nesyloop itself \(checkp"),
    ("[train]\nreport_to = 'wandb'\n", r"key 'train.report_to': set by nesyloop itself"),
    ("[method_train.nesycd]\nuse_cpu = true\n",
     r"key 'method_train.nesycd.use_cpu': set by nesyloop itself"),
    ("[train]\nremove_unused_columns = true\n", r"key 'train.remove_unused_columns': set by"),
    ("[train]\nlr_scheduler_type = 'bogus'\nmax_grad_norm = 0.5\n",
     r"key 'train.lr_scheduler_type': transformers' TrainingArguments refused it: bogus"),
])
def test_train_key_neither_ours_nor_trainings_or_owned_is_one_line(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(p)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{p}: ")


def test_train_settings_refuse_the_same_keys_in_python():
    from pydantic import ValidationError

    from nesyloop.students.train import TrainSettings

    with pytest.raises(ValidationError, match=r"'train.batch_size' was renamed to "
                                              r"'train.per_device_train_batch_size'"):
        TrainSettings(batch_size=8)
    with pytest.raises(ValidationError, match=r"'train.output_dir': set by nesyloop itself"):
        TrainSettings(output_dir="x")


RENAMES = [  # (TOML table, old key, a value, the error's old and new key)
    ("train", "epochs", 2.0, "train.epochs", "train.num_train_epochs"),
    ("train", "lr", 1e-3, "train.lr", "train.learning_rate"),
    ("train", "batch_size", 8, "train.batch_size", "train.per_device_train_batch_size"),
    ("train", "grad_accum", 2, "train.grad_accum", "train.gradient_accumulation_steps"),
    ("train", "warmup_ratio", 0.1, "train.warmup_ratio", "train.warmup_steps"),
    ("method_train.fdd", "epochs", 2.0, "method_train.fdd.epochs",
     "method_train.fdd.num_train_epochs"),
    ('method_train."nesycd+fdd"', "lr", 1e-3, "method_train.nesycd+fdd.lr",
     "method_train.nesycd+fdd.learning_rate"),
    ("teacher", "error_rate", 0.2, "teacher.error_rate", "teacher.oracle.error_rate"),
    *[("teacher", k, v, f"teacher.{k}", f"teacher.openai.{k}") for k, v in [
        ("base_url", "'http://127.0.0.1:8000/v1'"), ("api_key_env", "'MY_KEY'"),
        ("concurrency", 4), ("rpm", 60), ("tpm", 1000), ("max_retries", 2), ("timeout_s", 9),
        ("backoff_s", 0.5), ("raw_prompts", "'completions'")]],
]


@pytest.mark.parametrize("table, key, value, old, new", RENAMES)
def test_renamed_key_fails_naming_the_new_one(tmp_path, table, key, value, old, new):
    p = tmp_path / "old.toml"
    p.write_text(f"[{table}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == f"{p}: key '{old}' was renamed to '{new}'"


def test_every_renamed_key_is_tested():
    from nesyloop.config_checks import RENAMED

    table = {f"{kind}.{k}": f"{kind}.{v}" for kind, keys in RENAMED.items()
             for k, v in keys.items() if kind != "fdd"}
    assert table == {old: new for t, _, _, old, new in RENAMES if not t.startswith("method")}
    assert set(RENAMED["fdd"]) == {"variants", "final_feedback"}  # tested below


def test_final_feedback_moved_to_the_joined_table(tmp_path):
    p = tmp_path / "old.toml"
    p.write_text("[fdd]\nfinal_feedback = true\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == f"{p}: key 'fdd.final_feedback' moved to 'joined.final_feedback'"


def test_round_splits_keep_dev_for_the_stopping_rule_and_follow_eval_splits():
    from nesyloop.methods.fdd.method import round_splits

    with pytest.raises(ConfigError) as info:
        load_config(None, overrides={"eval": {"splits": ["dev", "test"]},
                                     "fdd": {"round_splits": ["test"], "min_dev_gain": 1.0}})
    assert "fdd.min_dev_gain needs 'dev' in fdd.round_splits" in str(info.value)
    cfg = load_config(None, overrides={"eval": {"splits": ["test"]}})  # the main job's ["dev"]
    assert round_splits(cfg, 1) is None and round_splits(cfg, 3) is None  # all: no dev here
    cfg = load_config(None)
    assert round_splits(cfg, 1) == ["dev"] and round_splits(cfg, 3) is None


def test_the_three_variant_keys_became_two(tmp_path):
    p = tmp_path / "old.toml"
    p.write_text("[fdd]\nvariants = 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == (f"{p}: key 'fdd.variants' was replaced by 'fdd.harder_variants' "
                               f"and 'fdd.similar_variants' (new problems per easy and per hard "
                               f"seed)")
    fdd = load_config(None, overrides={"fdd": {"similar_variants": 3}}).fdd
    assert (fdd.n_variants("harder"), fdd.n_variants("similar")) == (2, 3)  # the main job's 2


# --- [teacher]: common keys, [teacher.oracle] and [teacher.openai] ------------------------------


def test_grouped_teacher_keys_load(tmp_path):
    from nesyloop.gen.http import OpenAIBackend
    from nesyloop.gen.registry import make_teacher

    p = tmp_path / "t.toml"
    p.write_text('[teacher]\nbackend = "openai"\nmodel = "m"\nsamples = 3\nbudget_usd = 2.0\n'
                 '[teacher.oracle]\nerror_rate = 0.3\n'
                 '[teacher.openai]\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "MY_KEY"\n'
                 'concurrency = 3\nrpm = 60\ntpm = 1000\nmax_retries = 1\ntimeout_s = 7\n'
                 'backoff_s = 0.5\nraw_prompts = "completions"\n')
    t = load_config(p).teacher
    assert (t.backend, t.model, t.samples, t.budget_usd) == ("openai", "m", 3, 2.0)
    assert t.oracle.error_rate == 0.3 and t.openai.concurrency == 3 and t.openai.rpm == 60
    b = OpenAIBackend.from_config(t)
    assert (b.base_url, b.api_key_env, b.concurrency, b.max_retries, b.timeout_s) == \
        ("http://127.0.0.1:9/v1", "MY_KEY", 3, 1, 7.0)
    assert b.raw_prompts == "completions" and b.backoff.base == 0.5
    oracle = make_teacher(t.model_copy(update={"backend": "oracle"}), world_seed=1, seed=2)
    assert oracle.error_rate == 0.3
    # what the stage fingerprints see: the flat shape of before, the [teacher.openai] keys out
    assert t.identity() == {"backend": "openai", "model": "m", "samples": 3, "temperature": 0.7,
                            "top_p": 1.0, "max_tokens": 384, "batch_size": 64,
                            "error_rate": 0.3}


def test_request_cache_keys_did_not_move():
    """Cache keys of an OpenAI and an oracle teacher, pinned to their values from before the
    teacher's keys were grouped: an existing cache of paid replies still hits."""
    from nesyloop.gen.base import GenSettings, Request
    from nesyloop.gen.registry import make_teacher
    from nesyloop.runs.cache import request_key

    req = Request.chat([{"role": "user", "content": "What is 2 + 3?"}],
                       GenSettings(max_tokens=64, temperature=0.7, n=2, seed=1))
    cases = [
        ({"backend": "openai", "model": "gpt-4o-mini",
          "openai": {"base_url": "http://127.0.0.1:9/v1"}}, {},
         "ecbc108d14605b4ad6c7e82099c109060c86ba31bf8bcc22c26c1d33d51551b1"),
        ({"backend": "openai", "model": "gpt-4o-mini", "openai": {"raw_prompts": "completions"}},
         {}, "3132f9d122531b22a7be76ae9b3d4b5d0d06eb305ff4f3c9ebdae8372295b7b9"),
        ({"oracle": {"error_rate": 0.25}}, {"world_seed": 3, "seed": 5},
         "dcfd03fe8e5108979a5127200f809da9a17dc94f8f898493bce6db80962f7aa6"),
    ]
    for teacher, seeds, key in cases:
        backend = make_teacher(load_config(None, overrides={"teacher": teacher}).teacher, **seeds)
        assert request_key(backend, req)[0] == key, teacher
