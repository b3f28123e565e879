"""Error memory (the fast path): lessons from verified mistakes, kept and retrieved for new
attempts. This is its core: lessons, the bank that keeps them, retrieval. Wiring it into
strategies, guidelines, the CLI and online evaluation is issue 9's remaining work.
"""

from selfcorrect.memory.bank import LessonBank
from selfcorrect.memory.lessons import Lesson, template_lesson

__all__ = ["Lesson", "LessonBank", "template_lesson"]
