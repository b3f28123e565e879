"""Final answers: read one from a reply, and decide whether two answers are equal.

This module is a measuring instrument: every accuracy selfcorrect reports rests on it, so
it refuses to guess. Its cases, with the verdict a careful human grader gives, are kept in
`tests/data/answers.jsonl`.

Reading. The most explicit marker wins: GSM8K's `#### N`, then LaTeX's `\\boxed{...}`, then
"the answer is ..." / "Answer: ..." (the last one in the reply), then "N is the answer"
(not as a question: "Is 5 the answer?", "Maybe 5 is the answer?" state nothing), then a
hedged final statement ("I think it is 31.", "I believe it's 31"), when nothing after it
states another number. Where the expected answer is a number, only a stated number counts:
- the number the marker states ("The answer is $1,234 dollars." -> 1234; "... is not 5 but
  7" -> 7; "... is 18, because 9 * 2 = 18" -> 18), or the right-hand side of an equation
  after it ("The answer is 64 * 49 = 3136" -> 3136);
- without a marker, the right-hand side of the reply's final equation (`... = 60`, `...
  equals 60`), when no number follows it.
An unevaluated expression ("The answer is 64 * 49.") is a parse failure, never a match: it
is what a model writes when it restates the question. A false equation stating the answer
("The answer is 47 - 12 = 31.", "so 25 = 31") is one too ("false equation"): its left side,
when it is plain arithmetic, must come to its right side (to the decimals shown). So are several numbers with nothing
to choose between them ("ambiguous"), and a reply cut off at the token cap with no marker
("truncated", counted apart: "Step 10:" is not an answer of 10).

Equality. Integers, finite decimals and fractions compare exactly (1,000 = 1000 = 1000.0,
0.5 = 1/2; 1000001 != 1000000). A tolerance exists only as a task option, off by default.
Where the expected answer is symbolic (a fraction in LaTeX, a root, a formula), answers are
compared with math-verify (symbolic equivalence through sympy).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from fractions import Fraction

# We switch math-verify's signal-based timeouts off on purpose (they fail outside the main
# thread); it warns on every call that we did.
logging.getLogger("math_verify").setLevel(logging.ERROR)

NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(NUMBER)
_HASHES_RE = re.compile(r"####\s*([^\n]*)")
# "answer is X" up to the end of its sentence: a period before a space or the line's end
_ANSWER_IS_RE = re.compile(
    r"answer\s*(?:is|was|would be|will be|:|=)\s*:?\s*([^\n]*?)(?=\.\s|\.?\s*$)",
    re.IGNORECASE | re.MULTILINE)
_IS_THE_ANSWER_RE = re.compile(
    rf"(?<![\w.,])\$?\s*({NUMBER})\s+is\s+(?:the|my|our)\s+(?:final\s+|correct\s+|right\s+)?answer\b(?![^.\n]*\?)",
    re.IGNORECASE)
_FILLERS = (r"(?:indeed|simply|just|probably|exactly|clearly|definitely|actually|finally|therefore|"
            r"thus|so|then|now|still|about|approximately|roughly|around|equal to|equals|the number|"
            r"a total of|total of|in total|of|=|:)")
_LEADING_RE = re.compile(rf"^(?:{_FILLERS}\s*)*(?:[$€£]|usd\s*|rs\.?\s*)?\s*({NUMBER})", re.IGNORECASE)
_FRACTION_RE = re.compile(r"^(-?\d+)\s*/\s*(\d+)")
_OPERATOR_NEXT_RE = re.compile(r"^\s*(?:[-+*/×÷^x]|\*\*)\s*[\d(.]", re.IGNORECASE)
# Where the statement of the answer ends and an explanation begins.
_TERMINATOR_RE = re.compile(r"[,;:!?()\[\]]|\.(?:\s|$)|\b(?:which|because|since|as|so|but|if|when|"
                            r"where|from|after|given|for|by|per)\b", re.IGNORECASE)
_NOT_BUT_RE = re.compile(rf"^\s*not\s+(?:{NUMBER})\b[^\d]*?\b(?:but|rather)\s+", re.IGNORECASE)
_EQUATION_RE = re.compile(rf"(?:=|\bequals\b|\bis equal to\b)\s*\$?\s*\\?\$?\s*({NUMBER})", re.IGNORECASE)
# "I think it is 31": a hedged statement is still the reply's answer when it is its last word
_HEDGED_RE = re.compile(
    r"\bI\s+(?:think|believe|guess|suppose|reckon|would say|'d say)\s+(?:that\s+)?(?:it|this|that)\s*"
    r"(?:is|'s|’s|would be|must be|should be)\s+([^\n]*?)(?=\.\s|\.?\s*$)", re.IGNORECASE | re.MULTILINE)
# The arithmetic that ends a left-hand side ("... is 47 - 12 " of "... is 47 - 12 = 31"), and
# the words after which it is a whole quantity (not "50% of 20", "3 kg")
_ARITHMETIC_TAIL_RE = re.compile(r"(?:(?<=^)|(?<=[\s:(=]))([-+*/()$\d.,\s]*\d[)\s]*)$")
_QUANTITY_BEFORE_RE = re.compile(r"(?:^|[\n:=(]|\b(?:is|was|are|be|so|then|thus|therefore|gives|makes|"
                                 r"total|result|answer|get|got|have|has|equals))\s*$", re.IGNORECASE)

# Why a reply gave no answer. Reports count "truncated" apart from the others.
TRUNCATED, EXPRESSION, AMBIGUOUS, NO_ANSWER = "truncated", "expression", "ambiguous", "no answer"
FALSE_EQUATION = "false equation"
FAILURES = (TRUNCATED, EXPRESSION, AMBIGUOUS, NO_ANSWER, FALSE_EQUATION)
# Readings of an answer the reply states outright (not inferred from its last equation).
MARKERS = ("####", "boxed", "answer is", "is the answer", "hedged")


@dataclass(frozen=True)
class Reading:
    """What a reply answers. `answer` is None on a parse failure, and `how` then says why
    (one of FAILURES); otherwise `how` names the marker it was read from."""

    answer: str | None
    how: str

    @property
    def failed(self) -> bool:
        return self.answer is None


def read_answer(text: str, *, numeric: bool = True, finish_reason: str = "stop") -> Reading:
    """The final answer a reply gives. `numeric`: the expected answer is a number (only a
    stated number counts); `finish_reason` "length" means the reply hit the token cap."""
    truncated = finish_reason == "length"
    text = _normalise(text)
    for how, phrase, at_end in _markers(text):
        if truncated and at_end:  # the number may have been cut short ("The answer is 12" of 128)
            return Reading(None, TRUNCATED)
        if numeric:
            answer, failure = _stated_number(phrase)
        else:
            answer, failure = (_clean_symbolic(phrase) or None), NO_ANSWER
        if answer is not None:
            return Reading(answer, how)
        if failure != NO_ANSWER:
            return Reading(None, failure)
    if truncated:
        return Reading(None, TRUNCATED)
    if numeric:
        answer, failure = _final_equation(text)
        return Reading(answer, "final equation") if answer is not None else Reading(None, failure)
    return Reading(None, NO_ANSWER)


def read_printed_number(stdout: str) -> Reading:
    """A program's answer: its last line of output, when that line is a number, or states
    one as a reply would ("The answer is 31.", "64 * 49 = 3136"). A number merely among
    other text on that line ("Ben has 20 apples"), an earlier line, or an expression is not
    read: a program that prints a number from the question has no answer."""
    lines = [line.strip() for line in stdout.strip().splitlines() if line.strip()]
    if not lines:
        return Reading(None, NO_ANSWER)
    last = _normalise(lines[-1]).strip()
    if as_number(last) is not None:
        return Reading(_plain(last), "printed")
    stated = read_answer(last)
    return Reading(stated.answer, "printed") if stated.answer is not None else stated


def _markers(text: str):
    """(how, phrase, phrase runs to the reply's end) for each marker present, most explicit
    first; of each kind, the last one in the reply."""
    end = len(text.rstrip())
    if match := _last(_HASHES_RE, text):
        yield "####", match.group(1), match.end(1) >= end
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start >= 0:
        boxed = last_boxed(text)
        yield "boxed", boxed or "", boxed is None  # an unclosed box was cut off
    if match := _last(_ANSWER_IS_RE, text):
        phrase = match.group(1)
        terminated = match.end(1) < end or text.rstrip().endswith(".")
        yield "answer is", phrase, not terminated
    if match := _last(_IS_THE_ANSWER_RE, text):
        yield "is the answer", match.group(1), False  # the number comes before: never cut short
    if (match := _last(_HEDGED_RE, text)) and not _NUMBER_RE.search(text[match.end(1):]):
        yield "hedged", match.group(1), match.end(1) >= end and not text.rstrip().endswith(".")


def _stated_number(phrase: str) -> tuple[str | None, str]:
    """The number a marker's phrase states, or why it states none."""
    phrase = _strip_markup(phrase)
    if "=" in phrase:  # "64 * 49 = 3136", "x = 5": the right-hand side
        left, right = phrase.rsplit("=", 1)
        if _NUMBER_RE.search(right):
            if _false_equation(left, right):
                return None, FALSE_EQUATION
            phrase = right
    phrase = _NOT_BUT_RE.sub("", phrase).strip()
    if not _NUMBER_RE.search(phrase):
        return None, NO_ANSWER
    if fraction := _FRACTION_RE.match(phrase):  # 1/2 is a number; 64/8 is a division left undone
        top, bottom = int(fraction.group(1)), int(fraction.group(2))
        rest = phrase[fraction.end():]
        if bottom > 1 and math.gcd(top, bottom) == 1 and not _OPERATOR_NEXT_RE.match(rest):
            return _checked_rest(f"{top}/{bottom}", rest)
        return None, EXPRESSION
    if leading := _LEADING_RE.match(phrase):
        rest = phrase[leading.end():]
        if _OPERATOR_NEXT_RE.match(rest):
            return None, EXPRESSION
        rest = re.sub(r"^\s*%", "", rest)
        return _checked_rest(_plain(leading.group(1)), rest)
    if re.match(r"^\s*[(\[]", phrase) or re.search(rf"(?:{NUMBER})\s*[-+*/×÷^]\s*\(?\s*(?:{NUMBER})", phrase):
        return None, EXPRESSION
    stated = _TERMINATOR_RE.split(phrase, maxsplit=1)[0]
    numbers = _NUMBER_RE.findall(stated)
    if len(numbers) == 1:  # "Ben has 18 apples"
        return _plain(numbers[0]), ""
    return None, AMBIGUOUS if numbers else NO_ANSWER


def _checked_rest(number: str, rest: str) -> tuple[str | None, str]:
    """A stated number followed by units or an explanation is that number; followed by
    another number before any explanation begins ("18 and 20"), it is ambiguous."""
    before_explanation = _TERMINATOR_RE.split(rest, maxsplit=1)[0]
    if _NUMBER_RE.search(before_explanation):
        return None, AMBIGUOUS
    return number, ""


def _final_equation(text: str) -> tuple[str | None, str]:
    """The right-hand side of the reply's last equation, when it is the last number in the
    reply, not itself the start of an expression ("= 5 + 3"), and the equation is not false."""
    match = _last(_EQUATION_RE, text)
    if match is None:
        return None, NO_ANSWER
    after = text[match.end():]
    if _NUMBER_RE.search(after) or _OPERATOR_NEXT_RE.match(after) or not text[: match.start()].strip():
        return None, NO_ANSWER
    if _false_equation(text[: match.start()], match.group(1)):
        return None, FALSE_EQUATION
    return _plain(match.group(1)), ""


def _false_equation(left: str, right: str) -> bool:
    """Whether `left = right` is arithmetic that does not come out: the left side ends in a
    whole quantity of plain numbers and + - * / (a number alone, "47 - 12"), and its value,
    rounded to the decimals the right side shows, is not the right side's number. Anything
    else (units, "50% of 20", variables) is not checked."""
    tail = _ARITHMETIC_TAIL_RE.search(left)
    stated = _LEADING_RE.match(_strip_markup(right))
    if tail is None or stated is None or not _QUANTITY_BEFORE_RE.search(left[: tail.start()]):
        return False
    value, shown = _arithmetic(tail.group(1)), as_number(_plain(stated.group(1)))
    if value is None or shown is None:
        return False
    decimals = len(stated.group(1).partition(".")[2])
    if decimals == 0:  # "7 / 2 = 3" is false; "10 / 3 = 3.33" is rounded
        return value != shown
    return abs(value - shown) > Fraction(1, 2 * 10 ** decimals)


def _arithmetic(expression: str) -> Fraction | None:
    """The exact value of plain arithmetic (numbers, + - * /, parentheses), else None."""
    import ast

    expression = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expression.replace("$", "")).strip()
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError:
        return None

    def value(node) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            a, b = value(node.left), value(node.right)
            return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(node.op)) if not isinstance(
                node.op, ast.Div) else a / b
        raise ValueError(node)

    try:
        return value(tree)
    except (ValueError, ZeroDivisionError):
        return None


def _normalise(text: str) -> str:
    """Typography that changes no value: Unicode minus and times, LaTeX spacing."""
    return (text.replace("\u2212", "-").replace("\u00d7", "*").replace("\\times", "*")
            .replace("\\cdot", "*").replace("\\div", "/").replace("\\,", "").replace("\\!", "")
            .replace("\\%", "%").replace("\\$", "$"))


def _strip_markup(phrase: str) -> str:
    phrase = phrase.strip().strip("*").strip()
    if (boxed := last_boxed(phrase)) is not None:
        phrase = boxed
    phrase = re.sub(r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1", phrase)
    phrase = re.sub(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", phrase)
    phrase = re.sub(r"\\[()\[\]]", " ", phrase)
    return phrase.replace("**", "").replace("$", "").strip()


def _clean_symbolic(phrase: str) -> str:
    """An answer where the expected one is symbolic: kept as written, minus what surrounds it."""
    phrase = phrase.strip().strip("*").strip()
    if (boxed := last_boxed(phrase)) is not None:
        phrase = boxed
    phrase = phrase.strip("$ ").rstrip(".").strip()
    return re.sub(r"^\\?\$", "", phrase).strip()


def _plain(number: str) -> str:
    return number.replace(",", "").lstrip("+")


def last_boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} (or \\fbox{...}), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[begin : i - 1] if depth == 0 else None


def _last(pattern: re.Pattern, text: str) -> re.Match | None:
    found = None
    for found in pattern.finditer(text):
        pass
    return found


def as_number(text: str) -> Fraction | None:
    """A plain number (1,000 / -2.5 / 1/2 / \\frac{1}{2}) as an exact fraction, else None.
    An expression (5-3, 64*49) is not a number."""
    text = re.sub(r"^\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$", r"\1/\2", text.strip().replace("\u2212", "-"))
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    if not re.fullmatch(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+)?", text):
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def vote_key(answer: str | None) -> str | None:
    """Answers that are the same number vote together (1,000 = 1000.0)."""
    if answer is None:
        return None
    number = as_number(answer)
    return str(number) if number is not None else " ".join(answer.split())


def is_numeric(answer: str) -> bool:
    """Whether an expected answer is a number (then only stated numbers are read)."""
    return as_number(answer) is not None


def answers_match(predicted: str, gold: str, tolerance: float = 0.0) -> bool:
    """Whether a predicted answer equals the gold one: exactly for numbers (within a
    relative `tolerance` only where a task sets one), symbolically where the gold is
    symbolic. A number expected and an expression given is never a match."""
    expected = as_number(gold)
    if expected is not None:
        given = as_number(predicted)
        if given is None:
            return False
        if tolerance > 0:
            return abs(given - expected) <= abs(expected) * Fraction(str(tolerance))
        return given == expected
    return _math_verify(predicted, gold)


def _math_verify(predicted: str, gold: str) -> bool:
    from math_verify import parse, verify

    # math-verify's own timeouts use signal.alarm, which works in the main thread only;
    # the inputs here are short extracted answers.
    parsed_gold = parse(_as_latex(gold), parsing_timeout=None)
    parsed = parse(_as_latex(predicted), parsing_timeout=None)
    if not parsed_gold or not parsed:
        return predicted.strip() == gold.strip()
    return verify(parsed_gold, parsed, timeout_seconds=None)


def _as_latex(answer: str) -> str:
    return answer if answer.startswith("$") else f"${answer}$"
