"""What ``nesyloop serve`` can serve: the Bazaar oracle teacher (built as the pipeline builds it),
a student checkpoint through its engine (:func:`~nesyloop.gen.registry.make_student`), or a
student with its knowledge base (:class:`KBStudentBackend`: NesyCD's retrieval before every
answer)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..gen.base import BaseBackend, Completion, Request
from ..students.prompt import STUDENT_STOP, question_from_prompt


@dataclass
class KBCompletion(Completion):
    """A completion plus what retrieval put in its prompt (sent back as ``nesyloop``)."""

    nesyloop: dict[str, Any] = field(default_factory=dict)


def question_of(request: Request) -> str:
    """The question of a request: a chat's last user message, or a raw prompt without a
    leading "Question: " and a trailing "\\nAnswer:" (the student's own prompt format)."""
    if request.messages is not None:
        users = [c for r, c in request.messages if r == "user"]
        text = users[-1] if users else request.messages[-1][1]
    else:
        text = request.prompt or ""
    return question_from_prompt(text)


class KBStudentBackend(BaseBackend):
    """A student that answers with retrieved knowledge, as NesyCD's S_E does at inference: the
    prompts come from :func:`nesyloop.methods.nesycd.stages.retrieval_prompts` (retrieve, insert,
    optional confidence gate) and retrieved entries are counted in the KB."""

    kind = "hf+kb"

    def __init__(self, student: Any, kb_path: str | os.PathLike, nesycd: Any = None,
                 description: str = ""):
        from ..methods.nesycd.settings import NesycdSettings
        from ..methods.nesycd.stages import retrieval_prompts

        self.student = student
        self.kb_path = Path(kb_path)
        self.model = f"{student.model}+kb"
        self.supports_logprobs = bool(getattr(student, "supports_logprobs", False))
        ns = nesycd if nesycd is not None else NesycdSettings()
        self._prompts, self._count = retrieval_prompts(self.kb_path, ns, description, ns.gate)

    @property
    def tokenizer(self) -> Any:
        return getattr(self.student, "tokenizer", None)

    def generate(self, requests: list[Request]) -> list[Completion]:
        from ..kb.abstract import restore
        from ..tasks.base import Example

        examples = [Example(id=f"request-{i}", question=question_of(r), answer="")
                    for i, r in enumerate(requests)]
        prompts, extra = self._prompts(examples, self.student)
        raw = []
        for p, r in zip(prompts, requests, strict=True):
            stop = tuple(dict.fromkeys(r.settings.stop + STUDENT_STOP))
            raw.append(Request.raw(p, r.settings.model_copy(update={"stop": stop})))
        comps = self.student.generate(raw)
        self._count(extra)
        # with [nesycd.retrieval] abstract the student wrote placeholders: the client gets names
        return [KBCompletion(texts=[restore(t, x.get("abstracted", [])) for t in c.texts],
                             prompt_tokens=c.prompt_tokens,
                             completion_tokens=c.completion_tokens, logprobs=c.logprobs,
                             nesyloop={"retrieved": [h["id"] for h in x["retrieved"]],
                                       "scores": [h["score"] for h in x["retrieved"]],
                                       "knowledge": x["knowledge"], "gated": x["gated"]})
                for c, x in zip(comps, extra, strict=True)]

    def close(self) -> None:
        self.student.close()


def serve_backend(backend: str = "oracle", model: str | None = None, kb: str | None = None,
                  config: Any = None, quick: bool = False, error_rate: float | None = None,
                  batch_size: int = 32) -> BaseBackend:
    """Build what ``nesyloop serve`` serves. ``backend="oracle"``: the Bazaar oracle teacher
    with the teacher, task and run seeds of ``config`` (a path, a Config, or None for the
    built-in default; ``error_rate`` overrides the teacher's). ``backend="hf"``: the student
    ``model`` (checkpoint folder, ``.gguf`` file or "smollm2"), with its knowledge base when
    ``kb`` is given (retrieval settings from the config's ``[nesycd]``)."""
    from ..config import Config, load_config

    if backend not in ("oracle", "hf"):
        raise ConfigError(f"--backend: expected 'oracle' or 'hf', got {backend!r}")
    if kb is not None and model is None:
        raise ConfigError("--kb needs --model (the student that uses the knowledge base)")
    if backend == "oracle" and model is not None:
        raise ConfigError("--model serves a student: use --backend hf (or leave --backend out)")
    if backend == "hf" and model is None:
        raise ConfigError("--backend hf needs --model (a checkpoint folder, .gguf or smollm2)")
    if kb is not None and not Path(kb).is_file():
        raise ConfigError(f"--kb: {kb}: no such knowledge-base file")
    cfg = config if isinstance(config, Config) else load_config(config, quick=quick)
    if backend == "oracle":
        from ..gen.registry import make_teacher

        update: dict[str, Any] = {"backend": "oracle"}
        if error_rate is not None:
            if not 0.0 <= error_rate <= 1.0:
                raise ConfigError(f"--error-rate: must be in [0, 1], got {error_rate}")
            update["oracle"] = cfg.teacher.oracle.model_copy(update={"error_rate": error_rate})
        teacher = cfg.teacher.model_copy(update=update)
        return make_teacher(teacher, world_seed=cfg.task.bazaar.seed, seed=cfg.run.seed)
    from ..gen.registry import make_student

    # always in this process (engine "hf"): serve is what a "server" engine runs, and a config's
    # engine = "server" whose command is `nesyloop serve` would otherwise start itself
    student = make_student(model, engine="hf", batch_size=batch_size, progress=False)
    if kb is None:
        return student
    from ..methods.nesycd.stages import task_description

    return KBStudentBackend(student, kb, cfg.nesycd, task_description(cfg))
