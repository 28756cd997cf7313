"""`Membership.diff` (crdt_mls.merge.rules): the keys whose member differs, O(changes) along
derivation links, exact in every case (checked against a brute-force comparison), and deriving
a membership never changes the one it came from."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mls.merge.rules import Change, ChangeKind, Member, Membership, OpRecord, apply_commit, replay


def _member(i: int, *, data: bytes = b"") -> Member:
    key = b"k%03d" % i
    return Member(key, i, data or b"leaf" + key, b"genesis", b"genesis")


def brute(a: Membership, b: Membership) -> frozenset[bytes]:
    ka, kb = a.by_key(), b.by_key()
    return frozenset(k for k in ka.keys() | kb.keys() if ka.get(k) != kb.get(k))


def _commit(cid: bytes, changes: list[Change]) -> OpRecord:
    return OpRecord(cid, b"k000", 1, None, (), (b"genesis",), tuple(changes))


# one change: (kind, member index, data variant)
change_st = st.tuples(st.sampled_from(["add", "remove", "update"]), st.integers(0, 30), st.integers(0, 3))


def _changes(state: Membership, raw: list[tuple[str, int, int]]) -> list[Change]:
    out: list[Change] = []
    present = set(state.keys())
    taken = {m.leaf for m in state.members}
    for kind, i, v in raw:
        key = b"k%03d" % i
        if kind == "add" and key not in present:
            leaf = next(j for j in range(64) if j not in taken)
            out.append(Change(ChangeKind.ADD, key, leaf, b"new%d" % v + key))
            present.add(key)
            taken.add(leaf)
        elif kind == "remove" and key in present and key != b"k000":
            out.append(Change(ChangeKind.REMOVE, key))
            present.discard(key)
        elif kind == "update" and key in present:
            out.append(Change(ChangeKind.UPDATE, key, 0, b"upd%d" % v + key))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(change_st, max_size=6), min_size=1, max_size=6), st.integers(0, 5), st.booleans())
def test_diff_along_derivations_equals_brute_force(
    batches: list[list[tuple[str, int, int]]], fork: int, collect: bool
) -> None:
    base = Membership.of(_member(i) for i in range(10))
    snapshot = base.by_key()
    chain = [base]
    for n, raw in enumerate(batches):
        cur = chain[-1]
        chain.append(apply_commit(cur, _commit(b"c%d" % n, _changes(cur, raw))))
    # a second branch from an intermediate state
    other = chain[min(fork, len(chain) - 1)]
    side = apply_commit(other, _commit(b"side", _changes(other, [("update", 1, 1), ("add", 20, 0)])))
    if collect:  # intermediate states may be gone: diff falls back to a full comparison
        keep = (chain[0], chain[-1], side)
        chain = list(keep)
        gc.collect()
    for a in (*chain, side):
        for b in (*chain, side):
            assert a.diff(b) == brute(a, b)
    assert base.by_key() == snapshot  # deriving never changed the base


def test_diff_of_a_replay_is_its_changes() -> None:
    base = Membership.of(_member(i) for i in range(5000))
    recs = [
        _commit(b"a", [Change(ChangeKind.UPDATE, b"k001", 0, b"x"), Change(ChangeKind.ADD, b"j1", 5000, b"leafj1")]),
        _commit(b"b", [Change(ChangeKind.REMOVE, b"k002")]),
    ]
    out = replay(
        base,
        recs,
        concurrent=lambda _a, _b: True,
        eviction_void=lambda _r, _c: False,
        rank=lambda cid: (1, cid),
    ).membership
    assert out.diff(base) == {b"k001", b"j1", b"k002"} == brute(out, base)
    assert base.diff(out) == out.diff(base)
    # O(changes): the link to the base is followed, not every member compared
    assert out._ancestry()[id(base)][1] == {b"k001", b"j1", b"k002"}
    assert out.at_leaf(5000) is not None and out.at_leaf(2) is None
    assert len(base) == 5000 and base.get(b"k002") is not None


def test_unrelated_memberships_compare_every_member() -> None:
    a = Membership.of(_member(i) for i in range(4))
    b = Membership.of([*(_member(i) for i in range(3)), _member(3, data=b"other")])
    assert a.diff(b) == {b"k003"} == b.diff(a)
    assert a.diff(a) == frozenset()
