"""Answer extraction as an explicit chain of named rules (lm-evaluation-harness style).

One model output, two chains over it:

* ``strict``: only explicit final-answer markers ("Therefore, the answer is N", "The answer is
  N", "#### N", ``\\boxed{N}``).
* ``flexible``: the strict rules first, then fallbacks (``Answer: N``, the last number, a letter
  in parentheses, the text of one option, the last line ...). Because the strict rules come
  first, flexible is correct whenever strict is.

Each rule is a regex filter with ``take="first"`` or ``take="last"`` (or a small function for the
two rules that need the option list); the first rule of the chain that yields a value wins, and
the :class:`Extraction` records its name. No rule matched: ``Extraction(None, "none")``.

A final answer that is no answer ends the chain in every mode (a :class:`Refusal`):
``Extraction(None, "hedged")`` when it names two different candidates ("(A) or (B)", "(A) and
(B).", "12 or 13", "True or False"), ``Extraction(None, "invalid")`` when a choice answer is
not one of the options ("(C)" of two, "(None of the above)", "neither"). Flexible matching
repairs an answer's format; it never overrules what the model concluded. docs/scoring.md.

Rule names, per answer type (strict chain, then the flexible additions):

* number: therefore, answer_is, hash, boxed | answer_colon, bold, last_number
* choice: therefore, answer_is, hash, boxed | answer_colon, option_letter, paren_letter,
  option_text, last_line
* text:   therefore, answer_is, hash, boxed | answer_colon, label_word, last_line
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache

__all__ = ["Extraction", "Refusal", "Rule", "extract", "rule_chain", "normalize_number",
           "choice_letter", "normalize_text", "clean_text", "RULES"]

MODES = ("strict", "flexible")
ANSWER_TYPES = ("number", "choice", "text")


@dataclass(frozen=True)
class Extraction:
    value: str | None
    rule: str


# --------------------------------------------------------------------------- numbers

_CUR = r"[$€£¥₹]"
_NUM_CORE = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|\.\d+"
# A number token: optional sign and currency sign (either order), no digit/letter/dot glued before.
NUM = rf"(?<![\w.])(?:-\s?{_CUR}?\s?|{_CUR}\s?-?)?(?:{_NUM_CORE})(?![\d])"
_NUM_RE = re.compile(NUM)
_NUMBER_FULL = re.compile(
    rf"\s*(?P<s1>-)?\s*{_CUR}?\s*(?P<s2>-)?\s*(?P<core>{_NUM_CORE})\s*"
    r"(?:%|[A-Za-z][A-Za-z .]*)?\s*\.?\s*"
)


def _fmt(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    with localcontext() as ctx:
        ctx.prec = 80
        d = (Decimal(x.numerator) / Decimal(x.denominator)).quantize(Decimal("1e-12"))
        s = format(d.normalize(), "f")
    return "0" if s in ("-0", "0") else s


def parse_number(s: str | None) -> Fraction | None:
    """The exact value of a number string ("$1,234.0", "-3/4", "18 coins", "18."), or None."""
    if s is None:
        return None
    s = s.replace("**", "").replace("\\$", "$").replace("\\%", "%").strip().strip("\"'`")
    m = _NUMBER_FULL.fullmatch(s)
    if not m:
        return None
    core = m.group("core").replace(",", "")
    try:
        val = Fraction(core)
    except (ValueError, ZeroDivisionError):
        return None
    return -val if (m.group("s1") or m.group("s2")) else val


def normalize_number(s: str | None) -> str | None:
    """Canonical text of a number: "$1,234.0" -> "1234", "18.50" -> "18.5", "3/4" -> "0.75"."""
    val = parse_number(s)
    return None if val is None else _fmt(val)


def _first_number(s: str) -> str | None:
    m = _NUM_RE.search(s)
    return normalize_number(m.group(0)) if m else None


# --------------------------------------------------------------------------- text helpers

_QUOTES = "\"'`“”‘’"


def normalize_text(s: str | None) -> str | None:
    """Whitespace-collapsed, case-folded, without surrounding quotes/bold or a trailing period."""
    if s is None:
        return None
    s = s.replace("**", "").strip()
    prev = None
    while prev != s:
        prev = s
        s = s.strip().strip(_QUOTES).rstrip(".!").strip()
    s = " ".join(s.split()).casefold()
    return s or None


def _clean_span(s: str) -> str | None:
    """A captured free-text answer: cut at the end of its first sentence, tidy it."""
    s = s.split("\n", 1)[0]
    s = re.split(r"(?<=[^\d\s])\.(?:\s|$)", s, maxsplit=1)[0]
    s = s.strip().strip(":").strip()
    s = s.strip(_QUOTES).strip().strip(_QUOTES).rstrip(".").strip()
    return _unbox(s) or None


def _unbox(s: str) -> str:
    """``$\\boxed{x}$`` / ``$x$`` -> ``x`` (a free-text answer written as LaTeX)."""
    inner = s[1:-1].strip() if len(s) > 2 and s[0] == s[-1] == "$" else s
    m = re.fullmatch(_BOXED, inner)
    return (m.group(1) if m else inner).strip()


def _answer_span(s: str) -> str | None:
    """A free-text answer after "answer is"; an echoed "answer is" inside it defers to the last."""
    s = re.split(r"(?i)\banswer\s+is\s*:?", s)[-1]
    return _clean_span(s)


def _letters(options: Sequence[str] | None) -> str:
    n = len(options) if options else 26
    return "".join(chr(65 + i) for i in range(min(max(n, 1), 26)))


def choice_letter(s: str | None, options: Sequence[str] | None = None) -> str | None:
    """A gold or predicted choice as an upper-case letter: "(b)", "B", "B.", or an option's text."""
    if s is None:
        return None
    t = s.replace("**", "").strip()
    m = re.fullmatch(r"(?:option\s+|choice\s+)?\(?\s*([A-Za-z])\s*\)?\s*[.:]?", t, re.I)
    if m and m.group(1).upper() in _letters(options):
        return m.group(1).upper()
    if options:
        key = normalize_text(t)
        hits = [i for i, o in enumerate(options) if normalize_text(o) == key]
        if len(hits) == 1:
            return chr(65 + hits[0])
    return None


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Refusal:
    """A final answer that is no answer: ``hedged`` (it names two different candidates) or
    ``invalid`` (a choice answer that is not one of the options). It ends the chain, in every
    mode: flexible fallbacks do not overrule what the model concluded."""

    reason: str


@dataclass(frozen=True)
class Rule:
    """A named filter. Regex rules: each match's captured groups (first non-empty one, else the
    whole match) go through ``parse``; ``take`` says which match wins (first/last that parses).
    ``refuse(text, match)`` may turn a match into a :class:`Refusal` (checked before ``parse``).
    Function rules (``fn``) get the cleaned text and return a value, a Refusal or None."""

    name: str
    pattern: re.Pattern[str] | None = None
    take: str = "last"
    parse: Callable[[str], str | None] | None = None
    fn: Callable[[str], str | Refusal | None] | None = None
    raw: bool = False  # run on the raw text instead of the cleaned one
    refuse: Callable[[str, re.Match[str]], str | None] | None = None

    def apply(self, text: str) -> str | Refusal | None:
        if self.fn is not None:
            return self.fn(text)
        assert self.pattern is not None
        matches = list(self.pattern.finditer(text))
        if self.take == "last":
            matches.reverse()
        for m in matches:
            why = self.refuse(text, m) if self.refuse is not None else None
            if why:
                return Refusal(why)
            span = _group(m)[0]
            value = self.parse(span) if self.parse else span
            if value is not None:
                return value
        return None


def _c(p: str) -> re.Pattern[str]:
    return re.compile(p)


_ANS = r"(?i:(?:the\s+)?(?:correct\s+|final\s+|right\s+)?answer\s+(?:is|would\s+be|will\s+be))"
_THEREFORE = r"(?i:(?:therefore|thus|hence|so)\s*,?\s+the\s+(?:correct\s+|final\s+)?answer\s+is)"
# ":", LaTeX math openers, or "either" before the answer
_LEAD = r"\s*:?\s*(?:\\\(|\\\[|\$\$)?\s*(?i:either\s+)?"
# \boxed{..} with braces nested up to two levels (\boxed{\frac{\sqrt{3}}{2}})
_BOXED = r"\\(?:boxed|fbox)\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}"

# ----------------------------------------------------------------- hedges, invalid answers
# A hedge joins the answer to a second, different candidate: "12 or 13", "(A) or (B)", "(A) and
# (B).", "True or False". Each helper returns "hedged"/"invalid" for a match, or None.

_MAYBE = r"(?i:(?:maybe|perhaps|possibly|either)\s+)?"
_OR = r"\s*(?:,\s*)?\(?\s*(?i:or|and/or)\s+" + _MAYBE
_NUM_AFTER = re.compile(r"(?:\s*%)?" + _OR + rf"(?:\\boxed\{{)?\s*({NUM})")
_NUM_BEFORE = re.compile(rf"({NUM})(?:\s*%)?{_OR}$")
_NUM_PAIR = re.compile(rf"({NUM})(?:\s*%)?{_OR}({NUM})")
_ANY_LETTER = r"(?:\(\s*([A-Za-z])\s*\)|\b([A-Z])\b(?![\w'’-]))"
_END = r"(?=[ \t]*(?:[.,;:!?)\n*]|$))"
_LETTER_AFTER = re.compile(
    rf"\s*(?:,\s*)?(?:(?i:or|and/or)\b|/)\s*{_MAYBE}(?i:option\s+|choice\s+)?{_ANY_LETTER}"
    rf"|\s*(?:,\s*)?(?i:and)\s+(?i:option\s+|choice\s+)?{_ANY_LETTER}{_END}")
_LETTER_BEFORE = re.compile(rf"{_ANY_LETTER}\s*(?:,\s*)?(?:(?i:or|and/or)\b|/)\s*{_MAYBE}"
                            r"(?i:option\s+|choice\s+)?$")
_LABEL = rf"(?i:true|false|yes|no|valid|invalid)\b|{NUM}"
_LABEL_PAIR = re.compile(rf"^\W*{_MAYBE}({_LABEL})\W*?{_OR}\W*({_LABEL})")
_LABEL_BEFORE = re.compile(rf"({_LABEL})\W*?{_OR}\W*$")
_LABEL_AFTER = re.compile(rf"\W*?{_OR}\W*({_LABEL})")


def _group(m: re.Match[str]) -> tuple[str, int]:
    """The first non-empty captured group of a match (else the whole match) and its index."""
    for i, g in enumerate(m.groups(), 1):
        if g:
            return g, i
    return m.group(0), 0


def _differs(a: str | None, others: list[str | None]) -> bool:
    return a is not None and any(o is not None and o != a for o in others)


def _hedged_number(text: str, m: re.Match[str]) -> str | None:
    """"hedged" when the matched number is joined by "or" to a different number."""
    span, i = _group(m)
    after = _NUM_AFTER.match(text, m.end(i))
    before = _NUM_BEFORE.search(text[max(0, m.start(i) - 60):m.start(i)])
    if not (after or before):  # the usual case: no "or" beside it, nothing to parse
        return None
    others = [normalize_number(x.group(1)) for x in (after, before) if x]
    return "hedged" if _differs(normalize_number(span), others) else None


def _hedged_number_span(text: str, m: re.Match[str]) -> str | None:
    """``\\boxed{12 or 13}``: a hedge inside the box."""
    pair = _NUM_PAIR.search(_group(m)[0])
    if pair and _differs(normalize_number(pair.group(1)), [normalize_number(pair.group(2))]):
        return "hedged"
    return None


def _letter_of(m: re.Match[str] | None) -> str | None:
    return next((g.upper() for g in m.groups() if g), None) if m else None


def _choice_refusal(options: tuple[str, ...] | None
                    ) -> Callable[[str, re.Match[str]], str | None]:
    """An explicit choice answer: "invalid" when it is not one of the options (a letter past
    the last one, "(None of the above)", "neither"), "hedged" when it names a second letter."""

    def refuse(text: str, m: re.Match[str]) -> str | None:
        span, _ = _group(m)
        letter = choice_letter(span, options)
        if letter is None:
            first = span.split()[0].casefold() if span.split() else ""
            if len(span) > 1 and any((normalize_text(o) or "").startswith(first)
                                     for o in options or ()):
                return None  # an option's own wording ("None of these"): flexible decides
            return "invalid"
        return "hedged" if _differs(letter, [_letter_of(_LETTER_AFTER.match(text, m.end()))]) \
            else None

    return refuse


def _hedged_letter(text: str, m: re.Match[str]) -> str | None:
    """A fallback's letter preceded or followed by "or" and another letter."""
    letter, _ = _group(m)
    before = _LETTER_BEFORE.search(text[max(0, m.start() - 40):m.start()])
    after = _LETTER_AFTER.match(text, m.end())
    return "hedged" if _differs(letter.upper(), [_letter_of(before), _letter_of(after)]) else None


def _label_key(s: str | None) -> str | None:
    return normalize_number(s) or normalize_text(s)


def _hedged_label_span(text: str, m: re.Match[str]) -> str | None:
    """A free-text final answer "True or False" / "12 or 13": two different labels."""
    span = re.split(r"(?i)\banswer\s+is\s*:?", _group(m)[0])[-1].replace("**", "")
    pair = _LABEL_PAIR.match(span)
    if pair and _differs(_label_key(pair.group(1)), [_label_key(pair.group(2))]):
        return "hedged"
    return None


def _hedged_label(text: str, m: re.Match[str]) -> str | None:
    """A label word of the fallback joined by "or" to a different one."""
    span, _ = _group(m)
    before = _LABEL_BEFORE.search(text[max(0, m.start() - 40):m.start()])
    after = _LABEL_AFTER.match(text, m.end())
    if not (before or after):
        return None
    others = [_label_key(x.group(1)) for x in (before, after) if x]
    return "hedged" if _differs(_label_key(span), others) else None


# --------------------------------------------------------------------------- rule chains


def _number_rules() -> tuple[list[Rule], list[Rule]]:
    num, hedge = _first_number, _hedged_number
    strict = [
        Rule("therefore", _c(_THEREFORE + _LEAD + rf"(?:\\boxed\{{)?\s*({NUM})"),
             parse=normalize_number, refuse=hedge),
        Rule("answer_is", _c(_ANS + _LEAD + rf"(?:\\boxed\{{)?\s*({NUM})"),
             parse=normalize_number, refuse=hedge),
        Rule("hash", _c(rf"####\s*({NUM})"), parse=normalize_number, refuse=hedge),
        Rule("boxed", _c(_BOXED), parse=num, refuse=_hedged_number_span),
    ]
    flexible = [
        Rule("answer_colon", _c(rf"(?i:answer)\s*[:=]\s*({NUM})"), parse=normalize_number,
             refuse=hedge),
        Rule("bold", _c(rf"\*\*\s*({NUM})\s*\*\*"), parse=normalize_number, raw=True),
        Rule("last_number", _NUM_RE, parse=normalize_number, refuse=hedge),
    ]
    return strict, flexible


def _choice_token(up: str) -> str:
    """An explicit choice answer: a letter in parentheses, a bare option letter, a bare capital
    ending the sentence, a parenthesised phrase, or "none of the above"/"neither"/"both"."""
    return (r"(?i:option\s+|choice\s+)?(?:\(\s*([A-Za-z])\s*\)|\b([" + up + r"])\b(?![\w'’-])"
            r"|\b([A-Z])(?=[ \t]*(?:[.,;!\n]|$))|\(([^()\n]{2,80})\)"
            r"|\b((?i:none(?:\s+of\s+(?:the\s+)?(?:above|options|choices|them))?|neither|both)"
            r")\b)")


def _choice_rules(options: tuple[str, ...] | None) -> tuple[list[Rule], list[Rule]]:
    up = _letters(options)
    low = up.lower()
    letter = rf"(?:\(\s*([{up}{low}])\s*\)|\b([{up}])\b(?![\w'’-]))"
    token, refuse = _choice_token(up), _choice_refusal(options)
    parse = lambda s: choice_letter(s, options)  # noqa: E731
    strict = [
        Rule("therefore", _c(_THEREFORE + _LEAD + token), parse=parse, refuse=refuse),
        Rule("answer_is", _c(_ANS + _LEAD + token), parse=parse, refuse=refuse),
        Rule("hash", _c(r"####\s*" + token), parse=parse, refuse=refuse),
        Rule("boxed", _c(r"\\(?:boxed|fbox)\{\s*" + token + r"\s*\}"), parse=parse,
             refuse=refuse),
    ]
    flexible = [
        Rule("answer_colon", _c(r"(?i:answer)\s*:\s*" + token), parse=parse, refuse=refuse),
        Rule("option_letter", _c(r"(?i:\boption|\bchoice)\s+" + letter), parse=parse,
             refuse=_hedged_letter),
        Rule("paren_letter", _c(rf"\(([{up}{low}])\)|(?<![\w(])([{up}])\)"), parse=parse,
             refuse=_hedged_letter),
        Rule("option_text", fn=lambda t: _option_text(t, options)),
        Rule("last_line", fn=lambda t: choice_letter(_last_line(t), options)),
    ]
    return strict, flexible


def _text_rules() -> tuple[list[Rule], list[Rule]]:
    hedge = _hedged_label_span
    strict = [
        Rule("therefore", _c(_THEREFORE + _LEAD + r"([^\n]+)"), parse=_answer_span, refuse=hedge),
        Rule("answer_is", _c(_ANS + _LEAD + r"([^\n]+)"), parse=_answer_span, refuse=hedge),
        Rule("hash", _c(r"####\s*([^\n]+)"), parse=_clean_span, refuse=hedge),
        Rule("boxed", _c(_BOXED), parse=_clean_span, refuse=hedge),
    ]
    labels = r"True|False|true|false|Yes|No|yes|[Vv]alid|[Ii]nvalid"
    flexible = [
        Rule("answer_colon", _c(r"(?i:answer)\s*:\s*([^\n]+)"), parse=_clean_span, refuse=hedge),
        Rule("label_word", _c(rf"(?<![\w-])({labels})(?![\w-])"), refuse=_hedged_label),
        Rule("last_line", fn=_last_line),
    ]
    return strict, flexible


def _last_line(text: str) -> str | None:
    for line in reversed(text.strip().splitlines()):
        line = re.sub(r"^\s*(?:[-*>]\s+|(?i:so|thus|therefore|hence|answer|final answer)\s*[:,]\s*)",
                      "", line)
        span = _clean_span(line)
        if span:
            return span
    return None


def _option_text(text: str, options: tuple[str, ...] | None) -> str | None:
    """The option whose text follows the last "answer is", ends the text, or (only one) occurs."""
    if not options:
        return None
    norm = [" ".join(o.split()).casefold() for o in options]
    body = " ".join(text.split()).casefold()

    def longest(cands: list[int]) -> str | None:
        if not cands:
            return None
        best = max(cands, key=lambda i: len(norm[i]))
        # ambiguous only if two different options have the same (longest) text
        if sum(norm[i] == norm[best] for i in cands) > 1 and len(set(norm[i] for i in cands)) == 1:
            return None
        return chr(65 + best)

    def occurs(i: int, hay: str) -> bool:
        return bool(norm[i]) and re.search(rf"(?<![\w.]){re.escape(norm[i])}(?![\w])", hay) is not None

    tails = re.split(r"answer\s+(?:is|would\s+be)\s*:?", body)
    if len(tails) > 1:
        tail = tails[-1].strip()
        got = longest([i for i in range(len(norm)) if norm[i] and tail.startswith(norm[i])
                       and not re.match(r"[\w]", tail[len(norm[i]):len(norm[i]) + 1])])
        if got:
            return got
    end = body.rstrip(" .!\"'`)*")
    got = longest([i for i in range(len(norm)) if norm[i] and end.endswith(norm[i])
                   and not re.search(r"[\w]$", end[: len(end) - len(norm[i])])])
    if got:
        return got
    hits = [i for i in range(len(norm)) if occurs(i, body)]
    # one option text present; a shorter option contained in the longer hit does not count
    hits = [i for i in hits if not any(j != i and norm[i] in norm[j] for j in hits)]
    return chr(65 + hits[0]) if len(hits) == 1 else None


@lru_cache(maxsize=256)
def rule_chain(answer_type: str, mode: str = "strict", options: tuple[str, ...] | None = None) -> tuple[Rule, ...]:
    """The ordered rules of one chain (strict, or strict + fallbacks for flexible)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if answer_type == "number":
        strict, flexible = _number_rules()
    elif answer_type == "choice":
        strict, flexible = _choice_rules(options)
    elif answer_type == "text":
        strict, flexible = _text_rules()
    else:
        raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}")
    return tuple(strict if mode == "strict" else strict + flexible)


RULES = {(t, m): tuple(r.name for r in rule_chain(t, m)) for t in ANSWER_TYPES for m in MODES}


def clean_text(text: str) -> str:
    """LaTeX and Markdown noise removed (``\\text{..}``, ``\\!``, ``**``): what every rule
    reads, and what a text gold answer is compared after (AGIEval math writes ``14,\\!400``)."""
    return _clean(text)


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("**", "").replace("__", "")
    text = re.sub(r"\\text(?:bf|rm)?\{([^{}]*)\}", r"\1", text)
    text = text.replace("\\$", "$").replace("\\%", "%").replace("\\,", "").replace("\\!", "")
    return re.sub(r"\\[()\[\]]", " ", text)


def extract(text: str, answer_type: str, options: list[str] | None = None, mode: str = "strict") -> Extraction:
    """Run the ``mode`` chain for ``answer_type`` over ``text``; the first rule with a value wins."""
    chain = rule_chain(answer_type, mode, tuple(options) if options else None)
    if not text:
        return Extraction(None, "none")
    clean = _clean(text)
    for rule in chain:
        value = rule.apply(text if rule.raw else clean)
        if isinstance(value, Refusal):
            return Extraction(None, value.reason)
        if value is not None:
            return Extraction(value, rule.name)
    return Extraction(None, "none")
