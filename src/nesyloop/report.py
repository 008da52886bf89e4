"""The run's report: a Markdown table of strict and flexible accuracy per method and split, the
wall time of each stage, and ``metrics.json`` (method -> split -> strict, flexible, n)."""

from __future__ import annotations

import os
from typing import Any

from .runs.rundir import StageResult


def metrics_table(metrics: dict[str, dict[str, dict[str, Any]]], splits: list[str]) -> str:
    head = "| method | " + " | ".join(f"{s} strict | {s} flex" for s in splits) + " |"
    sep = "|---|" + "---:|---:|" * len(splits)
    rows = [head, sep]
    for method, per_split in metrics.items():
        cells = []
        for s in splits:
            m = per_split.get(s)
            cells += ["–", "–"] if m is None else [f"{100 * m['strict']:.1f}", f"{100 * m['flexible']:.1f}"]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    ns = {s: next((pm[s]["n"] for pm in metrics.values() if s in pm), 0) for s in splits}
    rows.append("")
    rows.append("Examples per split: " + ", ".join(f"{s} n={n}" for s, n in ns.items()) + ".")
    return "\n".join(rows)


def margin_table(metrics: dict[str, dict[str, dict[str, Any]]], splits: list[str],
                 baseline: str, methods: list[str]) -> str | None:
    """Strict-accuracy margins (points) of ``methods`` over ``baseline`` on every split."""
    methods = [m for m in methods if m in metrics and m != baseline]
    if baseline not in metrics or not methods:
        return None
    rows = [f"| vs {baseline} | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    for m in methods:
        cells = []
        for s in splits:
            a, b = metrics[m].get(s), metrics[baseline].get(s)
            cells.append("–" if a is None or b is None
                         else f"{100 * (a['strict'] - b['strict']):+.1f}")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def stage_table(results: dict[str, StageResult]) -> str:
    rows = ["| stage | wall time (s) | this run |", "|---|---:|---|"]
    total = 0.0
    for name, res in results.items():
        total += res.wall_s
        rows.append(f"| {name} | {res.wall_s:.1f} | {'reused' if res.skipped else 'computed'} |")
    rows.append(f"| **total** | {total:.1f} | |")
    return "\n".join(rows)


def training_table(results: dict[str, StageResult], traces: dict[str, list[str]]) -> str:
    """Per method, the training it took: its train- stages (shared ones included: S_P is
    std-cot's, FDD's rounds are nesycd+fdd's too), the tokens they trained on (prompt and
    completion, padding excluded) and their wall time; the ratio to fdd's tokens when fdd ran."""
    rows = {}
    for method, stages in traces.items():
        trains = [results[s] for s in dict.fromkeys(stages)
                  if s.startswith("train-") and s in results]
        rows[method] = (len(trains), sum(int(r.info.get("tokens", 0)) for r in trains),
                        sum(r.wall_s for r in trains))
    base = rows.get("fdd", (0, 0, 0.0))[1]
    out = ["## Training compute", "",
           "| method | train stages | training tokens | vs fdd | training wall s |",
           "|---|---:|---:|---:|---:|"]
    for method, (n, tokens, wall) in rows.items():
        ratio = f"{tokens / base:.2f}x" if base else "–"
        out.append(f"| {method} | {n} | {tokens:,} | {ratio} | {wall:.1f} |")
    out += ["", "A stage shared by several methods counts for each: std-cot's student is "
                "NesyCD's S_P and round 0 of fdd and of nesycd+fdd. nesycd+fdd shares with fdd "
                "every round before its first knowledge round (`[joined] from_round`): "
                "students, feedback and evolved pools (round 0's feedback is NesyCD's "
                "demonstrations, the KB of its errors NesyCD's `kb`); its knowledge rounds "
                "train students of their own.", ""]
    precision = training_precision(results)
    if precision:
        out += [precision, ""]
    return "\n".join(out)


def training_precision(results: dict[str, StageResult]) -> str:
    """How the run's students were trained (bf16 autocast or fp32, attention kernel), the
    things besides data and seeds that decide their float rounding: a machine that trains
    otherwise (a CPU without bf16, say) trains other students and gets other figures."""
    ways: dict[str, list[str]] = {}
    for name, res in results.items():
        if name.startswith("train-") and "bf16" in res.info:
            kind = "bf16 autocast" if res.info["bf16"] else "fp32"
            way = f"{kind}, {res.info.get('attention', '?')} attention"
            if res.info.get("split_batches"):
                way += ", batches split by length"
            ways.setdefault(way, []).append(name)
    if not ways:
        return ""
    if len(ways) == 1:
        return (f"Every student trained in {next(iter(ways))} (`[train] bf16`, `attention`, "
                "`split_batches`; with `\"auto\"`, bf16 only where the hardware has it and "
                "batches split only on a CPU). Float rounding follows "
                "these and the thread count: another machine trains other students "
                "(docs/methods.md, Training).")
    parts = "; ".join(f"{way}: {', '.join(stages)}" for way, stages in ways.items())
    return (f"Students trained in more than one way ({parts}): the stages come from runs on "
            "different machines or settings, and their float rounding differs.")


def render_report(title: str, metrics: dict, splits: list[str], results: dict[str, StageResult],
                  notes: list[str], extra: str | None = None) -> str:
    parts = [f"# {title}", "", "## Accuracy (%)", "", metrics_table(metrics, splits), ""]
    margins = margin_table(metrics, splits, "std-cot", [m for m in metrics if m != "std-cot"])
    if margins:
        parts += ["## Margins over std-cot (strict, points)", "", margins, ""]
    if extra:
        parts += [extra]
    parts += ["## Stages", "", stage_table(results), ""]
    if notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(parts)


def plot_losses(curves: dict[str, list[float]], path, every: int) -> bool:
    """Training loss per method (one point per ``every`` optimiser steps) to a PNG."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return False
    fig, ax = new_figure((6, 3.5))
    for name, losses in curves.items():
        ax.plot([every * (i + 1) for i in range(len(losses))], losses, label=name)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss (completion tokens)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    return True


def new_figure(size: tuple[float, float]):
    """(figure, axes) of a headless matplotlib figure of ``size`` inches at 100 dpi."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, dpi=100)


def save_figure(fig, path) -> None:
    """Write a matplotlib figure to a PNG atomically (a killed run leaves no half image)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = str(path) + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
