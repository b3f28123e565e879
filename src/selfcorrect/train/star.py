"""STaR's rationalization: for a train item the model failed, ask it again with the answer as
a hint, keep the replies that reach that answer, and train on them under the item's own
conversation, the hint removed (Zelikman et al., 2022).

The hint is the gold answer (then the data is oracle-derived: every example says so, and so
does the round's report), or, label-free, a pseudo-label made without gold (the samples'
majority, or the model's own program-aided answer): then a reply is kept when it gives the
pseudo-label, and gold never enters the data. Math items only: a code item's answer is a
program, not a hint.
"""

from __future__ import annotations

import ast
import asyncio
import operator
import re
from collections.abc import Sequence

from selfcorrect.errors import ConfigError
from selfcorrect.models.base import Model, SamplingParams
from selfcorrect.tasks import Item, Task
from selfcorrect.tasks.kinds import read
from selfcorrect.train.data import MAX_REPLY_CHARS, Example, usable_reply
from selfcorrect.verify.answers import vote_key

HINT = ("\n\n(Hint: the correct answer is {answer}. Work it out step by step so that you reach it, and end as "
        "asked, without mentioning this hint.)")


def hinted(item: Item, answer: str) -> list[dict]:
    """The item's conversation with the hint after its last user message."""
    messages = [dict(m) for m in item.view.messages]
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last]["content"] += HINT.format(answer=answer)
    return messages


async def rationalize(model: Model, task: Task, items: Sequence[Item], hints: dict[str, str], *, label: str,
                      params: SamplingParams, per_item: int = 1, max_chars: int = MAX_REPLY_CHARS) -> tuple[list[Example], dict]:
    """Rationales for `items`, each hinted with `hints[item.id]` (gold when `label` is
    "gold", else a pseudo-label). Returns the examples and a record per item: tried, kept."""
    if task.kind != "math":
        raise ConfigError(f"star rationalizes math answers; {task.name} is a {task.kind} task",
                          "use --method rft or correction for code tasks")
    limit = asyncio.Semaphore(max(1, model.capabilities.max_parallel))

    async def one(item: Item) -> tuple[str, list[Example], int]:
        hint = hints[item.id]
        async with limit:
            replies = await model.generate(hinted(item, hint), params)
        kept, seen = [], set()
        for completion in replies:
            text = usable_reply(completion.text, completion.finish_reason, max_chars)
            if text is None:
                continue
            reading = read(item.view, text, completion.finish_reason)
            if (reading.answer is None or _cites_hint(text) or not equations_hold(text)
                    or vote_key(reading.answer) != vote_key(hint) or " ".join(text.split()) in seen):
                continue
            seen.add(" ".join(text.split()))
            kept.append(Example(prompt=list(item.view.messages), completion=text, item_id=item.id, label=label,
                                oracle=label == "gold",
                                provenance={"source": "rationalization", "hint": hint, "sample": completion.index}))
        return item.id, kept[:per_item], len(replies)

    done = await asyncio.gather(*(one(item) for item in items if item.id in hints))
    record = {item_id: {"tried": tried, "kept": len(kept)} for item_id, kept, tried in done}
    return [e for _, kept, _ in done for e in kept], record


# "47 - 16 = 31", "3 × 4 = 12": an operation on plain numbers and the number it is said to equal
EQUATION = re.compile(r"(?<![\w.,-])(\d+(?:\.\d+)?(?:\s*[-+*/×]\s*\d+(?:\.\d+)?)+)\s*=\s*(-?\d+(?:\.\d+)?)(?![\w.,]*\d)")


def equations_hold(text: str) -> bool:
    """Whether every equation on plain numbers in a rationale is true. Told the answer, a
    model often writes a wrong step and the hinted answer after it ("17 + 54 = 70. The answer
    is 71."): the final answer alone would keep it."""
    for left, right in EQUATION.findall(text):
        try:
            # "08" is a number to a reader, a syntax error to Python: leading zeros go first
            value = _arithmetic(ast.parse(re.sub(r"\b0+(\d)", r"\1", left.replace("×", "*")), mode="eval").body)
        except ZeroDivisionError:
            return False
        if abs(value - float(right)) > 1e-9 * max(1.0, abs(value)):
            return False
    return True


OPERATIONS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _arithmetic(node: ast.expr) -> float:
    """The value of numbers joined by + - * / (what EQUATION matches), read from the syntax
    tree: model text is never executed outside the sandbox."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATIONS:
        return OPERATIONS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    raise ValueError(f"not plain arithmetic: {ast.dump(node)}")


def _cites_hint(text: str) -> bool:
    """A rationale that talks about having been given the answer teaches the model to expect
    one: it is not kept."""
    lowered = text.lower()
    return "hint" in lowered or "correct answer is" in lowered
