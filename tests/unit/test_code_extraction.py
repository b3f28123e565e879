import json
from pathlib import Path

import pytest

from selfcorrect.verify.code import assemble, extract_code, guess_entry_point, ignores_its_inputs

TWO_BLOCKS = """Here is the helper and the solution:
```python
import math
```
```python
def area(r):
    return math.pi * r * r
```
Usage:
```python
print(area(2))
```
"""


def test_the_block_that_defines_the_entry_point_wins():
    assert extract_code(TWO_BLOCKS, "area").startswith("def area(r):")


def test_without_an_entry_point_the_first_block_with_a_definition():
    reply = "```\nx = 1\n```\n```py\ndef g():\n    return 2\n```"
    assert extract_code(reply) == "def g():\n    return 2\n"


def test_other_languages_are_not_python():
    assert extract_code("```bash\npip install x\n```\nno code here") is None


def test_unfenced_code_starts_at_its_first_line():
    reply = "Sure! Here you go:\ndef f(x):\n    return x * 2\n"
    assert extract_code(reply, "f") == "def f(x):\n    return x * 2\n"


def test_a_bare_body_is_code_and_prose_is_not():
    assert extract_code("    return x + 1\n") == "    return x + 1\n"
    assert extract_code("I cannot write this function.") is None


def test_an_unclosed_fence_still_yields_its_code():
    assert extract_code("```python\ndef f():\n    return 1\n", "f") == "def f():\n    return 1\n"


PROMPT = 'import math\n\ndef hyp(a, b):\n    """The hypotenuse."""\n'


def test_a_full_function_follows_the_prompt_so_its_imports_stay():
    program = assemble("def hyp(a, b):\n    return math.hypot(a, b)\n", PROMPT, "hyp")
    namespace = {}
    exec(program, namespace)  # test data of our own, not model output
    assert namespace["hyp"](3, 4) == 5.0


def test_a_body_completes_the_prompt_even_when_unindented():
    for body in ("    return math.hypot(a, b)\n", "return math.hypot(a, b)\n"):
        namespace = {}
        exec(assemble(body, PROMPT, "hyp"), namespace)
        assert namespace["hyp"](6, 8) == 10.0


def test_the_entry_point_is_what_the_tests_call():
    code = "def helper(x):\n    return x\ndef similar(a, b):\n    return helper(a)\n"
    assert guess_entry_point(["assert set(similar((1,), (2,))) == set()"], code) == "similar"
    assert guess_entry_point(["assert math.isclose(area(1), 3.14159, rel_tol=0.001)"]) == "area"


HARD_CODED = [json.loads(line) for line in (Path(__file__).parent.parent / "data" / "hard_coded.jsonl").open()
              if line.strip()]


@pytest.mark.parametrize("case", HARD_CODED, ids=[c["why"] for c in HARD_CODED])
def test_a_function_that_reads_none_of_its_inputs_is_hard_coded(case):
    """tests/data/hard_coded.jsonl: programs a careful grader judged (add more there)."""
    assert ignores_its_inputs(case["code"], case["entry_point"]) is case["hard_coded"]


def test_the_hard_coded_case_file_covers_both_verdicts():
    assert sum(c["hard_coded"] for c in HARD_CODED) >= 8 and sum(not c["hard_coded"] for c in HARD_CODED) >= 8
