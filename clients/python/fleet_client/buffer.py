"""The frames not yet acked, oldest first: in memory, and in a SQLite file when a path is given.

The file is written on every change (WAL, synchronous=NORMAL): a killed process loses nothing, and
a commit costs a write to the page cache, not an fsync, so `submit` stays fast. A power cut may lose
the last moments, which is the price of not waiting for the disk on every frame.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator


class Buffer:
    def __init__(self, path: str | None, max_frames: int) -> None:
        if max_frames < 1:
            raise ValueError("max_buffered must be at least 1")
        self.max_frames = max_frames
        # seq -> (ts, the frame's JSON text); dicts keep insertion order, and seqs only grow.
        self.frames: dict[int, tuple[float, str]] = {}
        self.next_seq = 0
        self.last_ts = 0.0
        self.db: sqlite3.Connection | None = None
        if path is not None:
            self._open(path)

    def _open(self, path: str) -> None:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS frames (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, body TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL)")
        for seq, ts, body in db.execute("SELECT seq, ts, body FROM frames ORDER BY seq"):
            self.frames[seq] = (ts, body)
        counters = dict(db.execute("SELECT name, value FROM counters"))
        # Seqs are never reused, so an ack from before a restart cannot be taken for a new frame.
        self.next_seq = max(int(counters.get("next_seq", 0)), max(self.frames, default=-1) + 1)
        self.last_ts = max(counters.get("last_ts", 0.0), max((ts for ts, _ in self.frames.values()), default=0.0))
        self.db = db

    def __len__(self) -> int:
        return len(self.frames)

    def __contains__(self, seq: int) -> bool:
        return seq in self.frames

    def add(self, seq: int, ts: float, text: str) -> int:
        """Keep one frame; drop the oldest beyond max_frames. How many were dropped."""
        self.frames[seq] = (ts, text)
        self.next_seq = seq + 1
        self.last_ts = max(self.last_ts, ts)
        excess = [old for old, _ in zip(self.frames, range(len(self.frames) - self.max_frames), strict=False)]
        for old in excess:
            del self.frames[old]
        if self.db is not None:
            with self.db:  # one transaction: the frame, the drops and the counters together
                self.db.execute("BEGIN")
                self.db.execute("INSERT OR REPLACE INTO frames VALUES (?, ?, ?)", (seq, ts, text))
                if excess:
                    self.db.execute("DELETE FROM frames WHERE seq <= ?", (excess[-1],))
                self.db.executemany(
                    "INSERT OR REPLACE INTO counters VALUES (?, ?)",
                    (("next_seq", self.next_seq), ("last_ts", self.last_ts)),
                )
        return len(excess)

    def remove(self, seqs: Iterable[int]) -> int:
        """Forget frames (acked or refused); how many were still here."""
        gone = [seq for seq in seqs if self.frames.pop(seq, None) is not None]
        if gone and self.db is not None:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("DELETE FROM frames WHERE seq = ?", ((seq,) for seq in gone))
        return len(gone)

    def oldest(self) -> Iterator[tuple[int, float, str]]:
        for seq, (ts, text) in self.frames.items():
            yield seq, ts, text

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
