"""Unit and Hypothesis tests of crdt_mls.mls.persistent (copy-on-write vector and map)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdt_mls.mls.persistent import CHUNK, PMap, PVec

# ----------------------------------------------------------------------------- PVec


def test_pvec_reads_like_a_list() -> None:
    items = list(range(600))
    v = PVec(items)
    assert len(v) == 600
    assert list(v) == items
    assert v[0] == 0 and v[599] == 599 and v[-1] == 599 and v[-600] == 0
    assert v[10:20] == items[10:20] and v[::97] == items[::97]
    assert v.get(300) == 300
    assert list(v.iter_from(1, 2)) == items[1::2]
    with pytest.raises(IndexError):
        v[600]
    with pytest.raises(IndexError):
        v[-601]
    assert v == items and v == PVec(items) and v != PVec(items[:-1])
    assert v != [*items[:-1], -1]


def test_pvec_blank_and_all_none_chunks_share_one_chunk() -> None:
    b: PVec[int | None] = PVec.blank(1000)
    assert len(b) == 1000 and list(b) == [None] * 1000
    c: PVec[int | None] = PVec([None] * 1000)
    assert c == b and b.shares_chunk(c, 0) and b.shares_chunk(c, 999)


def test_pvec_set_on_a_copy_never_shows_in_the_original_and_vice_versa() -> None:
    a = PVec(range(1000))
    b = a.copy()
    assert a.shares_chunk(b, 5)
    b.set(5, -5)
    a.set(700, -700)
    assert a[5] == 5 and b[5] == -5
    assert b[700] == 700 and a[700] == -700
    assert not a.shares_chunk(b, 5) and not a.shares_chunk(b, 700)
    assert a.shares_chunk(b, 300)
    # a second write to an owned chunk does not copy it again, and stays private
    b.set(6, -6)
    assert a[6] == 6 and b[6] == -6
    # a copy of a copy: three independent values
    c = b.copy()
    c.set(5, 55)
    assert (a[5], b[5], c[5]) == (5, -5, 55)


def test_pvec_fill_writes_shared_chunks_but_copies_the_blank_chunk() -> None:
    a: PVec[int | None] = PVec.blank(600)
    b = a.copy()
    a.fill(3, 3)  # blank chunk: copied first, so b is unaffected
    assert a[3] == 3 and b[3] is None
    c = a.copy()
    a.fill(4, 4)  # shared, written chunk: the cache entry shows in both (by design)
    assert c[4] == 4
    a.set(5, 5)  # copy-on-write: private again
    assert c[5] is None


def test_pvec_resize_keeps_entries_past_the_length_blank() -> None:
    a = PVec(range(300))
    b = a.copy()
    b.resize(100)
    assert list(b) == list(range(100))
    b.resize(400)
    assert list(b) == [*range(100), *[None] * 300]
    assert list(a) == list(range(300))
    # growing one copy and filling the new region never reaches the shorter copy
    c = a.copy()
    c.resize(600)
    c.fill(300, -1)
    a.resize(600)
    assert a[300] is None and c[300] == -1
    with pytest.raises(ValueError):
        a.resize(-1)


def test_pvec_diff_skips_shared_chunks_and_compares_values() -> None:
    a = PVec(range(2000))
    b = a.copy()
    assert a.diff(b) == []
    b.set(3, -3)
    b.set(1500, -1)
    b.set(1501, 1501)  # same value written: not a difference
    assert a.diff(b) == [3, 1500] == b.diff(a)
    # equal values in separately built vectors are equal
    assert PVec(range(10)).diff(PVec(range(10))) == []
    # different lengths: missing entries count as None
    c: PVec[int | None] = PVec([1, 2, 3])
    d: PVec[int | None] = PVec([1, 2, 3, None, 5])
    assert c.diff(d) == [4]


def test_pvec_rfind_not_none() -> None:
    v: PVec[int | None] = PVec.blank(2000)
    v.set(10, 1)
    v.set(13, 1)
    v.set(1500, 1)
    v.set(1500, None)  # a written chunk that holds only None again
    assert v.rfind_not_none(1999) == 13
    assert v.rfind_not_none(1998, 2) == 10
    assert v.rfind_not_none(1999, 2) == 13
    assert v.rfind_not_none(12) == 10
    assert v.rfind_not_none(9) == -1
    assert v.rfind_not_none(5000) == 13  # past the length: from the last index of that parity
    assert v.rfind_not_none(5000, 2) == 10
    with pytest.raises(ValueError):
        v.rfind_not_none(10, 3)


@given(
    values=st.lists(st.none() | st.integers(0, 3), max_size=3 * CHUNK + 5),
    start=st.integers(0, 4 * CHUNK),
    step=st.sampled_from([1, 2]),
)
@settings(max_examples=200)
def test_pvec_rfind_not_none_matches_a_scan(values: list[int | None], start: int, step: int) -> None:
    v = PVec(values)
    i = start
    expected = -1
    while i >= 0:
        if i < len(values) and values[i] is not None:
            expected = i
            break
        i -= step
    assert v.rfind_not_none(start, step) == expected


# ----------------------------------------------------------------------------- PMap


def test_pmap_copy_on_write() -> None:
    a: PMap[bytes, int] = PMap((bytes([i]), i) for i in range(200))
    assert len(a) == 200 and a[b"\x05"] == 5 and a.get(b"zz") is None and a.get(b"zz", 7) == 7
    assert b"\x05" in a and b"zz" not in a
    b = a.copy()
    b[b"\x05"] = -5
    del b[b"\x06"]
    b[b"new"] = 1
    assert a[b"\x05"] == 5 and b"\x06" in a and b"new" not in a and len(a) == 200
    assert b[b"\x05"] == -5 and b"\x06" not in b and len(b) == 200
    a[b"other"] = 2
    assert b"other" not in b
    assert dict(a.items()) == {**{bytes([i]): i for i in range(200)}, b"other": 2}
    assert set(b) == set(b.keys()) == {*(bytes([i]) for i in range(200) if i != 6), b"new"}
    with pytest.raises(KeyError):
        del a[b"missing"]
    with pytest.raises(KeyError):
        a[b"missing"]
    assert a == a.copy() and a != b and a == dict(a.items())


def test_pmap_bucket_sizes() -> None:
    for bits in (0, 3, 16):
        m: PMap[int, int] = PMap(((i, -i) for i in range(500)), bucket_bits=bits)
        c = m.copy()
        c[7] = 7
        assert m[7] == -7 and c[7] == 7 and len(m) == len(c) == 500
        assert sorted(m) == list(range(500))
    with pytest.raises(ValueError):
        PMap(bucket_bits=25)


def test_pmap_grows_with_its_size_and_copies_keep_their_buckets() -> None:
    m: PMap[int, int] = PMap()
    small = m.bucket_count
    snapshots: list[tuple[PMap[int, int], dict[int, int]]] = []
    model: dict[int, int] = {}
    for i in range(20_000):
        m[i] = i
        model[i] = i
        if i % 997 == 0:
            snapshots.append((m.copy(), dict(model)))
            m[i] = -i  # a write right after the copy: copy-on-write across a later growth
            model[i] = -i
    assert m.bucket_count > small
    assert dict(m.items()) == model and len(m) == 20_000
    for snap, expected in snapshots:
        assert dict(snap.items()) == expected and len(snap) == len(expected)
    built = PMap((i, i) for i in range(20_000))  # sized from the items at once
    assert built.bucket_count >= 1024 and dict(built.items()) == {i: i for i in range(20_000)}


def test_pmap_add_counts_grows_once_and_leaves_copies_alone() -> None:
    m: PMap[bytes, int] = PMap((b"k%d" % i, 1) for i in range(10))
    before = m.copy()
    m.add_counts({**{b"k%d" % i: 2 for i in range(5000)}, b"k3": -1})  # k3: 1 - 1 = 0, removed
    want = {b"k%d" % i: 2 + (i < 10) for i in range(5000) if i != 3}
    assert dict(m.items()) == want and len(m) == len(want)
    assert m.bucket_count >= 5000 // 64  # grown to its final size at once
    assert dict(before.items()) == {b"k%d" % i: 1 for i in range(10)} and len(before) == 10
    m.add_counts({b"k4": -3, b"new": 5})  # no growth: bucket by bucket
    assert b"k4" not in m and m[b"new"] == 5 and len(m) == len(want)


def test_pvec_clear_skips_never_written_chunks() -> None:
    v: PVec[int | None] = PVec.blank(4 * CHUNK)
    v.set(5, 1)
    w = v.copy()
    w.clear([5, CHUNK + 1, 3 * CHUNK])  # chunk 0 copied; chunks 1 and 3 were never written
    assert w[5] is None and v[5] == 1
    assert w.shares_chunk(v, CHUNK + 1) and w.shares_chunk(v, 3 * CHUNK) and not w.shares_chunk(v, 5)


def test_pvec_iter_written_skips_blank_chunks() -> None:
    v: PVec[int | None] = PVec.blank(10 * CHUNK)
    v.set(3 * CHUNK + 1, 5)
    written = list(v.iter_written())
    assert len(written) == CHUNK and written.count(5) == 1


# ------------------------------------------------------------ Hypothesis models


class PVecModel(RuleBasedStateMachine):
    """Several vectors derived from each other by copy, each checked against a plain list."""

    def __init__(self) -> None:
        super().__init__()
        start = list(range(3 * CHUNK + 7))
        self.vecs: list[PVec[int | None]] = [PVec(start)]
        self.models: list[list[int | None]] = [list(start)]

    @rule(src=st.integers(0, 7))
    def copy(self, src: int) -> None:
        i = src % len(self.vecs)
        self.vecs.append(self.vecs[i].copy())
        self.models.append(list(self.models[i]))

    @rule(which=st.integers(0, 7), pos=st.integers(0, 10 * CHUNK), value=st.integers(-5, 5) | st.none())
    def set(self, which: int, pos: int, value: int | None) -> None:
        i = which % len(self.vecs)
        if not self.models[i]:
            return
        p = pos % len(self.models[i])
        self.vecs[i].set(p, value)
        self.models[i][p] = value

    @rule(which=st.integers(0, 7), positions=st.lists(st.integers(0, 10 * CHUNK), max_size=20))
    def clear(self, which: int, positions: list[int]) -> None:
        i = which % len(self.vecs)
        if not self.models[i]:
            return
        ps = [p % len(self.models[i]) for p in positions]
        self.vecs[i].clear(ps)
        for p in ps:
            self.models[i][p] = None

    @rule(which=st.integers(0, 7), length=st.integers(0, 6 * CHUNK))
    def resize(self, which: int, length: int) -> None:
        i = which % len(self.vecs)
        self.vecs[i].resize(length)
        m = self.models[i]
        del m[length:]
        m.extend([None] * (length - len(m)))

    @precondition(lambda self: len(self.vecs) > 1)
    @rule(a=st.integers(0, 7), b=st.integers(0, 7))
    def diff(self, a: int, b: int) -> None:
        i, j = a % len(self.vecs), b % len(self.vecs)
        ma, mb = self.models[i], self.models[j]
        n = max(len(ma), len(mb))
        pa, pb = ma + [None] * (n - len(ma)), mb + [None] * (n - len(mb))
        expected = [x for x in range(n) if pa[x] != pb[x]]
        assert self.vecs[i].diff(self.vecs[j]) == expected

    @invariant()
    def every_vector_equals_its_model(self) -> None:
        for v, m in zip(self.vecs, self.models, strict=True):
            assert len(v) == len(m)
            assert list(v) == m


class PMapModel(RuleBasedStateMachine):
    """Several maps derived from each other by copy, each checked against a plain dict."""

    def __init__(self) -> None:
        super().__init__()
        # few buckets: many keys share one, so copy-on-write of a shared bucket is exercised
        self.maps: list[PMap[bytes, int]] = [PMap(bucket_bits=2)]
        self.models: list[dict[bytes, int]] = [{}]

    @rule(src=st.integers(0, 7))
    def copy(self, src: int) -> None:
        i = src % len(self.maps)
        self.maps.append(self.maps[i].copy())
        self.models.append(dict(self.models[i]))

    @rule(which=st.integers(0, 7), key=st.binary(max_size=2), value=st.integers())
    def put(self, which: int, key: bytes, value: int) -> None:
        i = which % len(self.maps)
        self.maps[i][key] = value
        self.models[i][key] = value

    @rule(which=st.integers(0, 7), counts=st.dictionaries(st.binary(max_size=2), st.integers(-3, 3), max_size=12))
    def add_counts(self, which: int, counts: dict[bytes, int]) -> None:
        i = which % len(self.maps)
        self.maps[i].add_counts(counts)
        m = self.models[i]
        for k, c in counts.items():
            v = m.get(k, 0) + c
            if v:
                m[k] = v
            else:
                m.pop(k, None)

    @rule(which=st.integers(0, 7), key=st.binary(max_size=2))
    def delete(self, which: int, key: bytes) -> None:
        i = which % len(self.maps)
        if key in self.models[i]:
            del self.maps[i][key]
            del self.models[i][key]
        else:
            assert key not in self.maps[i]

    @invariant()
    def every_map_equals_its_model(self) -> None:
        for m, d in zip(self.maps, self.models, strict=True):
            assert len(m) == len(d)
            assert dict(m.items()) == d
            for k, v in d.items():
                assert m.get(k) == v


_SETTINGS = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestPVecModel = PVecModel.TestCase
TestPVecModel.settings = _SETTINGS
TestPMapModel = PMapModel.TestCase
TestPMapModel.settings = _SETTINGS
