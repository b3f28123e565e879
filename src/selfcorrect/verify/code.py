"""Code in a reply: find it, and make the program that tests will load.

A reply's code is its fenced block that defines the function the task asks for, else its
first fenced block with a definition, else its first fenced block; without fences, the
reply from its first line of code on. A reply with no code at all is a parse failure.
"""

from __future__ import annotations

import ast
import builtins
import re

_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START_RE = re.compile(r"^(?:def |class |import |from \w|@\w|[A-Za-z_]\w*\s*=)", re.MULTILINE)
_INDENTED_RE = re.compile(r"^(?:    |\t)\S", re.MULTILINE)


def extract_code(reply: str, entry_point: str | None = None) -> str | None:
    """The code a reply gives, or None when it gives none."""
    blocks = [body for language, body in _FENCE_RE.findall(reply)
              if language.lower() in ("", "python", "py", "python3")]
    blocks = [b for b in blocks if b.strip()]
    if blocks:
        if entry_point:
            defining = [b for b in blocks if _defines(b, entry_point)]
            if defining:
                return defining[0].rstrip() + "\n"
        with_def = [b for b in blocks if re.search(r"^\s*def ", b, re.MULTILINE)]
        return (with_def or blocks)[0].rstrip() + "\n"
    start = _CODE_START_RE.search(reply)
    if start:
        return reply[start.start():].rstrip() + "\n"
    if _INDENTED_RE.search(reply):  # a bare function body, as HumanEval continuations are
        return reply.rstrip() + "\n"
    return None


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None


def assemble(code: str, prompt_code: str = "", entry_point: str | None = None) -> str:
    """The program to test. With `prompt_code` (a signature and docstring the answer
    continues, as in HumanEval): a reply that defines the function itself follows the prompt
    (so the prompt's imports and helpers stay), and a bare body completes the prompt."""
    if not prompt_code:
        return code
    if entry_point and _defines(code, entry_point):
        return prompt_code.rstrip() + "\n    pass\n\n" + code
    if not _INDENTED_RE.match(code.lstrip("\n")) and code.strip():
        body = "\n".join("    " + line if line.strip() else line for line in code.splitlines())
        return prompt_code + body + "\n"
    return prompt_code + code


def guess_entry_point(tests: list[str], code: str = "") -> str | None:
    """The function the tests call: one the reference defines and the first test calls,
    else the first call in that test that is neither a built-in nor an attribute."""
    first = tests[0] if tests else ""
    for name in re.findall(r"^def\s+(\w+)\s*\(", code, re.MULTILINE):
        if re.search(rf"\b{re.escape(name)}\s*\(", first):
            return name
    for name in re.findall(r"(?<![.\w])([A-Za-z_]\w*)\s*\(", first):
        if not hasattr(builtins, name):
            return name
    return None


def ignores_its_inputs(code: str, entry_point: str | None) -> bool:
    """Whether the function the tests call takes arguments and reads none of them: it cannot
    compute its answer from its input, so a test it passes was passed by a hard-coded reply
    (`def perimeter(side): return 40` for `assert perimeter(10) == 40`). Python keeps the
    last definition of a name, so that one is read. A program that does not parse or does
    not define the function is not this check's to judge (False)."""
    if not entry_point:
        return False
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    defined = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
               and node.name == entry_point]
    if not defined:
        return False
    function = defined[-1]
    arguments = function.args
    parameters = {a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                                  arguments.vararg, arguments.kwarg) if a is not None}
    read = {node.id for node in ast.walk(function) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    return bool(parameters) and not parameters & read
