"""Final answers: find one in a reply, and decide whether two answers are equal.

Extraction looks for the most explicit marker first: GSM8K's `#### N`, then LaTeX's
`\\boxed{...}`, then "the answer is ..." or "Answer: ...", and only then the last number in
the reply. A reply with none of these has no answer: a parse failure, which reports count
apart from wrong answers.

Equality is exact on numbers (1,000 = 1000 = 1000.0, 0.5 = 1/2), and falls back to
math-verify (symbolic equivalence through sympy) for anything else, such as \\frac{1}{2}
or 2\\sqrt{2}.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from fractions import Fraction

# We switch math-verify's signal-based timeouts off on purpose (they fail outside the main
# thread); it warns on every call that we did.
logging.getLogger("math_verify").setLevel(logging.ERROR)

NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(NUMBER)
_HASHES_RE = re.compile(r"####\s*([^\n]+)")
# "answer is X" up to the end of its sentence: a period before a space or the line's end
_ANSWER_IS_RE = re.compile(
    r"answer\s*(?:is|:|=)\s*:?\s*(.+?)(?=\.\s|\.?$)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Extracted:
    answer: str
    how: str  # "####", "boxed", "answer is", "last number"


def extract_answer(text: str) -> Extracted | None:
    """The final answer a reply gives, or None when it gives none."""
    if match := _last(_HASHES_RE, text):
        if answer := _clean(match.group(1)):
            return Extracted(answer, "####")
    if (boxed := last_boxed(text)) is not None and (answer := _clean(boxed)):
        return Extracted(answer, "boxed")
    if match := _last(_ANSWER_IS_RE, text):
        if answer := _clean(match.group(1)):
            return Extracted(answer, "answer is")
    numbers = _NUMBER_RE.findall(text)
    if numbers:
        return Extracted(numbers[-1].replace(",", ""), "last number")
    return None


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


def _clean(answer: str) -> str:
    """Strip what surrounds an answer without changing it: $...$, bold, a trailing period,
    currency, thousands separators. A short phrase with one number becomes that number."""
    answer = answer.strip().strip("*").strip()
    if (boxed := last_boxed(answer)) is not None:
        answer = boxed
    answer = answer.strip("$ ").rstrip(".").strip()
    answer = re.sub(r"^\\?\$", "", answer).strip()
    if as_number(answer) is not None:
        return answer.replace(",", "")
    if not re.search(r"[\\^{}=]", answer):  # not LaTeX: take the number a phrase states
        numbers = _NUMBER_RE.findall(answer)
        if len(numbers) == 1:
            return numbers[0].replace(",", "")
    return answer


def as_number(text: str) -> Fraction | None:
    """A plain number (1,000 / -2.5 / 1/2 / 1e3) as an exact fraction, else None."""
    text = text.strip()
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str, gold: str) -> bool:
    """Whether a predicted answer equals the gold one (exactly for numbers, symbolically
    otherwise)."""
    a, b = as_number(predicted), as_number(gold)
    if a is not None and b is not None:
        return a == b or abs(a - b) <= abs(b) * Fraction(1, 10**6)
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
