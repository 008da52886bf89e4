"""The student's input/output format (students/prompt.py): the exact prompt strings every method,
task and ``serve`` share, pinned byte for byte, and the question read back out for ``serve``."""

from __future__ import annotations

import hashlib

from nesyloop.gen.base import Request
from nesyloop.serve import question_of
from nesyloop.students.prompt import (STUDENT_STOP, answer_prompt, answer_target, pot_prompt,
                                      pot_target, question_from_prompt, student_prompt)
from nesyloop.tasks.bazaar import BazaarSettings, generate_splits
from nesyloop.tasks.bench.prompts import stops


def test_prompt_strings_are_pinned():
    assert student_prompt("How many?") == "Question: How many?\nAnswer:"
    assert student_prompt("How many?", "A crate holds 6.") == (
        "Knowledge: A crate holds 6.\nUse the knowledge above if it helps.\n"
        "Question: How many?\nAnswer:")
    assert student_prompt("How many?", "") == student_prompt("How many?", None)
    assert pot_prompt("Q?") == "Question: Q?\nProgram:"
    assert pot_prompt("Q?", "K.") == ("Knowledge: K.\nUse the knowledge above if it helps.\n"
                                      "Question: Q?\nProgram:")
    assert answer_prompt("Q?") == "Question: Q?\nFinal answer:"
    assert answer_target("18") == " The answer is 18."
    assert pot_target("\nans = 1\n\n") == "\nans = 1\n"
    assert STUDENT_STOP == ("\nQuestion:",)
    assert stops(0) == ("\nQuestion:",) and stops(3) == ("\nQuestion:", "\nQ:")
    p = student_prompt("How many?", "A crate holds 6.")
    assert Request.raw(p).prompt == p


def test_prompts_on_bazaar_match_the_previous_release():
    """Every builder on 400 Bazaar questions, hashed; the digest was taken from the code these
    builders moved out of (methods/common.py, methods/thoughts.py) before the move."""
    splits = generate_splits(BazaarSettings())
    h = hashlib.sha256()
    for i, ex in enumerate(splits["train"][:300] + splits["test"][:100]):
        k = f"A crate holds {i} pears." if i % 2 else None
        for s in (student_prompt(ex.question), student_prompt(ex.question, k),
                  pot_prompt(ex.question), pot_prompt(ex.question, k),
                  answer_prompt(ex.question), answer_target(ex.answer),
                  pot_target("\nans = 1\n\n")):
            h.update(s.encode())
            h.update(b"\0")
    assert h.hexdigest() == "943418c1ff4501db00a5dd71e7fdc4eb28cf1456c3248d5172c2c147f7240d98"


def test_question_read_back_out_of_a_prompt():
    assert question_from_prompt(student_prompt("How many figs?")) == "How many figs?"
    assert question_from_prompt("  Question:How many figs? \nAnswer:") == "How many figs?"
    assert question_from_prompt("How many figs?") == "How many figs?"
    assert question_from_prompt(pot_prompt("Q?")) == "Q?\nProgram:"
    assert question_of(Request.raw(student_prompt("second"))) == "second"


def _imports(path) -> set[str]:
    """The modules a source file imports from (relative ones keep their leading dots)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = {"." * n.level + (n.module or "") for n in ast.walk(tree)
           if isinstance(n, ast.ImportFrom)}
    return out | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def test_the_format_is_imported_downward():
    from pathlib import Path

    import nesyloop

    root = Path(nesyloop.__file__).parent
    for f in (root / "tasks").rglob("*.py"):
        assert not any("methods" in m for m in _imports(f)), f
    assert not any("nesyloop" in m or m.startswith(".") for m in _imports(root / "students"
                                                                           / "prompt.py"))
    assert ".common" not in _imports(root / "methods" / "thoughts.py")
