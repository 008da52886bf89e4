"""The FDD part of the report: one row per round (pool, feedback, evolution, teacher cost,
accuracy per split) as a Markdown table, ``fdd-rounds.json`` and a PNG of accuracy per round."""

from __future__ import annotations

from typing import Any

from ...report import save_figure


def round_rows(rounds, results: dict) -> list[dict[str, Any]]:
    """Plain per-round records from the flow's :class:`Round` objects."""
    rows = []
    for r in rounds:
        pool = r.pool.info
        if r.index == 0:
            rat, prog = results.get("rationales"), results.get("programs")
            cost = [x.info for x in (rat, prog) if x is not None]
        else:
            cost = [pool]
        row = {"round": r.index, "pool": pool.get("pool"), "new": pool.get("new"),
               "origin": pool.get("origin", {}), "seeds": pool.get("seeds"),
               "easy": pool.get("easy"), "hard": pool.get("hard"),
               "generated": pool.get("generated"), "rejected": pool.get("rejected"),
               "rejected_reasons": pool.get("rejected_reasons", {}),
               "teacher_requests": sum(c.get("requests_issued", 0) + c.get("requests_cached", 0)
                                       for c in cost),
               "teacher_tokens": sum(c.get("prompt_tokens", 0) + c.get("completion_tokens", 0)
                                     for c in cost),
               "train_pairs": r.model.info.get("pairs"), "model": r.model.name,
               "kb_entries": None if r.kb is None else r.kb.info.get("kb_entries",
                                                                      r.kb.info.get("entries")),
               "accuracy": {s: round(100 * m["strict"], 1)
                            for s, m in (r.metrics or {}).items()}}
        rows.append(row)
    return rows


def stop_note(rnd: int, stage: str, info: dict[str, Any]) -> str:
    """Why the rounds ended before ``rnd``: none of the problems the teacher wrote was kept."""
    reasons = sorted(info.get("rejected_reasons", {}).items(), key=lambda kv: -kv[1])
    why = ", ".join(f"{k}: {v}" for k, v in reasons[:3]) or "no reason recorded"
    wrote = info.get("generated", 0)
    if not wrote:
        return (f"FDD stopped before round {rnd}: the teacher wrote no new problem from "
                f"{info.get('seeds', 0)} seed problems ({why}); see `{stage}/rejected.jsonl`.")
    return (f"FDD stopped before round {rnd}: all {info.get('rejected', wrote)} problems "
            f"the teacher wrote were rejected (top reasons: {why}); see "
            f"`{stage}/rejected.jsonl`, one record per problem with its reason.")


def rounds_table(rows: list[dict[str, Any]], splits: list[str]) -> str:
    def n(x):
        return "–" if x is None else str(x)

    kb = any(r.get("kb_entries") is not None for r in rows)  # the joined loop's KB size
    head = ("| round | pool | new | seeds (easy/hard) | generated | rejected | teacher requests "
            "| teacher tokens | train pairs | " + ("KB entries | " if kb else "")
            + " | ".join(splits) + " |")
    out = [head, "|---:|---:|---:|---|---:|---:|---:|---:|---:|" + "---:|" * (len(splits) + kb)]
    for r in rows:
        seeds = "–" if r["seeds"] is None else f"{r['seeds']} ({r['easy']}/{r['hard']})"
        acc = [f"{r['accuracy'][s]:.1f}" if s in r["accuracy"] else "–" for s in splits]
        out.append(f"| {r['round']} | {n(r['pool'])} | {n(r['new'])} | {seeds} | "
                   f"{n(r['generated'])} | {n(r['rejected'])} | {r['teacher_requests']} | "
                   f"{r['teacher_tokens']} | {n(r['train_pairs'])} | "
                   + (f"{n(r.get('kb_entries'))} | " if kb else "") + " | ".join(acc) + " |")
    reasons = [f"round {r['round']}: " + ", ".join(f"{k} {v}" for k, v in
                                                     r["rejected_reasons"].items())
               for r in rows if r["rejected_reasons"]]
    if reasons:
        out += ["", "Rejected synthesised problems, by reason: " + "; ".join(reasons) + "."]
    return "\n".join(out)


def loop_notes(name: str, done, cfg) -> list[str]:
    """What a loop's table needs said: why it stopped early, what round 0 is, where its KB
    is."""
    notes = [done.stop] if done.stop else []
    if cfg.fdd.thoughts == "cot":
        notes.append("Round 0 is std-cot's student (CoT thoughts: the same training data).")
    kb = done.rounds[-1].kb
    if kb is not None:
        start = cfg.joined.from_round
        shared = "round 0" if start == 1 else f"rounds 0 to {start - 1}"
        notes.append(f"{name} shares {shared} with fdd (students, feedback, evolved pools); "
                     f"from round {start} its students train and answer with knowledge blocks. "
                     f"Every round's wrong answers grow its KB: "
                     f"{kb.info.get('kb_entries', kb.info.get('entries'))} entries at the end "
                     f"(`{kb.name}/kb.sqlite`).")
    return notes


def plot_rounds(loops: dict[str, list[dict[str, Any]]], splits: list[str], path) -> bool:
    """Accuracy (strict %) per round per split (one colour each), one line style per loop
    (fdd solid, the joined loop dashed): the loops side by side."""
    if not any(r["accuracy"] for rows in loops.values() for r in rows):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    styles = ["-", "--", ":", "-."]
    rounds: set[int] = set()
    for k, (name, rows) in enumerate(loops.items()):
        xs = [r["round"] for r in rows]
        rounds.update(xs)
        for i, s in enumerate(splits):
            ax.plot(xs, [r["accuracy"].get(s) for r in rows], marker="o" if k == 0 else "*",
                    ls=styles[k % len(styles)], color=f"C{i}",
                    label=f"{s}" if len(loops) == 1 else f"{name}: {s}")
    ax.set_xticks(sorted(rounds))
    ax.set_xlabel("round (0 = initial student)")
    ax.set_ylabel("accuracy, strict (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(loops) > 1 else 1)
    save_figure(fig, path)
    return True
