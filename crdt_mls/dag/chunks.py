"""Large payloads as chunk blocks (docs/schema.md, "Chunk blocks").

A payload too large for one node (a Welcome's ratchet tree at 50,000 members is ~10 MB; a
block is at most 1 MiB) travels as several raw IPLD blocks (CIDv1, codec raw 0x55, sha2-256)
that the node names in its ``c`` list (schema version 2).  Every chunk block of one payload
has the same size, so an observer learns the payload's size only to within one chunk.

Two forms:

* **sealed** (`seal_chunks` / `open_chunks`): the stream ``u64 length || data || zero
  padding`` is cut into pieces of ``chunk_size - 16`` bytes; piece ``i`` of ``count`` is
  ``ChaCha20-Poly1305(key, nonce = u96(i), aad = label || u32 count)``.  The key must be used
  for one payload only (the layers above derive a fresh one per payload); the nonce binds the
  position, the associated data the label and the number of chunks, so chunks cannot be
  reordered, dropped, repeated or moved to another payload.
* **plain** (`plain_chunks` / `join_plain`): the stream ``u64 length || data || zero padding``
  cut into ``chunk_size`` pieces, for payloads that are already ciphertext and must be readable
  before any key is known (an RFC 9420 Welcome: its recipients learn their keys from it).

Sans-I/O: bytes in, blocks out.  Errors: `DecodeError` (malformed stream, wrong sizes),
`DecryptionError` (a chunk does not open: wrong key, tampered or substituted chunk).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from crdt_mls.dag.cid import cid_for_raw
from crdt_mls.errors import DecodeError, DecryptionError, InvalidArgument

__all__ = [
    "CHUNK_KEY_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "chunk_count",
    "join_plain",
    "open_chunks",
    "plain_chunks",
    "seal_chunks",
]

#: Size of every chunk block (256 KiB: a quarter of Kubo's default block limit).
DEFAULT_CHUNK_SIZE = 256 * 1024
#: Largest chunk block accepted (the node block limit, 1 MiB).
MAX_CHUNK_SIZE = 1 << 20
#: Smallest chunk size (room for the length prefix and the AEAD tag).
MIN_CHUNK_SIZE = 64
CHUNK_KEY_SIZE = 32
_TAG = 16
_LEN = 8


def _check_size(chunk_size: int) -> None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidArgument(f"chunk size must be in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")


def chunk_count(length: int, chunk_size: int = DEFAULT_CHUNK_SIZE, *, sealed: bool = True) -> int:
    """Number of chunks a payload of ``length`` bytes takes."""
    _check_size(chunk_size)
    piece = chunk_size - (_TAG if sealed else 0)
    return max(1, -(-(length + _LEN) // piece))


def _stream(data: bytes, piece: int) -> tuple[bytes, int]:
    count = max(1, -(-(len(data) + _LEN) // piece))
    body = len(data).to_bytes(_LEN, "big") + data
    return body + bytes(count * piece - len(body)), count


def _unstream(stream: bytes) -> bytes:
    if len(stream) < _LEN:
        raise DecodeError("chunked payload: truncated length")
    n = int.from_bytes(stream[:_LEN], "big")
    if n > len(stream) - _LEN:
        raise DecodeError("chunked payload: length exceeds the chunks")
    rest = stream[_LEN + n :]
    if rest.count(0) != len(rest):
        raise DecodeError("chunked payload: padding is not zero")
    return stream[_LEN : _LEN + n]


def _aad(label: bytes, count: int) -> bytes:
    return b"crdt-mls chunk\x00" + label + b"\x00" + count.to_bytes(4, "big")


def seal_chunks(
    key: bytes, data: bytes, label: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> list[tuple[bytes, bytes]]:
    """Encrypt ``data`` under a one-payload ``key`` (32 bytes) into ``(cid, block)`` chunks of
    exactly ``chunk_size`` bytes each, in order."""
    _check_size(chunk_size)
    if len(key) != CHUNK_KEY_SIZE:
        raise InvalidArgument(f"a chunk key is {CHUNK_KEY_SIZE} bytes")
    piece = chunk_size - _TAG
    stream, count = _stream(bytes(data), piece)
    aead = ChaCha20Poly1305(key)
    aad = _aad(label, count)
    out: list[tuple[bytes, bytes]] = []
    for i in range(count):
        block = aead.encrypt(i.to_bytes(12, "big"), stream[i * piece : (i + 1) * piece], aad)
        out.append((cid_for_raw(block), block))
    return out


def _check_blocks(blocks: Sequence[bytes]) -> int:
    if not blocks:
        raise DecodeError("chunked payload: no chunks")
    size = len(blocks[0])
    if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE or any(len(b) != size for b in blocks):
        raise DecodeError("chunked payload: chunks of a payload must have one size within the limits")
    return size


def open_chunks(key: bytes, blocks: Sequence[bytes], label: bytes) -> bytes:
    """Inverse of `seal_chunks` (blocks in order, already checked against their CIDs)."""
    _check_blocks(blocks)
    if len(key) != CHUNK_KEY_SIZE:
        raise InvalidArgument(f"a chunk key is {CHUNK_KEY_SIZE} bytes")
    aead = ChaCha20Poly1305(key)
    aad = _aad(label, len(blocks))
    parts: list[bytes] = []
    for i, block in enumerate(blocks):
        try:
            parts.append(aead.decrypt(i.to_bytes(12, "big"), bytes(block), aad))
        except InvalidTag:
            raise DecryptionError(f"chunk {i} of {len(blocks)} does not open (wrong key or tampered)") from None
    return _unstream(b"".join(parts))


def plain_chunks(data: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[tuple[bytes, bytes]]:
    """Split already-encrypted ``data`` into ``(cid, block)`` chunks of exactly ``chunk_size``."""
    _check_size(chunk_size)
    stream, count = _stream(bytes(data), chunk_size)
    blocks = [stream[i * chunk_size : (i + 1) * chunk_size] for i in range(count)]
    return [(cid_for_raw(b), b) for b in blocks]


def join_plain(blocks: Sequence[bytes]) -> bytes:
    """Inverse of `plain_chunks`."""
    _check_blocks(blocks)
    return _unstream(b"".join(bytes(b) for b in blocks))
