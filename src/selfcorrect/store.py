"""The project's SQLite store: the sample cache, runs and trajectories.

One file per project directory (`.selfcorrect/store.sqlite` by default), in WAL mode so
that readers never block the writer. Every write commits at once: a sample is on disk
before the code that asked for it moves on, and every trajectory event is on disk before
the next attempt starts, so an interrupted run loses nothing and resumes with no repeated
model call.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from selfcorrect.db import connect, is_locked, locked
from selfcorrect.config import DEFAULT_STORE
from selfcorrect.errors import SelfcorrectError
from selfcorrect.version import code_version
from selfcorrect.models.base import Completion, messages_hash
from selfcorrect.trajectory import Attempt

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    request_key TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL,
    logprobs,  -- packed float32 (JSON text in stores of schema 1)
    created_at REAL NOT NULL,
    token_ids BLOB,  -- packed int32
    model_ended INTEGER,  -- 1: the model ended its reply; 0: a stop string or the cap did; NULL: not said
    PRIMARY KEY (request_key, sample_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    hash TEXT PRIMARY KEY,
    content TEXT NOT NULL  -- a conversation, kept once however many attempts it produced
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,
    oracle INTEGER NOT NULL,
    config TEXT NOT NULL,
    code_version TEXT NOT NULL,
    prompt_hashes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    item_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, strategy, item_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    item_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, strategy, item_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS writers (
    run_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    since REAL NOT NULL
);
"""


@dataclass(frozen=True)
class GradedAttempt:
    """One attempt as stored, with its gold-check verdict and its provenance: what training
    data and the error memory are built from."""

    run_id: str
    task: str
    strategy: str
    item_id: str
    model: str  # the identity of the model that drew it
    oracle: bool  # the run included oracle strategies: its data must say so
    attempt: Attempt
    correct: bool
    parse_failure: bool
    failure: str | None
    final: bool  # the attempt the strategy returned
    messages: list[dict] | None  # the conversation that produced it (None in runs before it was kept)
    feedback_kinds: frozenset[str]  # on this attempt, and on the attempt it revises
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Run:
    run_id: str
    created_at: float
    finished_at: float | None
    status: str
    oracle: bool
    config: dict
    code_version: str
    prompt_hashes: dict[str, str]


class Store:
    """Thread-safe access to one store file (one connection behind a lock). `read_only`
    opens an existing store for reading, also where its directory is not writable."""

    def __init__(self, path: str | Path = DEFAULT_STORE, *, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self._sample_columns: set[str] = set()  # what a store of an older schema opened read-only lacks
        self._lock = threading.Lock()
        try:
            self._db = self._open_read_only() if read_only else self._open()
            self._check_schema()
        except sqlite3.Error as e:
            if is_locked(e):
                raise locked(self.path) from None
            raise SelfcorrectError(
                f"cannot use the store {self.path}: {e}",
                "if the file is damaged, restore it from a backup or choose another with --store; "
                "otherwise check that its directory is writable",
            ) from None

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SelfcorrectError(
                f"cannot create the store's folder {self.path.parent}: {e.strerror}",
                "choose a store in a writable place with --store",
            ) from None
        return connect(self.path, SCHEMA)

    def _open_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise SelfcorrectError(f"no store at {self.path}", "run an evaluation first, or pass --store")
        uri = self.path.resolve().as_uri()
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            # A WAL store in a directory we cannot write has no -shm file to map: read the file
            # as it is (a writer elsewhere would not be seen, which listing can live with).
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None,
                                 check_same_thread=False)
        return db

    def _check_schema(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            if self.read_only:
                raise SelfcorrectError(f"{self.path} is not a selfcorrect store", "pass the right --store")
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) < SCHEMA_VERSION and not self.read_only:
            self._migrate()
        elif int(row[0]) > SCHEMA_VERSION:
            raise SelfcorrectError(
                f"the store {self.path} has schema {row[0]}; this selfcorrect reads {SCHEMA_VERSION}",
                "use a selfcorrect version that matches, or start a new store with --store",
            )
        self._sample_columns = {row[1] for row in self._db.execute("PRAGMA table_info(samples)")}

    def _migrate(self) -> None:
        """Schema 1 had no token ids and no kept conversations, schema 2 did not say whether
        the model ended a reply itself: add them; nothing is lost (old draws: not said)."""
        with self._transaction():
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(samples)")}
            for column, kind in (("token_ids", "BLOB"), ("model_ended", "INTEGER")):
                if column not in columns:
                    self._db.execute(f"ALTER TABLE samples ADD COLUMN {column} {kind}")
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the sample cache --------------------------------------------------------------

    def get_samples(self, request_key: str, indices: Sequence[int]) -> dict[int, Completion]:
        """The cached samples of a request among `indices`, by index."""
        if not indices:
            return {}
        optional = ", ".join(c if c in self._sample_columns else "NULL" for c in ("token_ids", "model_ended"))
        with self._lock:
            rows = self._db.execute(
                "SELECT sample_index, text, finish_reason, prompt_tokens, completion_tokens,"
                f" seconds, logprobs, {optional} FROM samples WHERE request_key = ?"
                " AND sample_index BETWEEN ? AND ?",
                (request_key, min(indices), max(indices)),
            ).fetchall()
        wanted = set(indices)
        return {
            row[0]: Completion(
                text=row[1],
                finish_reason=row[2],
                prompt_tokens=row[3],
                completion_tokens=row[4],
                seconds=row[5],
                index=row[0],
                logprobs=unpack_floats(row[6]),
                cached=True,
                token_ids=unpack_ints(row[7]),
                model_ended=None if row[8] is None else bool(row[8]),
            )
            for row in rows
            if row[0] in wanted
        }

    def put_samples(self, request_key: str, model: str, completions: Iterable[Completion]) -> None:
        """Store samples; a sample already stored wins (first draw of an index is the draw)."""
        now = time.time()
        rows = [
            (
                request_key,
                c.index,
                model,
                c.text,
                c.finish_reason,
                c.prompt_tokens,
                c.completion_tokens,
                c.seconds,
                pack_floats(c.logprobs),
                now,
                pack_ints(c.token_ids),
                c.model_ended,
            )
            for c in completions
        ]
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO samples (request_key, sample_index, model, text, finish_reason,"
                " prompt_tokens, completion_tokens, seconds, logprobs, created_at, token_ids, model_ended)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )

    # -- conversations -------------------------------------------------------------------

    def put_messages(self, messages: Sequence[dict]) -> str:
        """Keep a conversation once, under its content hash, and return the hash."""
        key = messages_hash(messages)
        content = json.dumps([{"role": m["role"], "content": m["content"]} for m in messages],
                             ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO messages VALUES (?, ?)", (key, content))
        return key

    def messages(self, key: str) -> list[dict] | None:
        with self._lock:
            try:
                row = self._db.execute("SELECT content FROM messages WHERE hash = ?", (key,)).fetchone()
            except sqlite3.OperationalError:  # a store of schema 1, opened read-only
                return None
        return json.loads(row[0]) if row else None

    def sample_count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                return self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            return self._db.execute(
                "SELECT COUNT(*) FROM samples WHERE model = ?", (model,)
            ).fetchone()[0]

    # -- runs ----------------------------------------------------------------------------

    def create_run(
        self,
        config: dict,
        *,
        prompt_hashes: dict[str, str],
        oracle: bool = False,
        run_id: str | None = None,
    ) -> Run:
        """Record a new run with its full configuration, code version and prompt hashes."""
        run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        created = time.time()
        version = code_version()
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, ?, ?, ?)",
                    (
                        run_id,
                        created,
                        int(oracle),
                        json.dumps(config, sort_keys=True),
                        version,
                        json.dumps(prompt_hashes, sort_keys=True),
                    ),
                )
            except sqlite3.IntegrityError as e:
                raise SelfcorrectError(
                    f"a run named {run_id!r} already exists in {self.path}",
                    "resume it, or choose another run id",
                ) from e
        return Run(run_id, created, None, "running", oracle, config, version, prompt_hashes)

    def run(self, run_id: str) -> Run:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise SelfcorrectError(
                f"no run {run_id!r} in {self.path}", "list the runs with `selfcorrect runs`"
            )
        return _run_from_row(row)

    def runs(self) -> list[Run]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs ORDER BY created_at").fetchall()
        return [_run_from_row(row) for row in rows]

    def update_run_config(self, run_id: str, config: dict) -> None:
        """Replace a run's configuration (the reference pool it grew, the resumes it had)."""
        with self._lock:
            self._db.execute("UPDATE runs SET config = ? WHERE run_id = ?",
                             (json.dumps(config, sort_keys=True), run_id))

    def claim_writer(self, run_id: str) -> None:
        """Make this process the run's one writer, or raise naming the process that is. A
        claim left by a process that has died (on this host) is taken over."""
        host, pid = socket.gethostname(), os.getpid()
        with self._lock, self._transaction():
            row = self._db.execute("SELECT host, pid, since FROM writers WHERE run_id = ?",
                                   (run_id,)).fetchone()
            if row is not None and tuple(row[:2]) != (host, pid) and _alive(row[0], row[1]):
                since = time.strftime("%Y-%m-%d %H:%M", time.localtime(row[2]))
                raise SelfcorrectError(
                    f"run {run_id} is being written by process {row[1]} on {row[0]} (since {since})",
                    "wait for it to finish, or stop that process; one run has one writer at a time")
            self._db.execute("INSERT OR REPLACE INTO writers VALUES (?, ?, ?, ?)",
                             (run_id, host, pid, time.time()))

    def release_writer(self, run_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM writers WHERE run_id = ? AND host = ? AND pid = ?",
                             (run_id, socket.gethostname(), os.getpid()))

    def finish_run(self, run_id: str, status: str = "complete") -> None:
        with self._lock:
            self._db.execute(
                "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                (status, time.time(), run_id),
            )

    # -- trajectories --------------------------------------------------------------------

    def append_event(self, run_id: str, strategy: str, item_id: str, payload: dict) -> int:
        """Write one trajectory event (an attempt, a piece of feedback) and return its number."""
        text = json.dumps(payload)
        with self._lock, self._transaction():
            seq = self._db.execute(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM events"
                " WHERE run_id = ? AND strategy = ? AND item_id = ?",
                (run_id, strategy, item_id),
            ).fetchone()[0]
            self._db.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, strategy, item_id, seq, text, time.time()),
            )
        return seq

    def events(self, run_id: str, strategy: str, item_id: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT payload FROM events WHERE run_id = ? AND strategy = ? AND item_id = ?"
                " ORDER BY seq",
                (run_id, strategy, item_id),
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def discard_partial(self, run_id: str, strategy: str, item_id: str) -> None:
        """Drop the events of an item that never finished, before it runs again (its model
        calls come back from the sample cache, so nothing is paid twice)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM events WHERE run_id = ? AND strategy = ? AND item_id = ?",
                (run_id, strategy, item_id),
            )

    def put_result(self, run_id: str, strategy: str, item_id: str, payload: dict) -> None:
        """Mark an item finished under a strategy, with its result."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                (run_id, strategy, item_id, json.dumps(payload), time.time()),
            )

    def delete_results(self, run_id: str, strategy: str) -> None:
        """Drop a strategy's results and events from a run (a reference pool outgrown)."""
        with self._lock, self._transaction():
            for table in ("results", "events"):
                self._db.execute(f"DELETE FROM {table} WHERE run_id = ? AND strategy = ?",
                                 (run_id, strategy))

    def results(self, run_id: str, strategy: str | None = None, item_id: str | None = None) -> list[dict]:
        query = "SELECT payload FROM results WHERE run_id = ?"
        args: tuple = (run_id,)
        if strategy is not None:
            query += " AND strategy = ?"
            args += (strategy,)
        if item_id is not None:
            query += " AND item_id = ?"
            args += (item_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at", args).fetchall()
        return [json.loads(row[0]) for row in rows]

    def graded_attempts(self, *, task: str | None = None, run_ids: Sequence[str] | None = None,
                        strategy: str | None = None, item_ids: Sequence[str] | None = None,
                        correct: bool | None = None, feedback_kind: str | None = None,
                        model: str | None = None, final_only: bool = False,
                        include_oracle: bool = False, tokens: bool = False) -> Iterator[GradedAttempt]:
        """Graded attempts across runs, with their conversations and provenance. Filters:
        the task's name, runs, a strategy (its spec, or its name for every spec of it), item
        ids, right or wrong, a kind of feedback seen (on the attempt or the one it revised),
        the model's identity, returned attempts only. Runs with oracle strategies are left
        out unless `include_oracle`. `tokens` adds token ids and log-probabilities from the
        sample cache where kept."""
        query = "SELECT r.run_id, r.strategy, r.item_id, r.payload, x.config, x.oracle FROM results r JOIN runs x USING (run_id)"
        clauses, args = [], []
        if run_ids is not None:
            clauses.append(f"r.run_id IN ({','.join('?' * len(run_ids))})")
            args += list(run_ids)
        if item_ids is not None:
            clauses.append(f"r.item_id IN ({','.join('?' * len(item_ids))})")
            args += list(item_ids)
        if strategy is not None:
            clauses.append("(r.strategy = ? OR substr(r.strategy, 1, ?) = ?)")  # the spec, or any spec of the name
            args += [strategy, len(strategy) + 1, f"{strategy}:"]
        if not include_oracle:
            clauses.append("x.oracle = 0")
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY r.run_id, r.created_at", args).fetchall()
        conversations: dict[str, list[dict] | None] = {}
        for run_id, spec, item_id, payload, config, oracle in rows:
            config = json.loads(config)
            if task is not None and config.get("task") != task:
                continue
            if model is not None and config.get("model") != model:
                continue
            result = json.loads(payload)
            attempts = [Attempt(**a) for a in result["trajectory"]["attempts"]]
            selected = result["trajectory"].get("final")
            for attempt, grade in zip(attempts, result["grades"]):
                if final_only and attempt.index != selected:
                    continue
                if correct is not None and grade["correct"] != correct:
                    continue
                kinds = {f.kind for f in attempt.feedback}
                if attempt.parent is not None:
                    kinds |= {f.kind for f in attempts[attempt.parent].feedback}
                if feedback_kind is not None and feedback_kind not in kinds:
                    continue
                key = attempt.messages_hash
                if key and key not in conversations:
                    conversations[key] = self.messages(key)
                drawn = None
                if tokens and attempt.request:
                    index = 0 if attempt.params.get("temperature") == 0 else attempt.sample
                    drawn = self.get_samples(attempt.request, [index]).get(index)
                yield GradedAttempt(
                    run_id=run_id, task=config.get("task", ""), strategy=spec, item_id=item_id,
                    model=config.get("model", ""), oracle=bool(oracle), attempt=attempt,
                    correct=grade["correct"], parse_failure=grade["parse_failure"],
                    failure=grade.get("failure"), final=attempt.index == selected,
                    messages=conversations.get(key) if key else None, feedback_kinds=frozenset(kinds),
                    token_ids=drawn.token_ids if drawn else None, logprobs=drawn.logprobs if drawn else None)

    def finished(self, run_id: str) -> set[tuple[str, str]]:
        """The (strategy, item id) pairs of a run that have a result."""
        with self._lock:
            rows = self._db.execute(
                "SELECT strategy, item_id FROM results WHERE run_id = ?", (run_id,)
            ).fetchall()
        return {(row[0], row[1]) for row in rows}

    @contextlib.contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def pack_floats(values) -> bytes | None:
    return array.array("f", values).tobytes() if values is not None else None


def unpack_floats(data) -> tuple[float, ...] | None:
    if data is None:
        return None
    if isinstance(data, str):  # schema 1 kept them as JSON
        return tuple(json.loads(data))
    return tuple(array.array("f", data))


def pack_ints(values) -> bytes | None:
    return array.array("i", values).tobytes() if values is not None else None


def unpack_ints(data) -> tuple[int, ...] | None:
    return tuple(array.array("i", data)) if data is not None else None


def _alive(host: str, pid: int) -> bool:
    """Whether a process holds on: on another host we cannot tell, so assume it does."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_from_row(row) -> Run:
    return Run(
        run_id=row[0],
        created_at=row[1],
        finished_at=row[2],
        status=row[3],
        oracle=bool(row[4]),
        config=json.loads(row[5]),
        code_version=row[6],
        prompt_hashes=json.loads(row[7]),
    )
