"""Checkpoints as a lineage: every model the slow path makes is registered with its parent,
round, method, the hash of the data it was trained on and its metrics, in the store file.
`--model round:N` loads round N's checkpoint; `selfcorrect models lineage` lists them."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from pydantic import BaseModel, Field

from selfcorrect.db import connect
from selfcorrect.errors import ConfigError

TABLE = """
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    round INTEGER NOT NULL,
    payload TEXT NOT NULL
);
"""


def weights_hash(folder: str | Path) -> str:
    """The content hash of a checkpoint's or adapter's weight files (kept beside them, keyed
    by size and time, so a large file is read once)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not files:
        raise ConfigError(f"no weights in {folder}", "a checkpoint holds *.safetensors (or *.bin) files")
    sidecar = folder / ".selfcorrect-hash.json"
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    try:
        saved = json.loads(sidecar.read_text())
        if saved["files"] == stamp:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    value = digest.hexdigest()[:16]
    try:
        sidecar.write_text(json.dumps({"files": stamp, "sha256": value}))
    except OSError:
        pass  # a read-only checkpoint is hashed again next time
    return value


class Checkpoint(BaseModel):
    name: str
    round: int = Field(ge=0)
    path: str  # a transformers checkpoint folder
    adapter: str | None = None  # a LoRA adapter folder on top of `path`
    gguf: str | None = None  # the same weights as a Q8_0 GGUF for the llama.cpp engine, once written
    parent: str | None = None
    method: str = "export"  # export, rft, star, correction, dpo
    data_hash: str | None = None
    metrics: dict = Field(default_factory=dict)
    run: str | None = None  # the folder of the run that made it: a name belongs to one run
    created_at: float = Field(default_factory=time.time)

    def content_hash(self) -> str:
        """What the weights are, not where: the hash of the checkpoint's weight files, and of
        its adapter's."""
        return weights_hash(self.path) + (f"+lora:{weights_hash(self.adapter)}" if self.adapter else "")


class Lineage:
    def __init__(self, store: str | Path):
        self._db = connect(store, TABLE)

    def close(self) -> None:
        self._db.close()

    def register(self, checkpoint: Checkpoint) -> Checkpoint:
        """Add a checkpoint, or update one of the same run (a redone round, its GGUF written).
        A name another run holds is refused: replacing it would point that run's report and
        recipe at this run's model."""
        if checkpoint.parent is not None and self.get(checkpoint.parent) is None:
            raise ConfigError(f"checkpoint {checkpoint.name}'s parent {checkpoint.parent!r} is not registered",
                              "register the parent first")
        held = self.get(checkpoint.name)
        if held is not None and held.run != checkpoint.run:
            raise ConfigError(f"checkpoint {checkpoint.name} belongs to the run in {held.run or 'an earlier run'}; "
                              f"this run is in {checkpoint.run}",
                              f"give this run an --out folder of another name than {Path(checkpoint.run or '').name!r}, "
                              "or resume that run with its own --out")
        self._db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
                         (checkpoint.name, checkpoint.round, checkpoint.model_dump_json()))
        return checkpoint

    def get(self, name: str) -> Checkpoint | None:
        row = self._db.execute("SELECT payload FROM checkpoints WHERE name = ?", (name,)).fetchone()
        return Checkpoint.model_validate_json(row[0]) if row else None

    def of_round(self, number: int) -> Checkpoint:
        rows = self._db.execute("SELECT payload FROM checkpoints WHERE round = ? ORDER BY name", (number,)).fetchall()
        if not rows:
            known = ", ".join(str(c.round) for c in self.all()) or "none"
            raise ConfigError(f"no checkpoint of round {number}", f"rounds registered: {known}"
                              + ("" if known != "none" else "; `selfcorrect models export` registers round 0"))
        if len(rows) > 1:
            names = ", ".join(json.loads(r[0])["name"] for r in rows)
            raise ConfigError(f"round {number} has several checkpoints ({names})", "name one: --model round:NAME")
        return Checkpoint.model_validate_json(rows[0][0])

    def all(self) -> list[Checkpoint]:
        rows = self._db.execute("SELECT payload FROM checkpoints ORDER BY round, name").fetchall()
        return [Checkpoint.model_validate_json(r[0]) for r in rows]
