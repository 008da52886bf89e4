"""The report's "knowledge update" section (Bazaar's season 2, tasks/bazaar/season.py): per
method, accuracy on a season-1 split beside the season-2 splits (the KB methods answer those
with their KB updated by the fact sheet; ``<method>/stale-kb`` with the KB as it was), how
often a KB student's rationale follows its block where the block gives a changed fact's new
value, and ``knowledge-update.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import read_jsonl, write_json
from ..runs.context import RunContext

ROWS = ("test", "dev")  # the season-1 split shown beside season 2's (the first one run)


def _following(ctx: RunContext, metrics: dict[str, Any], drift: list[str]) -> dict[str, dict]:
    """Block following per KB row and drift split, from its predictions."""
    from ..tasks.bazaar import build_world
    from ..tasks.bazaar.season import block_following, held_out_ids, season2

    s = ctx.cfg.task.bazaar
    world = build_world(s.seed, s.tail_fraction)
    world2, _ = season2(world, s.drift, held_out_ids(world, s.held_out))
    out: dict[str, dict] = {}
    for name in metrics:
        stage = f"predict-{name.replace('/', '-')}"
        for pred in (ctx.result(f"{stage}-season2"), ctx.result(stage)):
            if pred is None or ctx.season2 is None:
                continue
            for split in drift:
                path = pred.path / f"{split}.jsonl"
                if path.exists() and split not in out.get(name, {}):
                    recs = read_jsonl(path)
                    got = block_following(
                        world, world2, read_jsonl(ctx.season2.path / f"{split}.jsonl"), recs)
                    if got["conflicts"]:  # blocks that give new values (not a stale KB's)
                        out.setdefault(name, {})[split] = got
    return out


def update_section(ctx: RunContext, metrics: dict[str, Any]) -> str | None:
    """The section (None without season-2 splits); writes ``knowledge-update.json``."""
    from ..tasks.bazaar.generator import SEASON2_SPLITS

    later = [s for s in ctx.cfg.eval.splits if s in SEASON2_SPLITS]
    if not later or ctx.season2 is None:
        return None
    base = next((s for s in ROWS if s in ctx.cfg.eval.splits), None)
    cols = ([base] if base else []) + later
    rows = {m: {s: 100 * v[s]["strict"] for s in cols if s in v} for m, v in metrics.items()
            if any(s in v for s in later)}
    follow = _following(ctx, metrics, [s for s in later if s.endswith("-drift")])
    write_json(ctx.out / "knowledge-update.json", {"accuracy": rows, "following": follow})
    lines = ["## Knowledge update (season 2)", "",
             f"Season 2 changes the value of {ctx.cfg.task.bazaar.drift:.0%} of every kind of "
             f"fact and brings the held-out facts; its fact sheet "
             f"(`{ctx.season2.name}/season2-facts.csv`) is imported into a copy of each KB "
             f"student's KB (`<kb>-season2`), no student retrained. KB methods answer the "
             f"season-2 splits with the updated KB; `<method>/stale-kb`: with the KB as it was. "
             f"Strict %:", "",
             "| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for m, r in rows.items():
        lines.append(f"| {m} | " + " | ".join(f"{r[c]:.1f}" if c in r else "–" for c in cols)
                     + " |")
    if follow:
        lines += ["", "Where the block gives a changed fact's new value (a conflict with what "
                  "the student learnt): its rationale states the fact with the block's value "
                  "(followed) or the season-1 value (stale); the block's whole sentence word "
                  "for word (sentence).", "",
                  "| method | split | conflicts | followed % | stale % | sentence % |",
                  "|---|---|---:|---:|---:|---:|"]
        for m, per in follow.items():
            for split, c in per.items():
                n = max(1, c["conflicts"])
                lines.append(f"| {m} | {split} | {c['conflicts']} | "
                             f"{100 * c['followed'] / n:.1f} | {100 * c['stale'] / n:.1f} | "
                             f"{100 * c.get('sentence', 0) / n:.1f} |")
    if _plot(rows, cols, ctx.out / "knowledge-update.png"):
        lines += ["", "![knowledge update](knowledge-update.png)"]
    return "\n".join(lines) + "\n"


def _plot(rows: dict[str, dict[str, float]], cols: list[str], path: Path) -> bool:
    """Grouped bars: per method, its accuracy on each column's split."""
    if not rows:
        return False
    from ..report import new_figure, save_figure

    fig, ax = new_figure((1.6 + 1.4 * len(rows), 3.4))
    width = 0.8 / len(cols)
    for j, c in enumerate(cols):
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [r.get(c, 0.0) for r in rows.values()], width, label=c)
    ax.set_xticks(range(len(rows)), list(rows), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("strict accuracy (%)")
    ax.set_title("Knowledge update: season 1 vs season 2")
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return True
