"""The sandbox's behaviour with ordinary programs: verdicts, messages, limits, data types."""

import os
import shutil

import pytest

from selfcorrect.sandbox import Limits, Sandbox, SandboxUnavailable, TestCase

pytestmark = pytest.mark.integration

ADD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, limits=Limits(wall_seconds=3, cpu_seconds=3)) as box:
        yield box


def test_a_correct_program_passes_every_test(sandbox):
    result = sandbox.run(ADD, ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])
    assert result.passed and result.n_passed == 2 and result.loaded


def test_a_failing_test_says_what_came_out(sandbox):
    result = sandbox.run(ADD, [TestCase("small", "assert add(1, 2) == 3"),
                               TestCase("wrong", "assert add(2, 2) == 5")])
    assert not result.passed and result.n_passed == 1
    wrong = result.tests[1]
    assert (wrong.name, wrong.error_type) == ("wrong", "AssertionError")
    assert wrong.message == "add(2, 2) returned 4, expected 5"


def test_an_exception_in_the_program_is_reported_with_its_type(sandbox):
    result = sandbox.run("def first(xs):\n    return xs[0]\n", ["assert first([]) == 1"])
    assert result.tests[0].error_type == "IndexError"
    assert "out of range" in result.tests[0].message


def test_tests_may_expect_the_programs_builtin_exceptions(sandbox):
    program = "def parse(s):\n    return int(s)\n"
    test = "try:\n    parse('x')\n    raise AssertionError('no error')\nexcept ValueError:\n    pass\n"
    assert sandbox.run(program, [test]).passed


def test_a_syntax_error_fails_loading(sandbox):
    result = sandbox.run("def broken(:\n", ["assert broken() == 1"])
    assert not result.loaded and result.load_error.startswith("SyntaxError")
    assert result.tests[0].error_type == "SyntaxError"


def test_setup_runs_before_the_tests_and_program_modules_are_visible(sandbox):
    program = "import sys\ndef size(t):\n    return sys.getsizeof(t)\n"
    result = sandbox.run(program, ["assert size((1, 2)) == sys.getsizeof((1, 2))",
                                   "assert math.isclose(1.0, 1.0)"], setup="import math")
    assert result.passed


def test_standard_library_values_cross_as_data(sandbox):
    program = (
        "import collections, decimal, fractions\n"
        "Point = collections.namedtuple('Point', 'x y')\n"
        "def stats():\n"
        "    return (collections.Counter('aab'), collections.OrderedDict(a=1), Point(1, 2),\n"
        "            decimal.Decimal('1.10'), fractions.Fraction(1, 3), {1, 2}, frozenset([3]),\n"
        "            b'raw', 2 ** 80, float('inf'), 1 + 2j, range(3), collections.deque([1]))\n")
    test = (
        "import collections, decimal, fractions\n"
        "c, o, p, d, f, s, fs, b, big, inf, z, r, q = stats()\n"
        "assert c == {'a': 2, 'b': 1} and isinstance(c, collections.Counter)\n"
        "assert o == {'a': 1} and p == (1, 2) and p.y == 2\n"
        "assert d == decimal.Decimal('1.10') and f == fractions.Fraction(1, 3)\n"
        "assert s == {1, 2} and fs == frozenset([3]) and b == b'raw' and big == 2 ** 80\n"
        "assert inf == float('inf') and z == 1 + 2j and r == range(3) and list(q) == [1]\n")
    result = sandbox.run(program, [test])
    assert result.passed, result.tests[0].message


def test_other_objects_are_usable_but_equal_only_themselves(sandbox):
    program = (
        "class Box:\n"
        "    def __init__(self, v): self.v = v\n"
        "    def get(self): return self.v\n"
        "    def __len__(self): return 7\n"
        "def evens(n):\n"
        "    return (i for i in range(n) if i % 2 == 0)\n")
    tests = ["assert list(evens(7)) == [0, 2, 4, 6]",
             "b = Box(3)\nassert b.v == 3 and b.get() == 3 and len(b) == 7",
             "assert Box(3) == Box(3)"]
    result = sandbox.run(program, tests)
    assert [t.passed for t in result.tests] == [True, True, False]


def test_output_is_captured_and_truncated(sandbox):
    program = "print('hello')\nimport sys\nprint('warn', file=sys.stderr)\ndef spam():\n    print('x' * 100000)\n"
    result = sandbox.run(program, ["spam()"], limits=Limits(output_bytes=1000, wall_seconds=3))
    assert result.stdout.startswith("hello\n") and result.stdout.endswith("[output truncated]")
    assert result.stderr == "warn\n"


def test_a_test_that_runs_too_long_times_out_and_later_tests_are_not_run(sandbox):
    program = "def spin():\n    while True:\n        pass\ndef one():\n    return 1\n"
    result = sandbox.run(program, ["assert one() == 1", "spin()", "assert one() == 1"],
                         limits=Limits(wall_seconds=1))
    assert [t.passed for t in result.tests] == [True, False, False]
    assert result.timed_out and result.limit == "wall"
    assert result.tests[1].timed_out and result.tests[2].error_type == "NotRun"


def test_a_program_that_uses_up_its_cpu_time_is_stopped_by_the_cpu_limit(sandbox):
    program = "def spin():\n    while True:\n        pass\n"
    result = sandbox.run(program, ["spin()"], limits=Limits(wall_seconds=6, cpu_seconds=1))
    assert not result.passed and result.limit == "cpu"
    assert result.seconds < 4  # stopped at the CPU limit, long before the wall deadline


def test_tests_after_a_crash_get_a_fresh_copy_of_the_program(sandbox):
    program = "import os\ndef boom():\n    os._exit(3)\ndef one():\n    return 1\n"
    result = sandbox.run(program, ["boom()", "assert one() == 1"])
    assert [t.passed for t in result.tests] == [False, True]
    assert result.tests[0].error_type == "ProgramExited"
    assert "exited with code 3" in result.tests[0].message


def test_untrusted_tests_run_in_a_limited_runner_with_the_same_verdicts(sandbox):
    tests = ["assert add(1, 2) == 3", "assert add(1, 1) == 3"]
    trusted = sandbox.run(ADD, tests)
    untrusted = sandbox.run(ADD, tests, tests_trusted=False)
    assert [t.passed for t in untrusted.tests] == [t.passed for t in trusted.tests] == [True, False]
    bomb = sandbox.run(ADD, ["x = bytearray(10 ** 10)"], tests_trusted=False)
    assert bomb.tests[0].error_type == "MemoryError"


def test_humaneval_style_check_functions_work(sandbox):
    program = "def inc(x):\n    return x + 1\n"
    test = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(5) == 7\n\ncheck(inc)\n"
    result = sandbox.run(program, [test])
    assert not result.passed and result.tests[0].message == "candidate(5) returned 6, expected 7"


def test_many_programs_run_in_parallel_in_order(sandbox):
    jobs = [(f"def f():\n    return {i}\n", [f"assert f() == {i}"], "") for i in range(20)]
    assert all(r.passed for r in sandbox.run_many(jobs))


def test_without_bubblewrap_it_refuses_unless_asked_for_the_weaker_mode(monkeypatch, caplog):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    with pytest.raises(SandboxUnavailable, match="bubblewrap .* not installed"):
        Sandbox(workers=1)
    with Sandbox(workers=1, isolation="process") as weak:
        assert weak.run(ADD, ["assert add(2, 3) == 5"]).passed
        scratch = [w.owned_scratch for w in weak._workers if w is not None]
        assert scratch and all(os.path.isdir(s) for s in scratch)
    assert "WITHOUT file-system or network isolation" in caplog.text
    assert not any(os.path.exists(s) for s in scratch)  # its scratch folders go with it


def test_what_a_program_prints_while_loading_is_kept_without_any_test(sandbox):
    result = sandbox.run("x = 6 * 7\nprint(f'The answer is {x}')\n", [])
    assert result.loaded and result.stdout == "The answer is 42\n"


def test_tests_can_observe_what_the_program_returns(sandbox):
    result = sandbox.run(ADD, ["__observe__(add(1, 2))", "__observe__(add('a', 'b'))", "__observe__(add(1))"])
    assert [t.observed for t in result.tests] == [("3",), ("'ab'",), ()]
    assert result.tests[2].error_type == "TypeError"


@pytest.mark.parametrize("isolation", ["bwrap", "process"])
def test_a_set_prints_in_the_same_order_in_every_sandbox(isolation):
    """Feedback shows what a program returned; a set's order follows string hashing, which is
    seeded alike in every worker, so the same program gives the same feedback (and the next
    prompt is served from the sample cache) in every run."""
    if isolation == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    program = "def f():\n    return set('the quick brown fox jumps over the lazy dog'.split())\n"
    seen = set()
    for _ in range(3):
        with Sandbox(workers=1, isolation=isolation) as box:
            seen.add(box.run(program, ["assert f() == 0"]).tests[0].message)
    assert len(seen) == 1, seen
