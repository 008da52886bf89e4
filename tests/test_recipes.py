"""Every recipe under configs/recipes/ validates with ``nesyloop config`` (no training, no
network), and each says what docs/recipes.md promises: the paper settings, a real teacher whose
key comes from the environment, the CPU recipe's offline student and dataset teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nesyloop.cli import app
from nesyloop.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.toml"))


def test_the_recipes_exist_and_are_documented():
    names = {p.name for p in RECIPES}
    assert {"nesycd-gpu.toml", "fdd-gpu.toml", "cpu-smollm2-gsm8k.toml"} <= names
    doc = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    for name in names:
        assert f"configs/recipes/{name}" in doc, f"{name} is not documented in docs/recipes.md"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates_with_nesyloop_config(path):
    res = CliRunner().invoke(app, ["config", str(path)])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["methods"] == list(load_config(path).methods)


@pytest.mark.parametrize("name", ["nesycd-gpu.toml", "nesycd-gpu-gsm8k.toml", "fdd-gpu.toml"])
def test_gpu_recipes_use_a_paid_teacher_with_a_budget_and_lora_32(name):
    cfg = load_config(ROOT / "configs" / "recipes" / name)
    t = cfg.teacher
    assert t.backend == "openai" and t.openai.api_key_env == "OPENAI_API_KEY"
    assert t.budget_usd and t.prices.prompt_per_mtok > 0 and t.prices.completion_per_mtok > 0
    assert cfg.train.lora and cfg.train.lora_r == 32
    assert "/" in cfg.student.model  # a hub name


def test_paper_settings():
    nesycd = load_config(ROOT / "configs" / "recipes" / "nesycd-gpu.toml")
    assert nesycd.task.name == "bbh" and "nesycd" in nesycd.methods
    assert nesycd.nesycd.init == "base" and nesycd.nesycd.retrieval.top_k == 1
    other = load_config(ROOT / "configs" / "recipes" / "nesycd-gpu-gsm8k.toml")
    assert other.task.name == "gsm8k"
    same = {"task": True, "run": True, "train": {"max_len"}}  # BBH's inputs are longer
    assert other.model_dump(exclude=same) == nesycd.model_dump(exclude=same)
    fdd = load_config(ROOT / "configs" / "recipes" / "fdd-gpu.toml")
    assert fdd.task.name == "gsm8k" and "fdd" in fdd.methods
    assert fdd.fdd.thoughts == "both" and fdd.fdd.inference == "pot-then-cot"


def test_cpu_recipe_runs_offline_with_the_dataset_teacher():
    cfg = load_config(ROOT / "configs" / "recipes" / "cpu-smollm2-gsm8k.toml")
    assert cfg.student.model == "smollm2" and cfg.teacher.backend == "dataset"
    assert cfg.methods == ["zero-shot", "std-cot"] and cfg.task.name == "gsm8k"
    assert not cfg.task.bench.hub and cfg.eval.splits == ["test"]  # chosen on dev, scored on test
    limits = cfg.task.bench.limits
    assert limits.get("train") and limits.get("test")  # a subset sized for the hour
