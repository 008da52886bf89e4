"""A teacher role is a prompt template plus an output parser, over any backend.

Like distilabel's Task: ``format_input(example) -> messages`` and
``format_output(text, example) -> record``. :func:`run_role` sends every example (k samples
each) through a backend in batches (all at once to one that sends each request on its own),
with a progress bar, and returns the parsed records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tqdm.auto import tqdm

from ..gen.base import Backend, GenSettings, Message, Request
from ..tasks.base import Example


class Role(Protocol):
    name: str

    def format_input(self, example: Example) -> list[Message]: ...

    def format_output(self, text: str, example: Example) -> dict[str, Any]: ...


def run_role(
    backend: Backend,
    role: Role,
    examples: Sequence[Example],
    settings: GenSettings,
    batch_size: int = 64,
    desc: str | None = None,
    progress: bool = True,
) -> list[list[dict[str, Any]]]:
    """Returns, for each example, the parsed records of its ``settings.n`` samples. A request
    that failed for good gives records with ``kept`` False, ``reason`` "teacher request failed:
    ..." and ``teacher_error`` (whatever the role would have parsed from an empty reply).

    The progress bar moves as replies come back and shows the live cost when the backend keeps
    one (the request cache's ``on_done`` hook and ``postfix``)."""
    results: list[list[dict[str, Any]]] = []
    bar = tqdm(total=len(examples), desc=desc or role.name, unit="q", disable=not progress,
               leave=False)
    live = hasattr(backend, "on_done") and hasattr(backend, "postfix")

    def tick(n: int) -> None:
        bar.update(n)
        bar.set_postfix_str(backend.postfix(), refresh=False)  # type: ignore[attr-defined]

    # a backend that sends each request on its own (the request cache over an HTTP teacher)
    # gets them all at once: in batches, each would wait for its slowest request
    size = max(1, len(examples) if getattr(backend, "per_request", False) else batch_size)
    for start in range(0, len(examples), size):
        chunk = list(examples[start:start + size])
        reqs = [Request.chat(role.format_input(ex), settings, id=ex.id) for ex in chunk]
        if live:
            backend.on_done = tick  # type: ignore[attr-defined]
        try:
            comps = backend.generate(reqs)
        finally:
            if live:
                backend.on_done = None  # type: ignore[attr-defined]
        for ex, comp in zip(chunk, comps, strict=True):
            recs = []
            for j, text in enumerate(comp.texts):
                rec = role.format_output(text, ex)
                rec.update({"id": ex.id, "sample": j, "role": role.name})
                if comp.error is not None:
                    rec.update(kept=False, reason=f"teacher request failed: {comp.error}",
                               teacher_error=comp.error)
                recs.append(rec)
            results.append(recs)
        if not live:
            bar.update(len(chunk))
    bar.close()
    return results
