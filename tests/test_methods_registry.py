"""A method is one place: a toy method defined and registered here runs through the CLI; the
registry is the one list of methods; methods/ does not reach up into the pipeline."""

from __future__ import annotations

import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from nesyloop.config import load_config
from nesyloop.errors import ConfigError
from nesyloop.methods import ReportPart, names, register, shared, unregister
from nesyloop.methods.common import load_split
from nesyloop.students.prompt import student_prompt

SRC = Path(__file__).resolve().parents[1] / "src" / "nesyloop"


# --- the toy method: every line of it is here -----------------------------------------------
@dataclass(frozen=True)
class Toy:
    """Trains the student to give every question the first training question's answer."""

    name: str = "toy"
    needs_rationales: bool = False
    teacher_use: str | None = None

    def run(self, ctx, until=None):
        data = shared.data(ctx)
        train = load_split(data.path, "train")
        pairs = [{"prompt": student_prompt(ex.question),
                  "completion": f" The answer is {train[0].answer}."} for ex in train]
        model = shared.train_student(ctx, self.name, lambda _sc: pairs, deps=[data])
        if until == "train":
            return None
        res = shared.evaluate(ctx, self.name, model.path / "model", [model], {}, until)
        return None if res is None else {self.name: res}

    def estimate(self, counter):
        return None

    def report(self, ctx, metrics):
        return ReportPart(notes=[f"toy: always answers {len(metrics[self.name])} splits alike"])

    def kb_use(self, cfg):
        return None


@pytest.fixture
def toy():
    method = register(Toy())
    yield method
    unregister(method.name)


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from nesyloop.cli import main

    monkeypatch.setattr(sys, "argv", ["nesyloop", *args])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_a_toy_method_registered_in_a_test_runs_through_the_cli(toy, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.setenv("NESYLOOP_CACHE", str(tmp_path / "cache.sqlite"))
    out = tmp_path / "run"
    code, stdout, err = _cli(monkeypatch, capsys, "run", "--quick", "-m", "toy", "--out",
                             str(out))
    assert code == 0, err[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    splits = load_config(None, quick=True).eval.splits
    assert list(metrics) == ["toy"] and list(metrics["toy"]) == splits
    assert (out / "train-toy" / "model").is_dir() and not (out / "rationales").exists()
    assert "| toy |" in stdout and f"toy: always answers {len(splits)} splits alike" in stdout
    # every prediction was made by the toy's student (trained on one answer)
    preds = [json.loads(x) for x in (out / "predict-toy" / "test.jsonl").read_text().splitlines()]
    assert len(preds) == metrics["toy"]["test"]["n"]
    # and the estimate walks the registry: a toy that asks no teacher adds no row
    code, stdout, err = _cli(monkeypatch, capsys, "estimate", "--quick", "-m", "toy", "--out",
                             str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout)["rows"] == []


def test_the_registry_is_the_one_list_of_methods(toy):
    assert names()[:9] == ["zero-shot", "answer-ft", "std-cot", "std-cot+kb", "nesycd",
                           "nesycd-no-kb", "kard", "fdd", "nesycd+fdd"]
    assert names()[-1] == "toy"
    cfg = load_config(None, quick=True, overrides={"methods": ["toy"],
                                                   "method_train": {"toy": {"max_steps": 2}}})
    assert cfg.methods == ["toy"] and cfg.train_for("toy").max_steps == 2
    with pytest.raises(ValueError, match="already registered"):
        register(Toy())
    with pytest.raises(TypeError, match="does not implement"):
        register(object())  # type: ignore[arg-type]


def test_unknown_methods_are_named_with_the_registered_ones(monkeypatch, capsys, tmp_path):
    with pytest.raises(ConfigError, match=r"key 'methods.0': 'toy' is not one of \['zero-shot'"):
        load_config(None, overrides={"methods": ["toy"]})
    with pytest.raises(ConfigError, match=r"key 'method_train.tyop': 'tyop' is not one of"):
        load_config(None, overrides={"method_train": {"tyop": {"max_steps": 1}}})
    code, out, err = _cli(monkeypatch, capsys, "run", "--quick", "-m", "toy", "--out",
                          str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1
    assert "--method: 'toy' is not one of ['zero-shot'" in err
    assert not (tmp_path / "r").exists()


def test_the_dataset_teacher_refuses_a_method_by_what_it_declares(toy):
    @dataclass(frozen=True)
    class Asks(Toy):
        name: str = "asks"
        teacher_use: str | None = "toy questions"

    register(Asks())
    try:
        with pytest.raises(ConfigError, match="method 'asks' needs a teacher for toy "
                                              "questions.*only the methods zero-shot, "
                                              "answer-ft, std-cot, toy"):
            load_config(None, overrides={"teacher": {"backend": "dataset"},
                                         "methods": ["toy", "asks"]})
        load_config(None, overrides={"teacher": {"backend": "dataset"}, "methods": ["toy"]})
    finally:
        unregister("asks")


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The nesyloop modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    pkg = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        pkg = pkg.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = pkg.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("nesyloop")}


def test_methods_import_nothing_above_them_and_have_no_import_circle():
    files = sorted((SRC / "methods").rglob("*.py"))
    up = {"nesyloop.pipeline", "nesyloop.api", "nesyloop.cli", "nesyloop.cli_kb",
          "nesyloop.cli_eval", "nesyloop.cli_serve"}
    for f in files:
        bad = {m for m in _imports(f, top_level_only=False) if m in up}
        assert not bad, f"{f.relative_to(SRC)} imports {bad}"
    # module-level imports inside methods/ form no cycle (the registry loads the built-in
    # methods lazily, on first use: a plugin registry's one deliberate way back)
    mods = {".".join(f.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): f
            for f in files}
    graph = {m: {d for d in _imports(f, True) if d in mods and d != m} for m, f in mods.items()}

    def visit(m, stack):
        assert m not in stack, "import circle: " + " -> ".join([*stack, m])
        for d in graph[m]:
            visit(d, [*stack, m])

    for m in graph:
        visit(m, [])
