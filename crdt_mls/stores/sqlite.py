"""A single-file SQLite :class:`~crdt_mls.stores.base.Store`.

Durability (see ``docs/schema.md``): the database runs in WAL mode with
``synchronous=FULL`` by default, so a batch whose ``write_batch`` returned survives a
process kill *and* a power loss.  ``NORMAL`` (also crash-consistent in WAL mode: a batch
is atomic either way) may lose the last batches on power loss, which would let a replica
re-use a sequence number it had already published, i.e. equivocate; use it only for
caches of others' blocks.  Every batch is one ``BEGIN IMMEDIATE ... COMMIT`` transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

from crdt_mls.errors import InvalidArgument, InvalidState, StorageError
from crdt_mls.stores.memory import check_batch, check_cid_arg, check_meta

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

SCHEMA_VERSION = 1
_PAGE = 512  # CIDs fetched per query by iter_cids

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS blocks (cid BLOB PRIMARY KEY NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)",
)


class SqliteStore:
    """Blocks and meta in one SQLite file (WAL).  Thread-safe; one writer at a time.

    ``path`` may be ``":memory:"`` for tests.  Backend failures raise
    :class:`StorageError`; use after :meth:`close` raises :class:`InvalidState`.
    """

    __slots__ = ("_conn", "_lock", "path")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 10_000,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise InvalidArgument("synchronous must be 'FULL' or 'NORMAL'")
        self.path = os.fspath(path)
        self._lock = threading.RLock()
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite store {self.path!r}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() not in ("wal", "memory"):
                raise StorageError(f"SQLite store {self.path!r}: cannot enable WAL (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise StorageError(f"SQLite store {self.path!r} has unknown schema version {version}")
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(f"cannot initialise SQLite store {self.path!r}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise InvalidState("store is closed")
        return self._conn

    def get_block(self, cid: bytes) -> bytes | None:
        with self._lock:
            try:
                row = self._c().execute("SELECT data FROM blocks WHERE cid = ?", (check_cid_arg(cid),)).fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"SQLite read failed: {exc}") from exc
        return None if row is None else bytes(row[0])

    def has_block(self, cid: bytes) -> bool:
        with self._lock:
            try:
                row = self._c().execute("SELECT 1 FROM blocks WHERE cid = ?", (check_cid_arg(cid),)).fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"SQLite read failed: {exc}") from exc
        return row is not None

    def get_meta(self, key: str) -> bytes | None:
        if not isinstance(key, str):
            raise InvalidArgument("meta keys must be str")
        with self._lock:
            try:
                row = self._c().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"SQLite read failed: {exc}") from exc
        return None if row is None else bytes(row[0])

    def put_blocks(self, blocks: Sequence[tuple[bytes, bytes]]) -> None:
        self.write_batch(blocks, {})

    def write_batch(self, blocks: Sequence[tuple[bytes, bytes]], meta: Mapping[str, bytes | None]) -> None:
        checked = check_batch(blocks)
        updates = check_meta(meta)
        if not checked and not updates:
            self._c()
            return
        sets = [(k, v) for k, v in updates.items() if v is not None]
        dels = [(k,) for k, v in updates.items() if v is None]
        with self._lock:
            conn = self._c()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if checked:
                        conn.executemany("INSERT OR IGNORE INTO blocks (cid, data) VALUES (?, ?)", checked)
                    if sets:
                        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", sets)
                    if dels:
                        conn.executemany("DELETE FROM meta WHERE key = ?", dels)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StorageError(f"SQLite write of {len(checked)} blocks failed: {exc}") from exc

    def iter_cids(self) -> Iterator[bytes]:
        """Iterate over all CIDs in ascending order, a page at a time (no long read lock)."""
        last = b""
        while True:
            with self._lock:
                try:
                    rows = (
                        self._c()
                        .execute("SELECT cid FROM blocks WHERE cid > ? ORDER BY cid LIMIT ?", (last, _PAGE))
                        .fetchall()
                    )
                except sqlite3.Error as exc:
                    raise StorageError(f"SQLite read failed: {exc}") from exc
            for (cid,) in rows:
                yield bytes(cid)
            if len(rows) < _PAGE:
                return
            last = bytes(rows[-1][0])

    def iter_meta_keys(self) -> Iterator[str]:
        """Iterate over the meta keys (a snapshot)."""
        with self._lock:
            try:
                rows = self._c().execute("SELECT key FROM meta ORDER BY key").fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"SQLite read failed: {exc}") from exc
        return iter([str(r[0]) for r in rows])

    def integrity_check(self) -> bool:
        """Run SQLite's ``PRAGMA integrity_check``; return whether it reports ``ok``."""
        with self._lock:
            try:
                rows = self._c().execute("PRAGMA integrity_check").fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"SQLite integrity check failed: {exc}") from exc
        return rows == [("ok",)]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
