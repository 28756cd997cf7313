"""Persistent (structure-sharing, copy-on-write) containers for the ratchet tree.

Group states are immutable values, so every commit derives a new ratchet tree from the old
one.  With plain lists and dicts that derivation copies O(n) references; with these
containers it copies O(n / 256) chunk references and, per changed entry, one chunk of 256
references (or one small bucket dict), so deriving a tree and changing one direct path costs
O(log n) work in practice (and O(n / 256) pointer copies, 512 at 50,000 members).

* `PVec`: a chunked copy-on-write vector.  `copy` copies the list of chunk references and
  gives up ownership of every chunk in both vectors; `set` copies a chunk the vector does not
  own before writing it.  Entries past the length are always ``None``.
* `PMap`: a hash map split into ``2^bits`` buckets held in a `PVec`; `copy` is a `PVec.copy`,
  a write copies one bucket dict (and one chunk of bucket references).  The bucket count
  follows the size (~16-64 keys per bucket, at most 65,536 buckets): a map built from n items
  gets ~n/16 buckets, and one that grows past 64 keys per bucket is rebuilt with 4x as many
  (amortised O(1) per insertion).  Small buckets matter at large sizes: copying a bucket
  whose keys are scattered over a large heap is cache-miss bound (~70 us for 500 keys in a
  million-member tree).

Neither is thread-safe for concurrent writers; concurrent readers are fine.  Values stored
are shared between copies and must be immutable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, islice
from typing import Any, Generic, TypeVar, overload

__all__ = ["CHUNK", "PMap", "PVec"]

_BITS = 8
#: Entries per chunk.
CHUNK = 1 << _BITS
_MASK = CHUNK - 1

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

#: The chunk of a region never written: shared by every vector, never owned, never changed.
_BLANK: list[Any] = [None] * CHUNK


class PVec(Sequence[T]):
    """A persistent vector of ``length`` entries (default ``None``) with copy-on-write chunks.

    ``set`` is a copy-on-write write.  ``fill`` writes in place even into a chunk shared with
    copies: use it only for cache entries whose value is a function of data that every
    vector sharing the chunk holds identically (e.g. a tree hash of an unchanged subtree).
    """

    __slots__ = ("_chunks", "_len", "_owned")

    _chunks: list[list[Any]]
    _len: int
    #: indices of chunks this vector may change in place (created by it since its last copy)
    _owned: set[int]

    def __init__(self, items: Iterable[T] = ()) -> None:
        values = list(items)
        n = len(values)
        chunks: list[list[Any]] = []
        owned: set[int] = set()
        for ci, start in enumerate(range(0, n, CHUNK)):
            part: list[Any] = values[start : start + CHUNK]
            if len(part) < CHUNK:
                part.extend([None] * (CHUNK - len(part)))
            if any(v is not None for v in part):
                chunks.append(part)
                owned.add(ci)
            else:
                chunks.append(_BLANK)
        self._chunks = chunks
        self._len = n
        self._owned = owned

    @classmethod
    def blank(cls, length: int) -> PVec[T]:
        """A vector of ``length`` ``None`` entries (O(length / 256), no chunk allocated)."""
        if length < 0:
            raise ValueError("negative length")
        v: PVec[T] = cls.__new__(cls)
        v._chunks = [_BLANK] * ((length + _MASK) >> _BITS)
        v._len = length
        v._owned = set()
        return v

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: slice) -> list[T]: ...

    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self._chunks[j >> _BITS][j & _MASK] for j in range(*i.indices(self._len))]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("PVec index out of range")
        value: T = self._chunks[i >> _BITS][i & _MASK]
        return value

    def get(self, i: int) -> T:
        """Entry ``i`` (``0 <= i < len``, not checked: the caller guarantees it)."""
        value: T = self._chunks[i >> _BITS][i & _MASK]
        return value

    def __iter__(self) -> Iterator[T]:
        return islice(chain.from_iterable(self._chunks), self._len)

    def iter_written(self) -> Iterator[T]:
        """Entries of every chunk ever written (skips never-written chunks whole; the entries
        skipped are all ``None``)."""
        for chunk in self._chunks:
            if chunk is not _BLANK:
                yield from chunk

    def iter_from(self, start: int, step: int = 1) -> Iterator[T]:
        """Entries ``start, start + step, ...`` below the length."""
        return islice(chain.from_iterable(self._chunks), start, self._len, step)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PVec):
            if self._len != other._len:
                return False
            return all(a is b or a == b for a, b in zip(self._chunks, other._chunks, strict=True))
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == self._len and all(a == b for a, b in zip(self, other, strict=False))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PVec(len={self._len}, chunks={len(self._chunks)}, owned={len(self._owned)})"

    def diff(self, other: PVec[T]) -> list[int]:
        """Ascending indices ``i`` where the two vectors differ (an index past one vector's
        length counts as ``None`` there).  Chunks shared by both are skipped without looking
        at their entries: the cost is O(chunks) reference comparisons plus O(256) per chunk
        that is not shared."""
        ca, cb = self._chunks, other._chunks
        na, nb = len(ca), len(cb)
        out: list[int] = []
        for ci in range(max(na, nb)):
            a = ca[ci] if ci < na else _BLANK
            b = cb[ci] if ci < nb else _BLANK
            if a is b:
                continue
            base = ci << _BITS
            out.extend(base + j for j, (x, y) in enumerate(zip(a, b, strict=True)) if x is not y and x != y)
        return out

    def shares_chunk(self, other: PVec[T], i: int) -> bool:
        """Whether the chunk holding index ``i`` is the same object in both vectors (for tests)."""
        ci = i >> _BITS
        return ci < len(self._chunks) and ci < len(other._chunks) and self._chunks[ci] is other._chunks[ci]

    # ------------------------------------------------------------------ writing

    def copy(self) -> PVec[T]:
        """A copy sharing every chunk: O(len / 256).  Neither vector owns a chunk afterwards."""
        v: PVec[T] = PVec.__new__(PVec)
        v._chunks = self._chunks.copy()
        v._len = self._len
        v._owned = set()
        self._owned = set()
        return v

    def _own_chunk(self, ci: int) -> list[Any]:
        chunk = self._chunks[ci]
        if ci not in self._owned:
            chunk = chunk.copy()
            self._chunks[ci] = chunk
            self._owned.add(ci)
        return chunk

    def set(self, i: int, value: T) -> None:
        """Copy-on-write ``self[i] = value`` (``0 <= i < len``, not checked)."""
        ci = i >> _BITS
        if ci in self._owned:
            self._chunks[ci][i & _MASK] = value
        else:
            self._own_chunk(ci)[i & _MASK] = value

    def clear(self, indices: Iterable[int]) -> None:
        """Copy-on-write ``self[i] = None`` for every ``i`` (``0 <= i < len``, not checked).
        A never-written chunk is left as it is (it holds ``None`` only and is never written in
        place, not even by `fill`), so clearing entries of an empty region allocates nothing."""
        chunks, owned = self._chunks, self._owned
        for i in indices:
            ci = i >> _BITS
            if ci in owned:
                chunks[ci][i & _MASK] = None
            elif chunks[ci] is not _BLANK:
                self._own_chunk(ci)[i & _MASK] = None

    def fill(self, i: int, value: T) -> None:
        """Cache write in place, also into a chunk shared with copies (see the class docstring);
        only the never-written blank chunk is copied first."""
        ci = i >> _BITS
        chunk = self._chunks[ci]
        if chunk is _BLANK:
            chunk = self._own_chunk(ci)
        chunk[i & _MASK] = value

    def resize(self, length: int) -> None:
        """Grow (new entries ``None``) or shrink to ``length`` entries."""
        if length < 0:
            raise ValueError("negative length")
        old = self._len
        if length == old:
            return
        n_chunks = (length + _MASK) >> _BITS
        if length > old:
            # own the partial last chunk, so that writes to the new region never land in a
            # chunk shared with a shorter copy
            if old & _MASK:
                chunk = self._own_chunk(old >> _BITS)
                chunk[old & _MASK :] = [None] * (CHUNK - (old & _MASK))
            self._chunks.extend([_BLANK] * (n_chunks - len(self._chunks)))
        else:
            del self._chunks[n_chunks:]
            self._owned = {ci for ci in self._owned if ci < n_chunks}
            if length & _MASK:
                chunk = self._own_chunk(length >> _BITS)
                chunk[length & _MASK :] = [None] * (CHUNK - (length & _MASK))
        self._len = length

    def rfind_not_none(self, start: int, step: int = 1) -> int:
        """Largest index ``i <= start`` with ``(start - i) % step == 0`` and ``self[i] is not
        None``, or -1 (``step`` 1 or 2).  Chunks without such an entry are skipped at C speed."""
        if step not in (1, 2):
            raise ValueError("step must be 1 or 2")
        i = start
        if i >= self._len:
            i -= ((i - self._len) // step + 1) * step
        while i >= 0:
            lo = i & ~_MASK
            off = i - lo
            first = off % step
            chunk = self._chunks[i >> _BITS]
            count = (off - first) // step + 1
            if chunk is _BLANK or chunk[first : off + 1 : step].count(None) == count:
                i = lo + first - step
                continue
            for j in range(off, -1, -step):
                if chunk[j] is not None:
                    return lo + j
            raise AssertionError("unreachable: the chunk holds a non-None entry")  # pragma: no cover
        return -1


#: buckets are sized for this many keys each, and grown past 4x that
_PER_BUCKET = 16
_MIN_BITS = 4
_MAX_BITS = 16


def _bits_for(n: int) -> int:
    return max(_MIN_BITS, min(_MAX_BITS, (n // _PER_BUCKET).bit_length()))


class PMap(Generic[K, V]):
    """A persistent hash map: ``2^bits`` bucket dicts in a `PVec`, each copied on its first
    write after a `copy` (keys are hashed with Python's ``hash``, randomized for bytes, so that
    remote input cannot pile keys into one bucket).  Buckets are created on their first write;
    iteration skips never-written chunks of buckets.  ``bucket_bits`` fixes the bucket count
    (for tests); by default it follows the size."""

    __slots__ = ("_buckets", "_fixed", "_len", "_mask", "_owned")

    _buckets: PVec[dict[K, V] | None]
    _fixed: bool
    _len: int
    _mask: int
    _owned: set[int]

    def __init__(self, items: Iterable[tuple[K, V]] = (), *, bucket_bits: int | None = None) -> None:
        pairs = list(items)
        if bucket_bits is not None and not 0 <= bucket_bits <= 24:
            raise ValueError("bucket_bits must be in 0..24")
        self._fixed = bucket_bits is not None
        self._init_buckets(_bits_for(len(pairs)) if bucket_bits is None else bucket_bits)
        self._len = 0
        for k, v in pairs:
            self[k] = v

    def _init_buckets(self, bits: int) -> None:
        self._buckets = PVec.blank(1 << bits)
        self._mask = (1 << bits) - 1
        self._owned = set()

    def _grow(self) -> None:
        """Rebuild with 4x the buckets (the old buckets stay with any copy sharing them)."""
        pairs = list(self.items())
        self._init_buckets(min(_MAX_BITS, self._mask.bit_length() + 2))
        self._len = 0
        for k, v in pairs:
            self[k] = v

    @property
    def bucket_count(self) -> int:
        return self._mask + 1

    def __len__(self) -> int:
        return self._len

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: V) -> V: ...

    def get(self, key: K, default: V | None = None) -> V | None:
        b = self._buckets.get(hash(key) & self._mask)
        if b is None:
            return default
        return b.get(key, default)

    def __getitem__(self, key: K) -> V:
        b = self._buckets.get(hash(key) & self._mask)
        if b is None:
            raise KeyError(key)
        return b[key]

    def __contains__(self, key: object) -> bool:
        b = self._buckets.get(hash(key) & self._mask)
        return b is not None and key in b

    def __iter__(self) -> Iterator[K]:
        for b in self._buckets.iter_written():
            if b:
                yield from b

    def keys(self) -> Iterator[K]:
        return iter(self)

    def items(self) -> Iterator[tuple[K, V]]:
        for b in self._buckets.iter_written():
            if b:
                yield from b.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PMap):
            return self._len == other._len and dict(self.items()) == dict(other.items())
        if isinstance(other, dict):
            return self._len == len(other) and dict(self.items()) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PMap(len={self._len})"

    def copy(self) -> PMap[K, V]:
        """A copy sharing every bucket: O(buckets / 256).  Neither map owns a bucket afterwards."""
        m: PMap[K, V] = PMap.__new__(PMap)
        m._buckets = self._buckets.copy()
        m._mask = self._mask
        m._fixed = self._fixed
        m._len = self._len
        m._owned = set()
        self._owned = set()
        return m

    def _own(self, bi: int) -> dict[K, V]:
        b = self._buckets.get(bi)
        if bi not in self._owned or b is None:
            b = {} if b is None else b.copy()
            self._buckets.set(bi, b)
            self._owned.add(bi)
        return b

    def __setitem__(self, key: K, value: V) -> None:
        b = self._own(hash(key) & self._mask)
        if key not in b:
            self._len += 1
            if self._len > 4 * _PER_BUCKET * (self._mask + 1) and not self._fixed and self._mask + 1 < 1 << _MAX_BITS:
                b[key] = value
                self._grow()
                return
        b[key] = value

    def add_counts(self: PMap[K, int], counts: Mapping[K, int]) -> None:
        """``self[k] = self.get(k, 0) + c`` for every ``k, c`` of ``counts`` (a key whose
        count reaches 0 is removed): each bucket touched is copied once, and a map that must
        grow is rebuilt once with the bucket count of its final size (the same contents as
        the changes made one by one)."""
        if not counts:
            return
        if not self._fixed and self._len + len(counts) > 4 * _PER_BUCKET * (self._mask + 1):
            merged = dict(self.items())
            for k, c in counts.items():
                v = merged.get(k, 0) + c
                if v:
                    merged[k] = v
                else:
                    merged.pop(k, None)
            bits = max(self._mask.bit_length(), _bits_for(len(merged)))
            if bits > self._mask.bit_length():
                self._init_buckets(bits)
                mask = self._mask
                groups: dict[int, dict[K, int]] = {}
                for k, v in merged.items():
                    b = groups.get(hash(k) & mask)
                    if b is None:
                        b = groups[hash(k) & mask] = {}
                    b[k] = v
                for bi, b in groups.items():
                    self._buckets.set(bi, b)
                    self._owned.add(bi)
                self._len = len(merged)
                return
        mask = self._mask
        by_bucket: dict[int, list[tuple[K, int]]] = {}
        for kc in counts.items():
            by_bucket.setdefault(hash(kc[0]) & mask, []).append(kc)
        for bi, kcs in by_bucket.items():
            b = self._own(bi)
            for k, c in kcs:
                v = b.get(k, 0) + c
                if v:
                    if k not in b:
                        self._len += 1
                    b[k] = v
                elif k in b:
                    del b[k]
                    self._len -= 1

    def __delitem__(self, key: K) -> None:
        bi = hash(key) & self._mask
        cur = self._buckets.get(bi)
        if cur is None or key not in cur:
            raise KeyError(key)
        del self._own(bi)[key]
        self._len -= 1
