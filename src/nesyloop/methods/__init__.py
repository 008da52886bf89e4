"""Methods: each one place, registered once (registry.py).

``registry.py`` holds the :class:`Method` protocol and the registry; ``shared.py`` the stages
every method stands on (data, rationales, student-init, train, predict, score) as functions of
the run context (runs/context.py); ``simple.py`` the simple methods; one package per composite
method (``nesycd/``, ``fdd/``, ``joined/``) with its settings, stages, flow and report.
"""

from .registry import Method, ReportPart, get, methods, names, register, unregister

__all__ = ["Method", "ReportPart", "SimpleMethod", "get", "methods", "names", "register",
           "unregister"]


def __getattr__(name: str):
    if name == "SimpleMethod":
        from .simple import SimpleMethod

        return SimpleMethod
    raise AttributeError(name)
