"""Block stores: the :class:`Store` protocol and its memory / SQLite adapters."""

from __future__ import annotations

from crdt_mls.stores.base import Store
from crdt_mls.stores.memory import MemoryStore
from crdt_mls.stores.sqlite import SqliteStore

__all__ = ["MemoryStore", "SqliteStore", "Store"]
