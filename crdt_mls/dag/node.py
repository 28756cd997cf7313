"""Signed operation nodes: the entries of each member's append-only log.

Schema versions 1 and 2 (see ``docs/schema.md``).  A node is one DAG-CBOR map with the keys::

    a    bytes        author: Ed25519 public key (32 bytes) that signed the node
    c    [link]       chunks (version 2 only, non-empty): CIDs of raw blocks (codec 0x55,
                      sha2-256) the payload refers to, in order (large payloads split into
                      encrypted chunk blocks by the layers above)
    d    bytes        payload: ciphertext produced by the layers above (opaque here)
    e    bytes        epoch id: opaque, at most 64 bytes (recommended: binary CID of the
                      commit node that started the epoch; empty before the first commit)
    g    bytes        group tag: 32 bytes, a hash/HMAC, never the readable MLS group_id
    k    text         kind: "genesis" | "proposal" | "commit" | "application" | "ack"
    p    link | null  prev: CID of the author's previous node; null iff s == 0
    s    int          seq: the author's log sequence number, from 0
    v    int          schema version: 1 without chunks, 2 with chunks
    ps   [link]       parents: CIDs of causal parents, strictly ascending by binary CID
    sig  bytes        Ed25519 signature (64 bytes)

The signature covers ``SIGNATURE_LABEL || dag-cbor(map without "sig")``, a domain
separated input in the spirit of SignWithLabel (RFC 9420 section 5.1.2).  The block is
``dag-cbor(full map)``; its CID is CIDv1 dag-cbor sha2-256 (:mod:`crdt_mls.dag.cid`).

Encoding here is hand-written for the fixed schema (~µs per node) and is byte-identical
to ``dag_cbor.encode`` (Hypothesis-tested in ``tests/unit/test_dag_node.py``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from enum import StrEnum

import nacl.exceptions
import nacl.signing

from crdt_mls.dag.cbor import Link, decode, head
from crdt_mls.dag.cid import DAG_CBOR_SHA256_PREFIX, cid_for_block, cid_to_str
from crdt_mls.errors import (
    DecodeError,
    IntegrityError,
    InvalidArgument,
    OversizeError,
    SignatureError,
    WrongGroupError,
)

__all__ = [
    "AUTHOR_LEN",
    "DEFAULT_MAX_CHUNKS",
    "DEFAULT_MAX_NODE_SIZE",
    "DEFAULT_MAX_PARENTS",
    "GROUP_TAG_LEN",
    "MAX_EPOCH_LEN",
    "MAX_SEQ",
    "NODE_VERSION",
    "NODE_VERSION_CHUNKS",
    "RAW_SHA256_PREFIX",
    "SIGNATURE_LABEL",
    "SIG_LEN",
    "NodeFields",
    "NodeKind",
    "OpNode",
    "decode_node",
    "derive_group_tag",
    "encode_node",
    "node_cid",
    "sign_node",
    "signature_input",
    "verify_node",
]

NODE_VERSION = 1
#: schema version of a node that names chunk blocks (key ``c``)
NODE_VERSION_CHUNKS = 2
SIGNATURE_LABEL = b"crdt-mls node v1\x00"  #: prefix of the signed bytes (NUL-terminated)
GROUP_TAG_LEN = 32
AUTHOR_LEN = 32
SIG_LEN = 64
MAX_EPOCH_LEN = 64
MAX_SEQ = (1 << 63) - 1
#: Default limit on a whole block: 1 MiB, the largest block Kubo accepts by default.
DEFAULT_MAX_NODE_SIZE = 1 << 20
#: Default limit on the number of causal parents of one node.
DEFAULT_MAX_PARENTS = 1024
#: Default limit on the number of chunk links of one node (1024 x 256 KiB chunks = 256 MiB).
DEFAULT_MAX_CHUNKS = 1024
#: prefix of a CIDv1 with the raw codec and sha2-256 (chunk blocks)
RAW_SHA256_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])

_CID_LEN = 36
_NO_LIMIT = 1 << 62


class NodeKind(StrEnum):
    """The kind of operation a node carries (stored as text under key ``k``)."""

    GENESIS = "genesis"
    PROPOSAL = "proposal"
    COMMIT = "commit"
    APPLICATION = "application"
    ACK = "ack"  #: acknowledgement / heartbeat: advertises the author's causal frontier


_KINDS = {k.value: k for k in NodeKind}


def _is_node_cid(c: object) -> bool:
    return type(c) is bytes and len(c) == _CID_LEN and c[:4] == DAG_CBOR_SHA256_PREFIX


def _is_chunk_cid(c: object) -> bool:
    return type(c) is bytes and len(c) == _CID_LEN and c[:4] == RAW_SHA256_PREFIX


def _check_fields(
    kind: object,
    group: object,
    seq: object,
    prev: object,
    parents: object,
    epoch: object,
    payload: object,
    max_parents: int,
    chunks: object = (),
    max_chunks: int = _NO_LIMIT,
) -> None:
    """Validate the unsigned fields; raise :class:`InvalidArgument` naming the field."""
    if not isinstance(kind, NodeKind):
        raise InvalidArgument(f"kind must be a NodeKind, not {type(kind).__name__}")
    if type(group) is not bytes or len(group) != GROUP_TAG_LEN:
        raise InvalidArgument(f"group tag must be {GROUP_TAG_LEN} bytes")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise InvalidArgument("seq must be an int in [0, 2**63)")
    if prev is None:
        if seq != 0:
            raise InvalidArgument("prev is required when seq > 0")
    elif not _is_node_cid(prev):
        raise InvalidArgument("prev must be a 36-byte dag-cbor sha2-256 CIDv1 or None")
    elif seq == 0:
        raise InvalidArgument("prev must be None when seq == 0")
    if type(parents) is not tuple:
        raise InvalidArgument("parents must be a tuple of CIDs")
    if len(parents) > max_parents:
        raise InvalidArgument(f"{len(parents)} parents exceed the limit of {max_parents}")
    last = b""
    for p in parents:
        if not _is_node_cid(p):
            raise InvalidArgument("each parent must be a 36-byte dag-cbor sha2-256 CIDv1")
        if p <= last:
            raise InvalidArgument("parents must be strictly ascending (sorted, no duplicates)")
        last = p
    if type(epoch) is not bytes or len(epoch) > MAX_EPOCH_LEN:
        raise InvalidArgument(f"epoch id must be bytes of at most {MAX_EPOCH_LEN}")
    if type(payload) is not bytes:
        raise InvalidArgument("payload must be bytes")
    if kind is NodeKind.GENESIS and (seq != 0 or parents):
        raise InvalidArgument("a genesis node has seq 0 and no parents")
    if type(chunks) is not tuple:
        raise InvalidArgument("chunks must be a tuple of CIDs")
    if len(chunks) > max_chunks:
        raise InvalidArgument(f"{len(chunks)} chunk links exceed the limit of {max_chunks}")
    for c in chunks:
        if not _is_chunk_cid(c):
            raise InvalidArgument("each chunk link must be a 36-byte raw sha2-256 CIDv1")


@dataclass(frozen=True, slots=True)
class NodeFields:
    """The author-chosen fields of a node, before signing (see :func:`sign_node`).

    ``parents`` may be given in any order; :func:`sign_node` sorts and de-duplicates.
    ``chunks`` (in order, schema version 2) name raw blocks the payload refers to.
    """

    kind: NodeKind
    group: bytes
    seq: int
    prev: bytes | None
    parents: tuple[bytes, ...]
    epoch: bytes
    payload: bytes = field(repr=False)
    chunks: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, repr=False)
class OpNode:
    """A signed operation node, schema version 1 (no ``chunks``) or 2 (with ``chunks``).
    Construction validates the schema.

    The signature is only checked by :func:`decode_node` / :func:`verify_node`.
    """

    kind: NodeKind
    group: bytes
    author: bytes
    seq: int
    prev: bytes | None
    parents: tuple[bytes, ...]
    epoch: bytes
    payload: bytes = field(repr=False)
    sig: bytes = field(repr=False)
    chunks: tuple[bytes, ...] = ()

    @property
    def version(self) -> int:
        """The schema version: 2 if the node names chunks, else 1."""
        return NODE_VERSION_CHUNKS if self.chunks else NODE_VERSION

    def __post_init__(self) -> None:
        _check_fields(
            self.kind, self.group, self.seq, self.prev, self.parents, self.epoch, self.payload, _NO_LIMIT, self.chunks
        )
        if type(self.author) is not bytes or len(self.author) != AUTHOR_LEN:
            raise InvalidArgument(f"author must be a {AUTHOR_LEN}-byte Ed25519 public key")
        if type(self.sig) is not bytes or len(self.sig) != SIG_LEN:
            raise InvalidArgument(f"sig must be {SIG_LEN} bytes")

    def __repr__(self) -> str:
        prev = "None" if self.prev is None else cid_to_str(self.prev)
        parents = ", ".join(cid_to_str(p) for p in self.parents)
        return (
            f"OpNode(kind={self.kind.value}, group={self.group[:4].hex()}.., author={self.author[:4].hex()}.., "
            f"seq={self.seq}, prev={prev}, parents=[{parents}], epoch={self.epoch.hex()}, "
            f"payload=<{len(self.payload)} bytes>, chunks={len(self.chunks)})"
        )


def derive_group_tag(key: bytes, group_id: bytes) -> bytes:
    """Return a 32-byte group tag: HMAC-SHA256(key, "crdt-mls group tag v1" || 0x00 || group_id).

    ``key`` must be a secret shared by the members (e.g. an MLS exporter secret agreed at
    group creation and carried in the Welcome), so outsiders who know or guess the
    readable ``group_id`` cannot link blocks to the group.
    """
    if not isinstance(key, bytes) or len(key) < 16:
        raise InvalidArgument("group tag key must be at least 16 bytes")
    if not isinstance(group_id, bytes):
        raise InvalidArgument("group_id must be bytes")
    return hmac.new(key, b"crdt-mls group tag v1\x00" + group_id, hashlib.sha256).digest()


# ------------------------------------------------------------------------------ encoding

_K_A = b"\x61a"
_K_C = b"\x61c"
_K_D = b"\x61d"
_K_E = b"\x61e"
_K_G = b"\x61g"
_K_K = b"\x61k"
_K_P = b"\x61p"
_K_S = b"\x61s"
_K_V1 = b"\x61v\x01"
_K_V2 = b"\x61v\x02"
_K_PS = b"\x62ps"
_K_SIG = b"\x63sig"
_NULL = b"\xf6"
_KIND_ENC = {k: head(3, len(k.value)) + k.value.encode("ascii") for k in NodeKind}
_LINK_HEAD = b"\xd8\x2a\x58\x25\x00"  # tag 42, bytes(37), multibase prefix 0x00


def _body(
    kind: NodeKind,
    group: bytes,
    author: bytes,
    seq: int,
    prev: bytes | None,
    parents: tuple[bytes, ...],
    epoch: bytes,
    payload: bytes,
    chunks: tuple[bytes, ...] = (),
) -> list[bytes]:
    """The map entries common to the signed and unsigned encodings, in canonical order."""
    parts = [_K_A, b"\x58\x20", author]
    if chunks:
        parts.append(_K_C)
        parts.append(head(4, len(chunks)))
        parts.extend(_LINK_HEAD + c for c in chunks)
    parts += [
        _K_D,
        head(2, len(payload)),
        payload,
        _K_E,
        head(2, len(epoch)),
        epoch,
        _K_G,
        b"\x58\x20",
        group,
        _K_K,
        _KIND_ENC[kind],
        _K_P,
        _NULL if prev is None else _LINK_HEAD + prev,
        _K_S,
        head(0, seq),
        _K_V2 if chunks else _K_V1,
        _K_PS,
        head(4, len(parents)),
    ]
    parts.extend(_LINK_HEAD + p for p in parents)
    return parts


def signature_input(node: OpNode | NodeFields, author: bytes | None = None) -> bytes:
    """Return the bytes an author signs: ``SIGNATURE_LABEL || dag-cbor(node without sig)``."""
    if author is None:
        if not isinstance(node, OpNode):
            raise InvalidArgument("author is required for NodeFields")
        author = node.author
    body = _body(
        node.kind, node.group, author, node.seq, node.prev, node.parents, node.epoch, node.payload, node.chunks
    )
    return SIGNATURE_LABEL + (b"\xaa" if node.chunks else b"\xa9") + b"".join(body)


def encode_node(node: OpNode) -> tuple[bytes, bytes]:
    """Return ``(cid, block)``: the canonical DAG-CBOR block of ``node`` and its CIDv1."""
    body = _body(
        node.kind, node.group, node.author, node.seq, node.prev, node.parents, node.epoch, node.payload, node.chunks
    )
    block = (b"\xab" if node.chunks else b"\xaa") + b"".join(body) + _K_SIG + b"\x58\x40" + node.sig
    return cid_for_block(block), block


def node_cid(node: OpNode) -> bytes:
    """Return the binary CID of ``node``."""
    return encode_node(node)[0]


# ------------------------------------------------------------------------------- signing


def sign_node(
    fields: NodeFields, signing_key: nacl.signing.SigningKey | bytes, *, max_size: int = DEFAULT_MAX_NODE_SIZE
) -> OpNode:
    """Sign ``fields`` with an Ed25519 key (``SigningKey`` or 32-byte seed).

    The author is the key's public key.  Parents are sorted and de-duplicated.  The
    result is validated; too-large nodes raise :class:`InvalidArgument`.
    """
    if isinstance(signing_key, bytes):
        if len(signing_key) != 32:
            raise InvalidArgument("an Ed25519 seed is 32 bytes")
        signing_key = nacl.signing.SigningKey(signing_key)
    elif not isinstance(signing_key, nacl.signing.SigningKey):
        raise InvalidArgument("signing_key must be a nacl SigningKey or a 32-byte seed")
    try:
        parents = tuple(sorted(set(fields.parents)))
    except TypeError as exc:
        raise InvalidArgument("parents must be binary CIDs") from exc
    _check_fields(
        fields.kind,
        fields.group,
        fields.seq,
        fields.prev,
        parents,
        fields.epoch,
        fields.payload,
        DEFAULT_MAX_PARENTS,
        fields.chunks,
        DEFAULT_MAX_CHUNKS,
    )
    author = bytes(signing_key.verify_key)
    unsigned = fields if parents == fields.parents else _replace_parents(fields, parents)
    sig = signing_key.sign(signature_input(unsigned, author)).signature
    node = OpNode(
        fields.kind,
        fields.group,
        author,
        fields.seq,
        fields.prev,
        parents,
        fields.epoch,
        fields.payload,
        bytes(sig),
        fields.chunks,
    )
    size = len(encode_node(node)[1])
    if size > max_size:
        raise InvalidArgument(f"node of {size} bytes exceeds the block limit of {max_size}")
    return node


def _replace_parents(f: NodeFields, parents: tuple[bytes, ...]) -> NodeFields:
    return NodeFields(f.kind, f.group, f.seq, f.prev, parents, f.epoch, f.payload, f.chunks)


def verify_node(node: OpNode) -> None:
    """Check the node's Ed25519 signature by its author; raise :class:`SignatureError`."""
    try:
        nacl.signing.VerifyKey(node.author).verify(signature_input(node), node.sig)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
        raise SignatureError(f"invalid node signature (author seq {node.seq})") from None


# ------------------------------------------------------------------------------ decoding

_KEYS = frozenset(("a", "d", "e", "g", "k", "p", "s", "v", "ps", "sig"))
_KEYS_V2 = _KEYS | {"c"}


def decode_node(
    block: bytes,
    expected_cid: bytes | None = None,
    *,
    group: bytes | None = None,
    max_size: int = DEFAULT_MAX_NODE_SIZE,
    max_parents: int = DEFAULT_MAX_PARENTS,
    verify_signature: bool = True,
    max_chunks: int = DEFAULT_MAX_CHUNKS,
) -> OpNode:
    """Decode and verify one node block (schema v1, or v2 with chunk links).

    Checks, in order: size (:class:`OversizeError`), ``expected_cid``
    (:class:`IntegrityError`), strict DAG-CBOR and schema (:class:`DecodeError`), group
    tag if ``group`` is given (:class:`WrongGroupError`), signature
    (:class:`SignatureError`).
    """
    if not isinstance(block, bytes):
        if isinstance(block, (bytearray, memoryview)):
            block = bytes(block)
        else:
            raise InvalidArgument(f"block must be bytes, not {type(block).__name__}")
    if len(block) > max_size:
        raise OversizeError(f"node block of {len(block)} bytes exceeds the limit of {max_size}")
    if expected_cid is not None and (len(expected_cid) != _CID_LEN or cid_for_block(block) != expected_cid):
        raise IntegrityError(f"node block of {len(block)} bytes does not match its expected CID")
    node = _parse_fast(block, max_parents, max_chunks)
    if node is None:
        node = _parse_generic(block, max_parents, max_chunks)
    if group is not None and node.group != group:
        raise WrongGroupError("node belongs to another group")
    if verify_signature:
        # the block is canonical, so the unsigned encoding is the block minus the "sig" entry
        # (and a map head one entry shorter: 0xaa -> 0xa9, 0xab -> 0xaa)
        _verify(node, SIGNATURE_LABEL + bytes([block[0] - 1]) + block[1:-_SIG_ENTRY_LEN])
    return node


_SIG_ENTRY_LEN = 4 + 2 + SIG_LEN  # "sig" key, bytes(64) head, signature


def _verify(node: OpNode, signed: bytes) -> None:
    try:
        nacl.signing.VerifyKey(node.author).verify(signed, node.sig)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
        raise SignatureError(f"invalid node signature (author seq {node.seq})") from None


def _parse_generic(block: bytes, max_parents: int, max_chunks: int = DEFAULT_MAX_CHUNKS) -> OpNode:
    """Decode with the generic strict DAG-CBOR decoder, then check the schema."""
    m = decode(block, max_depth=2)
    if type(m) is not dict:
        raise DecodeError("node: block is not a map")
    if "v" not in m:
        raise DecodeError(f"node: wrong set of keys {sorted(m)!r}")
    version = m["v"]
    if type(version) is not int or version not in (NODE_VERSION, NODE_VERSION_CHUNKS):
        raise DecodeError(f"node: unsupported schema version {version!r}")
    if m.keys() != (_KEYS if version == NODE_VERSION else _KEYS_V2):
        raise DecodeError(f"node: wrong set of keys {sorted(m)!r} for schema version {version}")
    chunks: list[bytes] = []
    if version == NODE_VERSION_CHUNKS:
        raw_chunks = m["c"]
        if type(raw_chunks) is not list or not raw_chunks:
            raise DecodeError("node: chunks must be a non-empty list in schema version 2")
        if len(raw_chunks) > max_chunks:
            raise OversizeError(f"node: {len(raw_chunks)} chunk links exceed the limit of {max_chunks}")
        for c in raw_chunks:
            if type(c) is not Link:
                raise DecodeError("node: each chunk must be a link")
            chunks.append(c.cid)
    kind = _KINDS.get(m["k"]) if type(m["k"]) is str else None
    if kind is None:
        raise DecodeError("node: unknown kind")
    prev = m["p"]
    if prev is not None:
        if type(prev) is not Link:
            raise DecodeError("node: prev must be a link or null")
        prev = prev.cid
    raw_parents = m["ps"]
    if type(raw_parents) is not list:
        raise DecodeError("node: parents must be a list")
    if len(raw_parents) > max_parents:
        raise OversizeError(f"node: {len(raw_parents)} parents exceed the limit of {max_parents}")
    parents = []
    for p in raw_parents:
        if type(p) is not Link:
            raise DecodeError("node: each parent must be a link")
        parents.append(p.cid)
    try:
        _check_fields(kind, m["g"], m["s"], prev, tuple(parents), m["e"], m["d"], max_parents, tuple(chunks))
        node = OpNode(kind, m["g"], m["a"], m["s"], prev, tuple(parents), m["e"], m["d"], m["sig"], tuple(chunks))  # type: ignore[arg-type]
    except InvalidArgument as exc:
        raise DecodeError(f"node: {exc}") from None
    return node


_KIND_BY_BYTES = {k.value.encode("ascii"): k for k in NodeKind}
_A_HEAD = _K_A + b"\x58\x20"
_G_HEAD = _K_G + b"\x58\x20"
_SIG_HEAD = _K_SIG + b"\x58\x40"


def _uint_at(block: bytes, pos: int, major: int) -> tuple[int, int] | None:
    """Read a shortest-form head of ``major`` at ``pos``; ``None`` if absent or not shortest."""
    if pos >= len(block):
        return None
    ib = block[pos]
    if ib >> 5 != major:
        return None
    ai = ib & 0x1F
    if ai < 24:
        return ai, pos + 1
    if ai > 27:
        return None
    size = 1 << (ai - 24)
    end = pos + 1 + size
    if end > len(block):
        return None
    arg = int.from_bytes(block[pos + 1 : end], "big")
    if arg < (24 if size == 1 else 1 << (4 * size)):
        return None
    return arg, end


def _parse_fast(block: bytes, max_parents: int, max_chunks: int = DEFAULT_MAX_CHUNKS) -> OpNode | None:
    """Parse the fixed canonical layout of a v1 or v2 node; ``None`` on any deviation.

    Accepts only byte strings that :func:`_parse_generic` also accepts (the canonical
    encoding of a valid node); every other input falls back to it for a precise error.
    """
    if len(block) < 140 or block[0] not in (0xAA, 0xAB) or block[1:5] != _A_HEAD:
        return None
    author = block[5:37]
    pos = 37
    chunks: list[bytes] = []
    if block[0] == 0xAB:
        if block[pos : pos + 2] != _K_C:
            return None
        r = _uint_at(block, pos + 2, 4)
        if r is None:
            return None
        count, pos = r
        if not 0 < count <= max_chunks or len(block) < pos + count * (5 + _CID_LEN):
            return None
        for _ in range(count):
            if block[pos : pos + 5] != _LINK_HEAD:
                return None
            chunks.append(block[pos + 5 : pos + 5 + _CID_LEN])
            pos += 5 + _CID_LEN
    fields: list[bytes] = []
    for key in (_K_D, _K_E):
        if block[pos : pos + 2] != key:
            return None
        r = _uint_at(block, pos + 2, 2)
        if r is None:
            return None
        n, pos = r
        fields.append(block[pos : pos + n])
        pos += n
    payload, epoch = fields
    if block[pos : pos + 4] != _G_HEAD:
        return None
    group = block[pos + 4 : pos + 36]
    pos += 36
    if block[pos : pos + 2] != _K_K:
        return None
    ib = block[pos + 2] if pos + 2 < len(block) else 0
    if not 0x60 <= ib < 0x78:
        return None
    kind = _KIND_BY_BYTES.get(block[pos + 3 : pos + 3 + (ib & 0x1F)])
    if kind is None:
        return None
    pos += 3 + (ib & 0x1F)
    if block[pos : pos + 2] != _K_P:
        return None
    prev: bytes | None
    if block[pos + 2 : pos + 3] == _NULL:
        prev = None
        pos += 3
    elif block[pos + 2 : pos + 7] == _LINK_HEAD:
        prev = block[pos + 7 : pos + 7 + _CID_LEN]
        pos += 7 + _CID_LEN
    else:
        return None
    if block[pos : pos + 2] != _K_S:
        return None
    r = _uint_at(block, pos + 2, 0)
    if r is None:
        return None
    seq, pos = r
    if block[pos : pos + 3] != (_K_V2 if chunks else _K_V1) or block[pos + 3 : pos + 6] != _K_PS:
        return None
    r = _uint_at(block, pos + 6, 4)
    if r is None:
        return None
    count, pos = r
    if count > max_parents or len(block) - pos != count * (5 + _CID_LEN) + _SIG_ENTRY_LEN:
        return None
    parents = []
    for _ in range(count):
        if block[pos : pos + 5] != _LINK_HEAD:
            return None
        parents.append(block[pos + 5 : pos + 5 + _CID_LEN])
        pos += 5 + _CID_LEN
    if block[pos : pos + 6] != _SIG_HEAD:
        return None
    sig = block[pos + 6 :]
    try:
        _check_fields(kind, group, seq, prev, tuple(parents), epoch, payload, max_parents, tuple(chunks), max_chunks)
        return OpNode(kind, group, author, seq, prev, tuple(parents), epoch, payload, sig, tuple(chunks))
    except InvalidArgument:
        return None
