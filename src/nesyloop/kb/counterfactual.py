"""Counterfactual knowledge: a block whose fact the student cannot recall, so that it learns to
read the block (the joined loop's ``[joined] counterfactual``, S_E's ``[nesycd] rename``).

Plain text functions over knowledge sentences ("A skelstone costs 8 coins."), no task code:
:func:`change_number` changes one number of a block (the teacher then solves the problem again
with it); :func:`rename_entity` renames one entity of a problem everywhere to another entity
of the same kind from the KB, found by the shape of the KB's sentences, so the problem's
numbers, and so its rationale, stay valid while the block gives the new entity a value that is
not its own.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from .abstract import same_entity

_NUMBER = re.compile(r"\d+")
_WORD = re.compile(r"[A-Za-z]{4,}")


def _named(sentences: list[str], question: str) -> set[int]:
    """The sentences that share with ``question`` a word no other sentence has, in any of its
    forms ("brell" in "1 brell is 4 coins." for "brells"; not "coins")."""
    words = [{w.lower() for w in _WORD.findall(s)} for s in sentences]
    asked = {w.lower() for w in _WORD.findall(question)}
    return {i for i, ws in enumerate(words)
            if any(sum(w in o for o in words) == 1 and any(same_entity(w, a) for a in asked)
                   for w in ws)}


def _with_a_twin(sentences: list[str]) -> set[int]:
    """The sentences with another of the same shape in the block (words only one of them has
    masked, numbers too): "A crate of zelnuts holds 6 zelnuts." beside "A bundle of skelplums
    holds 8 skelplums.", whose values a student confuses."""
    words = [[w.lower() for w in re.findall(r"[A-Za-z]+|\d+", s)] for s in sentences]
    counts = Counter(w for ws in words for w in set(ws))
    shapes = [tuple("N" if w.isdigit() else w if counts[w] > 1 else "_" for w in ws)
              for ws in words]
    seen = Counter(shapes)
    return {i for i, sh in enumerate(shapes) if seen[sh] > 1}


def change_number(block: str, rng: random.Random, question: str | None = None
                  ) -> tuple[str, str] | None:
    """``block`` with the last number of one of its sentences changed by 1 to 3 (staying >= 1),
    and the changed sentence; None when no sentence holds a number. With ``question``, a
    sentence the question names is changed when there is one (a fact the problem uses, so the
    change changes its answer), and of those one with a twin of its shape in the block when
    there is one (two prices: the values a student confuses)."""
    sentences = re.split(r"(?<=\.)\s+", block.strip())
    with_number = [i for i, s in enumerate(sentences) if _NUMBER.search(s)]
    if not with_number:
        return None
    if question is not None:
        named = _named(sentences, question)
        with_number = [i for i in with_number if i in named] or with_number
        twins = _with_a_twin(sentences)
        with_number = [i for i in with_number if i in twins] or with_number
    i = rng.choice(with_number)
    last = list(_NUMBER.finditer(sentences[i]))[-1]
    v = int(last.group())
    new = rng.choice([x for x in (v - 3, v - 2, v - 1, v + 1, v + 2, v + 3) if x >= 1])
    sentences[i] = sentences[i][:last.start()] + str(new) + sentences[i][last.end():]
    return " ".join(sentences), sentences[i]


def _shape(sentence: str, word: str) -> str:
    """A sentence's template with ``word`` as the slot and every number as N."""
    return _NUMBER.sub("N", sentence.replace(word, "_"))


def rename_entity(question: str, block: str, rationale: str, items: list[str],
                  rng: random.Random) -> tuple[str, str, str, tuple[str, str]] | None:
    """The problem with one entity of its block renamed everywhere (question, block, rationale)
    to the entity of another knowledge item of the same shape ("A _ costs N coins."), whose true
    value the block then does not state; None when no block sentence names an entity of the
    question that can be renamed cleanly (an irregular plural, say)."""
    options = []
    for sentence in re.split(r"(?<=\.)\s+", block.strip()):
        for word in dict.fromkeys(_WORD.findall(sentence)):
            if word not in question:
                continue
            shape = _shape(sentence, word)
            others = {w for item in items for w in _WORD.findall(item)
                      if w != word and w not in question and _shape(item, w) == shape}
            options += [(word, other) for other in sorted(others)]
    rng.shuffle(options)
    for old, new in options:
        out = [t.replace(old, new) for t in (question, block, rationale)]
        stem = old[:max(4, len(old) - 3)]  # "zelberr" of "zelberries": its other forms
        if not any(stem in t for t in out):  # every form of the old name was replaced
            return out[0], out[1], out[2], (old, new)
    return None
