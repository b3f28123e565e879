"""Opening SQLite files, in one place: every store, bank and record opens its file here, in
WAL mode (readers never wait for the writer), durable once the OS has a write (synchronous
NORMAL), waiting up to `BUSY_SECONDS` for another process's write. A file that stays locked
is reported as locked, with the processes that hold it open, never as damaged."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from selfcorrect.errors import SelfcorrectError

BUSY_SECONDS = 30


class StoreLocked(SelfcorrectError):
    """Another process held a store's write lock for longer than we wait."""


def connect(path: str | Path, schema: str) -> sqlite3.Connection:
    """A connection to `path` (its folder made), usable from any thread (callers lock), with
    `schema` (CREATE ... IF NOT EXISTS statements) in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_SECONDS)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except sqlite3.OperationalError as e:
        db.close()
        if is_locked(e):
            raise locked(path) from None
        raise
    return db


def attach(path: str | Path, schema: str, db: sqlite3.Connection | None) -> tuple[sqlite3.Connection, bool]:
    """A table's connection: `db` shared with other tables of the same file (so that one
    transaction can span them), its `schema` put in place, or one of its own; and whether the
    caller owns it (and closes it)."""
    if db is None:
        return connect(path, schema), True
    db.executescript(schema)
    return db, False


@contextlib.contextmanager
def transaction(db: sqlite3.Connection):
    """Everything written through `db` inside the block, or nothing (rolled back on an error,
    a crash leaves nothing half done)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def is_locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error))


def locked(path: str | Path) -> StoreLocked:
    """The error for a store another process kept locked, naming the processes that hold it."""
    holders = holding(Path(path))
    who = "; ".join(f"pid {pid}: {command}" for pid, command in holders) or "another process"
    return StoreLocked(f"the store {path} is locked by {who} (waited {BUSY_SECONDS} s for its write to end)",
                       "wait for that process to finish, stop it, or use another store with --store")


def holding(path: Path) -> list[tuple[int, str]]:
    """The other processes that have `path` (or its WAL files) open, with their command lines
    (Linux, read from /proc; elsewhere none are found)."""
    try:
        wanted = {str(path.resolve()) + suffix for suffix in ("", "-wal", "-shm")}
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return []
    found = []
    for pid in sorted(pids):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in fds):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((pid, command.strip()[:200]))
        except OSError:
            continue  # gone, or not ours to read
    return found
