"""Leave-one-out attribution of knowledge-base entries: for each entry, how many answers on an
evaluation split change when that entry is disabled, over the questions that retrieve it.

Both sides are computed now, with the KB as it is: the baseline answers (retrieval as at
inference) and, for each (question, retrieved entry), the answer when that entry is left out
(retrieval then returns the next best). ``helped`` counts questions the entry makes right
(right with it, wrong without), ``hurt`` the opposite; ``net = helped - hurt``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..kb.abstract import Abstractor, apply_prompt
from ..kb.retrieve import Retriever, knowledge_text
from ..kb.store import KnowledgeBase
from ..scoring import score_output
from ..tasks.base import Example
from .common import thought_records


def attribute_entries(model: str | Path, kb_path: str | Path, examples: list[Example], ns,
                      description: str, batch_size: int = 64, max_new_tokens: int = 256,
                      progress: bool = True, mode: str = "strict", inference: str = "cot",
                      engine: str = "hf", server: Any = None) -> dict[str, Any]:
    """Per-entry effect on ``examples``, answers extracted and scored ``mode`` (strict or
    flexible, as in the report); ``inference`` is how the student answers (a mixed-thoughts
    student: "pot" or "pot-then-cot"); ``engine``/``server``: the student engine
    (``[student]``). Returns ``{"entries": [...], "baseline": {...}}``."""
    from ..gen.registry import make_student

    insert, k = ns.retrieval.insert, ns.retrieval.top_k
    with KnowledgeBase(kb_path) as kb:
        retriever = Retriever(kb, ns.retrieval, description)
        questions = [ex.question for ex in examples]
        base_hits = retriever.retrieve_many(questions)
        loo: list[tuple[int, int]] = []  # (example index, left-out entry id)
        for i, hits in enumerate(base_hits):
            loo += [(i, e.id) for e, _ in hits]
        loo_hits = retriever.retrieve_many([questions[i] for i, _ in loo], k,
                                           [[eid] for _, eid in loo])
        entries = {e.id: e for e in kb.list()}
        names = Abstractor.of_kb(kb) if ns.retrieval.abstract else None

    def block(hits) -> str:
        return knowledge_text([e for e, _ in hits], insert)

    blocks = [block(h) for h in base_hits] + [block(h) for h in loo_hits]
    todo = [ex for ex in examples] + [examples[i] for i, _ in loo]
    if names is not None:  # the prompts the student was trained on: names as placeholders
        shown = [apply_prompt(ex.question, b, names.mapping(ex.question, b))
                 for ex, b in zip(todo, blocks, strict=True)]
        todo = [replace(ex, question=q) for ex, (q, _) in zip(todo, shown, strict=True)]
        blocks = [b for _, b in shown]
    backend = make_student(model, engine=engine, batch_size=batch_size, progress=progress,
                           server=server)
    try:
        records = thought_records(backend, todo, inference, max_new_tokens,
                                  [{"knowledge": b} for b in blocks])
    finally:
        backend.close()
    scored = [score_output(r["output"], r["gold"], r["answer_type"], r["options"])
              for r in records]
    base, alt = scored[:len(examples)], scored[len(examples):]
    pred = f"{mode}_pred"
    rows: dict[int, dict[str, Any]] = defaultdict(lambda: {"questions": 0, "changed": 0,
                                                           "helped": 0, "hurt": 0,
                                                           "changes": []})
    for (i, eid), s in zip(loo, alt, strict=True):
        row, b = rows[eid], base[i]
        row["questions"] += 1
        if s[pred] != b[pred]:
            row["changed"] += 1
            row["changes"].append({"id": examples[i].id, "gold": examples[i].answer,
                                   "with": b[pred], "without": s[pred]})
        if b[mode] and not s[mode]:
            row["helped"] += 1
        elif s[mode] and not b[mode]:
            row["hurt"] += 1
    out = []
    for eid, row in rows.items():
        e = entries.get(eid)
        out.append({"entry": eid, "summary": e.summary if e else None,
                    "net": row["helped"] - row["hurt"], **row})
    out.sort(key=lambda r: (-r["net"], -r["changed"], r["entry"]))
    n = len(examples)
    return {"entries": out, "baseline": {
        "n": n, "mode": mode, "accuracy": sum(bool(s[mode]) for s in base) / max(1, n),
        "with_knowledge": sum(bool(h) for h in base_hits)}}
