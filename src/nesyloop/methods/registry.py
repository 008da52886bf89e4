"""The one list of methods: each is a :class:`Method`, registered once with :func:`register`.

Config validation, ``--method``, ``nesyloop estimate``, the kb CLI's defaults and the report all
derive what they need from here. The built-in methods register themselves when their modules
load (:func:`methods` loads them on first use); a method defined anywhere else (a plugin, a
test) registers the same way and is then a name ``nesyloop run -m`` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..costs.estimate import Counter
    from ..runs.context import RunContext

# one metrics row (split -> strict, flexible, n) per name a method reports
Rows = dict[str, dict[str, Any]]


@dataclass
class ReportPart:
    """What a method adds to report.md: notes (bullets) and sections of its own (a section
    that several methods give, such as FDD's rounds, is shown once)."""

    notes: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class KbUse:
    """A method's student that answers with knowledge retrieved from a KB: the stage holding
    the student (``<stage>/model``), the stage holding the KB (``<stage>/kb.sqlite``) and how
    the student answers ("cot", or a mixed-thoughts inference)."""

    model_stage: str
    kb_stage: str
    inference: str = "cot"


@runtime_checkable
class Method(Protocol):
    name: str
    needs_rationales: bool  # reads the shared rationales stage
    # what it asks a model teacher for beyond rationales (None: nothing; then the "dataset"
    # teacher, which has no model, can run it)
    teacher_use: str | None

    def run(self, ctx: RunContext, until: str | None = None) -> Rows | None:
        """Run (or resume) its stages after the shared ones; its metrics rows, or None when
        ``until`` stopped it before scoring."""
        ...

    def estimate(self, counter: Counter) -> None:
        """Add a row per teacher stage it will issue (beyond rationales) to ``counter``."""
        ...

    def report(self, ctx: RunContext, metrics: Rows) -> ReportPart | None:
        """Its notes and section in report.md, from the stages it ran."""
        ...

    def kb_use(self, cfg: Any) -> KbUse | None:
        """Where its student and KB are, for ``nesyloop kb attribute`` (None: it retrieves
        nothing)."""
        ...


_METHODS: dict[str, Method] = {}
_BUILTINS_LOADED = False


def register(method: Method, replace: bool = False) -> Method:
    """Add ``method`` to the registry (a second method of the same name is an error unless
    ``replace``); returns it, so it can decorate a class instance."""
    if not isinstance(method, Method):
        raise TypeError(f"{method!r} does not implement nesyloop.methods.Method")
    if method.name in _METHODS and not replace and _METHODS[method.name] is not method:
        raise ValueError(f"method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    _METHODS.pop(name, None)


# the modules of the built-in methods, in the order their methods are listed
BUILTIN_MODULES = ("nesyloop.methods.simple", "nesyloop.methods.nesycd.method",
                   "nesyloop.methods.fdd.method", "nesyloop.methods.joined.method")


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        import importlib

        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def _rank(method: Method) -> int:
    module = type(method).__module__
    return BUILTIN_MODULES.index(module) if module in BUILTIN_MODULES else len(BUILTIN_MODULES)


def methods() -> dict[str, Method]:
    """Every registered method by name: the built-ins first, in their order, then the others
    in the order they were registered."""
    _load_builtins()
    return {m.name: m for m in sorted(_METHODS.values(), key=_rank)}  # sorted() is stable


def names() -> list[str]:
    return list(methods())


def get(name: str) -> Method:
    found = methods().get(name)
    if found is None:
        from ..errors import ConfigError

        raise ConfigError(f"method {name!r} is not one of {names()}")
    return found


def not_registered(name: str) -> str | None:
    """Why ``name`` is no method's (None when it is one)."""
    known = methods()
    return None if name in known else f"{name!r} is not one of {list(known)}"


def unknown_error(names_: list[str] | None, where: str = "--method") -> str | None:
    """Why a list of method names cannot run (a name no method has); None when it can."""
    bad = next(filter(None, map(not_registered, names_ or [])), None)
    return f"{where}: {bad}" if bad else None


def run_error(asked: list[str] | None, names_: list[str], backend: str) -> str | None:
    """Why the methods of a run cannot run: a name asked for on the command line that no method
    has, or one the teacher ``backend`` cannot serve (None when they can)."""
    return unknown_error(asked) or dataset_teacher_error(backend, names_)


def dataset_teacher_error(backend: str, names_: list[str]) -> str | None:
    """Why ``names_`` cannot run with ``backend`` (None when they can): the dataset teacher
    only supplies rationales; error analysis and problem evolution need a model."""
    if backend != "dataset":
        return None
    known = methods()
    bad = [m for m in names_ if m in known and known[m].teacher_use is not None]
    if not bad:
        return None
    free = [n for n, m in known.items() if m.teacher_use is None]
    return (f"teacher.backend 'dataset' only supplies rationales, but method {bad[0]!r} needs "
            f"a teacher for {known[bad[0]].teacher_use}: use backend 'oracle', 'hf' or "
            f"'openai', or only the methods {', '.join(free)}")
