"""API keys and rate limits.

Keys are stored as SHA-256 hashes, one `name hash` line per key in a keys file (made by
`selfcorrect serve-key NAME`); a presented key is hashed and compared with every stored
hash in constant time. Each key has a token bucket of `rate` requests per minute.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path

from selfcorrect.errors import ConfigError


def new_key() -> tuple[str, str]:
    """A fresh key and its stored hash."""
    key = "sc-" + secrets.token_urlsafe(32)
    return key, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: Path) -> dict[str, str]:
    """name -> hash, from a keys file."""
    keys = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"keys file not found: {path}", "make one with `selfcorrect serve-key NAME >> FILE`") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) != 64 or any(c not in "0123456789abcdef" for c in parts[1]):
            raise ConfigError(f"{path}:{number} is not a `name sha256-hash` line",
                              "add keys with `selfcorrect serve-key NAME >> FILE`; never store a key itself")
        keys[parts[0]] = parts[1]
    if not keys:
        raise ConfigError(f"{path} holds no keys", "add one with `selfcorrect serve-key NAME >> FILE`")
    return keys


class KeyRing:
    def __init__(self, keys: dict[str, str], rate: float):
        self._hashes = [(name, bytes.fromhex(digest)) for name, digest in keys.items()]
        self.rate = rate  # requests per minute per key
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last refill)

    def identify(self, presented: str) -> str | None:
        """The key's name, or None. Every stored hash is compared, so the time taken does not
        say which key came close."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for name, stored in self._hashes:
            if hmac.compare_digest(digest, stored):
                found = name
        return found

    def allow(self, name: str) -> bool:
        """Take one request from the key's bucket (holding up to a minute's worth)."""
        now = time.monotonic()
        tokens, last = self._buckets.get(name, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate / 60)
        if tokens < 1:
            self._buckets[name] = (tokens, now)
            return False
        self._buckets[name] = (tokens - 1, now)
        return True
