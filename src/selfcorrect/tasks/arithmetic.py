"""Arithmetic problems, generated: seeded, unlimited, with difficulty knobs.

Item i of a seed is the same problem on every machine. A problem starts from one number
and applies `steps` operations to it, left to right: "What is (34 + 12) * 3?" in plain
form, a short story in word form. Subtraction never goes below zero and division is
always exact, so every answer is a whole number.
"""

from __future__ import annotations

import operator
import random

from selfcorrect.errors import ConfigError
from selfcorrect.tasks.base import MathTask
from selfcorrect.tasks.items import Item

NAMES = ["Ava", "Ben", "Chloe", "Dan", "Ella", "Finn", "Grace", "Hugo", "Iris", "Jack"]
THINGS = ["apples", "marbles", "stickers", "coins", "books", "shells", "pencils", "stamps"]
STORY = {
    "+": ["{who} gets {x} more.", "{who} finds {x} more.", "A friend gives {who} {x} more."],
    "-": ["{who} gives away {x}.", "{who} loses {x}.", "{who} uses {x} of them."],
    "*": ["Then {who} ends up with {x} times as many.", "{who} collects {x} times as many."],
    "/": ["{who} shares them equally among {x} friends and keeps one share.",
          "{who} splits them into {x} equal piles and keeps one pile."],
}
OPERATIONS = "+-*/"
APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}


class Arithmetic(MathTask):
    name = "arithmetic"
    # Two worked examples: with them SmolLM2-135M answered 9 of 40 two-digit problems
    # greedily, against 1 of 40 when asked to reason step by step.
    template = ("Q: What is 12 + 5?\nA: 12 + 5 = 17. The answer is 17.\n"
                "Q: What is 8 * 6?\nA: 8 * 6 = 48. The answer is 48.\n"
                "Q: {question}\nA:")
    stop = ("\n\n", "\nQ:")  # the examples answer in one line; the model then rambles on

    def __init__(self, n: int = 200, digits: int = 2, steps: int = 1, ops: str = "+-*",
                 form: str = "plain", seed: int = 0):
        problems = []
        if n < 1:
            problems.append(f"n={n} (need at least 1 item)")
        if not 1 <= digits <= 9:
            problems.append(f"digits={digits} (use 1 to 9)")
        if not 1 <= steps <= 10:
            problems.append(f"steps={steps} (use 1 to 10)")
        if not ops or set(ops) - set(OPERATIONS):
            problems.append(f"ops={ops!r} (use some of {OPERATIONS!r})")
        if form not in ("plain", "word"):
            problems.append(f"form={form!r} (use 'plain' or 'word')")
        if problems:
            raise ConfigError("invalid arithmetic task: " + "; ".join(problems))
        self.n, self.digits, self.steps, self.ops, self.form, self.seed = n, digits, steps, ops, form, seed

    def items(self) -> list[Item]:
        return [self.item(i) for i in range(self.n)]

    def item(self, index: int) -> Item:
        rng = random.Random(f"arithmetic:{self.seed}:{self.digits}:{self.steps}:{self.ops}:{index}")
        low, high = 10 ** (self.digits - 1) if self.digits > 1 else 0, 10**self.digits - 1
        value = rng.randint(max(low, 1), high)
        start, moves = value, []
        for _ in range(self.steps):
            op = rng.choice(self.ops)
            x = rng.randint(max(low, 1), high)
            if op == "-" and x > value:
                x = rng.randint(0, value)
            if op == "/":
                divisors = _divisors(value, max(low, 2), high)
                if divisors:
                    x = rng.choice(divisors)
                else:
                    op = "+"  # nothing divides it exactly within the digits: add instead
            value = APPLY[op](value, x)
            moves.append((op, x))
        question = self._plain(start, moves) if self.form == "plain" else self._story(rng, start, moves)
        return self.make_item(f"arithmetic/{self.seed}/{index}", question, str(value),
                              operations="".join(op for op, _ in moves))

    def worked_reply(self, question: str, answer: str) -> str:
        # the template's own form: "12 + 5 = 17. The answer is 17."
        if question.startswith("What is ") and question.endswith("?"):
            return f"{question[8:-1]} = {answer}. The answer is {answer}."
        return super().worked_reply(question, answer)

    @staticmethod
    def _plain(start: int, moves: list[tuple[str, int]]) -> str:
        expression, loose = str(start), False  # loose: ends in + or - outside parentheses
        for op, x in moves:
            if op in "*/" and loose:
                expression = f"({expression})"
            expression = f"{expression} {op} {x}"
            loose = op in "+-"
        return f"What is {expression}?"

    @staticmethod
    def _story(rng: random.Random, start: int, moves: list[tuple[str, int]]) -> str:
        who, things = rng.choice(NAMES), rng.choice(THINGS)
        sentences = [f"{who} has {start} {things}."]
        sentences += [rng.choice(STORY[op]).format(who=who, x=x) for op, x in moves]
        sentences.append(f"How many {things} does {who} have now?")
        return " ".join(sentences)


def _divisors(value: int, low: int, high: int) -> list[int]:
    """Divisors of value within [low, high], found up to its square root."""
    found = set()
    d = 1
    while d * d <= value:
        if value % d == 0:
            found.update((d, value // d))
        d += 1
    return sorted(x for x in found if low <= x <= high)
