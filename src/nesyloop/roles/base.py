"""A teacher role is a prompt template plus an output parser, over any backend.

Like distilabel's Task: ``format_input(example) -> messages`` and
``format_output(text, example) -> record``. :func:`run_role` sends every example (k samples
each) through a backend in batches, with a progress bar, and returns the parsed records.
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
    """Returns, for each example, the parsed records of its ``settings.n`` samples."""
    results: list[list[dict[str, Any]]] = []
    bar = tqdm(total=len(examples), desc=desc or role.name, unit="q", disable=not progress,
               leave=False)
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start:start + batch_size])
        reqs = [Request.chat(role.format_input(ex), settings, id=ex.id) for ex in chunk]
        comps = backend.generate(reqs)
        for ex, comp in zip(chunk, comps, strict=True):
            recs = []
            for j, text in enumerate(comp.texts):
                rec = role.format_output(text, ex)
                rec.update({"id": ex.id, "sample": j, "role": role.name})
                recs.append(rec)
            results.append(recs)
        bar.update(len(chunk))
    bar.close()
    return results
