"""Toy (prompt, completion) pairs shared by the student tests: small sums a tiny model learns."""

from __future__ import annotations

import random


def toy_pairs(n: int = 256, seed: int = 0, max_a: int = 9, prefix: str = "Question:",
              suffix: str = "") -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, max_a), rng.randint(0, 9)
        out.append({"prompt": f"{prefix} {a} + {b} =", "completion": f" {a + b}{suffix}"})
    return out
