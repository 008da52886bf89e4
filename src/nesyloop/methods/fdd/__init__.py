"""Feedback-driven distillation: its settings (settings.py), stages (stages.py), the rounds and
the ``fdd`` method (method.py) and its report section (report.py)."""
