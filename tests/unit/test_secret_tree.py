"""Unit tests of crdt_mls.mls.secret_tree (RFC 9420 section 9)."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mls.errors import DecodeError, InvalidArgument, InvalidState, ProtocolError, ReplayError
from crdt_mls.mls.secret_tree import RatchetKey, RatchetType, SecretTree
from crdt_mls.mls.suites import get_cipher_suite

SUITE = get_cipher_suite(1)
SECRET = bytes(range(32))
H = RatchetType.HANDSHAKE
A = RatchetType.APPLICATION


def tree(n: int = 8, **kw: int) -> SecretTree:
    return SecretTree(SUITE, SECRET, n, **kw)


def test_sender_and_receiver_agree() -> None:
    sender, receiver = tree(), tree()
    for _ in range(5):
        k = sender.next_key(3, A)
        assert receiver.key_for(3, A, k.generation) == k
    assert sender.next_generation(3, A) == 5
    assert sender.next_generation(3, H) == 0


def test_ratchets_are_independent() -> None:
    t = tree()
    assert t.key_for(2, H, 0) != t.key_for(2, A, 0)
    assert t.key_for(1, A, 0) != t.key_for(3, A, 0)


def test_consumed_key_is_a_replay() -> None:
    t = tree()
    t.key_for(0, A, 0)
    with pytest.raises(ReplayError):
        t.key_for(0, A, 0)


def test_out_of_order_within_window() -> None:
    ref = tree()
    keys = [ref.key_for(5, A, g) for g in range(6)]
    t = tree()
    assert t.key_for(5, A, 5) == keys[5]
    assert t.key_for(5, A, 2) == keys[2]
    assert t.key_for(5, A, 0) == keys[0]
    with pytest.raises(ReplayError):
        t.key_for(5, A, 2)
    assert t.key_for(5, A, 4) == keys[4]


def test_forward_limit_bounds_hostile_generation() -> None:
    t = tree(max_forward=10)
    with pytest.raises(ProtocolError):
        t.prepare_key(1, A, 0xFFFFFFFF)
    with pytest.raises(ProtocolError):
        t.prepare_key(1, A, 11)
    t.key_for(1, A, 10)  # exactly at the limit is fine
    with pytest.raises(ProtocolError):
        t.prepare_key(1, A, 1 << 32)


def test_retained_skipped_keys_are_bounded() -> None:
    t = tree(max_retained=3)
    t.key_for(0, A, 10)
    # Generations 0..6 were discarded, 7..9 are retained.
    with pytest.raises(ReplayError):
        t.key_for(0, A, 6)
    for g in (7, 8, 9):
        t.key_for(0, A, g)


def test_leaf_out_of_range() -> None:
    t = tree(4)
    with pytest.raises(ProtocolError):
        t.prepare_key(4, A, 0)
    with pytest.raises(InvalidArgument):
        t.next_key(4, A)


def test_prepare_does_not_change_state() -> None:
    t = tree()
    before = t.to_bytes()
    p = t.prepare_key(6, H, 3)
    assert t.to_bytes() == before
    t.commit(p)
    assert t.to_bytes() != before
    with pytest.raises(InvalidState):
        t.commit(p)  # stale: the tree changed since


def test_stale_pending_key_rejected() -> None:
    t = tree()
    p1 = t.prepare_key(0, A, 0)
    p2 = t.prepare_key(1, A, 0)
    t.commit(p2)
    with pytest.raises(InvalidState):
        t.commit(p1)


def test_deletion_schedule() -> None:
    """Only O(log n) node secrets are kept along a derived path; the root is deleted."""
    n = 1 << 10
    t = tree(n)
    t.key_for(0, A, 0)
    snapshot = SecretTree.from_bytes(t.to_bytes())
    # 10 siblings along the path of leaf 0, root consumed.
    assert "stored_nodes=10" in repr(snapshot)
    assert "ratchets=2" in repr(snapshot)


def test_copy_is_independent() -> None:
    t = tree()
    c = t.copy()
    t.key_for(0, A, 0)
    assert c.key_for(0, A, 0) is not None
    with pytest.raises(ReplayError):
        t.key_for(0, A, 0)


def test_snapshot_round_trip() -> None:
    t = tree(16, max_forward=50, max_retained=20)
    t.key_for(3, A, 7)
    t.key_for(9, H, 0)
    t2 = SecretTree.from_bytes(t.to_bytes())
    assert t2.to_bytes() == t.to_bytes()
    assert t2.max_forward == 50 and t2.max_retained == 20
    assert t2.key_for(3, A, 2) == t.key_for(3, A, 2)
    assert t2.key_for(12, A, 4) == t.key_for(12, A, 4)


def test_snapshot_decode_errors() -> None:
    data = tree().to_bytes()
    with pytest.raises(DecodeError):
        SecretTree.from_bytes(data + b"\0")
    with pytest.raises(DecodeError):
        SecretTree.from_bytes(data[:-1])


def test_repr_has_no_secrets() -> None:
    t = tree()
    k = t.key_for(0, A, 0)
    assert SECRET.hex() not in repr(t)
    assert k.key.hex() not in repr(k) and k.nonce.hex() not in repr(k)
    p = t.prepare_key(0, A, 1)
    assert p.key.hex() not in repr(p)


def test_bad_construction() -> None:
    with pytest.raises(InvalidArgument):
        SecretTree(SUITE, SECRET, 0)
    with pytest.raises(InvalidArgument):
        SecretTree(SUITE, SECRET[:16], 4)


def test_single_leaf_tree() -> None:
    t = tree(1)
    assert t.next_key(0, H).generation == 0
    assert t.next_key(0, A).generation == 0


@cache
def _in_order_keys() -> dict[tuple[int, RatchetType, int], RatchetKey]:
    ref = tree(8)
    return {(leaf, rt, g): ref.key_for(leaf, rt, g) for leaf in range(8) for rt in (H, A) for g in range(21)}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 7), st.sampled_from([H, A]), st.integers(0, 20)), min_size=1, max_size=30),
)
def test_any_delivery_order_gives_the_in_order_keys(ops: list[tuple[int, RatchetType, int]]) -> None:
    expected = _in_order_keys()
    t = tree(8)
    used: set[tuple[int, RatchetType, int]] = set()
    for op in ops:
        if op in used:
            with pytest.raises(ReplayError):
                t.key_for(*op)
        else:
            assert t.key_for(*op) == expected[op]
            used.add(op)


def test_large_group_is_lazy() -> None:
    """50,000 members: only the O(log n) path of the senders used is materialised."""
    t = tree(50_000)
    t.key_for(49_999, A, 0)
    t.key_for(0, H, 0)
    assert "stored_nodes=30" in repr(t)  # 16 siblings per path, 2 shared at the top
    c = t.copy()
    c.key_for(12_345, A, 3)
    assert "stored_nodes=30" in repr(t)
    assert SecretTree.from_bytes(c.to_bytes()).to_bytes() == c.to_bytes()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9])
def test_snapshot_any_size(n: int) -> None:
    t = tree(n)
    ref = tree(n)
    for leaf in range(0, n, 2):
        t.key_for(leaf, A, 1)
    t2 = SecretTree.from_bytes(t.to_bytes())
    for leaf in range(n):
        g = 0 if leaf % 2 else 2
        assert t2.key_for(leaf, A, g) == ref.key_for(leaf, A, g)


def test_snapshot_rejects_bad_ratchet_type() -> None:
    t = tree(2)
    t.key_for(1, A, 0)
    data = bytearray(t.to_bytes())
    # Locate the ratchet-type byte of the first ratchet: after the node vector and u32 leaf.
    from crdt_mls.mls.codec import Reader

    r = Reader(bytes(data))
    r.u16(), r.u32(), r.u32(), r.u32()
    r.opaque()  # node vector
    r.varint()  # ratchet vector length
    r.u32()
    data[r.position] = 7
    with pytest.raises(DecodeError):
        SecretTree.from_bytes(bytes(data))
