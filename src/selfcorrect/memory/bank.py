"""The lesson bank: lessons kept in the project's SQLite file, retrieved by similarity.

Persistent (its own table in the store file, through its own connection; WAL lets it share
the file with the runner), deduplicated (a lesson's id hashes its namespace, input, wrong
attempt and feedback), bounded (at `capacity` per namespace the lowest verified score goes
first, then the oldest), namespaces never mix.

Retrieval is lexical with bm25s. bm25s has no incremental add, so the namespace's index is
rebuilt once `batch` lessons have come in since the last build, and the newer lessons (the
tail) are scored by a small index of their own; results with a score of zero are dropped
(bm25s returns them to fill k). A lesson whose use is measured to hurt (more right→wrong
than wrong→right among items that were shown it, over at least `min_uses`) is retired.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from selfcorrect.db import attach
from selfcorrect.errors import ConfigError
from selfcorrect.memory.lessons import SCHEMA, Lesson, check_writable

TABLE = """
CREATE TABLE IF NOT EXISTS lessons (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    payload TEXT NOT NULL,
    score REAL NOT NULL,
    created_at REAL NOT NULL,
    retired INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS lessons_by_namespace ON lessons (namespace, retired, score, created_at);
CREATE TABLE IF NOT EXISTS lesson_vectors (
    id TEXT NOT NULL,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (id, model)
);
"""


class _Index:
    """A namespace's bm25s index over its lessons as of the last build, and the tail since."""

    def __init__(self, ids: list[str], texts: list[str]):
        self.ids, self.tail_ids, self.tail_texts = ids, [], []
        self.main = bm25_index(texts) if texts else None
        self.tail = None

    def add(self, lesson_id: str, text: str) -> None:
        self.tail_ids.append(lesson_id)
        self.tail_texts.append(text)
        self.tail = None  # rebuilt whole at the next search: a few hundred lessons at most

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        if self.tail is None and self.tail_texts:
            self.tail = bm25_index(self.tail_texts)
        found = []
        for index, ids in ((self.main, self.ids), (self.tail, self.tail_ids)):
            if index is None:
                continue
            found += bm25_search(index, ids, query, k)
        return sorted(found, key=lambda pair: -pair[1])[:k]


class _Vectors:
    """A namespace's lesson vectors (embedding retrieval), kept in the store by model name so
    that a lesson is embedded once."""

    def __init__(self, ids: list[str], matrix):
        self.ids, self.matrix = ids, matrix

    def search(self, query_vector, k: int, floor: float) -> list[tuple[str, float]]:
        import numpy as np

        if not self.ids:
            return []
        similarity = self.matrix @ query_vector
        top = np.argsort(-similarity)[:k]
        return [(self.ids[i], float(similarity[i])) for i in top if similarity[i] >= floor]


class LessonBank:
    def __init__(self, path: str | Path, *, capacity: int = 10_000, batch: int = 256, min_uses: int = 4,
                 embedder=None, db=None):
        """`embedder` (memory/embed.py): find lessons by meaning instead of by words."""
        if capacity < 1 or batch < 1 or min_uses < 1:
            raise ConfigError("invalid lesson bank settings", "capacity, batch and min_uses must be positive")
        self.capacity, self.batch, self.min_uses = capacity, batch, min_uses
        self._db, self._owns_db = attach(path, TABLE, db)  # db: shared, for one transaction across tables
        self._lock = threading.Lock()
        self._indexes: dict[str, _Index] = {}
        self.embedder = embedder
        self._vectors: dict[str, _Vectors] = {}
        self._active: dict[str, int] = {}  # active lessons per namespace, counted once

    def close(self) -> None:
        if self._owns_db:
            self._db.close()

    # -- writing ---------------------------------------------------------------------

    def add(self, lesson: Lesson, *, oracle_run: bool = False) -> str:
        """Keep a lesson (once: the same lesson again is the same row); return its id."""
        check_writable(lesson, oracle_run)
        with self._lock:
            row = self._db.execute("SELECT 1 FROM lessons WHERE id = ?", (lesson.id,)).fetchone()
            if row is not None:
                return lesson.id
            self._evict(lesson.namespace)
            self._db.execute("INSERT INTO lessons VALUES (?, ?, ?, ?, ?, 0)",
                             (lesson.id, lesson.namespace, lesson.model_dump_json(), lesson.score,
                              lesson.created_at))
            self._active[lesson.namespace] += 1
            vectors = self._vectors.get(lesson.namespace)
            if vectors is not None:
                import numpy as np

                vector = self._embed([lesson])[0]
                vectors.ids.append(lesson.id)
                vectors.matrix = np.vstack([vectors.matrix, vector[None, :]])
            index = self._indexes.get(lesson.namespace)
            if index is not None:
                if len(index.tail_ids) + 1 >= self.batch:
                    del self._indexes[lesson.namespace]  # rebuilt at the next search
                else:
                    index.add(lesson.id, _document(lesson))
        return lesson.id

    def _evict(self, namespace: str) -> None:
        if namespace not in self._active:
            self._active[namespace] = self._db.execute(
                "SELECT COUNT(*) FROM lessons WHERE namespace = ? AND retired = 0", (namespace,)).fetchone()[0]
        count = self._active[namespace]
        if count >= self.capacity:
            self._db.execute(
                "DELETE FROM lessons WHERE id IN (SELECT id FROM lessons WHERE namespace = ? AND retired = 0 "
                "ORDER BY score, created_at LIMIT ?)", (namespace, count - self.capacity + 1))
            self._active[namespace] = self.capacity - 1
            self._indexes.pop(namespace, None)
            self._vectors.pop(namespace, None)

    def record_use(self, lesson_ids: Iterable[str], before_right: bool | None, after_right: bool) -> None:
        """An item that was shown these lessons was verified: count it for each. `before_right`
        is the verdict on the same item without them, where known (an online evaluation's
        twin run without memory); None where it is not (a server's request)."""
        with self._lock:
            for lesson_id in lesson_ids:
                lesson = self._get(lesson_id)
                if lesson is None:
                    continue
                lesson.uses += 1
                lesson.helped += before_right is False and after_right
                lesson.hurt += before_right is True and not after_right
                lesson.ended_right += after_right
                lesson.ended_wrong += not after_right
                if lesson.uses >= self.min_uses and lesson.hurt > lesson.helped:
                    lesson.retired = True  # measured to hurt
                self._put(lesson)

    def forget_cached(self) -> None:
        """Drop what is kept in memory of the table (a rolled-back transaction changed it back)."""
        with self._lock:
            self._indexes.clear()
            self._vectors.clear()
            self._active.clear()

    def remove(self, lesson_id: str) -> None:
        """Forget a lesson (one a client's later feedback replaced)."""
        with self._lock:
            lesson = self._get(lesson_id)
            if lesson is not None:
                self._db.execute("DELETE FROM lessons WHERE id = ?", (lesson_id,))
                self._indexes.pop(lesson.namespace, None)
                self._vectors.pop(lesson.namespace, None)
                self._active.pop(lesson.namespace, None)

    def clear(self, namespace: str) -> int:
        """Forget a namespace's lessons, retired ones included; return how many there were."""
        with self._lock:
            count = self._db.execute("DELETE FROM lessons WHERE namespace = ?", (namespace,)).rowcount
            self._indexes.pop(namespace, None)
            self._vectors.pop(namespace, None)
            self._active.pop(namespace, None)
        return count

    def retire(self, lesson_id: str) -> None:
        with self._lock:
            lesson = self._get(lesson_id)
            if lesson is None:
                raise ConfigError(f"no lesson {lesson_id!r}", "list them with `selfcorrect memory list`")
            lesson.retired = True
            self._put(lesson)

    # -- reading ---------------------------------------------------------------------

    def search(self, namespace: str, query: str, k: int = 5) -> list[tuple[Lesson, float]]:
        """The k lessons of a namespace most similar to `query`, best first, each with its
        BM25 score; none with a score of zero."""
        if self.embedder is not None:
            return self._search_vectors(namespace, query, k)
        with self._lock:
            index = self._indexes.get(namespace)
            if index is None:
                rows = self._db.execute("SELECT id, payload FROM lessons WHERE namespace = ? AND retired = 0 "
                                        "ORDER BY created_at", (namespace,)).fetchall()
                index = self._indexes[namespace] = _Index(
                    [row[0] for row in rows], [_document(Lesson.model_validate_json(row[1])) for row in rows])
            found = index.search(query, k)
            lessons = [(self._get(lesson_id), score) for lesson_id, score in found]
        return [(lesson, score) for lesson, score in lessons if lesson is not None and not lesson.retired]

    def _search_vectors(self, namespace: str, query: str, k: int) -> list[tuple[Lesson, float]]:
        import numpy as np

        from selfcorrect.memory.embed import MIN_SIMILARITY

        with self._lock:
            vectors = self._vectors.get(namespace)
            if vectors is None:
                rows = self._db.execute("SELECT id, payload FROM lessons WHERE namespace = ? AND retired = 0 "
                                        "ORDER BY created_at", (namespace,)).fetchall()
                lessons = [Lesson.model_validate_json(row[1]) for row in rows]
                matrix = self._embed(lessons) if lessons else np.zeros((0, 1), dtype="float32")
                vectors = self._vectors[namespace] = _Vectors([lesson.id for lesson in lessons], matrix)
            found = vectors.search(self.embedder.encode([query])[0], k, MIN_SIMILARITY)
            lessons = [(self._get(lesson_id), score) for lesson_id, score in found]
        return [(lesson, score) for lesson, score in lessons if lesson is not None and not lesson.retired]

    def _embed(self, lessons: list[Lesson]):
        """The lessons' vectors: from the store when this model embedded them before."""
        import numpy as np

        model = self.embedder.name
        query, args = "SELECT id, vector FROM lesson_vectors WHERE model = ?", (model,)
        if len(lessons) == 1:  # one new lesson; otherwise a namespace, read whole
            query, args = query + " AND id = ?", (model, lessons[0].id)
        stored = dict(self._db.execute(query, args).fetchall())
        missing = [lesson for lesson in lessons if lesson.id not in stored]
        if missing:
            fresh = self.embedder.encode([_document(lesson) for lesson in missing])
            self._db.executemany("INSERT OR REPLACE INTO lesson_vectors VALUES (?, ?, ?)",
                                 [(lesson.id, model, vector.tobytes()) for lesson, vector in zip(missing, fresh)])
            stored.update({lesson.id: vector.tobytes() for lesson, vector in zip(missing, fresh)})
        return np.vstack([np.frombuffer(stored[lesson.id], dtype="float32") for lesson in lessons])

    def lessons(self, namespace: str | None = None, include_retired: bool = False) -> list[Lesson]:
        query, args = "SELECT payload FROM lessons", []
        clauses = []
        if namespace is not None:
            clauses.append("namespace = ?")
            args.append(namespace)
        if not include_retired:
            clauses.append("retired = 0")
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at", args).fetchall()
        return [Lesson.model_validate_json(row[0]) for row in rows]

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            rows = self._db.execute("SELECT namespace, retired, COUNT(*) FROM lessons GROUP BY 1, 2").fetchall()
        out: dict[str, dict[str, int]] = {}
        for namespace, retired, count in rows:
            out.setdefault(namespace, {"active": 0, "retired": 0})["retired" if retired else "active"] = count
        return out

    # -- export and import -----------------------------------------------------------

    def export(self, path: str | Path, namespace: str | None = None) -> int:
        lessons = self.lessons(namespace, include_retired=True)
        with Path(path).open("w", encoding="utf-8") as f:
            for lesson in lessons:
                f.write(json.dumps({"schema": SCHEMA, **lesson.model_dump()}, ensure_ascii=False) + "\n")
        return len(lessons)

    def import_(self, path: str | Path, *, oracle_run: bool = False) -> int:
        """Lessons from a JSONL export (every line checked first; nothing is added unless all are good)."""
        lessons, problems = [], []
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if data.pop("schema", None) != SCHEMA:
                    raise ValueError(f"not a {SCHEMA} line")
                lessons.append(Lesson.model_validate(data))
            except ValueError as e:  # JSON and validation errors both
                problems.append(f"line {number}: {str(e).splitlines()[0]}")
        if problems:
            raise ConfigError(f"{path} has {len(problems)} bad line(s): " + "; ".join(problems[:5]),
                              "fix them; nothing was imported")
        for lesson in lessons:
            self.add(lesson, oracle_run=oracle_run or lesson.oracle)
        return len(lessons)

    def _get(self, lesson_id: str) -> Lesson | None:
        row = self._db.execute("SELECT payload FROM lessons WHERE id = ?", (lesson_id,)).fetchone()
        return Lesson.model_validate_json(row[0]) if row else None

    def _put(self, lesson: Lesson) -> None:
        self._db.execute("UPDATE lessons SET payload = ?, score = ?, retired = ? WHERE id = ?",
                         (lesson.model_dump_json(), lesson.score, int(lesson.retired), lesson.id))
        if lesson.retired:
            self._indexes.pop(lesson.namespace, None)
            self._vectors.pop(lesson.namespace, None)
            self._active.pop(lesson.namespace, None)  # counted again when next needed


def _document(lesson: Lesson) -> str:
    """What a lesson is found by: the input it came from, and its words."""
    return f"{lesson.input}\n{lesson.text}"


def _bm25s():
    """bm25s, imported on first use; it sets its own logger to DEBUG on import, which would
    print a line at every index build."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def bm25_index(texts: Sequence[str]):
    bm25s = _bm25s()
    index = bm25s.BM25()
    index.index(bm25s.tokenize(list(texts), stopwords="en", show_progress=False), show_progress=False)
    return index


def bm25_search(index, ids: list[str], query: str, k: int) -> list[tuple[str, float]]:
    bm25s = _bm25s()

    tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
    if not tokens.vocab:
        return []
    found, scores = index.retrieve(tokens, k=min(k, len(ids)), show_progress=False)
    return [(ids[int(i)], float(s)) for i, s in zip(found[0], scores[0]) if s > 0]
