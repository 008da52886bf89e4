"""Evaluating students on benchmark tasks (``nesyloop eval``, ``nesyloop.api.evaluate``)."""

from .run import EVAL_SPLITS, TASK_NAMES, evaluate, evaluate_predictions

__all__ = ["EVAL_SPLITS", "TASK_NAMES", "evaluate", "evaluate_predictions"]
