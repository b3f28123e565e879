"""Completions the server made, with their trajectories and the feedback clients sent, kept
in the store file (their own table, their own connection) so that a trajectory is found by
completion id after the reply, and feedback is taken once per completion."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from selfcorrect.db import attach

TABLE = """
CREATE TABLE IF NOT EXISTS completions (
    id TEXT PRIMARY KEY,
    api_key TEXT,
    created_at REAL NOT NULL,
    strategy TEXT NOT NULL,
    payload TEXT NOT NULL,
    feedback TEXT
);
"""


class Completions:
    def __init__(self, path: Path, db=None):
        self._db, self._owns_db = attach(path, TABLE, db)  # db: shared, for one transaction across tables
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._owns_db:
            self._db.close()

    def put(self, completion_id: str, api_key: str | None, strategy: str, payload: dict) -> None:
        with self._lock:
            self._db.execute("INSERT INTO completions VALUES (?, ?, ?, ?, ?, NULL)",
                             (completion_id, api_key, time.time(), strategy, json.dumps(payload)))

    def get(self, completion_id: str) -> tuple[str | None, dict, dict | None] | None:
        """(api key name, payload, feedback) of a completion."""
        with self._lock:
            row = self._db.execute("SELECT api_key, payload, feedback FROM completions WHERE id = ?",
                                   (completion_id,)).fetchone()
        if row is None:
            return None
        return row[0], json.loads(row[1]), json.loads(row[2]) if row[2] else None

    def set_feedback(self, completion_id: str, feedback: dict) -> None:
        with self._lock:
            self._db.execute("UPDATE completions SET feedback = ? WHERE id = ?", (json.dumps(feedback), completion_id))
