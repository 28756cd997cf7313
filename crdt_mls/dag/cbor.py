"""A fast, strict DAG-CBOR codec for the value types operation nodes use.

DAG-CBOR (https://ipld.io/specs/codecs/dag-cbor/spec/) is CBOR (RFC 8949) restricted to
one canonical form: shortest integer and length heads, definite lengths only, map keys
are text strings sorted length-first then bytewise (no duplicates), the only tag is 42
(a CID link: byte string ``0x00 || binary CID``), and the only simple values are
``false``, ``true`` and ``null``.  This module additionally rejects floats (no node field
is a float), so the supported values are::

    None | bool | int | bytes | str | list[Value] | dict[str, Value] | Link

:func:`encode` produces exactly the bytes of ``dag_cbor.encode`` for these values and
:func:`decode` accepts exactly the canonical encodings (proved by the Hypothesis tests
in ``tests/unit/test_dag_cbor.py``), at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from crdt_mls.dag.cid import parse_cid
from crdt_mls.errors import DecodeError, InvalidArgument, OversizeError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "Link",
    "Value",
    "decode",
    "encode",
    "encode_bytes_head",
    "encode_link",
    "encode_text",
    "encode_uint",
    "head",
]

DEFAULT_MAX_DEPTH = 32  #: nesting limit of :func:`decode` (nodes need 2)

_U64 = 1 << 64


@dataclass(frozen=True, slots=True)
class Link:
    """An IPLD link (CBOR tag 42) to the block with binary CIDv1 ``cid``."""

    cid: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.cid, bytes):
            raise InvalidArgument(f"Link.cid must be bytes, not {type(self.cid).__name__}")


Value: TypeAlias = "bool | int | bytes | str | list[Value] | dict[str, Value] | Link | None"


# ------------------------------------------------------------------------------- encoding

_SMALL_HEADS: tuple[tuple[bytes, ...], ...] = tuple(
    tuple(bytes([(major << 5) | n]) for n in range(24)) for major in range(8)
)


def head(major: int, n: int) -> bytes:
    """Return the shortest CBOR data item head for major type ``major`` and argument ``n``."""
    if n < 0:
        raise InvalidArgument("CBOR head argument must be non-negative")
    if n < 24:
        return _SMALL_HEADS[major][n]
    mt = major << 5
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((mt | 26,)) + n.to_bytes(4, "big")
    if n < _U64:
        return bytes((mt | 27,)) + n.to_bytes(8, "big")
    raise InvalidArgument("integer or length out of the 64-bit CBOR range")


def encode_uint(n: int) -> bytes:
    """Encode a non-negative integer (major type 0)."""
    return head(0, n)


def encode_bytes_head(n: int) -> bytes:
    """Return the head of a byte string of length ``n`` (major type 2)."""
    return head(2, n)


def encode_text(s: str) -> bytes:
    """Encode a text string (major type 3)."""
    try:
        b = s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument("text string is not encodable as UTF-8") from exc
    return head(3, len(b)) + b


_TAG42 = b"\xd8\x2a"


def encode_link(cid: bytes) -> bytes:
    """Encode a CID link: tag 42 around the byte string ``0x00 || cid``."""
    return _TAG42 + head(2, len(cid) + 1) + b"\x00" + cid


def _key_bytes(k: object) -> bytes:
    if not isinstance(k, str):
        raise InvalidArgument(f"DAG-CBOR map keys must be str, not {type(k).__name__}")
    try:
        return k.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument("map key is not encodable as UTF-8") from exc


def _enc(v: object, out: list[bytes], depth: int) -> None:
    t = type(v)
    if t is bytes:
        assert isinstance(v, bytes)
        out.append(head(2, len(v)))
        out.append(v)
    elif t is int:
        assert isinstance(v, int)
        if v >= 0:
            out.append(head(0, v))
        else:
            out.append(head(1, -1 - v))
    elif t is str:
        assert isinstance(v, str)
        out.append(encode_text(v))
    elif t is bool:
        out.append(b"\xf5" if v else b"\xf4")
    elif v is None:
        out.append(b"\xf6")
    elif t is Link:
        assert isinstance(v, Link)
        try:
            parse_cid(v.cid)
        except DecodeError as exc:
            raise InvalidArgument(f"invalid CID in link: {exc}") from None
        out.append(encode_link(v.cid))
    elif t is list or t is tuple:
        assert isinstance(v, (list, tuple))
        if depth <= 0:
            raise InvalidArgument("value nested too deeply")
        out.append(head(4, len(v)))
        for item in v:
            _enc(item, out, depth - 1)
    elif t is dict:
        assert isinstance(v, dict)
        if depth <= 0:
            raise InvalidArgument("value nested too deeply")
        out.append(head(5, len(v)))
        items = sorted(((_key_bytes(k), val) for k, val in v.items()), key=lambda kv: (len(kv[0]), kv[0]))
        for kb, val in items:
            out.append(head(3, len(kb)))
            out.append(kb)
            _enc(val, out, depth - 1)
    elif isinstance(v, (bytearray, memoryview)):
        _enc(bytes(v), out, depth)
    elif isinstance(v, bool):  # pragma: no cover - bool cannot be subclassed
        _enc(bool(v), out, depth)
    elif isinstance(v, int):  # IntEnum and other int subclasses
        _enc(int(v), out, depth)
    elif isinstance(v, str):  # StrEnum and other str subclasses
        _enc(str(v), out, depth)
    else:
        raise InvalidArgument(f"type {t.__name__} cannot be encoded as node DAG-CBOR")


def encode(value: Value, *, max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """Encode ``value`` as canonical DAG-CBOR; raise :class:`InvalidArgument` if unsupported.

    Tuples are encoded as lists; ``bytearray``/``memoryview`` as byte strings.
    """
    out: list[bytes] = []
    try:
        _enc(value, out, max_depth)
    except (RecursionError, OverflowError) as exc:
        raise InvalidArgument("value cannot be encoded (too deep or too large)") from exc
    return b"".join(out)


# ------------------------------------------------------------------------------- decoding


class _Decoder:
    __slots__ = ("data", "n", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = len(data)
        self.pos = 0

    def fail(self, msg: str) -> DecodeError:
        return DecodeError(f"DAG-CBOR: {msg} at byte {self.pos}")

    def head(self) -> tuple[int, int]:
        """Read a data item head; return (major, argument).  Enforces shortest form."""
        if self.pos >= self.n:
            raise self.fail("truncated input")
        ib = self.data[self.pos]
        self.pos += 1
        major = ib >> 5
        ai = ib & 0x1F
        if ai < 24:
            return major, ai
        if major == 7:
            if ai in (25, 26, 27):
                raise self.fail("floats are not allowed")
            raise self.fail(f"simple value / break 0x{ib:02x} not allowed")
        if ai == 31:
            raise self.fail("indefinite lengths are not allowed")
        if ai > 27:
            raise self.fail(f"reserved additional information {ai}")
        size = 1 << (ai - 24)
        end = self.pos + size
        if end > self.n:
            raise self.fail("truncated head")
        arg = int.from_bytes(self.data[self.pos : end], "big")
        self.pos = end
        if arg < (24 if size == 1 else 1 << (4 * size)):
            raise self.fail("non-minimal integer or length encoding")
        return major, arg

    def take(self, length: int) -> bytes:
        end = self.pos + length
        if end > self.n:
            raise self.fail(f"truncated string of length {length}")
        b = self.data[self.pos : end]
        self.pos = end
        return b

    def text(self, length: int) -> str:
        raw = self.take(length)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("text string is not valid UTF-8") from None

    def item(self, depth: int) -> Value:
        major, arg = self.head()
        if major == 0:
            return arg
        if major == 2:
            return self.take(arg)
        if major == 3:
            return self.text(arg)
        if major == 1:
            return -1 - arg
        if major == 4:
            if depth <= 0:
                raise self.fail("nested too deeply")
            if arg > self.n - self.pos:
                raise self.fail("array longer than input")
            return [self.item(depth - 1) for _ in range(arg)]
        if major == 5:
            if depth <= 0:
                raise self.fail("nested too deeply")
            if arg > self.n - self.pos:
                raise self.fail("map longer than input")
            result: dict[str, Value] = {}
            prev: bytes | None = None
            for _ in range(arg):
                kmajor, klen = self.head()
                if kmajor != 3:
                    raise self.fail("map key is not a text string")
                kstart = self.pos
                key = self.text(klen)
                kb = self.data[kstart : self.pos]
                if prev is not None and (len(kb) < len(prev) or (len(kb) == len(prev) and kb <= prev)):
                    if kb == prev:
                        raise self.fail("duplicate map key")
                    raise self.fail("map keys not in canonical order")
                prev = kb
                result[key] = self.item(depth - 1)
            return result
        if major == 6:
            if arg != 42:
                raise self.fail(f"tag {arg} not allowed (only 42)")
            bmajor, blen = self.head()
            if bmajor != 2:
                raise self.fail("tag 42 must wrap a byte string")
            raw = self.take(blen)
            if not raw or raw[0] != 0:
                raise self.fail("CID link must start with the 0x00 multibase prefix")
            cid = raw[1:]
            parse_cid(cid)
            return Link(cid)
        # major 7 with ai < 24
        if arg == 20:
            return False
        if arg == 21:
            return True
        if arg == 22:
            return None
        raise self.fail(f"simple value {arg} not allowed")


def decode(data: bytes, *, max_size: int | None = None, max_depth: int = DEFAULT_MAX_DEPTH) -> Value:
    """Decode one canonical DAG-CBOR item; raise :class:`DecodeError` on any deviation.

    Rejects trailing bytes, non-shortest heads, indefinite lengths, floats, tags other
    than 42, invalid CIDs, unsorted or duplicate map keys, non-text keys and invalid
    UTF-8.  Inputs longer than ``max_size`` raise :class:`OversizeError`.
    """
    if not isinstance(data, bytes):
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        else:
            raise InvalidArgument(f"DAG-CBOR input must be bytes, not {type(data).__name__}")
    if max_size is not None and len(data) > max_size:
        raise OversizeError(f"DAG-CBOR input of {len(data)} bytes exceeds the limit of {max_size}")
    d = _Decoder(data)
    try:
        value = d.item(max_depth)
    except RecursionError:
        raise DecodeError("DAG-CBOR: nested too deeply") from None
    if d.pos != d.n:
        raise DecodeError(f"DAG-CBOR: {d.n - d.pos} trailing bytes after the item")
    return value
