"""An on-disk cache of server responses (SQLite), so that rerunning the same requests makes no
HTTP call.

Key: sha256 of the canonical JSON of (base_url, endpoint, model, payload); the payload holds the
prompt and every sampling parameter, so any change to them is a miss. The API key is never part
of it. The backend stores a response only once it has been parsed successfully, so an unusable
answer (no log-probabilities...) is asked again on the next run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path


def cache_key(base_url: str, endpoint: str, model: str, payload: dict) -> str:
    """sha256 hex of the canonical JSON (sorted keys, no spaces) of what determines a response."""
    blob = json.dumps([base_url.rstrip("/"), endpoint, model, payload], sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """``get(key)`` -> the stored JSON response or ``None``; ``put(key, response)``.

    One table ``responses(key TEXT PRIMARY KEY, response TEXT, created REAL)`` in WAL mode; one
    connection shared by the backend's threads behind a lock (SQLite calls are short next to the
    HTTP calls, so the lock costs nothing)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses "
                         "(key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL NOT NULL)")

    def get(self, key: str):
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, response) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                             (key, json.dumps(response), time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["ResponseCache", "cache_key"]
