"""Every reference solution passes its gold check, through the same path a model's reply
takes (extraction, assembly, the sandbox); a trivially wrong solution fails."""

import asyncio

import pytest

from selfcorrect.sandbox import Sandbox
from selfcorrect.tasks import load_task
from selfcorrect.tasks.data import SHIPPED

pytestmark = pytest.mark.integration

DATA = SHIPPED  # the copy inside the package: a fresh clone has no other


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as box:
        yield box


def check_all(task, replies, sandbox):
    async def run():
        return await asyncio.gather(*(task.check(item, reply, sandbox) for item, reply in replies))

    return asyncio.run(run())


def wrong(item):
    return f"```python\ndef {item.view.entry_point}(*args, **kwargs):\n    return None\n```"


@pytest.mark.parametrize("name", ["mbpp", "humaneval"])
def test_code_references_pass_and_wrong_solutions_fail(name, sandbox):
    task = load_task(name, DATA)
    items = task.items()
    as_reply = (lambda i: f"```python\n{i.view.prompt_code}{i.meta['reference']}\n```") if name == "humaneval" \
        else (lambda i: f"Here is my solution:\n```python\n{i.meta['reference']}\n```\nIt works.")
    checks = check_all(task, [(i, as_reply(i)) for i in items], sandbox)
    failures = [(i.id, c.detail) for i, c in zip(items, checks) if not c.correct]
    assert not failures
    assert len(checks) == {"mbpp": 427, "humaneval": 164}[name]
    assert not any(c.correct for c in check_all(task, [(i, wrong(i)) for i in items], sandbox))


def test_a_reply_without_code_is_a_parse_failure(sandbox):
    task = load_task("mbpp", DATA)
    [check] = check_all(task, [(task.items()[0], "I would use a set intersection.")], sandbox)
    assert check.parse_failure and not check.correct


def test_humaneval_body_only_completions_are_assembled_onto_the_prompt(sandbox):
    task = load_task("humaneval")
    items = task.items()[:20]
    checks = check_all(task, [(i, i.meta["reference"]) for i in items], sandbox)
    assert all(c.correct for c in checks)


def test_every_gsm8k_reference_solution_is_scored_correct():
    task = load_task("gsm8k", DATA)
    items = task.items()
    checks = check_all(task, [(i, i.meta["solution"]) for i in items], None)
    assert sum(c.correct for c in checks) == len(items) == 1319
    shifted = check_all(task, [(i, f"The answer is {int(float(i.answer)) + 1}.") for i in items[:50]], None)
    assert not any(c.correct for c in shifted)
