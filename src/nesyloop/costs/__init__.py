"""What teacher requests cost: token estimates, prices, the run's budget cap (budget.py), and
the estimate of a config's teacher work before anything is spent (estimate.py)."""

from .budget import Budget, BudgetExceeded, Prices, Usage, prompt_tokens_estimate, worst_case

__all__ = ["Budget", "BudgetExceeded", "Prices", "Usage", "prompt_tokens_estimate",
           "worst_case"]
