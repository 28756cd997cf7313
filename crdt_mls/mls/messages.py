"""RFC 9420 wire structs: every struct of the protocol as a frozen slotted dataclass.

Each struct has ``encode(w: Writer)`` and a classmethod ``decode(r: Reader)`` (RFC 9420
section 2.1 presentation language).  Decoders are strict: unknown values of closed enums,
presence bytes other than 0/1, trailing bytes and non-minimal lengths raise `DecodeError`;
vectors over the reader's limit raise `OversizeError`.

Tagged unions are plain type aliases over their member classes (``Node``, ``Proposal``,
``ProposalOrRef``, ``FramedContent.content``, ``MLSMessage.body``), with ``encode_*`` /
``decode_*`` functions for the tagged encoding.  Sequences are tuples so that values stay
hashable.  Byte-exact re-encoding follows from strict decoding (minimal varints only).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from enum import IntEnum
from itertools import starmap
from typing import ClassVar, Protocol, TypeAlias, TypeVar, overload

from crdt_mls.errors import DecodeError, InvalidArgument, InvalidState, OversizeError
from crdt_mls.mls.codec import DEFAULT_MAX_VECTOR, ONE_BYTE_VARINTS, Reader, Writer, decode_with, encode_varint

__all__ = [
    "MLS10",
    "Content",
    "MLSMessageBody",
    "PathSecret",
    "content_type_of",
    "read_ratchet_tree",
    "welcome_for_member",
    "write_ratchet_tree",
    "Add",
    "ApplicationId",
    "AuthenticatedContent",
    "Capabilities",
    "Commit",
    "ContentType",
    "Credential",
    "CredentialType",
    "EncryptedGroupSecrets",
    "Extension",
    "ExtensionType",
    "ExternalInit",
    "ExternalPub",
    "ExternalSender",
    "FramedContent",
    "FramedContentAuthData",
    "GroupContext",
    "GroupContextExtensions",
    "GroupInfo",
    "GroupSecrets",
    "HPKECiphertext",
    "KeyPackage",
    "LeafNode",
    "LeafNodeSource",
    "Lifetime",
    "MLSMessage",
    "Node",
    "NodeType",
    "ParentNode",
    "PreSharedKey",
    "PreSharedKeyID",
    "PrivateContentAAD",
    "PrivateMessage",
    "PrivateMessageContent",
    "Proposal",
    "ProposalOrRef",
    "ProposalOrRefType",
    "ProposalRef",
    "ProposalType",
    "PSKType",
    "PublicMessage",
    "ReInit",
    "Remove",
    "RequiredCapabilities",
    "ResumptionPSKUsage",
    "Sender",
    "SenderData",
    "SenderDataAAD",
    "SenderType",
    "UnknownProposal",
    "Update",
    "UpdatePath",
    "UpdatePathNode",
    "Welcome",
    "WireFormat",
    "authenticated_content_tbm",
    "confirmed_transcript_hash_input",
    "decode_node",
    "decode_proposal",
    "decode_proposal_or_ref",
    "decode_ratchet_tree",
    "encode_node",
    "encode_proposal",
    "encode_proposal_or_ref",
    "encode_ratchet_tree",
    "find_extension",
    "framed_content_tbs",
    "interim_transcript_hash_input",
    "new_hpke_ciphertext",
]

#: ProtocolVersion mls10 (RFC 9420 section 6).
MLS10 = 1

_E = TypeVar("_E", bound=IntEnum)


# ------------------------------------------------------------------------------ enums


class WireFormat(IntEnum):
    """RFC 9420 section 6 (uint16)."""

    MLS_PUBLIC_MESSAGE = 1
    MLS_PRIVATE_MESSAGE = 2
    MLS_WELCOME = 3
    MLS_GROUP_INFO = 4
    MLS_KEY_PACKAGE = 5


class ContentType(IntEnum):
    """RFC 9420 section 6 (uint8)."""

    APPLICATION = 1
    PROPOSAL = 2
    COMMIT = 3


class SenderType(IntEnum):
    """RFC 9420 section 6 (uint8)."""

    MEMBER = 1
    EXTERNAL = 2
    NEW_MEMBER_PROPOSAL = 3
    NEW_MEMBER_COMMIT = 4


class LeafNodeSource(IntEnum):
    """RFC 9420 section 7.2 (uint8)."""

    KEY_PACKAGE = 1
    UPDATE = 2
    COMMIT = 3


class NodeType(IntEnum):
    """RFC 9420 section 7.8 (uint8)."""

    LEAF = 1
    PARENT = 2


class PSKType(IntEnum):
    """RFC 9420 section 8.4 (uint8)."""

    EXTERNAL = 1
    RESUMPTION = 2


class ResumptionPSKUsage(IntEnum):
    """RFC 9420 section 8.4 (uint8)."""

    APPLICATION = 1
    REINIT = 2
    BRANCH = 3


class ProposalOrRefType(IntEnum):
    """RFC 9420 section 12.4 (uint8)."""

    PROPOSAL = 1
    REFERENCE = 2


class ExtensionType(IntEnum):
    """RFC 9420 section 17.3 (uint16).  Open: unknown values are kept as plain ints."""

    APPLICATION_ID = 1
    RATCHET_TREE = 2
    REQUIRED_CAPABILITIES = 3
    EXTERNAL_PUB = 4
    EXTERNAL_SENDERS = 5


class ProposalType(IntEnum):
    """RFC 9420 section 17.4 (uint16).  Open: unknown values are kept as plain ints."""

    ADD = 1
    UPDATE = 2
    REMOVE = 3
    PSK = 4
    REINIT = 5
    EXTERNAL_INIT = 6
    GROUP_CONTEXT_EXTENSIONS = 7


class CredentialType(IntEnum):
    """RFC 9420 section 17.5 (uint16).  Open: unknown values are kept as plain ints."""

    BASIC = 1
    X509 = 2


def _enum(cls: type[_E], value: int, what: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise DecodeError(f"invalid {what} value {value}") from None


# --------------------------------------------------------------------------- helpers


def _w_u16(w: Writer, v: int) -> None:
    w.u16(v)


def _w_u32(w: Writer, v: int) -> None:
    w.u32(v)


def _w_opaque(w: Writer, v: bytes) -> None:
    w.opaque(v)


def _r_u16(r: Reader) -> int:
    return r.u16()


def _r_u32(r: Reader) -> int:
    return r.u32()


def _r_opaque(r: Reader) -> bytes:
    return r.opaque()


def _w_struct(w: Writer, v: _Encodable) -> None:
    v.encode(w)


class _Encodable(Protocol):
    """Typing helper: anything with ``encode(w)``."""

    def encode(self, w: Writer) -> None: ...


# ------------------------------------------------------------------------- extensions


@dataclass(frozen=True, slots=True)
class Extension:
    """``struct { ExtensionType extension_type; opaque extension_data<V>; }`` (RFC 9420 section 13)."""

    extension_type: int
    extension_data: bytes

    def encode(self, w: Writer) -> None:
        w.u16(self.extension_type)
        w.opaque(self.extension_data)

    @classmethod
    def decode(cls, r: Reader) -> Extension:
        return cls(r.u16(), r.opaque())

    # typed constructors / accessors for the extensions RFC 9420 defines (sections 12.4.3.3, 13)
    @classmethod
    def application_id(cls, application_id: bytes) -> Extension:
        return cls(ExtensionType.APPLICATION_ID, _to_bytes(ApplicationId(application_id)))

    @classmethod
    def ratchet_tree(cls, nodes: Sequence[Node | None]) -> Extension:
        return cls(ExtensionType.RATCHET_TREE, encode_ratchet_tree(nodes))

    @classmethod
    def required_capabilities(cls, value: RequiredCapabilities) -> Extension:
        return cls(ExtensionType.REQUIRED_CAPABILITIES, _to_bytes(value))

    @classmethod
    def external_pub(cls, external_pub: bytes) -> Extension:
        return cls(ExtensionType.EXTERNAL_PUB, _to_bytes(ExternalPub(external_pub)))

    @classmethod
    def external_senders(cls, senders: Sequence[ExternalSender]) -> Extension:
        w = Writer()
        w.vector(senders, _w_struct)
        return cls(ExtensionType.EXTERNAL_SENDERS, w.getvalue())

    def _expect(self, t: ExtensionType) -> None:
        if self.extension_type != t:
            raise InvalidArgument(f"extension type {self.extension_type} is not {t.name.lower()}")

    def as_application_id(self) -> bytes:
        """Decode an application_id extension (RFC 9420 section 5.3.3)."""
        self._expect(ExtensionType.APPLICATION_ID)
        return decode_with(ApplicationId.decode, self.extension_data).application_id

    def as_ratchet_tree(self) -> list[Node | None]:
        """Decode a ratchet_tree extension (RFC 9420 section 12.4.3.3)."""
        self._expect(ExtensionType.RATCHET_TREE)
        return decode_ratchet_tree(self.extension_data)

    def as_required_capabilities(self) -> RequiredCapabilities:
        """Decode a required_capabilities extension (RFC 9420 section 11.1)."""
        self._expect(ExtensionType.REQUIRED_CAPABILITIES)
        return decode_with(RequiredCapabilities.decode, self.extension_data)

    def as_external_pub(self) -> bytes:
        """Decode an external_pub extension (RFC 9420 section 12.4.3.2)."""
        self._expect(ExtensionType.EXTERNAL_PUB)
        return decode_with(ExternalPub.decode, self.extension_data).external_pub

    def as_external_senders(self) -> list[ExternalSender]:
        """Decode an external_senders extension (RFC 9420 section 12.1.8.1)."""
        self._expect(ExtensionType.EXTERNAL_SENDERS)
        return decode_with(lambda r: r.vector(ExternalSender.decode), self.extension_data)


def find_extension(extensions: Iterable[Extension], extension_type: int) -> Extension | None:
    """The first extension of the given type, or None."""
    for ext in extensions:
        if ext.extension_type == extension_type:
            return ext
    return None


def _vec_len(n: int) -> int:
    """Bytes taken by an ``opaque x<V>`` of ``n`` bytes: varint header plus body (RFC 9420 section 2.1.2)."""
    return n + (1 if n < 0x40 else 2 if n < 0x4000 else 4)


@dataclass(frozen=True, slots=True)
class _CapsEntry:
    """A decoded Capabilities value with its encoding (a parser cache entry)."""

    raw: bytes
    value: Capabilities


#: Capabilities already decoded, by their encoding (immutable values; bounded, cleared when
#: full); the key ``b""`` holds the last one used.
_CAPS_CACHE: dict[bytes, _CapsEntry] = {}


def _to_bytes(v: _Encodable) -> bytes:
    w = Writer()
    v.encode(w)
    return w.getvalue()


def _w_extensions(w: Writer, exts: Sequence[Extension]) -> None:
    inner = Writer()
    for e in exts:
        inner.u16(e.extension_type)
        inner.opaque(e.extension_data)
    w.opaque(inner.getvalue())


def _r_extensions(r: Reader) -> tuple[Extension, ...]:
    return tuple(r.vector(Extension.decode))


@dataclass(frozen=True, slots=True)
class ApplicationId:
    """``struct { opaque application_id<V>; } ApplicationId`` (RFC 9420 section 5.3.3)."""

    application_id: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.application_id)

    @classmethod
    def decode(cls, r: Reader) -> ApplicationId:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class ExternalPub:
    """``struct { HPKEPublicKey external_pub; } ExternalPub`` (RFC 9420 section 12.4.3.2)."""

    external_pub: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.external_pub)

    @classmethod
    def decode(cls, r: Reader) -> ExternalPub:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class RequiredCapabilities:
    """RFC 9420 section 11.1."""

    extension_types: tuple[int, ...] = ()
    proposal_types: tuple[int, ...] = ()
    credential_types: tuple[int, ...] = ()

    def encode(self, w: Writer) -> None:
        w.vector(self.extension_types, _w_u16)
        w.vector(self.proposal_types, _w_u16)
        w.vector(self.credential_types, _w_u16)

    @classmethod
    def decode(cls, r: Reader) -> RequiredCapabilities:
        return cls(tuple(r.vector(_r_u16)), tuple(r.vector(_r_u16)), tuple(r.vector(_r_u16)))


# ------------------------------------------------------------------------- credentials


@dataclass(frozen=True, slots=True)
class Credential:
    """RFC 9420 section 5.3.

    Both defined credential bodies are a single variable-length vector (``opaque identity<V>``
    for basic, ``Certificate certificates<V>`` for x509), so ``content`` holds the body of
    that vector: the identity for basic, the encoded certificate list for x509, and the raw
    body for unknown credential types (which therefore round-trip).
    """

    credential_type: int
    content: bytes

    @classmethod
    def basic(cls, identity: bytes) -> Credential:
        return cls(CredentialType.BASIC, identity)

    @classmethod
    def x509(cls, certificates: Sequence[bytes]) -> Credential:
        inner = Writer()
        for cert in certificates:
            inner.opaque(cert)
        return cls(CredentialType.X509, inner.getvalue())

    @property
    def identity(self) -> bytes:
        """The identity of a basic credential."""
        if self.credential_type != CredentialType.BASIC:
            raise InvalidState(f"credential type {self.credential_type} is not basic")
        return self.content

    @property
    def certificates(self) -> tuple[bytes, ...]:
        """The DER certificate chain of an x509 credential."""
        if self.credential_type != CredentialType.X509:
            raise InvalidState(f"credential type {self.credential_type} is not x509")
        r = Reader(self.content)
        out: list[bytes] = []
        while not r.at_end():
            out.append(r.opaque())
        return tuple(out)

    def encode(self, w: Writer) -> None:
        w.u16(self.credential_type)
        w.opaque(self.content)

    @classmethod
    def decode(cls, r: Reader) -> Credential:
        ctype = r.u16()
        if ctype == 0:
            raise DecodeError("invalid credential_type value 0")
        if ctype == CredentialType.X509:
            start = r.position
            r.vector(_r_opaque)
            raw = r.slice_since(start)
            return cls(ctype, decode_with(_r_opaque, raw))
        return cls(ctype, r.opaque())


# ----------------------------------------------------------------------- leaf nodes


@dataclass(frozen=True, slots=True)
class Capabilities:
    """RFC 9420 section 7.2."""

    versions: tuple[int, ...] = (MLS10,)
    cipher_suites: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    proposals: tuple[int, ...] = ()
    credentials: tuple[int, ...] = (CredentialType.BASIC,)

    def encode(self, w: Writer) -> None:
        w.vector(self.versions, _w_u16)
        w.vector(self.cipher_suites, _w_u16)
        w.vector(self.extensions, _w_u16)
        w.vector(self.proposals, _w_u16)
        w.vector(self.credentials, _w_u16)

    @classmethod
    def decode(cls, r: Reader) -> Capabilities:
        return cls(
            tuple(r.vector(_r_u16)),
            tuple(r.vector(_r_u16)),
            tuple(r.vector(_r_u16)),
            tuple(r.vector(_r_u16)),
            tuple(r.vector(_r_u16)),
        )


@dataclass(frozen=True, slots=True)
class Lifetime:
    """RFC 9420 section 7.2."""

    not_before: int
    not_after: int

    def encode(self, w: Writer) -> None:
        w.u64(self.not_before)
        w.u64(self.not_after)

    @classmethod
    def decode(cls, r: Reader) -> Lifetime:
        return cls(r.u64(), r.u64())


@dataclass(frozen=True, slots=True)
class LeafNode:
    """RFC 9420 section 7.2.

    ``lifetime`` is set iff ``leaf_node_source`` is key_package; ``parent_hash`` is set iff
    it is commit.
    """

    encryption_key: bytes
    signature_key: bytes
    credential: Credential
    capabilities: Capabilities
    leaf_node_source: LeafNodeSource
    lifetime: Lifetime | None = None
    parent_hash: bytes | None = None
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""
    #: Cached encoding (the struct is immutable); filled by decoding or the first encode.
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False, hash=False)

    def _check(self) -> None:
        src = self.leaf_node_source
        if (src == LeafNodeSource.KEY_PACKAGE) != (self.lifetime is not None):
            raise InvalidArgument("LeafNode.lifetime must be set exactly when leaf_node_source is key_package")
        if (src == LeafNodeSource.COMMIT) != (self.parent_hash is not None):
            raise InvalidArgument("LeafNode.parent_hash must be set exactly when leaf_node_source is commit")

    def _encode_content(self, w: Writer) -> None:
        self._check()
        w.opaque(self.encryption_key)
        w.opaque(self.signature_key)
        self.credential.encode(w)
        self.capabilities.encode(w)
        w.u8(self.leaf_node_source)
        if self.lifetime is not None:
            self.lifetime.encode(w)
        elif self.parent_hash is not None:
            w.opaque(self.parent_hash)
        _w_extensions(w, self.extensions)

    def encode(self, w: Writer) -> None:
        w.fixed(self.to_bytes())

    def to_bytes(self) -> bytes:
        """The LeafNode encoding (cached: the received bytes of a decoded leaf, which strict
        decoding makes identical to a fresh encoding)."""
        raw = self._raw
        if raw is None:
            w = Writer()
            self._encode_content(w)
            w.opaque(self.signature)
            raw = w.getvalue()
            object.__setattr__(self, "_raw", raw)
        return raw

    @classmethod
    def decode(cls, r: Reader) -> LeafNode:
        buf, pos, end = r.view()
        leaf, pos = _p_leaf(buf, pos, end, r.max_vector, _CAPS_CACHE)
        r.seek(pos)
        if len(_CAPS_CACHE) > 256:
            _CAPS_CACHE.clear()
        return leaf

    @classmethod
    def decode_slow(cls, r: Reader) -> LeafNode:
        """Reference decoder from the generic field decoders (`decode` is a specialised
        parser with the same checks; the fuzz tests compare the two)."""
        start = r.position
        encryption_key = r.opaque()
        signature_key = r.opaque()
        credential = Credential.decode(r)
        capabilities = Capabilities.decode(r)
        src = _enum(LeafNodeSource, r.u8(), "leaf_node_source")
        lifetime = None
        parent_hash = None
        if src == LeafNodeSource.KEY_PACKAGE:
            lifetime = Lifetime(r.u64(), r.u64())
        elif src == LeafNodeSource.COMMIT:
            parent_hash = r.opaque()
        extensions = _r_extensions(r)
        signature = r.opaque()
        leaf = cls(
            encryption_key, signature_key, credential, capabilities, src, lifetime, parent_hash, extensions, signature
        )
        object.__setattr__(leaf, "_raw", r.slice_since(start))
        return leaf

    def content_bytes(self) -> bytes:
        """The encoding without the signature: the fields LeafNodeTBS starts with (RFC 9420
        section 7.2), a slice of the cached encoding."""
        raw = self.to_bytes()
        return raw[: len(raw) - _vec_len(len(self.signature))]

    def tbs(self, group_id: bytes | None = None, leaf_index: int | None = None) -> bytes:
        """LeafNodeTBS (RFC 9420 section 7.2); group_id and leaf_index are needed unless the
        source is key_package, and ignored if it is."""
        if self.leaf_node_source == LeafNodeSource.KEY_PACKAGE:
            return self.content_bytes()
        if group_id is None or leaf_index is None:
            raise InvalidArgument("LeafNodeTBS of an update/commit leaf needs group_id and leaf_index")
        if not 0 <= leaf_index < 1 << 32:
            raise InvalidArgument(f"{leaf_index} does not fit in an unsigned 4-byte integer")
        return self.content_bytes() + encode_varint(len(group_id)) + group_id + leaf_index.to_bytes(4, "big")

    def without_signature(self) -> LeafNode:
        """A copy with an empty signature (to be re-signed)."""
        return replace(self, signature=b"")

    def with_signature(self, signature: bytes) -> LeafNode:
        return replace(self, signature=signature)


@dataclass(frozen=True, slots=True)
class ParentNode:
    """RFC 9420 section 7.1."""

    encryption_key: bytes
    parent_hash: bytes = b""
    unmerged_leaves: tuple[int, ...] = ()

    def encode(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.opaque(self.parent_hash)
        w.vector(self.unmerged_leaves, _w_u32)

    @classmethod
    def decode(cls, r: Reader) -> ParentNode:
        return cls(r.opaque(), r.opaque(), tuple(r.vector(_r_u32)))


#: ``struct { NodeType node_type; select (node_type) { leaf: LeafNode; parent: ParentNode } }``
#: (RFC 9420 section 7.8), as a union of the two classes.
Node: TypeAlias = LeafNode | ParentNode


def encode_node(w: Writer, node: Node) -> None:
    """Encode a Node with its node_type tag (RFC 9420 section 7.8)."""
    if isinstance(node, LeafNode):
        w.u8(NodeType.LEAF)
    elif isinstance(node, ParentNode):
        w.u8(NodeType.PARENT)
    else:
        raise InvalidArgument(f"not a tree node: {type(node).__name__}")
    node.encode(w)


def decode_node(r: Reader) -> Node:
    """Decode a tagged Node (RFC 9420 section 7.8)."""
    t = r.u8()
    if t == NodeType.LEAF:
        return LeafNode.decode(r)
    if t == NodeType.PARENT:
        return ParentNode.decode(r)
    raise DecodeError(f"invalid node_type value {t}")


def _w_opt_node(w: Writer, node: Node | None) -> None:
    if node is None:
        w.u8(0)
    else:
        w.u8(1)
        encode_node(w, node)


def _decode_node_slow(r: Reader) -> Node:
    t = r.u8()
    if t == NodeType.LEAF:
        return LeafNode.decode_slow(r)
    if t == NodeType.PARENT:
        return ParentNode.decode(r)
    raise DecodeError(f"invalid node_type value {t}")


def _r_opt_node_slow(r: Reader) -> Node | None:
    return r.optional(_decode_node_slow)


def write_ratchet_tree(w: Writer, nodes: Sequence[Node | None]) -> None:
    """Write ``optional<Node> ratchet_tree<V>`` (RFC 9420 section 12.4.3.3).

    Leaves contribute their cached encoding; the body is joined once."""
    parts: list[bytes] = []
    append = parts.append
    for node in nodes:
        if node is None:
            append(b"\x00")
        elif isinstance(node, LeafNode):
            append(b"\x01\x01")
            append(node.to_bytes())
        elif isinstance(node, ParentNode):
            pw = Writer()
            pw.u8(1)
            pw.u8(NodeType.PARENT)
            node.encode(pw)
            append(pw.getvalue())
        else:
            raise InvalidArgument(f"not a tree node: {type(node).__name__}")
    w.opaque(b"".join(parts))


def write_ratchet_tree_slow(w: Writer, nodes: Sequence[Node | None]) -> None:
    """Reference encoder from the generic struct encoders (used to test `write_ratchet_tree`)."""
    w.vector(nodes, _w_opt_node)


def read_ratchet_tree(r: Reader) -> list[Node | None]:
    """Read ``optional<Node> ratchet_tree<V>`` (RFC 9420 section 12.4.3.3).

    The vector body is parsed by a specialised loop (`_parse_tree`) that performs the same
    checks as the generic struct decoders, for speed on large trees.
    """
    n = r.varint()
    if n > r.max_vector:
        raise OversizeError(f"vector of {n} bytes exceeds the limit of {r.max_vector}")
    return _parse_tree(r.fixed(n), r.max_vector)


def read_ratchet_tree_slow(r: Reader) -> list[Node | None]:
    """Reference decoder built from the generic struct decoders (used to test `_parse_tree`)."""
    return r.vector(_r_opt_node_slow)


def encode_ratchet_tree(nodes: Sequence[Node | None]) -> bytes:
    """The ratchet_tree extension body (RFC 9420 section 12.4.3.3), in array order."""
    w = Writer()
    write_ratchet_tree(w, nodes)
    return w.getvalue()


def decode_ratchet_tree(data: bytes, max_vector: int = DEFAULT_MAX_VECTOR) -> list[Node | None]:
    """Parse a ratchet_tree extension body (RFC 9420 section 12.4.3.3).

    Only the encoding is checked here; structural rules (odd length, last node non-blank,
    leaves at even indices) are the ratchet tree's job.
    """
    return decode_with(read_ratchet_tree, data, max_vector)


# Fast ratchet-tree parser.  Works on one immutable bytes object with explicit bounds, so
# that a 50,000-leaf tree decodes without per-field method calls.  Every check of the
# generic path is repeated: truncation, minimal varints, vector limits, enum values.


def _trunc(pos: int) -> DecodeError:
    return DecodeError(f"truncated input at offset {pos}")


def _p_opaque(buf: bytes, pos: int, end: int, cap: int) -> tuple[bytes, int]:
    if pos >= end:
        raise _trunc(pos)
    b = buf[pos]
    prefix = b >> 6
    if prefix == 0:
        n = b
        pos += 1
    elif prefix == 1:
        if pos + 2 > end:
            raise _trunc(pos)
        n = ((b & 0x3F) << 8) | buf[pos + 1]
        if n < 0x40:
            raise DecodeError("variable-length integer is not minimally encoded")
        pos += 2
    elif prefix == 2:
        if pos + 4 > end:
            raise _trunc(pos)
        n = int.from_bytes(buf[pos : pos + 4], "big") & 0x3FFFFFFF
        if n < 0x4000:
            raise DecodeError("variable-length integer is not minimally encoded")
        pos += 4
    else:
        raise DecodeError("invalid variable-length integer prefix 0b11")
    if n > cap:
        raise OversizeError(f"vector of {n} bytes exceeds the limit of {cap}")
    stop = pos + n
    if stop > end:
        raise DecodeError(f"truncated vector: need {n} bytes at offset {pos}, have {end - pos}")
    return buf[pos:stop], stop


def _p_uints(data: bytes, size: int) -> tuple[int, ...]:
    if len(data) % size:
        raise DecodeError(f"truncated input: vector of {len(data)} bytes is not a whole number of uint{8 * size}")
    return struct.unpack(f">{len(data) // size}{'H' if size == 2 else 'I'}", data)


def _p_extensions(data: bytes, cap: int) -> tuple[Extension, ...]:
    if not data:
        return ()
    out: list[Extension] = []
    pos = 0
    end = len(data)
    while pos < end:
        if pos + 2 > end:
            raise _trunc(pos)
        t = (data[pos] << 8) | data[pos + 1]
        value, pos = _p_opaque(data, pos + 2, end, cap)
        out.append(Extension(t, value))
    return tuple(out)


#: slot setters of LeafNode in field order (with ``_raw`` last), to build parsed leaves
#: without the frozen dataclass ``__init__`` (which sets every field through object.__setattr__)
_LEAF_SETTERS: tuple[Callable[[object, object], None], ...] = ()
#: Lifetimes already decoded, by their 16 bytes (immutable values; bounded like _CAPS_CACHE)
_LIFETIMES: dict[bytes, Lifetime] = {}


def _slot_setters(cls: type, *names: str) -> tuple[Callable[[object, object], None], ...]:
    """The slot descriptors' setters of a frozen slotted dataclass, to build instances of
    parsed values without running ``__init__`` (which sets each field via object.__setattr__)."""
    out: list[Callable[[object, object], None]] = []
    for name in names:
        out.append(getattr(cls, name).__set__)
    return tuple(out)


def _leaf_setters() -> tuple[Callable[[object, object], None], ...]:
    global _LEAF_SETTERS
    if not _LEAF_SETTERS:
        names = [f.name for f in dataclass_fields(LeafNode)]
        assert names[-1] == "_raw"
        _LEAF_SETTERS = tuple(getattr(LeafNode, n).__set__ for n in names)
    return _LEAF_SETTERS


def _p_leaf(buf: bytes, pos: int, end: int, cap: int, caps_cache: dict[bytes, _CapsEntry]) -> tuple[LeafNode, int]:
    # Short vectors (length < 64, one header byte) are read inline, as are two-byte headers
    # of the signature; everything else goes through `_p_opaque`, which performs the full
    # set of checks (the inline paths check truncation, the limit and minimality the same way).
    leaf_start = pos
    if pos < end and (n := buf[pos]) < 0x40 and n <= cap and pos + 1 + n <= end:
        encryption_key = buf[pos + 1 : pos + 1 + n]
        pos += 1 + n
    else:
        encryption_key, pos = _p_opaque(buf, pos, end, cap)
    if pos < end and (n := buf[pos]) < 0x40 and n <= cap and pos + 1 + n <= end:
        signature_key = buf[pos + 1 : pos + 1 + n]
        pos += 1 + n
    else:
        signature_key, pos = _p_opaque(buf, pos, end, cap)
    if pos + 2 > end:
        raise _trunc(pos)
    ctype = (buf[pos] << 8) | buf[pos + 1]
    if ctype == 0:
        raise DecodeError("invalid credential_type value 0")
    pos += 2
    if pos < end and (n := buf[pos]) < 0x40 and n <= cap and pos + 1 + n <= end:
        ccontent = buf[pos + 1 : pos + 1 + n]
        pos += 1 + n
    else:
        ccontent, pos = _p_opaque(buf, pos, end, cap)
    if ctype == CredentialType.X509:
        _p_check_opaque_list(ccontent, cap)
    credential = _new_object(Credential)
    set_ctype, set_content = _CRED_SETTERS
    set_ctype(credential, ctype)
    set_content(credential, ccontent)
    # Capabilities: most leaves repeat the previous leaf's bytes; a parse is determined by the
    # bytes it reads, so an equal prefix parses to the same value (and length), and no inner
    # vector of an encoding within the limit exceeds the limit
    last = caps_cache.get(b"")
    if last is not None and len(last.raw) <= cap and pos + len(last.raw) <= end and buf.startswith(last.raw, pos):
        capabilities = last.value
        pos += len(last.raw)
    else:
        start = pos
        for _ in range(5):  # the five uint16 vectors, checked in order as the generic decoder does
            if pos < end and (n := buf[pos]) < 0x40 and n <= cap and pos + 1 + n <= end:
                pos += 1 + n
            else:
                body, pos = _p_opaque(buf, pos, end, cap)
                n = len(body)
            if n & 1:
                raise DecodeError(f"truncated input: a uint16 vector of {n} bytes at offset {pos - n}")
        raw_caps = buf[start:pos]
        cached = caps_cache.get(raw_caps)
        if cached is None:
            cached = caps_cache[raw_caps] = _CapsEntry(raw_caps, decode_with(Capabilities.decode, raw_caps, cap))
        caps_cache[b""] = cached
        capabilities = cached.value
    if pos >= end:
        raise _trunc(pos)
    src_value = buf[pos]
    pos += 1
    lifetime = None
    parent_hash = None
    if src_value == 1:
        if pos + 16 > end:
            raise _trunc(pos)
        raw_lt = buf[pos : pos + 16]
        lifetime = _LIFETIMES.get(raw_lt)
        if lifetime is None:
            lifetime = Lifetime(int.from_bytes(raw_lt[:8], "big"), int.from_bytes(raw_lt[8:], "big"))
            if len(_LIFETIMES) > 256:
                _LIFETIMES.clear()
            _LIFETIMES[raw_lt] = lifetime
        pos += 16
        src = LeafNodeSource.KEY_PACKAGE
    elif src_value == 2:
        src = LeafNodeSource.UPDATE
    elif src_value == 3:
        parent_hash, pos = _p_opaque(buf, pos, end, cap)
        src = LeafNodeSource.COMMIT
    else:
        raise DecodeError(f"invalid leaf_node_source value {src_value}")
    extensions, pos = _p_extensions_field(buf, pos, end, cap)
    signature, pos = _p_signature(buf, pos, end, cap)
    leaf = _new_object(LeafNode)
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9 = _LEAF_SETTERS or _leaf_setters()
    s0(leaf, encryption_key)
    s1(leaf, signature_key)
    s2(leaf, credential)
    s3(leaf, capabilities)
    s4(leaf, src)
    s5(leaf, lifetime)
    s6(leaf, parent_hash)
    s7(leaf, extensions)
    s8(leaf, signature)
    s9(leaf, buf[leaf_start:pos])
    return leaf, pos


_new_object = object.__new__
_CRED_SETTERS = _slot_setters(Credential, "credential_type", "content")


def _p_extensions_field(buf: bytes, pos: int, end: int, cap: int) -> tuple[tuple[Extension, ...], int]:
    """``Extension extensions<V>`` at ``buf[pos:]`` (an empty list is one zero byte)."""
    if pos < end and buf[pos] == 0:
        return (), pos + 1
    ext_data, pos = _p_opaque(buf, pos, end, cap)
    return _p_extensions(ext_data, cap), pos


def _p_signature(buf: bytes, pos: int, end: int, cap: int) -> tuple[bytes, int]:
    """``opaque signature<V>`` at ``buf[pos:]``, with the two-byte header of 64..16383 bytes
    (Ed25519: 64) read inline."""
    if pos + 1 < end and (b := buf[pos]) >> 6 == 1 and (n := ((b & 0x3F) << 8) | buf[pos + 1]) >= 0x40 and n <= cap:
        stop = pos + 2 + n
        if stop > end:
            raise DecodeError(f"truncated vector: need {n} bytes at offset {pos + 2}, have {end - pos - 2}")
        return buf[pos + 2 : stop], stop
    return _p_opaque(buf, pos, end, cap)


def _p_key_package(buf: bytes, start: int, end: int, cap: int) -> tuple[KeyPackage, int]:
    """A KeyPackage (RFC 9420 section 10) at ``buf[start:]``, with its encoding kept; the
    checks of the generic decoder (`KeyPackage.decode_slow`)."""
    if start + 4 > end:
        raise _trunc(start)
    version = (buf[start] << 8) | buf[start + 1]
    suite = (buf[start + 2] << 8) | buf[start + 3]
    pos = start + 4
    if pos < end and (n := buf[pos]) < 0x40 and n <= cap and pos + 1 + n <= end:
        init_key = buf[pos + 1 : pos + 1 + n]
        pos += 1 + n
    else:
        init_key, pos = _p_opaque(buf, pos, end, cap)
    leaf, pos = _p_leaf(buf, pos, end, cap, _CAPS_CACHE)
    extensions, pos = _p_extensions_field(buf, pos, end, cap)
    signature, pos = _p_signature(buf, pos, end, cap)
    if len(_CAPS_CACHE) > 256:
        _CAPS_CACHE.clear()
    kp = _new_object(KeyPackage)
    s0, s1, s2, s3, s4, s5, s6, s7 = _KP_SETTERS or _kp_setters()
    s0(kp, version)
    s1(kp, suite)
    s2(kp, init_key)
    s3(kp, leaf)
    s4(kp, extensions)
    s5(kp, signature)
    s6(kp, buf[start:pos])
    s7(kp, False)
    return kp, pos


_KP_SETTERS: tuple[Callable[[object, object], None], ...] = ()


def _kp_setters() -> tuple[Callable[[object, object], None], ...]:
    global _KP_SETTERS
    names = [f.name for f in dataclass_fields(KeyPackage)]
    assert names[-2:] == ["_raw", "_signatures_ok"]
    _KP_SETTERS = _slot_setters(KeyPackage, *names)
    return _KP_SETTERS


def _p_check_opaque_list(data: bytes, cap: int) -> None:
    pos = 0
    end = len(data)
    while pos < end:
        _, pos = _p_opaque(data, pos, end, cap)


def _parse_tree(buf: bytes, cap: int) -> list[Node | None]:
    out: list[Node | None] = []
    append = out.append
    caps_cache: dict[bytes, _CapsEntry] = {}
    pos = 0
    end = len(buf)
    while pos < end:
        present = buf[pos]
        if present == 0:
            append(None)
            pos += 1
            continue
        if present != 1:
            raise DecodeError(f"invalid optional presence byte {present}")
        if pos + 1 >= end:
            raise _trunc(pos + 1)
        node_type = buf[pos + 1]
        pos += 2
        if node_type == 1:
            leaf, pos = _p_leaf(buf, pos, end, cap, caps_cache)
            append(leaf)
        elif node_type == 2:
            key, pos = _p_opaque(buf, pos, end, cap)
            parent_hash, pos = _p_opaque(buf, pos, end, cap)
            unmerged, pos = _p_opaque(buf, pos, end, cap)
            append(ParentNode(key, parent_hash, _p_uints(unmerged, 4) if unmerged else ()))
        else:
            raise DecodeError(f"invalid node_type value {node_type}")
    return out


# ---------------------------------------------------------------------- update paths


@dataclass(frozen=True, slots=True)
class HPKECiphertext:
    """RFC 9420 section 7.6."""

    kem_output: bytes
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.kem_output)
        w.opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> HPKECiphertext:
        return cls(r.opaque(), r.opaque())

    @classmethod
    def many(cls, pairs: Iterable[tuple[bytes, bytes]]) -> tuple[HPKECiphertext, ...]:
        """``(kem_output, ciphertext)`` pairs as HPKECiphertext values."""
        return tuple(starmap(cls, pairs))


def _encode_ciphertexts(cts: Sequence[HPKECiphertext]) -> bytes:
    """The body of ``HPKECiphertext x<V>`` (RFC 9420 section 7.6), without per-field calls."""
    if isinstance(cts, CiphertextVector):
        return cts.body
    small = ONE_BYTE_VARINTS
    parts: list[bytes] = []
    append = parts.append
    for ct in cts:
        k = ct.kem_output
        c = ct.ciphertext
        lk = len(k)
        lc = len(c)
        append(small[lk] if lk < 0x40 else encode_varint(lk))
        append(k)
        append(small[lc] if lc < 0x40 else encode_varint(lc))
        append(c)
    return b"".join(parts)


def _parse_ciphertexts(buf: bytes, pos: int, end: int, cap: int) -> tuple[HPKECiphertext, ...]:
    """Parse the items of ``HPKECiphertext x<V>`` in ``buf[pos:end]`` (same checks as the
    generic decoder: each field an ``opaque<V>`` with a minimal varint within the limit)."""
    # objects are built through the slot setters: one allocation per ciphertext (a large
    # UpdatePath has one ciphertext per member, and every allocation counts towards GC)
    new = _new_object
    set_kem_output, set_ciphertext = _CT_SETTERS
    out: list[HPKECiphertext] = []
    append = out.append
    while pos < end:
        # inline fast path for one-byte length headers (fields shorter than 64 bytes)
        n = buf[pos]
        if n < 0x40 and n <= cap and pos + 1 + n <= end:
            kem_output = buf[pos + 1 : pos + 1 + n]
            pos += 1 + n
        else:
            kem_output, pos = _p_opaque(buf, pos, end, cap)
        if pos < end and (n := buf[pos]) < 0x40 and n <= cap and pos + 1 + n <= end:
            ciphertext = buf[pos + 1 : pos + 1 + n]
            pos += 1 + n
        else:
            ciphertext, pos = _p_opaque(buf, pos, end, cap)
        ct = new(HPKECiphertext)
        set_kem_output(ct, kem_output)
        set_ciphertext(ct, ciphertext)
        append(ct)
    return tuple(out)


_CT_SETTERS = _slot_setters(HPKECiphertext, "kem_output", "ciphertext")


def new_hpke_ciphertext(kem_output: bytes, ciphertext: bytes) -> HPKECiphertext:
    """``HPKECiphertext(kem_output, ciphertext)`` built through its slot setters (a frozen
    dataclass's ``__init__`` sets each field with ``object.__setattr__``: ~1.5x slower, and
    a commit creates one per recipient)."""
    ct = _new_object(HPKECiphertext)
    set_kem_output, set_ciphertext = _CT_SETTERS
    set_kem_output(ct, kem_output)
    set_ciphertext(ct, ciphertext)
    return ct


class CiphertextVector(Sequence[HPKECiphertext]):
    """The items of ``HPKECiphertext x<V>`` (RFC 9420 section 7.6) kept as their checked wire
    bytes and parsed on access.

    A receiver of an UpdatePath needs one ciphertext of each node, but a sparse commit at
    50,000 members carries ~50,000 of them: building an object per item was most of the time
    spent processing it.  Built only by `_read_ciphertexts` for the common layout in which
    every item has the same field lengths below 64 bytes (one-byte headers), after checking
    the whole layout at C speed; equal to (and hashing like) the tuple of its items.
    """

    __slots__ = ("_body", "_count", "_ct_len", "_kem_len", "_stride")

    def __init__(self, body: bytes, kem_len: int, ct_len: int) -> None:
        stride = 2 + kem_len + ct_len
        if not body or len(body) % stride:
            raise InvalidArgument("not a uniform HPKECiphertext vector")
        self._body = body
        self._count = len(body) // stride
        self._kem_len = kem_len
        self._ct_len = ct_len
        self._stride = stride

    @classmethod
    def parse(cls, body: bytes, cap: int) -> CiphertextVector | None:
        """The vector over ``body`` if every item has the first item's one-byte headers, else
        ``None`` (the caller then uses the item-by-item parser and its errors)."""
        if len(body) < 2:
            return None
        kem_len = body[0]
        if kem_len >= 0x40 or kem_len > cap or len(body) < 2 + kem_len:
            return None
        ct_len = body[1 + kem_len]
        if ct_len >= 0x40 or ct_len > cap:
            return None
        stride = 2 + kem_len + ct_len
        count, rest = divmod(len(body), stride)
        if rest or body[0::stride] != bytes((kem_len,)) * count:
            return None
        if body[1 + kem_len :: stride] != bytes((ct_len,)) * count:
            return None
        return cls(body, kem_len, ct_len)

    @property
    def body(self) -> bytes:
        """The encoded items (the vector without its length header)."""
        return self._body

    def __len__(self) -> int:
        return self._count

    def _item(self, i: int) -> HPKECiphertext:
        start = i * self._stride + 1
        mid = start + self._kem_len
        return new_hpke_ciphertext(self._body[start:mid], self._body[mid + 1 : mid + 1 + self._ct_len])

    @overload
    def __getitem__(self, index: int) -> HPKECiphertext: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[HPKECiphertext, ...]: ...

    def __getitem__(self, index: int | slice) -> HPKECiphertext | tuple[HPKECiphertext, ...]:
        if isinstance(index, slice):
            return tuple(self._item(i) for i in range(*index.indices(self._count)))
        i = index.__index__()
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError("ciphertext index out of range")
        return self._item(i)

    def __iter__(self) -> Iterator[HPKECiphertext]:
        return (self._item(i) for i in range(self._count))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CiphertextVector):
            return self._body == other._body
        if isinstance(other, (tuple, list)):
            return len(other) == self._count and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"CiphertextVector({self._count} items)"


def _read_ciphertexts(r: Reader) -> Sequence[HPKECiphertext]:
    """Read ``HPKECiphertext x<V>`` (RFC 9420 section 7.6) with the specialised parser
    (a lazy `CiphertextVector` when the layout is uniform)."""
    buf, pos, end = r.view()
    cap = r.max_vector
    body, stop = _p_opaque(buf, pos, end, cap)
    r.seek(stop)
    lazy = CiphertextVector.parse(body, cap)
    if lazy is not None:
        return lazy
    return _parse_ciphertexts(body, 0, len(body), cap)


@dataclass(frozen=True, slots=True)
class UpdatePathNode:
    """RFC 9420 section 7.6."""

    encryption_key: bytes
    encrypted_path_secret: Sequence[HPKECiphertext]

    def encode(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.opaque(_encode_ciphertexts(self.encrypted_path_secret))

    @classmethod
    def decode(cls, r: Reader) -> UpdatePathNode:
        return cls(r.opaque(), _read_ciphertexts(r))

    @classmethod
    def decode_slow(cls, r: Reader) -> UpdatePathNode:
        """Reference decoder from the generic field decoders (for the fuzz tests)."""
        return cls(r.opaque(), tuple(r.vector(HPKECiphertext.decode)))


@dataclass(frozen=True, slots=True)
class UpdatePath:
    """RFC 9420 section 7.6."""

    leaf_node: LeafNode
    nodes: tuple[UpdatePathNode, ...]

    def encode(self, w: Writer) -> None:
        self.leaf_node.encode(w)
        w.vector(self.nodes, _w_struct)

    @classmethod
    def decode(cls, r: Reader) -> UpdatePath:
        return cls(LeafNode.decode(r), tuple(r.vector(UpdatePathNode.decode)))


# ----------------------------------------------------------------------- key packages


@dataclass(frozen=True, slots=True)
class KeyPackage:
    """RFC 9420 section 10."""

    version: int
    cipher_suite: int
    init_key: bytes
    leaf_node: LeafNode
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""
    #: Cached encoding (the struct is immutable); filled by decoding or the first encode.
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False, hash=False)
    #: Set by `crdt_mls.mls.welcome.verify_key_package_signatures` once both signatures of
    #: this (immutable) value verified; they depend on nothing but the KeyPackage itself.
    _signatures_ok: bool = field(default=False, init=False, repr=False, compare=False, hash=False)

    def _encode_content(self, w: Writer) -> None:
        w.u16(self.version)
        w.u16(self.cipher_suite)
        w.opaque(self.init_key)
        self.leaf_node.encode(w)
        _w_extensions(w, self.extensions)

    def encode(self, w: Writer) -> None:
        w.fixed(self.to_bytes())

    def to_bytes(self) -> bytes:
        """The KeyPackage encoding (cached; for a decoded KeyPackage, the received bytes)."""
        raw = self._raw
        if raw is None:
            w = Writer()
            self._encode_content(w)
            w.opaque(self.signature)
            raw = w.getvalue()
            object.__setattr__(self, "_raw", raw)
        return raw

    @classmethod
    def decode(cls, r: Reader) -> KeyPackage:
        buf, start, end = r.view()
        kp, pos = _p_key_package(buf, start, end, r.max_vector)
        r.seek(pos)
        return kp

    @classmethod
    def decode_slow(cls, r: Reader) -> KeyPackage:
        """Reference decoder from the generic field decoders (for the fuzz tests)."""
        start = r.position
        kp = cls(r.u16(), r.u16(), r.opaque(), LeafNode.decode_slow(r), _r_extensions(r), r.opaque())
        object.__setattr__(kp, "_raw", r.slice_since(start))
        return kp

    def tbs(self) -> bytes:
        """KeyPackageTBS (RFC 9420 section 10): the encoding without the signature."""
        raw = self.to_bytes()
        return raw[: len(raw) - _vec_len(len(self.signature))]


# ----------------------------------------------------------------------- group context


@dataclass(frozen=True, slots=True)
class GroupContext:
    """RFC 9420 section 8.1."""

    version: int
    cipher_suite: int
    group_id: bytes
    epoch: int
    tree_hash: bytes
    confirmed_transcript_hash: bytes
    extensions: tuple[Extension, ...] = ()

    def encode(self, w: Writer) -> None:
        w.u16(self.version)
        w.u16(self.cipher_suite)
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.opaque(self.tree_hash)
        w.opaque(self.confirmed_transcript_hash)
        _w_extensions(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> GroupContext:
        return cls(r.u16(), r.u16(), r.opaque(), r.u64(), r.opaque(), r.opaque(), _r_extensions(r))

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.getvalue()


# ------------------------------------------------------------------------ external senders


@dataclass(frozen=True, slots=True)
class ExternalSender:
    """RFC 9420 section 12.1.8.1."""

    signature_key: bytes
    credential: Credential

    def encode(self, w: Writer) -> None:
        w.opaque(self.signature_key)
        self.credential.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> ExternalSender:
        return cls(r.opaque(), Credential.decode(r))


# -------------------------------------------------------------------------- proposals


@dataclass(frozen=True, slots=True)
class PreSharedKeyID:
    """RFC 9420 section 8.4.  External PSKs set ``psk_id``; resumption PSKs set ``usage``,
    ``psk_group_id`` and ``psk_epoch``."""

    psktype: PSKType
    psk_nonce: bytes
    psk_id: bytes | None = None
    usage: ResumptionPSKUsage | None = None
    psk_group_id: bytes | None = None
    psk_epoch: int | None = None

    @classmethod
    def external(cls, psk_id: bytes, psk_nonce: bytes) -> PreSharedKeyID:
        return cls(PSKType.EXTERNAL, psk_nonce, psk_id=psk_id)

    @classmethod
    def resumption(
        cls, usage: ResumptionPSKUsage, psk_group_id: bytes, psk_epoch: int, psk_nonce: bytes
    ) -> PreSharedKeyID:
        return cls(PSKType.RESUMPTION, psk_nonce, usage=usage, psk_group_id=psk_group_id, psk_epoch=psk_epoch)

    def encode(self, w: Writer) -> None:
        w.u8(self.psktype)
        if self.psktype == PSKType.EXTERNAL:
            if self.psk_id is None:
                raise InvalidArgument("external PreSharedKeyID needs psk_id")
            w.opaque(self.psk_id)
        elif self.psktype == PSKType.RESUMPTION:
            if self.usage is None or self.psk_group_id is None or self.psk_epoch is None:
                raise InvalidArgument("resumption PreSharedKeyID needs usage, psk_group_id and psk_epoch")
            w.u8(self.usage)
            w.opaque(self.psk_group_id)
            w.u64(self.psk_epoch)
        else:
            raise InvalidArgument(f"invalid psktype {self.psktype}")
        w.opaque(self.psk_nonce)

    @classmethod
    def decode(cls, r: Reader) -> PreSharedKeyID:
        t = _enum(PSKType, r.u8(), "psktype")
        if t == PSKType.EXTERNAL:
            psk_id = r.opaque()
            return cls(t, r.opaque(), psk_id=psk_id)
        usage = _enum(ResumptionPSKUsage, r.u8(), "resumption psk usage")
        group_id = r.opaque()
        epoch = r.u64()
        return cls(t, r.opaque(), usage=usage, psk_group_id=group_id, psk_epoch=epoch)


@dataclass(frozen=True, slots=True)
class Add:
    """RFC 9420 section 12.1.1."""

    proposal_type: ClassVar[int] = ProposalType.ADD
    key_package: KeyPackage

    def encode(self, w: Writer) -> None:
        self.key_package.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Add:
        return cls(KeyPackage.decode(r))


@dataclass(frozen=True, slots=True)
class Update:
    """RFC 9420 section 12.1.2."""

    proposal_type: ClassVar[int] = ProposalType.UPDATE
    leaf_node: LeafNode

    def encode(self, w: Writer) -> None:
        self.leaf_node.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Update:
        return cls(LeafNode.decode(r))


@dataclass(frozen=True, slots=True)
class Remove:
    """RFC 9420 section 12.1.3."""

    proposal_type: ClassVar[int] = ProposalType.REMOVE
    removed: int

    def encode(self, w: Writer) -> None:
        w.u32(self.removed)

    @classmethod
    def decode(cls, r: Reader) -> Remove:
        return cls(r.u32())


@dataclass(frozen=True, slots=True)
class PreSharedKey:
    """RFC 9420 section 12.1.4."""

    proposal_type: ClassVar[int] = ProposalType.PSK
    psk: PreSharedKeyID

    def encode(self, w: Writer) -> None:
        self.psk.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> PreSharedKey:
        return cls(PreSharedKeyID.decode(r))


@dataclass(frozen=True, slots=True)
class ReInit:
    """RFC 9420 section 12.1.5."""

    proposal_type: ClassVar[int] = ProposalType.REINIT
    group_id: bytes
    version: int
    cipher_suite: int
    extensions: tuple[Extension, ...] = ()

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.u16(self.version)
        w.u16(self.cipher_suite)
        _w_extensions(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> ReInit:
        return cls(r.opaque(), r.u16(), r.u16(), _r_extensions(r))


@dataclass(frozen=True, slots=True)
class ExternalInit:
    """RFC 9420 section 12.1.6."""

    proposal_type: ClassVar[int] = ProposalType.EXTERNAL_INIT
    kem_output: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.kem_output)

    @classmethod
    def decode(cls, r: Reader) -> ExternalInit:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class GroupContextExtensions:
    """RFC 9420 section 12.1.7."""

    proposal_type: ClassVar[int] = ProposalType.GROUP_CONTEXT_EXTENSIONS
    extensions: tuple[Extension, ...]

    def encode(self, w: Writer) -> None:
        _w_extensions(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> GroupContextExtensions:
        return cls(_r_extensions(r))


@dataclass(frozen=True, slots=True)
class UnknownProposal:
    """A proposal of a type this library does not define (RFC 9420 section 12.1.9), for
    encoding only: ``body`` is written verbatim after the type.  Its length is not on the
    wire, so `decode_proposal` cannot delimit an unknown type and raises `DecodeError`."""

    proposal_type: int
    body: bytes

    def encode(self, w: Writer) -> None:
        w.fixed(self.body)


#: ``struct { ProposalType proposal_type; select (proposal_type) {...} } Proposal``
#: (RFC 9420 section 12.1), as a union of the body classes; each has ``proposal_type``.
Proposal: TypeAlias = (
    Add | Update | Remove | PreSharedKey | ReInit | ExternalInit | GroupContextExtensions | UnknownProposal
)

_PROPOSAL_DECODERS: dict[
    int, type[Add | Update | Remove | PreSharedKey | ReInit | ExternalInit | GroupContextExtensions]
] = {
    ProposalType.ADD: Add,
    ProposalType.UPDATE: Update,
    ProposalType.REMOVE: Remove,
    ProposalType.PSK: PreSharedKey,
    ProposalType.REINIT: ReInit,
    ProposalType.EXTERNAL_INIT: ExternalInit,
    ProposalType.GROUP_CONTEXT_EXTENSIONS: GroupContextExtensions,
}


def encode_proposal(w: Writer, proposal: Proposal) -> None:
    """Encode a Proposal with its proposal_type tag (RFC 9420 section 12.1)."""
    w.u16(proposal.proposal_type)
    proposal.encode(w)


def decode_proposal(r: Reader) -> Proposal:
    """Decode a tagged Proposal (RFC 9420 section 12.1)."""
    t = r.u16()
    cls = _PROPOSAL_DECODERS.get(t)
    if cls is None:
        raise DecodeError(f"unsupported proposal_type {t} (its body cannot be delimited)")
    return cls.decode(r)


@dataclass(frozen=True, slots=True)
class ProposalRef:
    """``ProposalOrRef`` by reference: a ProposalRef hash (RFC 9420 sections 5.2, 12.4)."""

    reference: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.reference)

    @classmethod
    def decode(cls, r: Reader) -> ProposalRef:
        return cls(r.opaque())


#: RFC 9420 section 12.4: a proposal by value or by reference.
ProposalOrRef: TypeAlias = Proposal | ProposalRef


def encode_proposal_or_ref(w: Writer, p: ProposalOrRef) -> None:
    """RFC 9420 section 12.4."""
    if isinstance(p, ProposalRef):
        w.u8(ProposalOrRefType.REFERENCE)
        w.opaque(p.reference)
    else:
        w.u8(ProposalOrRefType.PROPOSAL)
        encode_proposal(w, p)


def decode_proposal_or_ref(r: Reader) -> ProposalOrRef:
    """RFC 9420 section 12.4."""
    t = r.u8()
    if t == ProposalOrRefType.PROPOSAL:
        return decode_proposal(r)
    if t == ProposalOrRefType.REFERENCE:
        return ProposalRef(r.opaque())
    raise DecodeError(f"invalid ProposalOrRefType value {t}")


_ADD_BY_VALUE = b"\x01" + ProposalType.ADD.to_bytes(2, "big")


def _encode_proposals(proposals: Sequence[ProposalOrRef]) -> bytes:
    """The body of ``ProposalOrRef proposals<V>`` (RFC 9420 section 12.4); Adds by value
    contribute their KeyPackage's cached encoding."""
    parts: list[bytes] = []
    for p in proposals:
        if isinstance(p, Add):
            parts.append(_ADD_BY_VALUE)
            parts.append(p.key_package.to_bytes())
        else:
            w = Writer()
            encode_proposal_or_ref(w, p)
            parts.append(w.getvalue())
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Commit:
    """RFC 9420 section 12.4."""

    proposals: tuple[ProposalOrRef, ...] = ()
    path: UpdatePath | None = None

    def encode(self, w: Writer) -> None:
        w.opaque(_encode_proposals(self.proposals))
        w.optional(self.path, _w_struct)

    @classmethod
    def decode(cls, r: Reader) -> Commit:
        return cls(tuple(r.vector(decode_proposal_or_ref)), r.optional(UpdatePath.decode))


# ------------------------------------------------------------------------------ framing


@dataclass(frozen=True, slots=True)
class Sender:
    """RFC 9420 section 6.  ``index`` is the leaf index of a member, the sender_index of an
    external sender, and None for new_member_proposal / new_member_commit."""

    sender_type: SenderType
    index: int | None = None

    @classmethod
    def member(cls, leaf_index: int) -> Sender:
        return cls(SenderType.MEMBER, leaf_index)

    @classmethod
    def external(cls, sender_index: int) -> Sender:
        return cls(SenderType.EXTERNAL, sender_index)

    @classmethod
    def new_member_proposal(cls) -> Sender:
        return cls(SenderType.NEW_MEMBER_PROPOSAL)

    @classmethod
    def new_member_commit(cls) -> Sender:
        return cls(SenderType.NEW_MEMBER_COMMIT)

    def encode(self, w: Writer) -> None:
        w.u8(self.sender_type)
        if self.sender_type in (SenderType.MEMBER, SenderType.EXTERNAL):
            if self.index is None:
                raise InvalidArgument(f"{self.sender_type.name.lower()} sender needs an index")
            w.u32(self.index)
        elif self.index is not None:
            raise InvalidArgument(f"{self.sender_type.name.lower()} sender has no index")

    @classmethod
    def decode(cls, r: Reader) -> Sender:
        t = _enum(SenderType, r.u8(), "sender_type")
        if t == SenderType.MEMBER or t == SenderType.EXTERNAL:
            return cls(t, r.u32())
        return cls(t)


#: The content of a FramedContent / PrivateMessageContent (RFC 9420 section 6):
#: ``bytes`` is application_data, otherwise a Proposal or a Commit.
Content: TypeAlias = bytes | Proposal | Commit


def content_type_of(content: Content) -> ContentType:
    """The ContentType of a content value (RFC 9420 section 6)."""
    if isinstance(content, bytes):
        return ContentType.APPLICATION
    if isinstance(content, Commit):
        return ContentType.COMMIT
    return ContentType.PROPOSAL


def _w_content(w: Writer, content: Content) -> None:
    if isinstance(content, bytes):
        w.opaque(content)
    elif isinstance(content, Commit):
        content.encode(w)
    else:
        encode_proposal(w, content)


def _r_content(r: Reader, t: ContentType) -> Content:
    if t == ContentType.APPLICATION:
        return r.opaque()
    if t == ContentType.PROPOSAL:
        return decode_proposal(r)
    return Commit.decode(r)


@dataclass(frozen=True, slots=True)
class FramedContent:
    """RFC 9420 section 6.  ``content_type`` is derived from ``content``."""

    group_id: bytes
    epoch: int
    sender: Sender
    authenticated_data: bytes
    content: Content
    #: Cached encoding (the struct is immutable): the received bytes of a decoded value, else
    #: filled by the first encode.  A commit's content is encoded for the signature, the
    #: membership tag, the transcript hash and the message itself: once.
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False, hash=False)

    @property
    def content_type(self) -> ContentType:
        return content_type_of(self.content)

    def encode(self, w: Writer) -> None:
        w.fixed(self.to_bytes())

    def to_bytes(self) -> bytes:
        """The FramedContent encoding (cached)."""
        raw = self._raw
        if raw is None:
            w = Writer()
            w.opaque(self.group_id)
            w.u64(self.epoch)
            self.sender.encode(w)
            w.opaque(self.authenticated_data)
            w.u8(self.content_type)
            _w_content(w, self.content)
            raw = w.getvalue()
            object.__setattr__(self, "_raw", raw)
        return raw

    @classmethod
    def decode(cls, r: Reader) -> FramedContent:
        start = r.position
        group_id = r.opaque()
        epoch = r.u64()
        sender = Sender.decode(r)
        aad = r.opaque()
        t = _enum(ContentType, r.u8(), "content_type")
        fc = cls(group_id, epoch, sender, aad, _r_content(r, t))
        object.__setattr__(fc, "_raw", r.slice_since(start))
        return fc


@dataclass(frozen=True, slots=True)
class FramedContentAuthData:
    """RFC 9420 section 6.1: ``confirmation_tag`` is present only for commits."""

    signature: bytes
    confirmation_tag: bytes | None = None

    def encode(self, w: Writer) -> None:
        w.opaque(self.signature)
        if self.confirmation_tag is not None:
            w.opaque(self.confirmation_tag)

    def check(self, content_type: ContentType) -> None:
        if (content_type == ContentType.COMMIT) != (self.confirmation_tag is not None):
            raise InvalidArgument("confirmation_tag must be present exactly for commit content")

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.getvalue()

    @classmethod
    def decode(cls, r: Reader, content_type: ContentType) -> FramedContentAuthData:
        signature = r.opaque()
        if content_type == ContentType.COMMIT:
            return cls(signature, r.opaque())
        return cls(signature)


def _w_tbs(w: Writer, wire_format: int, content: FramedContent, context: GroupContext | None) -> None:
    w.u16(MLS10)
    w.u16(wire_format)
    content.encode(w)
    if content.sender.sender_type in (SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT):
        if context is None:
            raise InvalidArgument("FramedContentTBS of a member/new_member_commit sender needs the GroupContext")
        context.encode(w)


def framed_content_tbs(wire_format: int, content: FramedContent, context: GroupContext | None) -> bytes:
    """FramedContentTBS (RFC 9420 section 6.1); the GroupContext is included for member and
    new_member_commit senders and ignored otherwise."""
    w = Writer()
    _w_tbs(w, wire_format, content, context)
    return w.getvalue()


@dataclass(frozen=True, slots=True)
class AuthenticatedContent:
    """RFC 9420 section 6.1."""

    wire_format: WireFormat
    content: FramedContent
    auth: FramedContentAuthData

    def encode(self, w: Writer) -> None:
        self.auth.check(self.content.content_type)
        w.u16(self.wire_format)
        self.content.encode(w)
        self.auth.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> AuthenticatedContent:
        wf = _enum(WireFormat, r.u16(), "wire_format")
        if wf not in (WireFormat.MLS_PUBLIC_MESSAGE, WireFormat.MLS_PRIVATE_MESSAGE):
            raise DecodeError(f"wire_format {wf.name.lower()} cannot frame content")
        content = FramedContent.decode(r)
        return cls(wf, content, FramedContentAuthData.decode(r, content.content_type))

    def tbs(self, context: GroupContext | None) -> bytes:
        """FramedContentTBS of this content (RFC 9420 section 6.1)."""
        return framed_content_tbs(self.wire_format, self.content, context)


def authenticated_content_tbm(content: AuthenticatedContent, context: GroupContext | None) -> bytes:
    """AuthenticatedContentTBM, the membership-tag input (RFC 9420 section 6.2)."""
    content.auth.check(content.content.content_type)
    w = Writer()
    _w_tbs(w, content.wire_format, content.content, context)
    content.auth.encode(w)
    return w.getvalue()


def confirmed_transcript_hash_input(content: AuthenticatedContent) -> bytes:
    """ConfirmedTranscriptHashInput (RFC 9420 section 8.2): wire_format, content, signature."""
    w = Writer()
    w.u16(content.wire_format)
    content.content.encode(w)
    w.opaque(content.auth.signature)
    return w.getvalue()


def interim_transcript_hash_input(confirmation_tag: bytes) -> bytes:
    """InterimTranscriptHashInput (RFC 9420 section 8.2)."""
    w = Writer()
    w.opaque(confirmation_tag)
    return w.getvalue()


@dataclass(frozen=True, slots=True)
class PublicMessage:
    """RFC 9420 section 6.2: ``membership_tag`` is present only for member senders."""

    content: FramedContent
    auth: FramedContentAuthData
    membership_tag: bytes | None = None

    def encode(self, w: Writer) -> None:
        self.auth.check(self.content.content_type)
        is_member = self.content.sender.sender_type == SenderType.MEMBER
        if is_member != (self.membership_tag is not None):
            raise InvalidArgument("membership_tag must be present exactly for member senders")
        self.content.encode(w)
        self.auth.encode(w)
        if self.membership_tag is not None:
            w.opaque(self.membership_tag)

    @classmethod
    def decode(cls, r: Reader) -> PublicMessage:
        content = FramedContent.decode(r)
        auth = FramedContentAuthData.decode(r, content.content_type)
        tag = r.opaque() if content.sender.sender_type == SenderType.MEMBER else None
        return cls(content, auth, tag)

    def authenticated_content(self) -> AuthenticatedContent:
        return AuthenticatedContent(WireFormat.MLS_PUBLIC_MESSAGE, self.content, self.auth)


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """RFC 9420 section 6.3."""

    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes
    encrypted_sender_data: bytes
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.u8(self.content_type)
        w.opaque(self.authenticated_data)
        w.opaque(self.encrypted_sender_data)
        w.opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> PrivateMessage:
        group_id = r.opaque()
        epoch = r.u64()
        t = _enum(ContentType, r.u8(), "content_type")
        return cls(group_id, epoch, t, r.opaque(), r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class PrivateMessageContent:
    """RFC 9420 section 6.3.1: content, auth and ``padding`` zero bytes.  Decoding consumes
    the rest of the reader as padding and rejects any non-zero byte in it."""

    content: Content
    auth: FramedContentAuthData
    padding: int = 0

    @property
    def content_type(self) -> ContentType:
        return content_type_of(self.content)

    def encode(self, w: Writer) -> None:
        self.auth.check(self.content_type)
        if self.padding < 0:
            raise InvalidArgument("negative padding")
        _w_content(w, self.content)
        self.auth.encode(w)
        w.fixed(bytes(self.padding))

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.getvalue()

    @classmethod
    def decode(cls, r: Reader, content_type: ContentType) -> PrivateMessageContent:
        content = _r_content(r, content_type)
        auth = FramedContentAuthData.decode(r, content_type)
        pad = r.fixed(r.remaining())
        if pad.count(0) != len(pad):
            raise DecodeError("PrivateMessageContent padding contains a non-zero byte")
        return cls(content, auth, len(pad))

    @classmethod
    def decode_application(cls, data: bytes, cap: int = DEFAULT_MAX_VECTOR) -> PrivateMessageContent:
        """`decode` of application data filling ``data`` (every received message): the same
        checks without a Reader -- ``opaque application_data<V>``, ``opaque signature<V>``,
        then zero padding."""
        content, pos = _p_opaque(data, 0, len(data), cap)
        signature, pos = _p_opaque(data, pos, len(data), cap)
        pad = data[pos:]
        if pad.count(0) != len(pad):
            raise DecodeError("PrivateMessageContent padding contains a non-zero byte")
        return cls(content, FramedContentAuthData(signature), len(pad))


@dataclass(frozen=True, slots=True)
class SenderData:
    """RFC 9420 section 6.3.2."""

    leaf_index: int
    generation: int
    reuse_guard: bytes

    def encode(self, w: Writer) -> None:
        if len(self.reuse_guard) != 4:
            raise InvalidArgument("reuse_guard must be 4 bytes")
        w.u32(self.leaf_index)
        w.u32(self.generation)
        w.fixed(self.reuse_guard)

    @classmethod
    def decode(cls, r: Reader) -> SenderData:
        return cls(r.u32(), r.u32(), r.fixed(4))


@dataclass(frozen=True, slots=True)
class SenderDataAAD:
    """RFC 9420 section 6.3.2."""

    group_id: bytes
    epoch: int
    content_type: ContentType

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.u8(self.content_type)

    @classmethod
    def decode(cls, r: Reader) -> SenderDataAAD:
        return cls(r.opaque(), r.u64(), _enum(ContentType, r.u8(), "content_type"))


@dataclass(frozen=True, slots=True)
class PrivateContentAAD:
    """RFC 9420 section 6.3.1."""

    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.u8(self.content_type)
        w.opaque(self.authenticated_data)

    @classmethod
    def decode(cls, r: Reader) -> PrivateContentAAD:
        return cls(r.opaque(), r.u64(), _enum(ContentType, r.u8(), "content_type"), r.opaque())


# ----------------------------------------------------------------------------- welcome


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """RFC 9420 section 12.4.3."""

    group_context: GroupContext
    extensions: tuple[Extension, ...]
    confirmation_tag: bytes
    signer: int
    signature: bytes = b""

    def _encode_content(self, w: Writer) -> None:
        self.group_context.encode(w)
        _w_extensions(w, self.extensions)
        w.opaque(self.confirmation_tag)
        w.u32(self.signer)

    def encode(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> GroupInfo:
        return cls(GroupContext.decode(r), _r_extensions(r), r.opaque(), r.u32(), r.opaque())

    def tbs(self) -> bytes:
        """GroupInfoTBS (RFC 9420 section 12.4.3)."""
        w = Writer()
        self._encode_content(w)
        return w.getvalue()


@dataclass(frozen=True, slots=True)
class PathSecret:
    """RFC 9420 section 12.4.3.1."""

    path_secret: bytes = field(repr=False)

    def encode(self, w: Writer) -> None:
        w.opaque(self.path_secret)

    @classmethod
    def decode(cls, r: Reader) -> PathSecret:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class GroupSecrets:
    """RFC 9420 section 12.4.3.1 (``path_secret`` is the optional PathSecret's value)."""

    joiner_secret: bytes = field(repr=False)
    path_secret: bytes | None = field(default=None, repr=False)
    psks: tuple[PreSharedKeyID, ...] = ()

    def encode(self, w: Writer) -> None:
        w.opaque(self.joiner_secret)
        w.optional(self.path_secret, _w_opaque)
        w.vector(self.psks, _w_struct)

    @classmethod
    def decode(cls, r: Reader) -> GroupSecrets:
        return cls(r.opaque(), r.optional(_r_opaque), tuple(r.vector(PreSharedKeyID.decode)))


@dataclass(frozen=True, slots=True)
class EncryptedGroupSecrets:
    """RFC 9420 section 12.4.3.1."""

    new_member: bytes
    encrypted_group_secrets: HPKECiphertext

    def encode(self, w: Writer) -> None:
        w.opaque(self.new_member)
        self.encrypted_group_secrets.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> EncryptedGroupSecrets:
        return cls(r.opaque(), HPKECiphertext.decode(r))


def _encode_group_secrets_list(secrets: Sequence[EncryptedGroupSecrets]) -> bytes:
    """The body of ``EncryptedGroupSecrets secrets<V>`` (RFC 9420 section 12.4.3.1)."""
    small = ONE_BYTE_VARINTS
    parts: list[bytes] = []
    append = parts.append
    for e in secrets:
        ref = e.new_member
        ct = e.encrypted_group_secrets
        for field_bytes in (ref, ct.kem_output, ct.ciphertext):
            n = len(field_bytes)
            append(small[n] if n < 0x40 else encode_varint(n))
            append(field_bytes)
    return b"".join(parts)


def _read_group_secrets_list(r: Reader, only: bytes | None = None) -> tuple[EncryptedGroupSecrets, ...]:
    """Read ``EncryptedGroupSecrets secrets<V>`` with a specialised parser (the checks of
    the generic decoder: three ``opaque<V>`` per item, minimal varints, the vector limit).
    With ``only``, every entry is checked but only those for KeyPackageRef ``only`` are kept."""
    buf, pos, end = r.view()
    cap = r.max_vector
    body, stop = _p_opaque(buf, pos, end, cap)
    r.seek(stop)
    new = _new_object
    set_kem_output, set_ciphertext = _CT_SETTERS
    set_new_member, set_secrets = _EGS_SETTERS
    out: list[EncryptedGroupSecrets] = []
    pos, end = 0, len(body)
    while pos < end:
        ref, pos = _p_opaque(body, pos, end, cap)
        kem_output, pos = _p_opaque(body, pos, end, cap)
        ciphertext, pos = _p_opaque(body, pos, end, cap)
        if only is not None and ref != only:
            continue
        ct = new(HPKECiphertext)
        set_kem_output(ct, kem_output)
        set_ciphertext(ct, ciphertext)
        entry = new(EncryptedGroupSecrets)
        set_new_member(entry, ref)
        set_secrets(entry, ct)
        out.append(entry)
    return tuple(out)


_EGS_SETTERS = _slot_setters(EncryptedGroupSecrets, "new_member", "encrypted_group_secrets")


def welcome_for_member(data: bytes, new_member: bytes) -> Welcome | None:
    """Decode MLSMessage bytes holding a Welcome (RFC 9420 sections 6, 12.4.3.1) keeping only
    the EncryptedGroupSecrets for KeyPackageRef ``new_member`` (a joiner needs no other: a
    Welcome of 50,000 members then costs no 100,000 objects).  The whole encoding is checked
    as `MLSMessage.from_bytes` checks it.  None if ``data`` does not start with the mls10
    mls_welcome header (use `MLSMessage.from_bytes` then)."""
    if not isinstance(data, bytes) or data[:4] != _WELCOME_HEADER:
        return None
    r = Reader(data)
    r.seek(4)
    welcome = Welcome(r.u16(), _read_group_secrets_list(r, only=new_member), r.opaque())
    r.finish()
    return welcome


@dataclass(frozen=True, slots=True)
class Welcome:
    """RFC 9420 section 12.4.3.1."""

    cipher_suite: int
    secrets: tuple[EncryptedGroupSecrets, ...]
    encrypted_group_info: bytes

    def encode(self, w: Writer) -> None:
        w.u16(self.cipher_suite)
        w.opaque(_encode_group_secrets_list(self.secrets))
        w.opaque(self.encrypted_group_info)

    @classmethod
    def decode(cls, r: Reader) -> Welcome:
        return cls(r.u16(), _read_group_secrets_list(r), r.opaque())

    @classmethod
    def decode_slow(cls, r: Reader) -> Welcome:
        """Reference decoder from the generic field decoders (for the fuzz tests)."""
        return cls(r.u16(), tuple(r.vector(EncryptedGroupSecrets.decode)), r.opaque())


# ----------------------------------------------------------------------------- MLSMessage

MLSMessageBody: TypeAlias = PublicMessage | PrivateMessage | Welcome | GroupInfo | KeyPackage

_BODY_FORMAT: dict[type, WireFormat] = {
    PublicMessage: WireFormat.MLS_PUBLIC_MESSAGE,
    PrivateMessage: WireFormat.MLS_PRIVATE_MESSAGE,
    Welcome: WireFormat.MLS_WELCOME,
    GroupInfo: WireFormat.MLS_GROUP_INFO,
    KeyPackage: WireFormat.MLS_KEY_PACKAGE,
}
_FORMAT_BODY: dict[int, type[MLSMessageBody]] = {v: k for k, v in _BODY_FORMAT.items()}
_KEY_PACKAGE_HEADER = MLS10.to_bytes(2, "big") + WireFormat.MLS_KEY_PACKAGE.to_bytes(2, "big")
_PRIVATE_MESSAGE_HEADER = MLS10.to_bytes(2, "big") + WireFormat.MLS_PRIVATE_MESSAGE.to_bytes(2, "big")


def _p_private_message(buf: bytes, pos: int, end: int, cap: int) -> PrivateMessage:
    """A PrivateMessage (RFC 9420 section 6.3) filling ``buf[pos:end]`` exactly: the checks of
    `PrivateMessage.decode` plus the no-trailing-bytes check of `decode_with`."""
    group_id, pos = _p_opaque(buf, pos, end, cap)
    if pos + 9 > end:
        raise _trunc(pos)
    epoch = int.from_bytes(buf[pos : pos + 8], "big")
    content_type = _enum(ContentType, buf[pos + 8], "content_type")
    aad, pos = _p_opaque(buf, pos + 9, end, cap)
    sender_data, pos = _p_opaque(buf, pos, end, cap)
    ciphertext, pos = _p_opaque(buf, pos, end, cap)
    if pos != end:
        raise DecodeError(f"{end - pos} trailing bytes after the encoded value")
    return PrivateMessage(group_id, epoch, content_type, aad, sender_data, ciphertext)


_WELCOME_HEADER = MLS10.to_bytes(2, "big") + WireFormat.MLS_WELCOME.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class MLSMessage:
    """RFC 9420 section 6: version mls10, wire_format derived from the body's class."""

    body: MLSMessageBody

    @property
    def version(self) -> int:
        return MLS10

    @property
    def wire_format(self) -> WireFormat:
        wf = _BODY_FORMAT.get(type(self.body))
        if wf is None:
            raise InvalidArgument(f"{type(self.body).__name__} cannot be the body of an MLSMessage")
        return wf

    def encode(self, w: Writer) -> None:
        w.u16(MLS10)
        w.u16(self.wire_format)
        self.body.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> MLSMessage:
        version = r.u16()
        if version != MLS10:
            raise DecodeError(f"unsupported protocol version {version}")
        wf = r.u16()
        body_cls = _FORMAT_BODY.get(wf)
        if body_cls is None:
            raise DecodeError(f"invalid wire_format value {wf}")
        return cls(body_cls.decode(r))

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> MLSMessage:
        if data[:4] == _KEY_PACKAGE_HEADER and isinstance(data, bytes):
            # published KeyPackages (an add-all commit parses one per member): no Reader
            kp, pos = _p_key_package(data, 4, len(data), DEFAULT_MAX_VECTOR)
            if pos != len(data):
                raise DecodeError(f"{len(data) - pos} trailing bytes after the encoded value")
            return cls(kp)
        if data[:4] == _PRIVATE_MESSAGE_HEADER and isinstance(data, bytes):
            # every application message: the six fields read without a Reader (same checks)
            return cls(_p_private_message(data, 4, len(data), DEFAULT_MAX_VECTOR))
        return decode_with(cls.decode, data)
