"""Bazaar's season 2 (tasks/bazaar/season.py): a deterministic update of the world, held-out
facts no season-1 problem (nor any evolved one) uses, the drift/novel splits and the fact
sheet, which imports into a KB."""

from __future__ import annotations

import csv
import json
import random

import pytest

from nesyloop.kb import KnowledgeBase
from nesyloop.kb.sheets import apply_import, plan_import, read_sheet
from nesyloop.methods.fdd.stages import held_out_phrases
from nesyloop.tasks.bazaar import FACT_KINDS, build_world, parse_question, render_question
from nesyloop.tasks.bazaar.evolve import evolve_harder, evolve_similar
from nesyloop.tasks.bazaar.generator import BazaarSettings, generate_splits
from nesyloop.tasks.bazaar.season import (HELD_OUT_FILE, SHEET_FILE, held_out_file,
                                          block_following, held_out_ids, season2,
                                          season2_splits)
from nesyloop.tasks.bazaar.solver import solve

SETTINGS = BazaarSettings(train=400, dev=60, test=60, test_rare=40, test_deep=20, max_steps=3,
                          deep_steps=(4, 5), held_out=0.1, dev_drift=60, test_drift=60,
                          dev_novel=40, test_novel=40)


@pytest.fixture(scope="module")
def splits():
    return {**generate_splits(SETTINGS), **season2_splits(SETTINGS)[0]}


@pytest.fixture(scope="module")
def season():
    world = build_world(0)
    held = held_out_ids(world, 0.1)
    world2, changes = season2(world, 0.25, held)
    return world, held, world2, changes


def test_season2_is_deterministic_and_changes_a_quarter_of_every_kind(season, splits):
    world, held, world2, changes = season
    assert season2(build_world(0), 0.25, held_out_ids(build_world(0), 0.1))[1] == changes
    assert {**generate_splits(SETTINGS), **season2_splits(SETTINGS)[0]} == splits
    lo_held = lo_changed = 1.0
    for kind in FACT_KINDS:
        ids = {f.id for f in world.of_kind(kind)}
        lo_held = min(lo_held, len(ids & set(held)) / len(ids))
        lo_changed = min(lo_changed, len(ids & set(changes)) / len(ids))
    assert lo_held >= 0.1 and lo_changed >= 0.25
    assert not set(held) & set(changes)
    for fid, (old, new) in changes.items():
        assert old == world.fact(fid).value != new == world2.fact(fid).value and 2 <= new <= 9
        assert world2.fact(fid).sentence == world.fact(fid).say(new)


def test_held_out_facts_are_in_no_season_1_problem(season, splits):
    world, held, _, _ = season
    data = {k: v for k, v in splits.items() if k not in ("dev-novel", "test-novel")}
    for name, exs in data.items():
        assert not [e.id for e in exs if set(e.meta["facts"]) & set(held)], name
    flagged = _phrases(season)
    assert not [e.id for exs in data.values() for e in exs if flagged(e.question)]


def _phrases(season):
    import tempfile
    from pathlib import Path

    world, held, _, _ = season
    d = Path(tempfile.mkdtemp())
    files = held_out_file(SETTINGS)
    (d / HELD_OUT_FILE).write_text(files[HELD_OUT_FILE])
    assert json.loads(files[HELD_OUT_FILE])["facts"] == held
    return held_out_phrases(d)


def test_the_evolution_filter_rejects_exactly_the_evolved_problems_using_held_out_facts(
        season, splits):
    """The oracle teacher knows every fact, so some of its evolved problems use a held-out one;
    FDD's evolution filter names exactly those."""
    world, held, _, _ = season
    flagged = _phrases(season)
    using = caught = total = 0
    rng = random.Random(0)
    for ex in splits["train"][:300]:
        p = parse_question(world, ex.question)
        for q in (evolve_harder(world, p, rng), evolve_similar(world, p, rng)):
            if q is None:
                continue
            total += 1
            uses = bool(set(q.facts) & set(held))
            using += uses
            caught += bool(flagged(render_question(world, q)))
            assert uses == bool(flagged(render_question(world, q)))
    assert total > 400 and using > 5 and caught == using


def test_drift_and_novel_splits(season, splits):
    world, held, world2, changes = season
    for name in ("dev-drift", "test-drift"):
        for e in splits[name]:
            p = parse_question(world, e.question)
            assert e.meta["changed_facts"] and not set(p.facts) & set(held)
            assert e.answer == str(solve(world2, p).answer) != e.meta["season1_answer"]
            assert e.meta["season1_answer"] == str(solve(world, p).answer)
    for name in ("dev-novel", "test-novel"):
        for e in splits[name]:
            p = parse_question(world, e.question)
            assert e.meta["held_out_facts"] and not set(p.facts) & set(changes)
    texts = [e.question for exs in splits.values() for e in exs]
    assert len(texts) == len(set(texts))  # no question in two splits


def test_block_following_reads_a_rationale_written_with_placeholders(season):
    """The abstracted student writes "A XA costs 8 coins": read with the record's names put
    back, it follows (or not) the block like a student that writes the name."""
    world, _, world2, changes = season
    fid = next(f for f in changes if f.startswith("price:"))
    item = fid.split(":", 1)[1]
    new, old = world2.fact(fid).sentence, world.fact(fid).sentence
    ex = [{"id": "q", "meta": {"changed_facts": [fid]}}]
    mapping = [[item, "XA"]]

    def rec(said):
        return {"id": "q", "knowledge": new, "abstracted": mapping,
                "output": f"So {said.replace(item, 'XA')} Therefore, the answer is 3."}

    assert block_following(world, world2, ex, [rec(new)])["followed"] == 1
    assert block_following(world, world2, ex, [rec(old)])["stale"] == 1
    plain = {**rec(new), "abstracted": []}  # placeholders never put back: neither value
    assert block_following(world, world2, ex, [plain])["neither"] == 1


def test_block_following_reads_the_value_not_the_unit_after_it(season):
    """The value is read after the sentence's words up to it: a miscopied unit after the
    number ("holds 2 XAs" for "holds 2 XBs") still states the block's value, but not the
    block's sentence; another number there is neither value."""
    world, _, world2, changes = season
    fid = next(f for f in changes if f.startswith("container:"))
    new, old = world2.fact(fid).sentence, world.fact(fid).sentence
    ex = [{"id": "q", "meta": {"changed_facts": [fid]}}]

    def got(said):
        return block_following(world, world2, ex, [{"id": "q", "knowledge": new,
                                                    "output": f"So {said} The answer is 3."}])

    head, value = new.rstrip(".").rsplit(" ", 2)[0], new.split()[-2]
    assert got(new) == {"conflicts": 1, "followed": 1, "stale": 0, "neither": 0, "sentence": 1}
    assert got(f"{head} {value} crates.") == {"conflicts": 1, "followed": 1, "stale": 0,
                                              "neither": 0, "sentence": 0}
    assert got(old)["stale"] == 1
    wrong = next(str(v) for v in range(1, 30) if str(v) not in (value, old.split()[-2]))
    assert got(f"{head} {wrong} crates.")["neither"] == 1
    assert got(f"{head} {value}0 crates.")["neither"] == 1  # 20 is not 2


def test_the_fact_sheet_imports_into_a_season_1_kb(tmp_path, season):
    """A KB stating every season-1 fact: importing season 2's sheet disables exactly the
    changed facts' old sentences and adds one human entry per sheet line."""
    world, held, world2, changes = season
    sheet = tmp_path / SHEET_FILE
    sheet.write_text(season2_splits(SETTINGS)[1])
    rows = list(csv.DictReader(sheet.open()))
    assert {r["key"] for r in rows} == set(changes) | set(held)
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    for f in world.facts:
        if f.id not in held:
            kb.add(f"error on {f.id}", [f.sentence], source_id=f.id)
    counts = apply_import(kb, sheet, plan_import(kb, read_sheet(sheet)))
    assert counts == {"added": len(rows), "disabled": len(changes), "enabled": 0,
                      "unchanged": 0}
    stated = {it["text"] for it in kb.items(enabled_only=True)}
    assert stated == {world2.fact(f.id).sentence for f in world.facts}
    kb.close()


def test_only_held_out_facts_touch_the_data_stage():
    from nesyloop.config import load_config
    from nesyloop.methods.shared import data_settings

    main = load_config(None).task  # the main job holds a tenth of the facts out
    task = main.model_copy(update={"bazaar": main.bazaar.model_copy(
        update={"held_out": 0.0, "test_novel": 0})})
    assert "held_out" not in data_settings(task)["bazaar"]
    changed = task.model_copy(update={"bazaar": task.bazaar.model_copy(update={"held_out": 0.1})})
    assert data_settings(changed)["bazaar"]["held_out"] == 0.1
    assert data_settings(main)["bazaar"]["held_out"] == 0.1
    # season 2's splits are not the data stage's: asking for them leaves its fingerprint
    more = changed.model_copy(update={"bazaar": changed.bazaar.model_copy(
        update={"test_drift": 50, "drift": 0.5})})
    assert data_settings(more) == data_settings(changed)
    with pytest.raises(ValueError, match="held_out > 0"):
        BazaarSettings(test_novel=10)
