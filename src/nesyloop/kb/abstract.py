"""Entity abstraction (``[nesycd.retrieval] abstract``): the names a knowledge block gives a
fact for become placeholders ("XA", "XB", ...) in the question, the block and the rationale.

A small student cannot copy a name it has seen about once ("skelstone": one token, seen in one
training problem): it writes a frequent name in its place, and the block's fact is lost. With
the name replaced by a placeholder it has seen in every training pair with a block, it only
has to copy the placeholder and read the value, and since a placeholder stands for a different
thing in every problem, it cannot answer from memory: it learns to take the value from its
block. The symbolic side keeps the names, the student does the arithmetic.

Plain text functions, no task code. A word of a knowledge sentence is an *entity* when another
sentence of the KB has the same shape with another word in its place ("A _ costs N coins.":
"skelstone" is one; "coins" is not). A question's word is the same entity as a block's word
when they differ only in a short ending ("zelberry", "zelberries"); a word
ending in "s" takes the placeholder's plural ("XAs"). Only names the block states a fact for
are replaced: a name the block does not cover keeps its own word, so the student can still
recall it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from os.path import commonprefix

_NUMBER = re.compile(r"\d+")
_WORD = re.compile(r"[A-Za-z]{3,}")
_SENTENCE = re.compile(r"(?<=\.)\s+")
Mapping = list[tuple[str, str]]  # (entity as the block writes it, placeholder)


def _shape(sentence: str, word: str) -> str:
    return _NUMBER.sub("N", re.sub(rf"\b{re.escape(word)}\b", "_", sentence.lower()))


def same_entity(a: str, b: str) -> bool:
    """Two forms of one name: the shorter, but for its last letter at most, begins the longer,
    which has at most three letters more ("zelberry", "zelberries"; not "tibbfig", "tibbnut")."""
    a, b = sorted((a.lower(), b.lower()), key=len)
    p = len(commonprefix([a, b]))
    return p >= 3 and p >= len(a) - 1 and len(b) - p <= 3


def placeholder(i: int) -> str:
    """The ``i``-th placeholder: XA .. XZ, then XAA, XAB, ..."""
    letters = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        letters = chr(65 + r) + letters
    return "X" + letters


def placeholder_text(n: int = 26) -> str:
    """The first ``n`` placeholders, as they stand in a prompt (" XA"; a plural is " XA" "s"):
    a line of a scratch tokenizer's corpus, so that each is one token (" XA") like the name it
    stands for, not three (" ", "X", "A")."""
    return "".join(f" {p}" for p in map(placeholder, range(n)))


class Abstractor:
    """The entities of a KB's knowledge sentences, to abstract the prompts built from it."""

    def __init__(self, sentences: Iterable[str]):
        words_by_shape: dict[str, set[str]] = {}
        for s in {" ".join(x.split()) for x in sentences if x.strip()}:
            for w in {w.lower() for w in _WORD.findall(s)}:
                words_by_shape.setdefault(_shape(s, w), set()).add(w)
        self._entity_shapes = {sh for sh, ws in words_by_shape.items() if len(ws) > 1}

    @classmethod
    def of_kb(cls, kb) -> Abstractor:
        """The entities of a :class:`..store.KnowledgeBase`'s enabled knowledge sentences."""
        return cls(k for e in kb.list(enabled_only=True) for k in e.knowledge)

    def is_entity(self, sentence: str, word: str) -> bool:
        return _shape(" ".join(sentence.split()), word.lower()) in self._entity_shapes

    def mapping(self, question: str, block: str | None) -> Mapping:
        """Placeholders for the entities of ``block`` that ``question`` names, in the order the
        question names them; [] without a block."""
        if not block:
            return []
        entities: list[str] = []
        for sentence in _SENTENCE.split(block.strip()):
            for w in dict.fromkeys(w.lower() for w in _WORD.findall(sentence)):
                if self.is_entity(sentence, w) and not any(same_entity(w, e) for e in entities):
                    entities.append(w)
        named = []
        for m in _WORD.finditer(question):
            e = next((e for e in entities if same_entity(m.group(), e)), None)
            if e is not None and e not in named:
                named.append(e)
        return [(e, placeholder(i)) for i, e in enumerate(named)]


def apply(text: str, mapping: Sequence[Sequence[str]]) -> str:
    """``text`` with every form of each mapped entity replaced by its placeholder (a form ending
    in "s" by the placeholder's plural)."""
    if not mapping:
        return text

    def sub(m: re.Match) -> str:
        word = m.group()
        for entity, ph in mapping:
            if same_entity(word, entity):
                return ph + "s" if word.lower().endswith("s") and len(word) > 3 else ph
        return word

    return _WORD.sub(sub, text)


def apply_block(block: str | None, mapping: Sequence[Sequence[str]]) -> str | None:
    """The block abstracted (:func:`apply`), its sentences in the order of the placeholders
    they name (XA's fact first, as the question names them; a sentence without one last)."""
    if not block or not mapping:
        return block
    order = {ph: i for i, (_, ph) in enumerate(mapping)}

    def first(sentence: str) -> int:
        found = [order[w.rstrip("s")] for w in re.findall(r"\bX[A-Z]+s?\b", sentence)
                 if w.rstrip("s") in order]
        return min(found, default=len(order))

    sentences = _SENTENCE.split(apply(block.strip(), mapping))
    return " ".join(sorted(sentences, key=first))


def apply_prompt(question: str, block: str | None, mapping: Sequence[Sequence[str]]
                 ) -> tuple[str, str | None]:
    """The question and block of a prompt, abstracted alike (:func:`apply`, :func:`apply_block`)."""
    return apply(question, mapping), apply_block(block, mapping)


def restore(text: str, mapping: Sequence[Sequence[str]]) -> str:
    """``text`` written with placeholders, each put back as its entity (as the block writes
    it): for reading a student's rationale against the facts it needed."""
    for entity, ph in sorted(mapping, key=lambda m: -len(m[1])):
        text = re.sub(rf"\b{ph}s?\b", entity, text)
    return text
