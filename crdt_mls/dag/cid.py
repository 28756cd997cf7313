"""Content identifiers (CIDv1) for IPLD blocks.

A binary CIDv1 is ``varint(1) || varint(codec) || multihash`` where the multihash is
``varint(hash_code) || varint(digest_len) || digest``.  Operation nodes use the
dag-cbor codec (0x71) and sha2-256 (0x12), giving 36-byte CIDs that begin
``01 71 12 20``.  The text form is multibase base32 (lower case, no padding, prefix
``b``), as printed by ``ipfs`` for CIDv1.  CIDv0 (``Qm...``) is not accepted.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from crdt_mls.errors import DecodeError, IntegrityError, InvalidArgument

__all__ = [
    "CODEC_DAG_CBOR",
    "CODEC_RAW",
    "DAG_CBOR_SHA256_PREFIX",
    "HASH_SHA2_256",
    "MAX_CID_LEN",
    "CidParts",
    "check_cid",
    "cid_for_block",
    "cid_for_raw",
    "cid_from_str",
    "cid_matches",
    "cid_to_str",
    "parse_cid",
    "verify_block",
]

CODEC_DAG_CBOR = 0x71
CODEC_RAW = 0x55
HASH_SHA2_256 = 0x12
MAX_CID_LEN = 128  #: longest binary CID accepted (sha2-512 CIDs are 68 bytes)

DAG_CBOR_SHA256_PREFIX = bytes([0x01, CODEC_DAG_CBOR, HASH_SHA2_256, 32])
_PREFIX_RAW_SHA256 = bytes([0x01, CODEC_RAW, HASH_SHA2_256, 32])


@dataclass(frozen=True, slots=True)
class CidParts:
    """The fields of a binary CIDv1."""

    codec: int
    hash_code: int
    digest: bytes


def cid_for_block(data: bytes) -> bytes:
    """Return the binary CIDv1 (dag-cbor, sha2-256) of an encoded DAG-CBOR block."""
    return DAG_CBOR_SHA256_PREFIX + hashlib.sha256(data).digest()


def cid_for_raw(data: bytes) -> bytes:
    """Return the binary CIDv1 (raw codec 0x55, sha2-256) of opaque bytes."""
    return _PREFIX_RAW_SHA256 + hashlib.sha256(data).digest()


def _varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint (minimal, at most 9 bytes) at ``pos``."""
    value = 0
    shift = 0
    start = pos
    while True:
        if pos >= len(buf):
            raise DecodeError(f"CID: truncated varint in {what}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if pos - start >= 9:
            raise DecodeError(f"CID: varint too long in {what}")
    if pos - start > 1 and buf[pos - 1] == 0:
        raise DecodeError(f"CID: non-minimal varint in {what}")
    return value, pos


def parse_cid(cid: bytes) -> CidParts:
    """Parse and validate a binary CIDv1; raise :class:`DecodeError` if malformed."""
    if not isinstance(cid, (bytes, bytearray, memoryview)):
        raise DecodeError(f"CID must be bytes, not {type(cid).__name__}")
    cid = bytes(cid)
    if len(cid) == 36 and cid[:4] == DAG_CBOR_SHA256_PREFIX:  # fast path
        return CidParts(CODEC_DAG_CBOR, HASH_SHA2_256, cid[4:])
    if len(cid) > MAX_CID_LEN:
        raise DecodeError(f"CID too long: {len(cid)} bytes")
    if not cid:
        raise DecodeError("CID is empty")
    if cid[0] != 0x01:
        raise DecodeError(f"CID: unsupported version byte 0x{cid[0]:02x} (only CIDv1)")
    codec, pos = _varint(cid, 1, "codec")
    hash_code, pos = _varint(cid, pos, "hash code")
    length, pos = _varint(cid, pos, "digest length")
    if len(cid) - pos != length:
        raise DecodeError(f"CID: digest length {length} does not match remaining {len(cid) - pos} bytes")
    if hash_code == HASH_SHA2_256 and length != 32:
        raise DecodeError(f"CID: sha2-256 digest must be 32 bytes, not {length}")
    return CidParts(codec, hash_code, cid[pos:])


def check_cid(cid: bytes) -> bytes:
    """Validate a binary CIDv1 and return it as ``bytes``; raise :class:`DecodeError`."""
    parse_cid(cid)
    return bytes(cid)


def cid_matches(cid: bytes, data: bytes) -> bool:
    """Return whether ``cid`` is a valid sha2-256 CIDv1 of ``data``.

    CIDs with other hash functions cannot be verified and yield ``False``.
    """
    try:
        parts = parse_cid(cid)
    except DecodeError:
        return False
    return parts.hash_code == HASH_SHA2_256 and hashlib.sha256(data).digest() == parts.digest


def verify_block(cid: bytes, data: bytes) -> None:
    """Raise :class:`IntegrityError` unless ``data`` hashes to ``cid`` (sha2-256 CIDv1)."""
    parts = parse_cid(cid)
    if parts.hash_code != HASH_SHA2_256:
        raise IntegrityError(f"CID {cid_to_str(cid)}: unsupported hash function 0x{parts.hash_code:x}")
    if hashlib.sha256(data).digest() != parts.digest:
        raise IntegrityError(f"block of {len(data)} bytes does not match CID {cid_to_str(cid)}")


def cid_to_str(cid: bytes) -> str:
    """Return the multibase base32 text form (``b...``, lower case) of a binary CID."""
    check_cid(cid)
    return "b" + base64.b32encode(bytes(cid)).decode("ascii").rstrip("=").lower()


def cid_from_str(s: str) -> bytes:
    """Parse a base32 CIDv1 text (``b...``) into a validated binary CID.

    Raises :class:`DecodeError` for other multibases, CIDv0 or malformed input, and
    :class:`InvalidArgument` if ``s`` is not a string.
    """
    if not isinstance(s, str):
        raise InvalidArgument(f"CID text must be str, not {type(s).__name__}")
    if len(s) > 2 * MAX_CID_LEN:
        raise DecodeError(f"CID text too long: {len(s)} characters")
    if not s.startswith("b"):
        raise DecodeError("CID text must be multibase base32 lower case (prefix 'b')")
    body = s[1:]
    if body != body.lower() or not body.isascii():
        raise DecodeError("CID text must be lower-case base32")
    padded = body.upper() + "=" * (-len(body) % 8)
    try:
        raw = base64.b32decode(padded, casefold=False)
    except (ValueError, TypeError) as exc:
        raise DecodeError("CID text is not valid base32") from exc
    if "b" + base64.b32encode(raw).decode("ascii").rstrip("=").lower() != s:
        raise DecodeError("CID text is not canonical base32")
    return check_cid(raw)
