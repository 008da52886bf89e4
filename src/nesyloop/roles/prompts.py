"""Prompt templates of every teacher role. Real teachers and the Bazaar oracle read the same text.

Each template is a (system, user) pair formatted with ``str.format``. The first line of each
system prompt is the role's marker: the oracle teacher uses it to tell the roles apart.
"""

from __future__ import annotations

# --- CoT rationale (NesyCD teacher prompt) --------------------------------------------------
RATIONALE_SYSTEM = (
    "You are an expert teacher. Solve the problem below and explain your reasoning step by step "
    "so that a student can learn from it."
)
RATIONALE_USER = (
    "Question: {question}\n\n"
    "Explain your reasoning step by step, stating any fact you use. "
    'End with "Therefore, the answer is <answer>."'
)

# the joined loop's counterfactual pairs: the same rationale, with facts that may contradict
# what the teacher knows (one number of the student's knowledge block was changed)
COUNTERFACTUAL_USER = (
    "Take these facts as true, even where they differ from what you know: {knowledge}\n\n"
    + RATIONALE_USER
)

# --- Program of thought (FDD) -----------------------------------------------------------------
POT_SYSTEM = (
    "You are an expert programmer and teacher. Write a Python program that solves the problem below."
)
POT_USER = (
    "Question: {question}\n\n"
    "Write a Python program, with a comment for each fact you use, that stores the final result "
    "in a variable named `answer`. Reply with the program only, inside ```python ... ```."
)

# --- Error analysis (NesyCD symbolic knowledge distillation) ----------------------------------
ERROR_ANALYSIS_SYSTEM = (
    "You are an educational teacher. A student answered the problem below incorrectly. "
    "Analyse the student's incorrect solution, find the mistake, and write down the knowledge "
    "the student was missing."
)
ERROR_ANALYSIS_USER = (
    "Question: {question}\n\n"
    "Student's solution: {student_response}\n\n"
    "Correct answer: {answer}\n\n"
    "Reply in exactly this form:\n"
    "Learning summary: <one or two sentences on what the student should learn from this mistake>\n"
    "Supplementary knowledge:\n1. <a fact or rule the student needs>\n2. <another, if any>"
)

# --- Problem evolution (FDD) ------------------------------------------------------------------
EVOLVE_HARDER_SYSTEM = (
    "You are an expert problem writer. Write a harder variant of the problem below: "
    "keep its setting and add one or two more reasoning steps."
)
EVOLVE_SIMILAR_SYSTEM = (
    "You are an expert problem writer. Write a new problem of similar difficulty to the problem "
    "below: the same kind and number of reasoning steps, with different names and numbers."
)
EVOLVE_USER = (
    "Problem: {question}\n\n"
    'Reply with the new problem only, in the form "Problem: <the new problem>".'
)


def first_line(text: str) -> str:
    return text.split("\n", 1)[0]
