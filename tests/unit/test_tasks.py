import asyncio
import json
import re
from dataclasses import fields

import pytest

from selfcorrect.errors import ConfigError
from selfcorrect.tasks import ItemView, load_task, select, split
from selfcorrect.tasks.arithmetic import Arithmetic
from selfcorrect.tasks.data import SHIPPED
from selfcorrect.tasks.gsm8k import gold_answer
from selfcorrect.tasks.humaneval import docstring_examples

DATA = SHIPPED  # the copy inside the package: a fresh clone has no other


def check(task, item, reply):
    return asyncio.run(task.check(item, reply))


def test_a_view_carries_no_gold():
    item = Arithmetic(n=1).items()[0]
    names = {f.name for f in fields(ItemView)}
    assert not names & {"answer", "tests"}
    assert not hasattr(item.view, "answer") and not isinstance(item, ItemView)


@pytest.mark.parametrize("options", [
    {}, {"digits": 3, "steps": 3, "ops": "+-*/"}, {"form": "word", "steps": 2, "ops": "+-*/"},
    {"digits": 1, "steps": 5, "ops": "-/"},
])
def test_arithmetic_gold_is_the_value_of_the_question(options):
    for item in Arithmetic(n=40, **options).items():
        assert int(item.answer) >= 0
        if "form" not in options:  # plain questions are Python expressions, read left to right
            expression = item.view.question.removeprefix("What is ").removesuffix("?")
            assert eval(expression.replace("/", "//")) == int(item.answer)  # our own generated text


def test_arithmetic_is_seeded_stable_and_unlimited():
    a, b = Arithmetic(n=5, seed=3).items(), Arithmetic(n=500, seed=3).items()
    assert [i.view.question for i in a] == [i.view.question for i in b[:5]]
    assert [i.view.question for i in Arithmetic(n=5, seed=4).items()] != [i.view.question for i in a]
    assert len({i.id for i in b}) == 500


def test_arithmetic_word_problems_read_as_stories():
    item = Arithmetic(n=1, form="word", steps=2, seed=1).items()[0]
    assert re.match(r"\w+ has \d+ \w+\. .* How many \w+ does \w+ have now\?$", item.view.question)


def test_arithmetic_knobs_are_validated():
    with pytest.raises(ConfigError) as e:
        Arithmetic(digits=0, steps=0, ops="^", form="poem")
    for name in ("digits", "steps", "ops", "form"):
        assert name in str(e.value)


def test_math_check_separates_parse_failures_from_wrong_answers():
    task = Arithmetic(n=1)
    item = task.items()[0]
    right = check(task, item, f"Let me think. The answer is {item.answer}.")
    wrong = check(task, item, f"The answer is {int(item.answer) + 1}.")
    none = check(task, item, "I don't know.")
    assert (right.correct, right.parse_failure) == (True, False)
    assert (wrong.correct, wrong.parse_failure) == (False, False)
    assert (none.correct, none.parse_failure) == (False, True)


def test_select_by_positions_and_seeded_sample():
    items = Arithmetic(n=50).items()
    assert [i.id for i in select(items, ids="3,7,10-12")] == [items[k].id for k in (3, 7, 10, 11, 12)]
    first = select(items, sample=10, seed=1)
    assert len(first) == 10 and first == select(items, sample=10, seed=1) != select(items, sample=10, seed=2)
    with pytest.raises(ConfigError, match="outside 0-49"):
        select(items, ids="40-60")
    with pytest.raises(ConfigError, match="bad item range"):
        select(items, ids="a-b")


def test_train_and_held_out_never_overlap_and_stay_put():
    items = Arithmetic(n=300).items()
    train, held = split(items, 0.2, seed=0)
    assert not {i.id for i in train} & {i.id for i in held}
    assert len(train) + len(held) == 300 and 30 < len(held) < 90
    # an item's side does not depend on the others
    train_later, held_later = split(items[100:], 0.2, seed=0)
    assert {i.id for i in held_later} == {i.id for i in held} & {i.id for i in items[100:]}


def test_gsm8k_gold_is_the_number_after_the_hashes():
    assert gold_answer("5 + 4 = <<5+4=9>>9 things\n#### 1,009") == "1009"
    with pytest.raises(ConfigError, match="no '####'"):
        gold_answer("no marker")


def test_gsm8k_loads_from_a_data_folder_file_or_root_and_by_default_from_the_shipped_copy():
    for path in (None, DATA, DATA / "gsm8k", DATA / "gsm8k" / "test.jsonl"):
        items = load_task("gsm8k", path).items()
        assert len(items) == 1319 and items[0].answer == "18"
    with pytest.raises(ConfigError, match="no gsm8k data"):
        load_task("gsm8k", DATA / "mbpp")


def test_mbpp_shows_one_test_and_hides_all_three():
    items = load_task("mbpp", DATA).items()
    item = items[0]
    assert len(items) == 427 and item.id == "mbpp/2" and item.view.entry_point == "similar_elements"
    assert len(item.view.visible_tests) == 1 and len(item.tests) == 3
    assert item.view.visible_tests[0] in item.view.messages[0]["content"]
    assert item.tests[2] not in item.view.messages[0]["content"]


def test_humaneval_examples_become_visible_asserts():
    prompt = ('def add(x, y):\n    """\n    >>> add(2, 3)\n    5\n    >>> add(a, 1)\n    2\n'
              '    add(1, 1) ➞ 2\n    """\n')
    assert docstring_examples(prompt, "add") == ("assert add(2, 3) == 5", "assert add(1, 1) == 2")
    items = load_task("humaneval").items()
    assert len(items) == 164 and items[0].view.prompt_code.startswith("from typing import List")
    assert items[0].tests[0].rstrip().endswith("check(has_close_elements)")


def write(tmp_path, lines):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")
    return path


def test_jsonl_math_and_code_files(tmp_path):
    math = load_task(str(write(tmp_path, [{"question": "1+1?", "answer": 2}, {"id": "b", "question": "2+2?", "answer": "4"}])))
    assert [i.id for i in math.items()] == ["jsonl:mine.jsonl/0", "jsonl:mine.jsonl/b"]
    assert math.items()[0].answer == "2" and math.kind == "math"
    code = load_task(str(write(tmp_path, [{"prompt": "Write f.", "tests": ["assert f(1) == 2", "assert f(2) == 3"]}])))
    item = code.items()[0]
    assert code.kind == "code" and item.view.entry_point == "f"
    assert item.view.visible_tests == ("assert f(1) == 2",) and len(item.tests) == 2


def test_jsonl_reports_every_bad_line_and_loads_nothing(tmp_path):
    path = write(tmp_path, [
        {"question": "ok?", "answer": 1},
        "{not json",
        {"question": "", "answer": 1},
        {"question": "no answer"},
        {"prompt": "f", "tests": []},
        {"question": "dup", "answer": 2, "id": "0"},
        {"question": "x", "answer": 1, "colour": "red"},
        "[1, 2]",
        {"prompt": "Write g.", "tests": ["assert g() == 1"]},
    ])
    with pytest.raises(ConfigError) as e:
        load_task(str(path))
    message = str(e.value)
    for expected in ("line 2: not JSON", "line 3: question", "line 4: answer: field required",
                     "line 5: tests", "line 6: id '0' repeats line 1", "line 7: colour: unknown key",
                     "line 8: not a JSON object", "mixes math items", "nothing was loaded"):
        assert expected in message, expected


def test_jsonl_missing_or_empty_files(tmp_path):
    with pytest.raises(ConfigError, match="task file not found"):
        load_task(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="no items"):
        load_task(str(tmp_path / "empty.jsonl"))


def test_unknown_task():
    with pytest.raises(ConfigError, match="unknown task 'mmlu'"):
        load_task("mmlu")
