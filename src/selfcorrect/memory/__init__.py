"""Error memory (the fast path): lessons from verified mistakes, kept and retrieved for new
attempts, and distilled into guidelines.

    lessons.py     a lesson, and what may write one (verified feedback only)
    bank.py        the persistent, bounded, deduplicated bank; bm25s retrieval
    learn.py       the lessons of a finished trajectory, and its verified outcome
    guidelines.py  lessons distilled into a short, versioned rule list per namespace
    recall.py      what a strategy's session reads: lessons and rules for an input
"""

from selfcorrect.memory.bank import LessonBank
from selfcorrect.memory.guidelines import GuidelineBook, Guidelines, Rule
from selfcorrect.memory.learn import lessons_from, verified_outcome
from selfcorrect.memory.lessons import Lesson, template_lesson
from selfcorrect.memory.recall import Recall, Recalled

__all__ = ["GuidelineBook", "Guidelines", "Lesson", "LessonBank", "Recall", "Recalled", "Rule", "lessons_from",
           "template_lesson", "verified_outcome"]
