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

    head = ("| round | pool | new | seeds (easy/hard) | generated | rejected | teacher requests "
            "| teacher tokens | train pairs | " + " | ".join(splits) + " |")
    out = [head, "|---:|---:|---:|---|---:|---:|---:|---:|---:|" + "---:|" * len(splits)]
    for r in rows:
        seeds = "–" if r["seeds"] is None else f"{r['seeds']} ({r['easy']}/{r['hard']})"
        acc = [f"{r['accuracy'][s]:.1f}" if s in r["accuracy"] else "–" for s in splits]
        out.append(f"| {r['round']} | {n(r['pool'])} | {n(r['new'])} | {seeds} | "
                   f"{n(r['generated'])} | {n(r['rejected'])} | {r['teacher_requests']} | "
                   f"{r['teacher_tokens']} | {n(r['train_pairs'])} | " + " | ".join(acc) + " |")
    reasons = [f"round {r['round']}: " + ", ".join(f"{k} {v}" for k, v in
                                                     r["rejected_reasons"].items())
               for r in rows if r["rejected_reasons"]]
    if reasons:
        out += ["", "Rejected synthesised problems, by reason: " + "; ".join(reasons) + "."]
    return "\n".join(out)


def plot_rounds(rows: list[dict[str, Any]], splits: list[str], path,
                joined: dict[str, Any] | None = None) -> bool:
    """Accuracy (strict %) per round per split; the joined method as a marker after the last
    round."""
    if not rows or not any(r["accuracy"] for r in rows):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=100)
    xs = [r["round"] for r in rows]
    for i, s in enumerate(splits):
        ys = [r["accuracy"].get(s) for r in rows]
        line, = ax.plot(xs, ys, marker="o", label=s, color=f"C{i}")
        if joined and s in joined:
            ax.scatter([xs[-1] + 0.7], [100 * joined[s]["strict"]], marker="*", s=120,
                       color=line.get_color())
    ticks, labels = xs, [str(x) for x in xs]
    if joined:
        ax.axvline(xs[-1] + 0.35, color="grey", lw=0.5, ls=":")
        ticks, labels = xs + [xs[-1] + 0.7], labels + ["nesycd+fdd"]
    ax.set_xticks(ticks, labels)
    ax.set_xlabel("FDD round (0 = initial student)")
    ax.set_ylabel("accuracy, strict (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return True
