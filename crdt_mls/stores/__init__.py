"""Block stores: the :class:`Store` protocol and its memory / SQLite adapters."""

from __future__ import annotations

from crdt_mls.stores.base import Store

__all__ = ["Store"]
