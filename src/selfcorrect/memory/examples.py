"""Worked examples: inputs the model (or a client) got verified right, kept with the reply that
was right, and shown to similar inputs as solved examples (dynamic few-shot). The findings say
the embedded model imitates what it is shown: an example shows it what to imitate.

Written only from informative groups (for one input, some attempt right and some wrong, by a
check that can tell): an input the model always gets right teaches nothing. Kept in the store
file beside the lessons; found with bm25s over the inputs; exported as training data
(`selfcorrect memory export-training`): what the memory cannot fix goes to the weights.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from pydantic import BaseModel, Field

from selfcorrect.db import attach
from selfcorrect.memory.bank import bm25_index, bm25_search

TABLE = """
CREATE TABLE IF NOT EXISTS worked_examples (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS worked_examples_by_namespace ON worked_examples (namespace, created_at);
"""
HEADER = "Solved problems like this one:"


class WorkedExample(BaseModel):
    namespace: str
    input: str  # the question
    reply: str  # the reply that was verified right
    messages: list[dict] = Field(default_factory=list)  # the conversation that asked it (no memory in it)
    check: str  # what verified it: gold, tests, user
    provenance: dict = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.namespace}\0{self.input}\0{self.reply}".encode()).hexdigest()[:16]


class ExampleBank:
    def __init__(self, path: str | Path, *, per_namespace: int = 5000, db=None):
        self.per_namespace = per_namespace
        self._db, self._owns_db = attach(path, TABLE, db)  # db: shared, for one transaction across tables
        self._lock = threading.Lock()
        self._indexes: dict[str, tuple[list[str], object]] = {}

    def close(self) -> None:
        if self._owns_db:
            self._db.close()

    def add(self, example: WorkedExample) -> str:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO worked_examples VALUES (?, ?, ?, ?)",
                             (example.id, example.namespace, example.model_dump_json(), example.created_at))
            self._db.execute("DELETE FROM worked_examples WHERE id IN (SELECT id FROM worked_examples WHERE "
                             "namespace = ? ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
                             (example.namespace, self.per_namespace))  # the oldest go first
            self._indexes.pop(example.namespace, None)
        return example.id

    def clear(self, namespace: str) -> int:
        with self._lock:
            self._indexes.pop(namespace, None)
            return self._db.execute("DELETE FROM worked_examples WHERE namespace = ?", (namespace,)).rowcount

    def examples(self, namespace: str) -> list[WorkedExample]:
        with self._lock:
            rows = self._db.execute("SELECT payload FROM worked_examples WHERE namespace = ? ORDER BY created_at",
                                    (namespace,)).fetchall()
        return [WorkedExample.model_validate_json(row[0]) for row in rows]

    def search(self, namespace: str, query: str, k: int = 3, exclude_input: str | None = None) -> list[WorkedExample]:
        """The k examples whose inputs are most like `query` (none that share no word with it)."""
        with self._lock:
            if namespace not in self._indexes:
                rows = self._db.execute("SELECT id, payload FROM worked_examples WHERE namespace = ? "
                                        "ORDER BY created_at", (namespace,)).fetchall()
                examples = [WorkedExample.model_validate_json(row[1]) for row in rows]
                self._indexes[namespace] = ([row[0] for row in rows],
                                            bm25_index([e.input for e in examples]) if examples else None)
            ids, index = self._indexes[namespace]
        if index is None:
            return []
        found = []
        for example_id, _ in bm25_search(index, ids, query, 3 * k):
            row = self._db.execute("SELECT payload FROM worked_examples WHERE id = ?", (example_id,)).fetchone()
            example = WorkedExample.model_validate_json(row[0]) if row else None
            if example is not None and (exclude_input is None or example.input.strip() != exclude_input.strip()):
                found.append(example)
        return found[:k]

    def training_data(self, namespace: str) -> list[dict]:
        """The examples as `selfcorrect fit` / `improve --extra-data` examples: the conversation
        that asked, and the verified reply."""
        return [{"prompt": e.messages, "completion": e.reply, "item_id": f"memory/{e.namespace}/{e.id}",
                 "label": e.check, "provenance": {"memory": e.namespace, **e.provenance}}
                for e in self.examples(namespace) if e.messages]


def shown(examples: list[WorkedExample]) -> str:
    return HEADER + "".join(f"\n{i}. Problem: {' '.join(e.input.split())[:300]}\n   Solution: {e.reply.strip()}"
                            for i, e in enumerate(examples, start=1))
