"""Unit tests of crdt_mls.merge.mlsmerge: wire format round trips and strict decoding, the
merge key schedule, tampering and wrong inputs raising typed errors, nothing readable in a
merge message, no secrets in repr."""

from __future__ import annotations

import pytest

from crdt_mls.errors import CrdtMlsError, DecodeError, InvalidArgument, RemoteInputError, TreeError
from crdt_mls.merge.mlsmerge import (
    MergeCommit,
    MergeMessage,
    ParentEpoch,
    create_merge_commit,
    merge_init_secret,
    merged_base_tree,
    parents_hash,
    process_merge_commit,
)
from crdt_mls.merge.rules import Membership
from crdt_mls.mls import codec
from crdt_mls.mls.suites import get_cipher_suite
from tests.scenarios.harness import World


@pytest.fixture(scope="module")
def forked() -> tuple[World, bytes, bytes]:
    w = World(["alice", "bob", "carol", "dave"], seed=7)
    g = w.genesis
    a1 = w.commit("alice", g, remove=("dave",))
    b1 = w.commit("bob", g, add=("eve",))
    return w, a1, b1


def _made(w: World, who: str, a1: bytes, b1: bytes) -> tuple[list[ParentEpoch], Membership, bytes]:
    st = w.dag.state({a1, b1})
    parents = w.parent_epochs(who, (a1, b1))
    msg, _ = create_merge_commit(parents, st.membership, rng=w.r)
    return parents, st.membership, msg


def test_round_trip_and_strict_decoding(forked: tuple[World, bytes, bytes]) -> None:
    w, a1, b1 = forked
    _, _, raw = _made(w, "carol", a1, b1)
    msg = MergeMessage.from_bytes(raw)
    assert msg.to_bytes() == raw
    assert msg.welcome  # Eve is not in A1: she needs the Welcome
    for bad in (raw[:-1], raw + b"\x00", b"\x02" + raw[1:], b""):
        with pytest.raises(DecodeError):
            MergeMessage.from_bytes(bad)
    # nothing readable: no member identity, group id or key in the clear
    for name in ("alice", "bob", "carol", "dave", "eve"):
        assert name.encode() not in raw
        assert w.key(name) not in raw
    assert b"merge-scenario" not in raw


def test_merge_commit_decoder_rejects_unsorted_or_single_parents(forked: tuple[World, bytes, bytes]) -> None:
    w, a1, b1 = forked
    parents, _, raw = _made(w, "carol", a1, b1)
    from crdt_mls.merge.mlsmerge import _open

    commit = _open(raw, [(p.epoch_id, p.group) for p in parents if p.group is not None])
    enc = codec.encode(commit)
    assert codec.decode(MergeCommit, enc) == commit
    swapped = type(commit.content)(
        commit.content.group_id,
        commit.content.epoch,
        tuple(reversed(commit.content.parents)),
        commit.content.committer,
        commit.content.base_tree_hash,
        commit.content.path,
    )
    with pytest.raises(DecodeError):
        codec.decode(MergeCommit, codec.encode(MergeCommit(swapped, commit.signature, commit.confirmation_tag)))
    single = type(commit.content)(
        commit.content.group_id,
        commit.content.epoch,
        commit.content.parents[:1],
        commit.content.committer,
        commit.content.base_tree_hash,
        commit.content.path,
    )
    with pytest.raises(DecodeError):
        codec.decode(MergeCommit, codec.encode(MergeCommit(single, commit.signature, commit.confirmation_tag)))


def test_tampered_messages_raise_remote_input_errors(forked: tuple[World, bytes, bytes]) -> None:
    w, a1, b1 = forked
    _, membership, raw = _made(w, "carol", a1, b1)
    receiver = w.parent_epochs("alice", (a1, b1))
    g = process_merge_commit(receiver, membership, raw)  # the genuine one works
    assert g.epoch == max(p.group_context.epoch for p in receiver) + 1
    positions = range(0, len(raw), max(1, len(raw) // 60))
    for i in positions:
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises(RemoteInputError):
            process_merge_commit(receiver, membership, bytes(bad))
    # inputs are values: a failure leaves the receiver's states usable
    assert process_merge_commit(receiver, membership, raw).epoch_authenticator == g.epoch_authenticator


def test_divergent_membership_is_detected(forked: tuple[World, bytes, bytes]) -> None:
    w, a1, b1 = forked
    _, membership, raw = _made(w, "carol", a1, b1)
    other = w.dag.state({a1}).membership  # a replica that computed another S(heads)
    receiver = w.parent_epochs("alice", (a1, b1))
    with pytest.raises(CrdtMlsError):
        process_merge_commit(receiver, other, raw)
    with pytest.raises(TreeError):
        fewer = Membership.of([m for m in membership.members if m.key != w.key("bob")])
        process_merge_commit(receiver, fewer, raw)


def test_usage_errors(forked: tuple[World, bytes, bytes]) -> None:
    w, a1, b1 = forked
    st = w.dag.state({a1, b1})
    p = w.parent_epochs("carol", (a1, b1))
    with pytest.raises(InvalidArgument):
        create_merge_commit(p[:1], st.membership)
    with pytest.raises(InvalidArgument):
        create_merge_commit([p[0], p[0]], st.membership)
    outsider = [ParentEpoch(x.epoch_id, x.tree, x.group_context, None) for x in p]
    with pytest.raises(InvalidArgument):
        create_merge_commit(outsider, st.membership)
    suite = get_cipher_suite(1)
    with pytest.raises(InvalidArgument):
        merge_init_secret(suite, b"x" * 32, [])
    with pytest.raises(InvalidArgument):
        merge_init_secret(suite, b"x" * 32, [b"short"])


def test_merge_key_schedule_depends_on_every_included_parent() -> None:
    suite = get_cipher_suite(1)
    a, b, c = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    ph = b"\x09" * 32
    base = merge_init_secret(suite, ph, [a, b])
    assert len(base) == 32
    assert base != merge_init_secret(suite, ph, [a, c])
    assert base != merge_init_secret(suite, ph, [c, b])
    assert base != merge_init_secret(suite, b"\x08" * 32, [a, b])
    assert base != merge_init_secret(suite, ph, [b, a])  # order matters: CID order is fixed


def test_merged_tree_blanks_conflicts_and_keeps_common_nodes(forked: tuple[World, bytes, bytes]) -> None:
    w, a1, b1 = forked
    parents = w.parent_epochs("carol", (a1, b1))
    suite = get_cipher_suite(1)
    tree = merged_base_tree(suite, parents, w.dag.state({a1, b1}).membership)
    for x in range(1, tree.width, 2):
        node = tree.parent_node(x)
        if node is None:
            continue
        vals = [p.tree.parent_node(x) if x < p.tree.width else None for p in parents]
        assert all(v is not None and v.encryption_key == node.encryption_key for v in vals)
    assert parents_hash(suite, parents) == parents_hash(suite, list(reversed(parents)))


def test_no_secrets_in_repr(forked: tuple[World, bytes, bytes]) -> None:
    w, a1, b1 = forked
    p = w.parent_epochs("carol", (a1, b1))
    text = repr(p)
    g = p[0].group
    assert g is not None
    for secret in (g.epoch_secrets.init_secret, g.epoch_secrets.exporter_secret, g.signature_priv):
        assert secret.hex() not in text and repr(secret) not in text


# ----------------------------------------------------------------------- reference oracle


def _reference_merged_tree(suite: object, parents: list[ParentEpoch], membership: Membership) -> list[object]:
    """The merged-tree rules of docs/merge.md section 5 written naively (per node, per leaf)."""
    from crdt_mls.mls import treemath
    from crdt_mls.mls.messages import LeafNode, ParentNode

    ps = sorted(parents, key=lambda p: p.epoch_id)
    leaves = {m.leaf: codec.decode(LeafNode, m.data) for m in membership.members}
    n = 1
    while n < max(leaves) + 1:
        n *= 2
    nodes: list[object] = [None] * (2 * n - 1)
    for i, lf in leaves.items():
        nodes[2 * i] = lf

    def below(x: int, leaf: int) -> bool:
        lvl = treemath.level(x)
        return x - ((1 << lvl) - 1) <= 2 * leaf <= x + ((1 << lvl) - 1)

    def knowers(p: ParentEpoch, x: int) -> set[bytes]:
        node = p.tree.parent_node(x)
        assert node is not None
        return {lf.signature_key for i, lf in p.tree.members() if below(x, i) and i not in node.unmerged_leaves}

    keys = membership.keys()
    for x in range(1, 2 * n - 1, 2):
        vals = [p.tree.parent_node(x) if x < p.tree.width else None for p in ps]
        if any(v is None for v in vals) or len({(v.encryption_key, v.parent_hash) for v in vals if v}) != 1:
            continue
        know = [knowers(p, x) for p in ps]
        if any(not k <= keys for k in know):
            continue
        unmerged = []
        for i, lf in sorted(leaves.items()):
            if not below(x, i):
                continue
            holders = [
                k
                for k, p in zip(know, ps, strict=True)
                if lf.signature_key in {m.signature_key for _, m in p.tree.members()}
            ]
            if not holders or not all(lf.signature_key in k for k in holders):
                unmerged.append(i)
        v0 = vals[0]
        assert v0 is not None
        nodes[x] = ParentNode(v0.encryption_key, v0.parent_hash, tuple(unmerged))
    return nodes


def test_merged_tree_matches_the_naive_reference() -> None:
    suite = get_cipher_suite(1)
    names = [f"p{i}" for i in range(16)]
    w = World(list(names), seed=3)
    g = w.genesis
    b0 = w.commit("p12", g, remove=("p13",))  # frees leaf 13
    b1 = w.commit("p12", b0)  # p12's path (25, 27, 23, 15) is now full and known below it
    a1 = w.commit("p0", b1, add=("eve",))  # eve takes leaf 13: unmerged under 25, 27, 23
    c1 = w.commit("p1", b1, add=("hal",))  # hal takes leaf 13 too: one of them moves
    d1 = w.commit("p2", b1, remove=("p14",))  # re-blanks 29, 27, 23, 15 on this branch
    e1 = w.commit("p3", b1, remove=("p8",))
    cases = [(a1, c1), (a1, d1), (c1, e1), (a1, c1, e1), (a1, c1, d1, e1)]
    kept = 0
    for heads in cases:
        membership = w.dag.state(set(heads)).membership
        for who in ("p5", "p12"):
            parents = w.parent_epochs(who, tuple(sorted(heads)))
            fast = merged_base_tree(suite, parents, membership)
            assert list(fast.nodes()) == _reference_merged_tree(suite, parents, membership)
            kept += sum(1 for x in range(1, fast.width, 2) if fast.parent_node(x) is not None)
    assert kept > 0  # some nodes were kept, so the unmerged logic was exercised
    m = w.merge("p5", (a1, c1))
    w.check_epoch(m)


def test_record_helpers(forked: tuple[World, bytes, bytes]) -> None:
    from crdt_mls.merge.records import membership_from_tree, merge_record, tree_changes

    w, a1, b1 = forked
    tree = w.trees[a1]
    m = membership_from_tree(tree, a1)
    assert {x.key for x in m.members} == {lf.signature_key for _, lf in tree.members()}
    assert all(x.added_in == a1 for x in m.members)
    assert tree_changes(tree, tree) == ()
    with pytest.raises(InvalidArgument):
        tree_changes(w.trees[w.genesis], tree, evicted=[w.key("alice")])  # Alice was not removed
    with pytest.raises(InvalidArgument):
        merge_record(b"x", w.key("dave"), 0, None, (), (a1, b1), tree)  # Dave is not in A1's tree
    with pytest.raises(InvalidArgument):
        merge_record(b"x", w.key("alice"), 0, None, (), (a1,), tree)  # one parent is no merge
