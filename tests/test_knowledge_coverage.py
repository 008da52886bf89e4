"""The report's coverage/hit table (Bazaar) and its training-compute table."""

from __future__ import annotations

from pathlib import Path

import pytest

from nesyloop.report import training_table
from nesyloop.runs.rundir import StageResult
from nesyloop.tasks.bazaar import build_world
from nesyloop.tasks.bazaar.coverage import coverage, coverage_table


@pytest.fixture(scope="module")
def world():
    return build_world(0)


def _two_facts(world):
    a, b = world.of_kind("container")[0], world.of_kind("price")[0]
    return a, b


def test_coverage_hit_and_accuracy_on_hits_and_misses(world):
    a, b = _two_facts(world)
    facts = {"q1": [a.id], "q2": [a.id, b.id], "q3": [b.id], "q4": []}
    kb = [a.sentence.upper(), "Some other fact."]  # case and spacing do not matter
    records = [
        {"id": "q1", "strict": True, "knowledge": "  " + a.sentence.replace(" ", "  ")},
        {"id": "q2", "strict": False, "knowledge": a.sentence},  # b is missing from the block
        {"id": "q3", "strict": True, "knowledge": None},  # no block; b not in the KB
        {"id": "q4", "strict": False, "knowledge": None},  # needs nothing: covered, a hit
    ]
    got = coverage(world, kb, records, facts)
    assert got == {"n": 4, "coverage": 50.0, "hit": 50.0, "hits": 2, "accuracy_hit": 50.0,
                   "accuracy_miss": 50.0, "wrong_hit_unread": 0.0}  # q4 needs no fact
    table = coverage_table({"dev": got})
    assert "| dev | 4 | 50.0 | 50.0 | 50.0 | 50.0 | 0.0 |" in table


def test_wrong_answers_on_hits_split_into_reading_and_reasoning(world):
    """A wrong answer on a hit that does not restate its block's fact (another value, another
    entity) is a reading error; one that restates it went wrong in its reasoning."""
    a, b = _two_facts(world)
    block = f"{a.sentence} {b.sentence}"
    records = [
        {"id": "r1", "strict": False, "knowledge": block, "output": f"{a.say(a.value + 1)} ..."},
        {"id": "r2", "strict": False, "knowledge": block, "output": f"So {a.sentence} 1 + 1 = 3"},
        {"id": "r3", "strict": True, "knowledge": block, "output": "no fact restated"},
        {"id": "r4", "strict": False, "knowledge": None, "output": ""},  # a miss: not counted
    ]
    facts = {i: [a.id] for i in ("r1", "r2", "r3", "r4")}
    got = coverage(world, [a.sentence], records, facts)
    assert (got["hits"], got["wrong_hit_unread"]) == (3, 50.0)
    assert coverage(world, [], records[2:], facts)["wrong_hit_unread"] is None


def test_a_fact_with_a_wrong_value_is_not_stated(world):
    a, _ = _two_facts(world)
    wrong = a.say(a.value + 10)  # "... holds 16 ..." does not state "... holds 6 ..."
    assert wrong != a.sentence
    got = coverage(world, [wrong], [{"id": "q", "strict": True, "knowledge": wrong}],
                   {"q": [a.id]})
    assert (got["coverage"], got["hit"], got["accuracy_hit"]) == (0.0, 0.0, None)
    assert "| x | 1 | 0.0 | 0.0 | – | 100.0 | – |" in coverage_table({"x": got})


def _stage(name: str, tokens: int, wall: float, **info) -> StageResult:
    return StageResult(name, Path(name), "fp", {"wall_s": wall,
                                                "info": {"tokens": tokens, **info}},
                       skipped=False)


def test_training_table_counts_shared_stages_for_each_method():
    results = {s.name: s for s in (_stage("train-std-cot", 100, 1.0),
                                   _stage("train-fdd-r1", 300, 3.0),
                                   _stage("train-nesycd+fdd", 50, 0.5),
                                   _stage("kb", 0, 9.0))}
    traces = {"std-cot": ["train-std-cot", "predict-std-cot"],
              "fdd": ["train-std-cot", "train-std-cot", "train-fdd-r1"],
              "nesycd+fdd": ["train-std-cot", "train-fdd-r1", "kb", "train-nesycd+fdd"]}
    table = training_table(results, traces)
    assert "| std-cot | 1 | 100 | 0.25x | 1.0 |" in table
    assert "| fdd | 2 | 400 | 1.00x | 4.0 |" in table  # a stage asked for twice counts once
    assert "| nesycd+fdd | 3 | 450 | 1.12x | 4.5 |" in table
    assert "| std-cot | 1 | 100 | – | 1.0 |" in training_table(results,
                                                             {"std-cot": ["train-std-cot"]})


def test_training_table_says_how_the_students_were_trained():
    fp32 = {"bf16": False, "attention": "eager"}
    same = {s.name: s for s in (_stage("train-std-cot", 100, 1.0, **fp32),
                                _stage("train-fdd-r1", 300, 3.0, **fp32), _stage("kb", 0, 9.0))}
    traces = {"fdd": ["train-std-cot", "train-fdd-r1"]}
    assert "Every student trained in fp32, eager attention" in training_table(same, traces)
    mixed = {**same, "train-fdd-r1": _stage("train-fdd-r1", 300, 3.0, bf16=True,
                                            attention="eager")}
    table = training_table(mixed, traces)
    assert "Every student" not in table
    assert ("more than one way (fp32, eager attention: train-std-cot; bf16 autocast, eager "
            "attention: train-fdd-r1)") in table
    split = {**same, "train-fdd-r1": _stage("train-fdd-r1", 300, 3.0, split_batches=True, **fp32)}
    assert ("fp32, eager attention, batches split by length: train-fdd-r1"
            in training_table(split, traces))
    old = {s.name: s for s in (_stage("train-std-cot", 100, 1.0),)}  # stats without the keys
    assert "trained in" not in training_table(old, {"std-cot": ["train-std-cot"]})
