"""An IPFS-backed :class:`~crdt_mls.stores.base.Store` over a Kubo daemon's RPC API.

Layout (see docs/ipfs.md):

* every block is written to the Kubo node with ``block/put`` (CIDv1, dag-cbor or raw codec,
  sha2-256) and, by default, pinned directly (``pin/add --recursive=false``) so that the
  node's garbage collector keeps it and peers can fetch it over bitswap;
* the CID returned by Kubo must equal the CID the caller gave, else :class:`IntegrityError`
  and nothing is committed;
* meta data and the list of this store's blocks live in a local
  :class:`~crdt_mls.stores.sqlite.SqliteStore` (a write-through copy of each block, so
  reads are local and survive a daemon's repo loss).  A batch is written to IPFS first and
  committed to SQLite last: a crash in between leaves at worst unreferenced blocks on the
  node, never a meta entry naming a block that is not stored.

Reads (:meth:`IpfsStore.get_block`, :meth:`IpfsStore.has_block`) are local by default, as
the :class:`Store` protocol expects (``None`` for an absent block, immediately).  With
``fetch_timeout`` set, :meth:`IpfsStore.get_block` falls back to fetching from the IPFS
network (bitswap).  :meth:`IpfsStore.fetch_block` always does, verifying the bytes against
the CID.  Pubsub (:meth:`IpfsStore.announce`, :meth:`IpfsStore.subscribe`) carries log heads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence

from crdt_mls.dag.cid import CODEC_DAG_CBOR, CODEC_RAW, HASH_SHA2_256, cid_to_str, parse_cid, verify_block
from crdt_mls.errors import (
    IntegrityError,
    InvalidArgument,
    InvalidState,
    StorageError,
    TransportError,
    UnsupportedError,
)
from crdt_mls.stores.kubo_rpc import KuboRpc, Subscription
from crdt_mls.stores.memory import check_batch, check_meta
from crdt_mls.stores.sqlite import SqliteStore

__all__ = ["IpfsStore", "parse_api_multiaddr"]

_CODEC_NAMES = {CODEC_DAG_CBOR: "dag-cbor", CODEC_RAW: "raw"}
#: Blocks sent in one ``block/put`` request / CIDs in one ``pin/add`` request.
_PUT_CHUNK = 256


def parse_api_multiaddr(text: str) -> tuple[str, int]:
    """``/ip4/127.0.0.1/tcp/5001`` (the content of ``$IPFS_PATH/api``) -> ``("127.0.0.1", 5001)``."""
    parts = text.strip().split("/")
    try:
        if (
            len(parts) >= 5
            and parts[0] == ""
            and parts[1] in ("ip4", "ip6", "dns", "dns4", "dns6")
            and parts[3] == "tcp"
        ):
            return parts[2], int(parts[4])
    except ValueError:
        pass
    raise InvalidArgument(f"not a TCP API multiaddr: {text.strip()[:100]!r}")


class IpfsStore:
    """Blocks on a Kubo node (pinned), meta and a block index in a local SQLite file.

    ``rpc`` and ``local`` are owned by the store and closed by :meth:`close`.  ``pin``: pin
    every written block directly.  ``fetch_timeout``: if set, :meth:`get_block` fetches
    blocks missing locally from the IPFS network, waiting at most that many seconds
    (:class:`TransportError` when it gives up).
    """

    __slots__ = ("_closed", "fetch_timeout", "local", "pin", "rpc")

    def __init__(
        self,
        rpc: KuboRpc,
        local: SqliteStore,
        *,
        pin: bool = True,
        fetch_timeout: float | None = None,
    ) -> None:
        if fetch_timeout is not None and fetch_timeout <= 0:
            raise InvalidArgument("fetch_timeout must be positive or None")
        self.rpc = rpc
        self.local = local
        self.pin = pin
        self.fetch_timeout = fetch_timeout
        self._closed = False

    @classmethod
    def open(
        cls,
        api: str | tuple[str, int],
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        pin: bool = True,
        fetch_timeout: float | None = None,
    ) -> IpfsStore:
        """Open a store on the daemon at ``api`` (``(host, port)`` or an API multiaddr),
        with its SQLite file at ``path``; checks that the daemon answers."""
        host, port = parse_api_multiaddr(api) if isinstance(api, str) else api
        rpc = KuboRpc(host, port, timeout=timeout)
        try:
            rpc.version()
        except TransportError:
            rpc.close()
            raise
        try:
            local = SqliteStore(path)
        except BaseException:
            rpc.close()
            raise
        return cls(rpc, local, pin=pin, fetch_timeout=fetch_timeout)

    def __repr__(self) -> str:
        return f"IpfsStore({self.rpc!r}, {self.local!r})"

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidState("store is closed")

    # ------------------------------------------------------------------ Store protocol

    def get_block(self, cid: bytes) -> bytes | None:
        """The block under ``cid``: local copy first, then (if ``fetch_timeout``) the network."""
        self._check_open()
        data = self.local.get_block(cid)
        if data is not None or self.fetch_timeout is None:
            return data
        return self.fetch_block(cid, timeout=self.fetch_timeout)

    def has_block(self, cid: bytes) -> bool:
        """Whether this store holds ``cid`` (local index; never waits on the network)."""
        self._check_open()
        return self.local.has_block(cid)

    def put_blocks(self, blocks: Sequence[tuple[bytes, bytes]]) -> None:
        """Store blocks on the node (verified CIDs, pinned), then index them: all or none."""
        self.write_batch(blocks, {})

    def get_meta(self, key: str) -> bytes | None:
        self._check_open()
        return self.local.get_meta(key)

    def write_batch(self, blocks: Sequence[tuple[bytes, bytes]], meta: Mapping[str, bytes | None]) -> None:
        """Blocks to IPFS (put, CID check, pin), then blocks' index and ``meta`` in one SQLite commit."""
        self._check_open()
        checked = check_batch(blocks)
        updates = check_meta(meta)
        new = [(cid, data) for cid, data in checked if not self.local.has_block(cid)]
        if new:
            self._publish(new)
        self.local.write_batch(new, updates)

    def iter_cids(self) -> Iterator[bytes]:
        self._check_open()
        return self.local.iter_cids()

    def iter_meta_keys(self) -> Iterator[str]:
        """Iterate over the meta keys (a snapshot)."""
        self._check_open()
        return self.local.iter_meta_keys()

    def close(self) -> None:
        """Close the RPC connection and the SQLite file.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.rpc.close()
        finally:
            self.local.close()

    def __enter__(self) -> IpfsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ IPFS specifics

    def _publish(self, blocks: Sequence[tuple[bytes, bytes]]) -> None:
        """``block/put`` grouped by codec, compare CIDs, then ``pin/add`` (direct)."""
        by_codec: dict[str, list[tuple[bytes, bytes]]] = {}
        for cid, data in blocks:
            parts = parse_cid(cid)
            if parts.hash_code != HASH_SHA2_256:
                raise UnsupportedError(f"IPFS store: only sha2-256 CIDs are supported (CID {cid_to_str(cid)})")
            name = _CODEC_NAMES.get(parts.codec)
            if name is None:
                raise UnsupportedError(f"IPFS store: unsupported CID codec 0x{parts.codec:x}")
            by_codec.setdefault(name, []).append((cid, data))
        for codec, group in by_codec.items():
            for start in range(0, len(group), _PUT_CHUNK):
                chunk = group[start : start + _PUT_CHUNK]
                try:
                    got = self.rpc.block_put_many([data for _, data in chunk], codec=codec)
                except TransportError as exc:
                    raise StorageError(f"IPFS store: block/put of {len(chunk)} blocks failed: {exc}") from exc
                for (cid, data), text in zip(chunk, got, strict=True):
                    expected = cid_to_str(cid)
                    if text != expected:
                        raise IntegrityError(
                            f"IPFS node stored a {len(data)}-byte block as {text}, expected {expected}"
                        )
        if self.pin:
            texts = [cid_to_str(cid) for cid, _ in blocks]
            for start in range(0, len(texts), _PUT_CHUNK):
                try:
                    self.rpc.pin_add(texts[start : start + _PUT_CHUNK])
                except TransportError as exc:
                    raise StorageError(f"IPFS store: pin/add failed: {exc}") from exc

    def fetch_block(self, cid: bytes, *, timeout: float = 10.0) -> bytes:
        """Fetch ``cid`` from the node or, through it, from the IPFS network (bitswap).

        The bytes are verified against the CID (:class:`IntegrityError`); they are *not*
        added to this store (use :meth:`put_blocks` once the layers above accepted them).
        :class:`TransportError` if the block cannot be found within ``timeout`` seconds.
        """
        self._check_open()
        if timeout <= 0:
            raise InvalidArgument("timeout must be positive")
        parse_cid(cid)
        text = cid_to_str(cid)
        try:
            data = self.rpc.block_get(text, timeout=timeout)
        except TransportError as exc:
            raise TransportError(f"IPFS: block {text} not retrieved within {timeout:g} s: {exc}") from exc
        verify_block(cid, data)
        return data

    def node_has_block(self, cid: bytes) -> bool:
        """Whether the Kubo node itself holds ``cid`` (``block/stat --offline``; no network)."""
        self._check_open()
        return self.rpc.block_stat_local(cid_to_str(cid)) is not None

    def unpin(self, cids: Sequence[bytes]) -> None:
        """Release blocks for the node's GC (``pin/rm``).  They stay in this store's local copy."""
        self._check_open()
        self.rpc.pin_rm([cid_to_str(c) for c in cids])

    def republish(self) -> int:
        """Write every locally indexed block to the node again (after a node repo loss); returns the count."""
        self._check_open()
        batch: list[tuple[bytes, bytes]] = []
        count = 0
        for cid in self.local.iter_cids():
            data = self.local.get_block(cid)
            if data is None:
                continue
            batch.append((cid, data))
            if len(batch) >= _PUT_CHUNK:
                self._publish(batch)
                count += len(batch)
                batch = []
        if batch:
            self._publish(batch)
            count += len(batch)
        return count

    def announce(self, topic: str | bytes, data: bytes) -> None:
        """Publish ``data`` (e.g. encoded log heads) on pubsub ``topic`` (best effort, no ack)."""
        self._check_open()
        self.rpc.pubsub_pub(topic, data)

    def subscribe(self, topic: str | bytes) -> Subscription:
        """Subscribe to pubsub ``topic``; poll with ``Subscription.get(timeout)``, then ``close()``."""
        self._check_open()
        return self.rpc.pubsub_sub(topic)
