"""TLS presentation language codec (RFC 9420 section 2.1, RFC 8446 section 3).

`Reader` decodes from a bytes buffer and raises `DecodeError` on truncation, trailing
bytes, non-minimal variable-length headers and out-of-range values.  `Writer` appends to
a bytearray.  Structs implement the `Encodable` protocol: ``encode(w)`` and a classmethod
``decode(r)``; `encode` and `decode` convert whole values to and from bytes.

Variable-size vectors (``opaque x<V>``) use the QUIC-style varint of RFC 9420
section 2.1.2: 1, 2 or 4 bytes, prefix ``0b11`` invalid, minimal length required.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from crdt_mls.errors import DecodeError, InvalidArgument, OversizeError

T = TypeVar("T")
E = TypeVar("E", bound="Encodable")

MAX_VARINT = (1 << 30) - 1
#: Default ceiling for a single decoded vector; callers may pass a lower one.
DEFAULT_MAX_VECTOR = 1 << 28


class Encodable(Protocol):
    """A TLS-encodable struct."""

    def encode(self, w: Writer) -> None: ...

    @classmethod
    def decode(cls: type[E], r: Reader) -> E: ...


class Reader:
    """Cursor over an immutable buffer (RFC 9420 section 2.1)."""

    __slots__ = ("_buf", "_end", "_pos", "max_vector")

    def __init__(self, data: bytes | bytearray | memoryview, max_vector: int = DEFAULT_MAX_VECTOR):
        self._buf = bytes(data)
        self._pos = 0
        self._end = len(self._buf)
        self.max_vector = max_vector

    # -- raw access -------------------------------------------------------------------------
    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return self._end - self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def fixed(self, n: int) -> bytes:
        """Read exactly ``n`` bytes (``opaque x[n]``)."""
        if n < 0 or self._pos + n > self._end:
            raise DecodeError(f"truncated input: need {n} bytes at offset {self._pos}, have {self.remaining()}")
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def view(self) -> tuple[bytes, int, int]:
        """``(buffer, position, end)`` for a specialised parser, which reports back with `seek`."""
        return self._buf, self._pos, self._end

    def seek(self, pos: int) -> None:
        """Move to ``pos`` (between the current position and the end), after a specialised parse."""
        if not self._pos <= pos <= self._end:
            raise DecodeError(f"cannot move to offset {pos} of a reader at {self._pos}..{self._end}")
        self._pos = pos

    def slice_since(self, start: int) -> bytes:
        """The raw bytes consumed from ``start`` to the current position."""
        return self._buf[start : self._pos]

    def finish(self) -> None:
        """Raise `DecodeError` if bytes are left over."""
        if self._pos != self._end:
            raise DecodeError(f"{self._end - self._pos} trailing bytes after the encoded value")

    # -- integers ---------------------------------------------------------------------------
    def uint(self, size: int) -> int:
        return int.from_bytes(self.fixed(size), "big")

    def u8(self) -> int:
        if self._pos >= self._end:
            raise DecodeError(f"truncated input: need 1 byte at offset {self._pos}")
        b = self._buf[self._pos]
        self._pos += 1
        return b

    def u16(self) -> int:
        return self.uint(2)

    def u32(self) -> int:
        return self.uint(4)

    def u64(self) -> int:
        return self.uint(8)

    def boolean(self) -> bool:
        v = self.u8()
        if v > 1:
            raise DecodeError(f"invalid boolean value {v}")
        return v == 1

    def varint(self) -> int:
        """Variable-length integer header (RFC 9420 section 2.1.2), minimal encoding enforced."""
        first = self.u8()
        prefix = first >> 6
        if prefix == 3:
            raise DecodeError("invalid variable-length integer prefix 0b11")
        length = 1 << prefix
        value = first & 0x3F
        if length > 1:
            rest = self.fixed(length - 1)
            for byte in rest:
                value = (value << 8) | byte
        if (length == 2 and value < 0x40) or (length == 4 and value < 0x4000):
            raise DecodeError("variable-length integer is not minimally encoded")
        return value

    # -- vectors ----------------------------------------------------------------------------
    def opaque(self, limit: int | None = None) -> bytes:
        """``opaque x<V>``."""
        n = self.varint()
        cap = self.max_vector if limit is None else limit
        if n > cap:
            raise OversizeError(f"vector of {n} bytes exceeds the limit of {cap}")
        return self.fixed(n)

    def opaque8(self) -> bytes:
        """``opaque x<0..255>`` (legacy one-byte length)."""
        return self.fixed(self.u8())

    def vector(self, item: Callable[[Reader], T], limit: int | None = None) -> list[T]:
        """``T x<V>``: a varint byte length followed by items that fill it exactly."""
        n = self.varint()
        cap = self.max_vector if limit is None else limit
        if n > cap:
            raise OversizeError(f"vector of {n} bytes exceeds the limit of {cap}")
        if self._pos + n > self._end:
            raise DecodeError(f"truncated vector: need {n} bytes at offset {self._pos}, have {self.remaining()}")
        end = self._pos + n
        saved_end = self._end
        self._end = end
        out: list[T] = []
        try:
            while self._pos < end:
                out.append(item(self))
        finally:
            self._end = saved_end
        if self._pos != end:  # pragma: no cover - item() cannot overrun a narrowed end
            raise DecodeError("vector items do not fill the vector length exactly")
        return out

    def optional(self, item: Callable[[Reader], T]) -> T | None:
        """``optional<T>``: a presence byte (0 or 1) then the value."""
        present = self.u8()
        if present == 0:
            return None
        if present != 1:
            raise DecodeError(f"invalid optional presence byte {present}")
        return item(self)


class Writer:
    """Append-only encoder (RFC 9420 section 2.1)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def __len__(self) -> int:
        return len(self._buf)

    def fixed(self, data: bytes) -> None:
        self._buf += data

    def uint(self, value: int, size: int) -> None:
        if value < 0 or value >= 1 << (8 * size):
            raise InvalidArgument(f"{value} does not fit in an unsigned {size}-byte integer")
        self._buf += value.to_bytes(size, "big")

    def u8(self, v: int) -> None:
        self.uint(v, 1)

    def u16(self, v: int) -> None:
        self.uint(v, 2)

    def u32(self, v: int) -> None:
        self.uint(v, 4)

    def u64(self, v: int) -> None:
        self.uint(v, 8)

    def boolean(self, v: bool) -> None:
        self._buf.append(1 if v else 0)

    def varint(self, v: int) -> None:
        """Minimal variable-length integer (RFC 9420 section 2.1.2)."""
        self._buf += encode_varint(v)

    def opaque(self, data: bytes) -> None:
        self._buf += encode_varint(len(data))
        self._buf += data

    def opaque8(self, data: bytes) -> None:
        self.u8(len(data))
        self._buf += data

    def vector(self, items: Iterable[T], item: Callable[[Writer, T], None]) -> None:
        inner = Writer()
        for x in items:
            item(inner, x)
        self.opaque(bytes(inner._buf))

    def optional(self, value: T | None, item: Callable[[Writer, T], None]) -> None:
        if value is None:
            self._buf.append(0)
        else:
            self._buf.append(1)
            item(self, value)


#: The one-byte varint encodings (lengths below 64), shared by the hot encoders.
ONE_BYTE_VARINTS = tuple(bytes((i,)) for i in range(0x40))


def encode_varint(v: int) -> bytes:
    """Encode a length as RFC 9420 section 2.1.2 requires (shortest form)."""
    if 0 <= v < 0x40:
        return ONE_BYTE_VARINTS[v]
    if v < 0:
        raise InvalidArgument("negative length")
    if v < 0x4000:
        return (v | 0x4000).to_bytes(2, "big")
    if v <= MAX_VARINT:
        return (v | 0x80000000).to_bytes(4, "big")
    raise InvalidArgument(f"length {v} exceeds the varint maximum {MAX_VARINT}")


def encode(value: Encodable) -> bytes:
    """Serialize one struct."""
    w = Writer()
    value.encode(w)
    return w.getvalue()


def decode(cls: type[E], data: bytes, max_vector: int = DEFAULT_MAX_VECTOR) -> E:
    """Deserialize exactly one struct; trailing bytes are a `DecodeError`."""
    r = Reader(data, max_vector)
    value = cls.decode(r)
    r.finish()
    return value


def decode_with(fn: Callable[[Reader], T], data: bytes, max_vector: int = DEFAULT_MAX_VECTOR) -> T:
    """Deserialize exactly one value with a reader function; trailing bytes are an error."""
    r = Reader(data, max_vector)
    value = fn(r)
    r.finish()
    return value
