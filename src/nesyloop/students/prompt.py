"""The student's own input/output format: the prompts it is trained and asked with, the stop
strings that end its answer, and the question read back out of a prompt (for ``serve``).

Everything that writes or reads a student prompt imports it from here (tasks, methods, serve);
this module imports nothing from nesyloop. How a prompt becomes the model's input text (chat
template or plain) is :mod:`nesyloop.students.fmt`.
"""

from __future__ import annotations

QUESTION = "Question: "
ANSWER = "\nAnswer:"  # the last word asks for reasoning (chain of thought, CoT)
PROGRAM = "\nProgram:"  # ... for a Python program (program of thought, PoT)
FINAL_ANSWER = "\nFinal answer:"  # ... for the answer alone (NesyCD's answer-prediction task)

STUDENT_STOP = ("\nQuestion:",)

KNOWLEDGE = "Knowledge: "
KNOWLEDGE_INSTRUCTION = "Use the knowledge above if it helps."


def knowledge_block(knowledge: str | None) -> str:
    """What goes before the question when retrieval found ``knowledge`` (NesyCD), else ""."""
    if knowledge:
        return f"{KNOWLEDGE}{knowledge}\n{KNOWLEDGE_INSTRUCTION}\n"
    return ""


def student_prompt(question: str, knowledge: str | None = None) -> str:
    """The student's input for a question (wrapped in a chat template for chat models); with
    ``knowledge`` (NesyCD), the retrieved knowledge comes first with a short instruction."""
    return f"{knowledge_block(knowledge)}{QUESTION}{question}{ANSWER}"


def pot_prompt(question: str, knowledge: str | None = None) -> str:
    """The input that asks a mixed-thoughts student (FDD) for a program instead of reasoning."""
    return f"{knowledge_block(knowledge)}{QUESTION}{question}{PROGRAM}"


def answer_prompt(question: str) -> str:
    """The input of the answer-prediction task of NesyCD's multi-task training."""
    return f"{QUESTION}{question}{FINAL_ANSWER}"


def answer_target(answer: str) -> str:
    """The completion of the answer-prediction task for the gold ``answer``."""
    return f" The answer is {answer}."


def pot_target(program: str) -> str:
    """A program as a PoT training completion: on its own lines after ``Program:``."""
    return "\n" + program.strip("\n") + "\n"


def question_from_prompt(text: str) -> str:
    """The question of a prompt in the student's format: ``text`` without a leading
    "Question:" and a trailing "\\nAnswer:"; any other text is returned stripped."""
    text = text.strip()
    head = QUESTION.strip()
    if text.startswith(head):
        text = text[len(head):].lstrip()
    if text.endswith(ANSWER):
        text = text[: -len(ANSWER)].rstrip()
    return text
