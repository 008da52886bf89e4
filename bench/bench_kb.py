"""The knowledge base at scale: bulk import, retrieval latency and memory, 10^4 to 10^6 entries.

Synthetic entries shaped like Bazaar's (an error analysis: a learning summary naming the facts
the student got wrong, and the fact sentences), over a world of invented names large enough that
a 10^6-entry KB states each fact a few dozen times; queries shaped like Bazaar questions (the task
description, then a question naming one to three of the facts' goods, containers, currencies or
places, with the common words of the real questions).

For each size: ``nesyloop kb import`` of a JSONL file (entries/s; up to ``--baseline-max``
also of that KB's export, every entry with its history), then one query at a time
(p50, p99) with the KB's retrieval (``Retriever``, bm25, top-1) and with SQLite FTS5's plain
``bm25()`` ORDER BY (the previous query plan, the baseline), the share of single-fact queries
whose first entry states the query's fact under each, and the process's peak memory. Usage:

    .venv/bin/python bench/bench_kb.py --sizes 10000 100000 1000000 --json bench/results/kb.json
    # the import against an older nesyloop, in the same run:
    git archive f397f2b src | tar -x -C /tmp/kb-baseline
    .venv/bin/python bench/bench_kb.py --baseline-src /tmp/kb-baseline/src ...
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nesyloop.kb.retrieve import RetrievalSettings, Retriever
from nesyloop.kb.store import INDEX_AFTER, KnowledgeBase, _fts_query

SYL = ("glim bral brin cind cral dresk drub fen frel gorm hask jin klav kesh lirn lom mub mor "
       "narf nib pim plov prax quin quor rost rum skel sorl stav tal thol tibb trel vask velk "
       "vint wex wim yor zarn zel bix").split()
GOODS = "wick stone lamp charm bell cloak flute ring quill blade drum spool kettle comb".split()
FRUITS = "berry melon nut root fig pod plum bean gourd pear".split()
CONTAINERS = "crate basket sack barrel box jar bundle pouch tray keg".split()
PEOPLE = "Mira Tomas Lena Oskar Priya Jonah Ada Felix Nadia Ravi Elsa Hugo Omar Rosa".split()
DESCRIPTION = "Bazaar word problems."


def world(n_facts: int, seed: int = 0) -> list[dict]:
    """``n_facts`` facts: {kind, name, sentence, what} with invented, distinct names."""
    rng = random.Random(seed)
    facts, seen = [], set()
    while len(facts) < n_facts:
        name = rng.choice(SYL) + rng.choice(SYL) + rng.choice(GOODS + FRUITS)
        kind = rng.choice(("price", "price", "container", "currency", "rule"))
        key = (kind, name)
        if key in seen:
            continue
        seen.add(key)
        v = rng.randint(2, 9)
        if kind == "price":
            f = (f"A {name} costs {v} coins.", f"the price of a {name}")
        elif kind == "container":
            c = rng.choice(CONTAINERS)
            f = (f"A {c} of {name}s holds {v} {name}s.", f"how many {name}s a {c} holds")
        elif kind == "currency":
            f = (f"1 {name} is {v} coins.", f"the value of a {name}")
        else:
            place = name.capitalize() + rng.choice(("bridge", "gate", "well", "mont"))
            f = (f"The {place} toll is {v} coins.", f"the {place} toll")
        facts.append({"kind": kind, "name": name, "sentence": f[0], "what": f[1]})
    return facts


def zipf(n: int) -> list[float]:
    """Cumulative weights 1/sqrt(rank): a few facts come up often, most rarely."""
    cum, total = [], 0.0
    for i in range(n):
        total += 1.0 / (i + 1) ** 0.5
        cum.append(total)
    return cum


def entries(facts: list[dict], n: int, seed: int = 1):
    """``n`` error-analysis entries as JSONL objects (1-3 facts each, Zipf-ish reuse)."""
    rng = random.Random(seed)
    cum = zipf(len(facts))
    for i in range(n):
        fs = rng.choices(facts, cum_weights=cum, k=rng.choice((1, 1, 2, 3)))
        how = rng.choice(("used a wrong value for", "did not state"))
        summary = (f"The student {how} " + " and ".join(f["what"] for f in fs)
                   + ". Recall each fact the problem needs before computing with it.")
        yield {"summary": summary, "knowledge": [f["sentence"] for f in fs],
               "source_id": f"train-{i}", "question": question(rng, fs), "teacher": "oracle",
               "enabled": True, "created": 1.0, "updated": 1.0}


def question(rng: random.Random, fs: list[dict]) -> str:
    who = rng.choice(PEOPLE)
    parts = []
    for f in fs:
        k = rng.randint(2, 9)
        if f["kind"] == "container":
            c = f["sentence"].split()[1]
            parts.append(f"{who} buys {k} {c}s of {f['name']}s.")
        elif f["kind"] == "currency":
            parts.append(f"{who} has {k} {f['name']}s.")
        elif f["kind"] == "rule":
            parts.append(f"{who} crosses the {f['sentence'].split()[1]} toll.")
        else:
            parts.append(f"{who} buys {k} {f['name']}s.")
    tail = rng.choice(("How many coins does {w} spend?", "How many coins does {w} have now?",
                       "How many items does {w} have?"))
    return " ".join(parts) + " " + tail.format(w=who)


def write_jsonl(path: Path, n: int, facts: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for obj in entries(facts, n):
            f.write(json.dumps(obj) + "\n")


def fts_baseline(kb: KnowledgeBase, query: str) -> int | None:
    """The previous query plan: every matching row scored by bm25(), sorted."""
    rows = kb._db.execute(
        "SELECT e.id FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid "
        "WHERE entries_fts MATCH ? AND e.enabled=1 ORDER BY bm25(entries_fts, 1.0, 1.0, 0.0), "
        "e.id LIMIT 1", (_fts_query(f"{DESCRIPTION}\n{query}"),)).fetchall()
    return rows[0][0] if rows else None


def latency(fn, queries: list[str]) -> tuple[list[float], list]:
    times, out = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        times.append(time.perf_counter() - t)
    return times, out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def kb_command(*args: str, code: Path | None = None) -> float:
    """Seconds for ``nesyloop kb ARGS`` in a new process (its start included), with the
    nesyloop of ``code`` (a src folder) when given."""
    env = {**os.environ, **({"PYTHONPATH": str(code)} if code else {})}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from nesyloop.cli import main; main()", "kb", *args],
                   check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def kb_import(src: Path, kbfile: Path, code: Path | None = None) -> float:
    return kb_command("import", str(src), "--kb", str(kbfile), code=code)


def measure(size: int, facts: list[dict], n_queries: int, baseline_max: int,
            baseline_src: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        src, kbfile = Path(tmp) / "entries.jsonl", Path(tmp) / "kb.sqlite"
        write_jsonl(src, size, facts)
        base = {}
        if baseline_src is not None and size <= baseline_max:
            s = kb_import(src, Path(tmp) / "baseline.sqlite", baseline_src)
            base = {"baseline_import_per_s": round(size / s)}
        import_s = kb_import(src, kbfile)
        if size <= baseline_max:  # an export (every entry with its history) imported again
            exported = Path(tmp) / "export.jsonl"
            kb_command("export", str(exported), "--kb", str(kbfile))
            s = kb_import(exported, Path(tmp) / "again.sqlite")
            base["export_import_per_s"] = round(size / s)
            if baseline_src is not None:  # the older code's own export (its format)
                old = Path(tmp) / "export-baseline.jsonl"
                kb_command("export", str(old), "--kb", str(Path(tmp) / "baseline.sqlite"),
                           code=baseline_src)
                s = kb_import(old, Path(tmp) / "again-baseline.sqlite", baseline_src)
                base["baseline_export_import_per_s"] = round(size / s)
        rng, cum = random.Random(7), zipf(len(facts))  # questions about facts as entries are
        qfacts = [rng.choices(facts, cum_weights=cum, k=rng.choice((1, 1, 2)))
                  for _ in range(n_queries)]
        queries = [question(rng, fs) for fs in qfacts]
        kb = KnowledgeBase(kbfile, readonly=True)
        retr = Retriever(kb, RetrievalSettings(top_k=1), DESCRIPTION)
        sentence = {e.id: e.knowledge for e in kb.list()}
        t = time.perf_counter()
        retr.retrieve_many(queries[:INDEX_AFTER])  # builds the in-memory index
        build_s = time.perf_counter() - t
        index_mb = kb._bm25[0].nbytes / 2**20
        times, hits = latency(lambda q: retr.retrieve(q), queries)
        new_ids = [h[0][0].id if h else None for h in hits]
        res = {"entries": size, "import_s": round(import_s, 2),
               "import_per_s": round(size / import_s),
               "kb_mb": round(kbfile.stat().st_size / 2**20, 1),
               "index_build_s": round(build_s, 2), "index_mb": round(index_mb, 1),
               "p50_ms": round(pct(times, 0.5), 3), "p99_ms": round(pct(times, 0.99), 3),
               "right_first": right_first(qfacts, new_ids, sentence), **base}
        if "baseline_import_per_s" in base:
            res["import_ratio"] = round(res["import_per_s"] / base["baseline_import_per_s"], 2)
        if size <= baseline_max:
            btimes, old_ids = latency(lambda q: fts_baseline(kb, q), queries)
            res.update(baseline_p50_ms=round(pct(btimes, 0.5), 3),
                       baseline_p99_ms=round(pct(btimes, 0.99), 3),
                       baseline_right_first=right_first(qfacts, old_ids, sentence),
                       same_top1=round(sum(a == b for a, b in zip(new_ids, old_ids))
                                       / len(queries), 4))
        kb.close()
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return res


def right_first(qfacts: list[list[dict]], ids: list, knowledge: dict) -> float:
    """Of the one-fact questions whose fact some entry states, the share whose first entry
    states it."""
    stated = {k for ks in knowledge.values() for k in ks}
    single = [(fs[0], i) for fs, i in zip(qfacts, ids) if len(fs) == 1
              and fs[0]["sentence"] in stated]
    ok = sum(i is not None and fs["sentence"] in knowledge[i] for fs, i in single)
    return round(ok / max(1, len(single)), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--baseline-max", type=int, default=100_000,
                    help="measure the previous plan up to this size (it is slow beyond)")
    ap.add_argument("--baseline-src", type=Path,
                    help="also import with the nesyloop of this src folder (up to "
                         "--baseline-max entries): the import's ratio against it")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    facts = world(50_000)
    results = []
    for size in args.sizes:
        r = measure(size, facts, args.queries, args.baseline_max, args.baseline_src)
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"sqlite": sqlite3.sqlite_version, "results": results},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
