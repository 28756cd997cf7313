"""Live interop with ts-mls, an independent RFC 9420 implementation (issue 2; docs/interop.md).

Every value crossing between the two implementations is RFC 9420 wire bytes: KeyPackage,
Welcome, GroupInfo, PublicMessage/PrivateMessage MLSMessages and the TLS-encoded ratchet
tree.  After every epoch change both sides must agree on the epoch, the tree hash, the
confirmed transcript hash, the epoch authenticator (RFC 9420 section 8.7) and an
MLS-Exporter secret (section 8.5); application messages must decrypt both ways.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable

import pytest

from crdt_mls.errors import RemoteInputError
from crdt_mls.mls.codec import Reader
from crdt_mls.mls.group import (
    ApplicationMessage,
    CommitApplied,
    Group,
    ProposalReceived,
    make_key_package,
    new_member_proposal,
)
from crdt_mls.mls.messages import (
    Credential,
    Extension,
    ExtensionType,
    ExternalSender,
    GroupContextExtensions,
    GroupInfo,
    KeyPackage,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    ReInit,
    RequiredCapabilities,
    ResumptionPSKUsage,
)
from crdt_mls.mls.welcome import sign_group_info

from .conftest import PeerError, TsPeer

pytestmark = pytest.mark.interop

#: Cipher suites exercised: 1 (the mandatory one) and 2 (P-256) by default; every other suite both
#: sides implement (3-7) under the ``slow`` marker (P-384/P-521/X448 in pure JS take seconds).
SUITES = [1, 2, *(pytest.param(s, marks=pytest.mark.slow) for s in (3, 4, 5, 6, 7))]
EXPORT_LABEL = "crdt-mls interop"
EXPORT_CONTEXT = b"exporter context"


def check_same_epoch(ts: TsPeer, ours: Group, theirs: str) -> None:
    """Our member ``ours`` and ts-mls client ``theirs`` are in the same epoch with the same secrets."""
    st = ts.call("state", client=theirs)
    gc = ours.group_context
    assert st["epoch"] == gc.epoch
    assert bytes.fromhex(st["tree_hash"]) == gc.tree_hash
    assert bytes.fromhex(st["confirmed_transcript_hash"]) == gc.confirmed_transcript_hash
    assert bytes.fromhex(st["epoch_authenticator"]) == ours.epoch_authenticator
    exported = ts.call("export_secret", client=theirs, label=EXPORT_LABEL, context=EXPORT_CONTEXT.hex(), length=32)
    assert bytes.fromhex(exported["secret"]) == ours.export_secret(EXPORT_LABEL, EXPORT_CONTEXT, 32)
    assert sorted(i for i, _ in st["members"]) == sorted(i for i, _ in ours.members())
    # byte for byte: the same public ratchet tree (RFC 9420 section 12.4.3.3 encoding)
    assert bytes.fromhex(st["ratchet_tree"]) == ours.tree.encode()


def ts_to_us(ts: TsPeer, sender: str, ours: Group, text: bytes) -> Group:
    """ts-mls client ``sender`` encrypts ``text``; our member decrypts it."""
    msg = bytes.fromhex(ts.call("protect", client=sender, data=text.hex())["message"])
    sender_leaf = ts.call("state", client=sender)["own_leaf"]
    ours, event = ours.process(msg)
    assert isinstance(event, ApplicationMessage)
    assert event.data == text
    assert event.sender == sender_leaf
    return ours


def us_to_ts(ts: TsPeer, ours: Group, receivers: list[str], text: bytes) -> Group:
    """Our member encrypts ``text``; every ts-mls client in ``receivers`` decrypts it."""
    msg, ours = ours.protect_application(text)
    for r in receivers:
        got = ts.call("process", client=r, message=msg.hex())
        assert got["kind"] == "application"
        assert bytes.fromhex(got["data"]) == text
    return ours


def ts_commit(ts: TsPeer, client: str, **kw: object) -> tuple[bytes, bytes | None, bytes]:
    """A ts-mls commit -> (commit, welcome or None, encoded ratchet tree)."""
    res = ts.call("commit", client=client, **kw)
    welcome = bytes.fromhex(res["welcome"]) if res["welcome"] else None
    return bytes.fromhex(res["commit"]), welcome, bytes.fromhex(res["ratchet_tree"])


def ts_process(ts: TsPeer, client: str, message: bytes) -> dict[str, object]:
    return ts.call("process", client=client, message=message.hex())


def process_commit(ours: Group, commit: bytes) -> tuple[Group, CommitApplied]:
    ours, event = ours.process(commit)
    assert isinstance(event, CommitApplied)
    return ours, event


def tag(name: str, suite: int) -> str:
    """A unique ts-mls client name per test and suite (one peer process serves the whole module)."""
    return f"{name}-{suite}-{os.urandom(4).hex()}"


# ------------------------------------------------------------------------------ (a)


@pytest.mark.parametrize("suite", SUITES)
def test_we_create_ts_mls_joins(ts_peer: TsPeer, suite: int) -> None:
    """We create the group and add ts-mls; it joins from our Welcome and follows our update and remove
    commits (public and private); messages flow both ways; it commits too and we follow."""
    ts = ts_peer
    bob, carol = tag("bob", suite), tag("carol", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))

    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    commit, welcome, alice = alice.commit(add=[kp_bob])
    assert welcome is not None
    joined = ts.call("join", client=bob, welcome=welcome.hex())  # ratchet tree from our GroupInfo extension
    assert joined["own_leaf"] == 1
    check_same_epoch(ts, alice, bob)

    alice = us_to_ts(ts, alice, [bob], b"hello ts-mls")
    alice = ts_to_us(ts, bob, alice, b"hello crdt-mls")
    alice = us_to_ts(ts, alice, [bob], b"second message, next generation")

    # our update commits (full UpdatePath), as PublicMessage and as PrivateMessage
    for private in (False, True):
        commit, welcome, alice = alice.commit(private=private)
        assert welcome is None
        assert ts_process(ts, bob, commit)["kind"] == "handshake"
        check_same_epoch(ts, alice, bob)

    # our Update proposal, committed by reference by ts-mls
    proposal, alice = alice.propose_update()
    assert ts_process(ts, bob, proposal)["kind"] == "handshake"
    commit, _, _ = ts_commit(ts, bob)
    alice, event = process_commit(alice, commit)
    assert event.updated == (0,)
    check_same_epoch(ts, alice, bob)
    alice = ts_to_us(ts, bob, alice, b"after your update")

    # add a second ts-mls member, then remove it; bob follows both commits
    kp_carol = bytes.fromhex(ts.call("key_package", client=carol, suite=suite, identity="ts-carol")["key_package"])
    commit, welcome, alice = alice.commit(add=[kp_carol], private=True)
    assert welcome is not None
    ts_process(ts, bob, commit)
    assert ts.call("join", client=carol, welcome=welcome.hex())["own_leaf"] == 2
    check_same_epoch(ts, alice, bob)
    check_same_epoch(ts, alice, carol)
    alice = us_to_ts(ts, alice, [bob, carol], b"three of us")

    commit, _, alice = alice.commit(remove=[2])
    ts_process(ts, bob, commit)
    removed = ts_process(ts, carol, commit)
    assert removed["active"] == "removedFromGroup"
    check_same_epoch(ts, alice, bob)
    assert [i for i, _ in alice.members()] == [0, 1]

    alice = us_to_ts(ts, alice, [bob], b"two again")
    alice = ts_to_us(ts, bob, alice, b"bye carol")


# ------------------------------------------------------------------------------ (b)


@pytest.mark.parametrize("suite", SUITES)
def test_ts_mls_creates_we_join(ts_peer: TsPeer, suite: int) -> None:
    """ts-mls creates the group and adds us; we join from its Welcome (tree given out of band)
    and follow its commits; ts-mls follows ours."""
    ts = ts_peer
    alice = tag("alice", suite)
    ts.call("create_group", client=alice, suite=suite, identity="ts-alice", group_id=os.urandom(16).hex())

    kp_pub, kp_bob = make_key_package(suite, b"py-bob")
    commit, welcome, tree = ts_commit(ts, alice, add=[kp_pub.hex()])
    assert welcome is not None
    bob = Group.join_from_welcome(welcome, kp_bob, ratchet_tree=tree)
    assert bob.own_leaf == 1
    check_same_epoch(ts, bob, alice)

    bob = ts_to_us(ts, alice, bob, b"welcome, crdt-mls")
    bob = us_to_ts(ts, bob, [alice], b"thanks, ts-mls")

    # ts-mls update commit (private by default), then a public one
    for public in (False, True):
        commit, welcome, _ = ts_commit(ts, alice, public_message=public)
        assert welcome is None
        bob, event = process_commit(bob, commit)
        assert event.sender.index == 0
        check_same_epoch(ts, bob, alice)

    # our update commit
    commit, _, bob = bob.commit(private=True)
    ts_process(ts, alice, commit)
    check_same_epoch(ts, bob, alice)

    # ts-mls adds a second member of ours (ratchet tree in the Welcome's GroupInfo this time)
    kp_pub_c, kp_carol = make_key_package(suite, b"py-carol")
    commit, welcome, _ = ts_commit(ts, alice, add=[kp_pub_c.hex()], ratchet_tree_extension=True)
    assert welcome is not None
    bob, event = process_commit(bob, commit)
    assert event.added == (2,)
    carol = Group.join_from_welcome(welcome, kp_carol)
    check_same_epoch(ts, bob, alice)
    check_same_epoch(ts, carol, alice)
    carol = ts_to_us(ts, alice, carol, b"hi carol")
    msg, carol = carol.protect_application(b"hi all")
    bob, app = bob.process(msg)
    assert isinstance(app, ApplicationMessage) and app.data == b"hi all"
    assert ts_process(ts, alice, msg)["data"] == b"hi all".hex()

    # ts-mls removes carol; bob follows, carol learns she is out
    commit, _, _ = ts_commit(ts, alice, remove=[2])
    bob, event = process_commit(bob, commit)
    assert event.removed == (2,)
    carol, event = process_commit(carol, commit)
    assert event.self_removed
    check_same_epoch(ts, bob, alice)

    # a ts-mls Remove proposal of bob's, committed by ts-mls: bob is out
    proposal = bytes.fromhex(ts.call("propose", client=alice, kind="remove", removed=1)["message"])
    bob, received = bob.process(proposal)
    assert isinstance(received, ProposalReceived)
    commit, _, _ = ts_commit(ts, alice)
    bob, event = process_commit(bob, commit)
    assert event.self_removed


# ------------------------------------------------------------------------------ (c)


@pytest.mark.parametrize("suite", [1, 2])
def test_three_party_mix(ts_peer: TsPeer, suite: int) -> None:
    """Two of ours (alice, carol) and one ts-mls (bob): one commit adds both joiners; commits
    from every member are followed by the other two; proposals from one side are committed
    by the other."""
    ts = ts_peer
    bob = tag("bob", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    kp_pub_c, kp_carol = make_key_package(suite, b"py-carol")
    commit, welcome, alice = alice.commit(add=[kp_bob, kp_pub_c])
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())
    carol = Group.join_from_welcome(welcome, kp_carol)
    assert carol.own_leaf == 2

    def synced() -> None:
        check_same_epoch(ts, alice, bob)
        check_same_epoch(ts, carol, bob)

    synced()

    # carol commits (private); alice and bob follow
    commit, _, carol = carol.commit(private=True)
    alice, _ = process_commit(alice, commit)
    ts_process(ts, bob, commit)
    synced()

    # bob (ts-mls) commits; alice and carol follow
    commit, _, _ = ts_commit(ts, bob)
    alice, _ = process_commit(alice, commit)
    carol, _ = process_commit(carol, commit)
    synced()

    # messages from everyone to everyone
    msg, alice = alice.protect_application(b"from alice")
    carol, ev = carol.process(msg)
    assert isinstance(ev, ApplicationMessage) and ev.data == b"from alice"
    assert ts_process(ts, bob, msg)["data"] == b"from alice".hex()
    msg = bytes.fromhex(ts.call("protect", client=bob, data=b"from bob".hex())["message"])
    for g in (alice, carol):
        _, ev = g.process(msg)
        assert isinstance(ev, ApplicationMessage) and ev.data == b"from bob" and ev.sender == 1
    alice, _ = alice.process(msg)
    carol, _ = carol.process(msg)
    msg, carol = carol.protect_application(b"from carol")
    alice, ev = alice.process(msg)
    assert isinstance(ev, ApplicationMessage) and (ev.data, ev.sender) == (b"from carol", 2)
    assert ts_process(ts, bob, msg)["data"] == b"from carol".hex()

    # carol (ours) proposes an Update; bob (ts-mls) commits it by reference
    proposal, carol = carol.propose_update()
    alice, ev = alice.process(proposal)
    assert isinstance(ev, ProposalReceived)
    ts_process(ts, bob, proposal)
    commit, _, _ = ts_commit(ts, bob)
    alice, ev_a = process_commit(alice, commit)
    carol, ev_c = process_commit(carol, commit)
    assert ev_a.updated == ev_c.updated == (2,)
    synced()

    # a ts-mls Add proposal (a fourth member, ours) committed by alice
    kp_pub_d, kp_dave = make_key_package(suite, b"py-dave")
    proposal = bytes.fromhex(ts.call("propose", client=bob, kind="add", key_package=kp_pub_d.hex())["message"])
    alice, _ = alice.process(proposal)
    carol, _ = carol.process(proposal)
    commit, welcome, alice = alice.commit()
    assert welcome is not None
    carol, _ = process_commit(carol, commit)
    ts_process(ts, bob, commit)
    dave = Group.join_from_welcome(welcome, kp_dave)
    synced()
    check_same_epoch(ts, dave, bob)

    # alice removes carol; bob and dave follow
    commit, _, alice = alice.commit(remove=[2])
    ts_process(ts, bob, commit)
    dave, _ = process_commit(dave, commit)
    carol, ev = process_commit(carol, commit)
    assert ev.self_removed
    check_same_epoch(ts, alice, bob)
    check_same_epoch(ts, dave, bob)


# ------------------------------------------------------------------------------ external joins


def ts_dialect_group_info(group: Group) -> bytes:
    """Our GroupInfo with ts-mls's external_pub encoding (the bare key, no ExternalPub struct
    length prefix), re-signed by ``group``; see `test_ts_mls_external_pub_deviation`."""
    gi = group._signed_group_info(True, True)
    exts = tuple(
        Extension(e.extension_type, _external_pub_key(e.extension_data))
        if e.extension_type == ExtensionType.EXTERNAL_PUB
        else e
        for e in gi.extensions
    )
    unsigned = GroupInfo(gi.group_context, exts, gi.confirmation_tag, gi.signer)
    return MLSMessage(sign_group_info(group.suite, unsigned, group.signature_priv)).to_bytes()


def _external_pub_key(extension_data: bytes) -> bytes:
    """The key inside ``struct { HPKEPublicKey external_pub; }`` (RFC 9420 section 12.4.3.2)."""
    r = Reader(extension_data)
    key = r.opaque()
    r.finish()
    return key


@pytest.mark.parametrize("suite", [1, 2])
def test_external_joins_both_ways(ts_peer: TsPeer, suite: int) -> None:
    """ts-mls joins our group by external commit, and we join a ts-mls group by external commit
    (RFC 9420 section 12.4.3.2); the external_pub encoding is converted as documented."""
    ts = ts_peer
    bob, dora = tag("bob", suite), tag("dora", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))
    res = ts.call(
        "join_external", client=bob, suite=suite, identity="ts-bob", group_info=ts_dialect_group_info(alice).hex()
    )
    alice, event = process_commit(alice, bytes.fromhex(res["commit"]))
    assert event.epoch == 1 and event.sender.sender_type.name == "NEW_MEMBER_COMMIT"
    assert [i for i, _ in alice.members()] == [0, 1]
    check_same_epoch(ts, alice, bob)
    alice = ts_to_us(ts, bob, alice, b"joined by myself")
    alice = us_to_ts(ts, alice, [bob], b"welcome aboard")

    ts.call("create_group", client=dora, suite=suite, identity="ts-dora", group_id=os.urandom(16).hex())
    gi = bytes.fromhex(ts.call("group_info", client=dora)["group_info"])
    commit, carol = Group.join_external(gi, b"py-carol")
    assert ts_process(ts, dora, commit)["kind"] == "handshake"
    check_same_epoch(ts, carol, dora)
    carol = us_to_ts(ts, carol, [dora], b"knock knock")
    carol = ts_to_us(ts, dora, carol, b"come in")


def test_resync_external_joins_both_ways(ts_peer: TsPeer) -> None:
    """A member that lost its state rejoins by external commit removing its old leaf
    (RFC 9420 section 12.4.3.2 resync), ts-mls into our group and ours into a ts-mls group."""
    ts = ts_peer
    suite = 1
    bob, bob_again, dora = tag("bob", suite), tag("bob-again", suite), tag("dora", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    _, welcome, alice = alice.commit(add=[kp_bob])
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())

    res = ts.call(
        "join_external",
        client=bob_again,
        suite=suite,
        identity="ts-bob",
        group_info=ts_dialect_group_info(alice).hex(),
        resync_from=bob,
    )
    alice, event = process_commit(alice, bytes.fromhex(res["commit"]))
    assert event.removed == (1,)
    assert [i for i, _ in alice.members()] == [0, 1]
    check_same_epoch(ts, alice, bob_again)
    alice = ts_to_us(ts, bob_again, alice, b"back again")

    # one of ours (carol, leaf 1 of a ts-mls group) rejoins by external commit
    ts.call("create_group", client=dora, suite=suite, identity="ts-dora", group_id=os.urandom(16).hex())
    kp_pub_c, kp_carol = make_key_package(suite, b"py-carol")
    _, welcome, _ = ts_commit(ts, dora, add=[kp_pub_c.hex()], ratchet_tree_extension=True)
    assert welcome is not None
    carol = Group.join_from_welcome(welcome, kp_carol)
    gi = bytes.fromhex(ts.call("group_info", client=dora)["group_info"])
    commit, carol2 = Group.join_external(
        gi, b"py-carol", signature_priv=carol.signature_priv, remove_leaf=carol.own_leaf
    )
    assert ts_process(ts, dora, commit)["kind"] == "handshake"
    assert carol2.own_leaf == 1
    check_same_epoch(ts, carol2, dora)
    carol2 = us_to_ts(ts, carol2, [dora], b"resynced")


def test_ts_mls_external_pub_deviation(ts_peer: TsPeer) -> None:
    """ts-mls 1.6.4 writes and reads the external_pub extension as the bare HPKE key; RFC 9420
    section 12.4.3.2 makes it ``ExternalPub { HPKEPublicKey external_pub; }``, i.e. a varint
    length then the key.  Each side rejects the other's raw form (typed error on ours)."""
    ts = ts_peer
    bob, dora = tag("bob", 1), tag("dora", 1)
    alice = Group.create(1, b"py-alice", group_id=os.urandom(16))
    ours = MLSMessage.from_bytes(alice.group_info()).body
    assert isinstance(ours, GroupInfo)
    ext = next(e for e in ours.extensions if e.extension_type == ExtensionType.EXTERNAL_PUB)
    assert ext.extension_data == bytes([32]) + alice.epoch_secrets.external_pub()
    with pytest.raises(PeerError, match="Invalid public key"):
        ts.call("join_external", client=bob, suite=1, identity="ts-bob", group_info=alice.group_info().hex())

    ts.call("create_group", client=dora, suite=1, identity="ts-dora", group_id=os.urandom(16).hex())
    raw = bytes.fromhex(ts.call("group_info", client=dora, raw_external_pub=True)["group_info"])
    theirs = MLSMessage.from_bytes(raw).body
    assert isinstance(theirs, GroupInfo)
    ext = next(e for e in theirs.extensions if e.extension_type == ExtensionType.EXTERNAL_PUB)
    assert len(ext.extension_data) == 32  # bare X25519 key, no length prefix
    with pytest.raises(RemoteInputError):
        Group.join_external(raw, b"py-carol")


def test_ts_mls_compressed_signature_key_deviation(ts_peer: TsPeer) -> None:
    """ts-mls 1.6.4 generates P-256 signature keys as compressed points (33 bytes); RFC 9420
    section 5.1.1 requires UncompressedPointRepresentation, so we refuse such a KeyPackage."""
    ts = ts_peer
    raw = ts.call("key_package", client=tag("eve", 2), suite=2, identity="ts-eve", compressed_signature_key=True)
    kp = MLSMessage.from_bytes(bytes.fromhex(raw["key_package"])).body
    assert isinstance(kp, KeyPackage)
    assert len(kp.leaf_node.signature_key) == 33 and kp.leaf_node.signature_key[0] in (2, 3)
    alice = Group.create(2, b"py-alice", group_id=os.urandom(16))
    with pytest.raises(RemoteInputError):
        alice.commit(add=[bytes.fromhex(raw["key_package"])])


# ------------------------------------------------------------------------------ hostile input


def test_tampered_ts_mls_message_leaves_state_unchanged(ts_peer: TsPeer) -> None:
    """A flipped bit in a ts-mls PrivateMessage is a typed error and our state is unchanged."""
    ts = ts_peer
    suite = 1
    bob = tag("bob", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    _, welcome, alice = alice.commit(add=[kp_bob])
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())
    msg = bytearray.fromhex(ts.call("protect", client=bob, data=b"secret".hex())["message"])
    msg[-5] ^= 1
    before = alice.to_bytes()
    with pytest.raises(RemoteInputError):
        alice.process(bytes(msg))
    assert alice.to_bytes() == before
    # and ts-mls rejects our tampered message too
    good, alice = alice.protect_application(b"secret")
    bad = bytearray(good)
    bad[-5] ^= 1
    with pytest.raises(PeerError):
        ts_process(ts, bob, bytes(bad))
    assert ts_process(ts, bob, good)["data"] == b"secret".hex()


# ------------------------------------------------------------------------------ tree shapes


def test_tree_shapes_blanks_unmerged_leaves_truncation(ts_peer: TsPeer) -> None:
    """Blank leaves in the middle, unmerged leaves on parent nodes (adds without path), blanked
    direct paths, filled holes, and tree truncation after removing the rightmost leaves
    (RFC 9420 sections 4.1.2, 7.7, 7.8); commits from both implementations; trees byte-equal."""
    ts = ts_peer
    suite = 1
    bob, carol = tag("bob", suite), tag("carol", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))
    privs = []
    kps: list[bytes] = []
    for i in range(6):
        pub, priv = make_key_package(suite, f"py-{i}".encode())
        kps.append(pub)
        privs.append(priv)
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    # adds only, no path: the new leaves become unmerged leaves of the parents above them
    commit, welcome, alice = alice.commit(add=[*kps, kp_bob], force_path=False)
    assert welcome is not None
    ours = [alice, *(Group.join_from_welcome(welcome, p) for p in privs)]
    assert ts.call("join", client=bob, welcome=welcome.hex())["own_leaf"] == 7

    def all_process(commit: bytes, committer: int | None) -> None:
        for i, g in enumerate(ours):
            if i != committer and g.active:
                ours[i], _ = process_commit(g, commit)

    def synced() -> None:
        for g in ours:
            if g.active:
                check_same_epoch(ts, g, bob)

    synced()
    # ts-mls commits a path over a tree full of unmerged leaves
    commit, _, _ = ts_commit(ts, bob)
    all_process(commit, None)
    synced()
    # we remove leaves 3 and 5 (holes, blanked direct paths)
    commit, _, ours[0] = ours[0].commit(remove=[3, 5])
    all_process(commit, 0)
    ts_process(ts, bob, commit)
    synced()
    # ts-mls adds carol into the leftmost hole (leaf 3)
    kp_carol = ts.call("key_package", client=carol, suite=suite, identity="ts-carol")["key_package"]
    commit, welcome, _ = ts_commit(ts, bob, add=[kp_carol], ratchet_tree_extension=True)
    assert welcome is not None
    all_process(commit, None)
    assert ts.call("join", client=carol, welcome=welcome.hex())["own_leaf"] == 3
    synced()
    # our member at leaf 4 commits a path (its copath includes carol's fresh leaf)
    commit, _, ours[4] = ours[4].commit(private=True)
    all_process(commit, 4)
    ts_process(ts, bob, commit)
    ts_process(ts, carol, commit)
    synced()
    # empty the right half but for bob (leaves 4 and 6); the tree truncates when bob leaves too
    commit, _, ours[1] = ours[1].commit(remove=[4, 6])
    all_process(commit, 1)
    ts_process(ts, bob, commit)
    ts_process(ts, carol, commit)
    synced()
    assert ours[1].tree.n_leaves == 8
    commit, _, _ = ts_commit(ts, carol, remove=[7])  # ts-mls removes ts-mls bob: tree shrinks to 4 leaves
    all_process(commit, None)
    assert ts_process(ts, bob, commit)["active"] == "removedFromGroup"
    for g in ours:
        if g.active:
            check_same_epoch(ts, g, carol)
    assert ours[0].tree.n_leaves == 4
    msg, ours[2] = ours[2].protect_application(b"after truncation")
    assert bytes.fromhex(str(ts_process(ts, carol, msg)["data"])) == b"after truncation"


# ------------------------------------------------------------------------------ application data


def test_application_messages_out_of_order_with_aad_and_padding(ts_peer: TsPeer) -> None:
    """Several generations delivered in reverse order both ways (RFC 9420 section 9: the secret
    tree keeps skipped generations), with authenticated_data, and with our padding (6.3.1)."""
    ts = ts_peer
    suite = 1
    bob = tag("bob", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    _, welcome, alice = alice.commit(add=[kp_bob])
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())

    sent = []
    for i in range(5):
        aad = f"aad {i}".encode()
        raw = ts.call("protect", client=bob, data=f"ts {i}".encode().hex(), authenticated_data=aad.hex())
        sent.append((bytes.fromhex(raw["message"]), f"ts {i}".encode(), aad))
    for msg, data, aad in reversed(sent):
        alice, event = alice.process(msg)
        assert isinstance(event, ApplicationMessage)
        assert (event.data, event.authenticated_data, event.sender) == (data, aad, 1)
    with pytest.raises(RemoteInputError):  # a replayed generation is refused
        alice.process(sent[0][0])

    ours = []
    for i in range(5):
        msg, alice = alice.protect_application(f"py {i}".encode(), authenticated_data=b"ours", padding=64)
        ours.append((msg, f"py {i}".encode()))
    assert all(len(ours[0][0]) == len(m) for m, _ in ours)  # padded to the same length
    for msg, data in reversed(ours):
        assert bytes.fromhex(str(ts_process(ts, bob, msg)["data"])) == data
    with pytest.raises(PeerError):
        ts_process(ts, bob, ours[-1][0])


# ------------------------------------------------------------------------------ external proposals


def test_new_member_proposals_both_ways(ts_peer: TsPeer) -> None:
    """A non-member asks to be added (Add of its own KeyPackage, sender new_member_proposal,
    RFC 9420 section 12.1.8): ts-mls into our group, and one of ours into a ts-mls group."""
    ts = ts_peer
    suite = 1
    bob, carol = tag("bob", suite), tag("carol", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))

    # ts-mls bob asks to be added; we commit it by reference; bob joins with the same KeyPackage
    msg = ts.call(
        "propose_add_external", client=bob, suite=suite, identity="ts-bob", group_info=alice.group_info().hex()
    )
    alice, received = alice.process(bytes.fromhex(msg["message"]))
    assert isinstance(received, ProposalReceived)
    assert received.sender.sender_type.name == "NEW_MEMBER_PROPOSAL"
    _, welcome, alice = alice.commit()
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())
    check_same_epoch(ts, alice, bob)
    alice = ts_to_us(ts, bob, alice, b"thanks for letting me in")

    # one of ours asks to join a ts-mls group; ts-mls commits it by reference
    ts.call("create_group", client=carol, suite=suite, identity="ts-carol", group_id=os.urandom(16).hex())
    st = ts.call("state", client=carol)
    gi = MLSMessage.from_bytes(bytes.fromhex(ts.call("group_info", client=carol)["group_info"])).body
    assert isinstance(gi, GroupInfo)
    _, kp_dave = make_key_package(suite, b"py-dave")
    request = new_member_proposal(gi.group_context.group_id, st["epoch"], kp_dave)
    assert ts_process(ts, carol, request)["kind"] == "handshake"
    _, welcome, _ = ts_commit(ts, carol, ratchet_tree_extension=True)
    assert welcome is not None
    dave = Group.join_from_welcome(welcome, kp_dave)
    check_same_epoch(ts, dave, carol)
    dave = ts_to_us(ts, carol, dave, b"you asked")


def test_ts_mls_external_senders_deviation(ts_peer: TsPeer) -> None:
    """RFC 9420 section 12.1.8.1: the external_senders extension is ``ExternalSender
    external_senders<V>`` (a vector) and an external sender's ``sender_index`` indexes that
    vector.  ts-mls 1.6.4 decodes the extension data as ONE ExternalSender (no vector length)
    and uses the index of the extension among the GroupContext extensions as sender_index.  So
    it cannot act as an external sender of a group of ours (pinned here); it can be a member."""
    ts = ts_peer
    suite = 1
    server, bob = tag("server", suite), tag("bob", suite)
    sender_key = bytes.fromhex(ts.call("external_sender_keys", client=server, suite=suite)["signature_key"])
    senders = Extension.external_senders([ExternalSender(sender_key, Credential.basic(b"ts-server"))])
    assert senders.extension_data[0] == len(senders.extension_data) - 1  # the vector's varint length
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16), extensions=[senders])
    with pytest.raises(PeerError, match="Could not decode external_sender extension"):
        ts.call("propose_external", client=server, group_info=alice.group_info().hex(), removed=0)
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    _, welcome, alice = alice.commit(add=[kp_bob])
    assert welcome is not None
    # joining such a group works (ts-mls keeps the extension bytes as they are) and both agree
    ts.call("join", client=bob, welcome=welcome.hex())
    check_same_epoch(ts, alice, bob)


# ------------------------------------------------------------------------------ PSKs


def test_psk_proposals_both_ways(ts_peer: TsPeer) -> None:
    """External and resumption PSKs (RFC 9420 sections 8.4, 12.1.4): PSK proposals by value in
    commits from each side, a ts-mls resumption PSK proposal committed by reference by us, and
    Welcomes that need the external PSK, to a ts-mls joiner and to one of ours."""
    ts = ts_peer
    suite = 1
    bob, carol = tag("bob", suite), tag("carol", suite)
    psk_id, psk = b"interop external psk", os.urandom(32)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16)).with_external_psk(psk_id, psk)
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    ts.call("add_external_psk", client=bob, psk_id=psk_id.hex(), psk=psk.hex())
    # the Welcome's key schedule needs the PSK (the joiner gets psk ids in GroupSecrets)
    commit, welcome, alice = alice.commit(
        proposals=[PreSharedKey(PreSharedKeyID.external(psk_id, os.urandom(32)))], add=[kp_bob]
    )
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())
    check_same_epoch(ts, alice, bob)

    # ts-mls commits an external PSK by value
    commit, _, _ = ts_commit(ts, bob, psk=[{"kind": "external", "id": psk_id.hex(), "nonce": os.urandom(32).hex()}])
    alice, _ = process_commit(alice, commit)
    check_same_epoch(ts, alice, bob)

    # we commit a resumption PSK of the previous epoch by value
    previous = alice.epoch - 1
    rpsk = PreSharedKeyID.resumption(ResumptionPSKUsage.APPLICATION, alice.group_id, previous, os.urandom(32))
    commit, _, alice = alice.commit(proposals=[PreSharedKey(rpsk)], private=True)
    ts_process(ts, bob, commit)
    check_same_epoch(ts, alice, bob)

    # ts-mls proposes a resumption PSK of the previous epoch; we commit it by reference
    spec = {
        "kind": "resumption",
        "group_id": alice.group_id.hex(),
        "epoch": alice.epoch - 1,
        "nonce": os.urandom(32).hex(),
    }
    proposal = bytes.fromhex(ts.call("propose", client=bob, kind="psk", psk=spec)["message"])
    alice, received = alice.process(proposal)
    assert isinstance(received, ProposalReceived)
    commit, _, alice = alice.commit()
    ts_process(ts, bob, commit)
    check_same_epoch(ts, alice, bob)

    # ts-mls adds our dave and ts carol with an external PSK in the same commit
    kp_pub_d, kp_dave = make_key_package(suite, b"py-dave")
    kp_carol = ts.call("key_package", client=carol, suite=suite, identity="ts-carol")["key_package"]
    ts.call("add_external_psk", client=carol, psk_id=psk_id.hex(), psk=psk.hex())
    commit, welcome, _ = ts_commit(
        ts,
        bob,
        add=[kp_pub_d.hex(), kp_carol],
        psk=[{"kind": "external", "id": psk_id.hex(), "nonce": os.urandom(32).hex()}],
        ratchet_tree_extension=True,
    )
    assert welcome is not None
    alice, _ = process_commit(alice, commit)
    with pytest.raises(RemoteInputError):  # without the PSK the Welcome cannot be opened
        Group.join_from_welcome(welcome, kp_dave)
    dave = Group.join_from_welcome(welcome, kp_dave, external_psks={psk_id: psk})
    ts.call("join", client=carol, welcome=welcome.hex())
    for ours in (alice, dave):
        check_same_epoch(ts, ours, bob)
        check_same_epoch(ts, ours, carol)


# ------------------------------------------------------------------------------ group context extensions


def test_group_context_extensions_both_ways(ts_peer: TsPeer) -> None:
    """GroupContextExtensions proposals (RFC 9420 section 12.1.7) setting required_capabilities
    (11.1), committed by us and by ts-mls; the new GroupContext is bound into the key schedule,
    so equal epoch authenticators prove both sides applied the same extensions."""
    ts = ts_peer
    suite = 1
    bob = tag("bob", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    _, welcome, alice = alice.commit(add=[kp_bob])
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())

    basic_only = Extension.required_capabilities(RequiredCapabilities(credential_types=(1,)))
    commit, _, alice = alice.commit(proposals=[GroupContextExtensions((basic_only,))])
    ts_process(ts, bob, commit)
    check_same_epoch(ts, alice, bob)
    assert alice.group_context.extensions == (basic_only,)

    both = Extension.required_capabilities(RequiredCapabilities(credential_types=(1, 2)))
    gce = [{"type": both.extension_type, "data": both.extension_data.hex()}]
    commit, _, _ = ts_commit(ts, bob, group_context_extensions=gce)
    alice, _ = process_commit(alice, commit)
    check_same_epoch(ts, alice, bob)
    assert alice.group_context.extensions == (both,)

    # a later joiner (ours) gets the extensions through ts-mls's Welcome
    kp_pub_c, kp_carol = make_key_package(suite, b"py-carol")
    commit, welcome, _ = ts_commit(ts, bob, add=[kp_pub_c.hex()], ratchet_tree_extension=True)
    assert welcome is not None
    alice, _ = process_commit(alice, commit)
    carol = Group.join_from_welcome(welcome, kp_carol)
    assert carol.group_context.extensions == (both,)
    check_same_epoch(ts, carol, bob)


# ------------------------------------------------------------------------------ mixed proposal lists


def test_commit_with_every_proposal_kind(ts_peer: TsPeer) -> None:
    """One commit carrying proposals of many kinds and senders, by reference and by value, which
    must be applied in the RFC 9420 section 12.3 order (GroupContextExtensions, Update, Remove,
    Add, PreSharedKey): first committed by us and followed by ts-mls, then committed by ts-mls
    and followed by us."""
    ts = ts_peer
    suite = 1
    bob, carol = tag("bob", suite), tag("carol", suite)
    psk_id, psk = b"kitchen sink psk", os.urandom(32)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16)).with_external_psk(psk_id, psk)
    kps = [make_key_package(suite, f"py-{i}".encode()) for i in range(4)]
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    ts.call("add_external_psk", client=bob, psk_id=psk_id.hex(), psk=psk.hex())
    _, welcome, alice = alice.commit(add=[kp_bob, kps[0][0], kps[1][0], kps[2][0]])
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())
    p1, p2, p3 = (Group.join_from_welcome(welcome, kps[i][1]).with_external_psk(psk_id, psk) for i in range(3))

    def deliver(msg: bytes, sender: Group | None) -> None:
        nonlocal alice, p1, p2, p3
        groups = [alice, p1, p2, p3]
        out = [g if g is sender else g.process(msg)[0] for g in groups]
        alice, p1, p2, p3 = out

    # pending: p1's Update (leaf 2), p2's Remove of p3 (leaf 4), bob's (ts-mls) Add of a new
    # member of ours
    upd, p1 = p1.propose_update()
    deliver(upd, p1)
    ts_process(ts, bob, upd)
    rem, p2 = p2.propose_remove(4)
    deliver(rem, p2)
    ts_process(ts, bob, rem)
    kp_pub_x, kp_x = make_key_package(suite, b"py-x")
    add = bytes.fromhex(ts.call("propose", client=bob, kind="add", key_package=kp_pub_x.hex())["message"])
    deliver(add, None)
    # alice adds more by value: another ts-mls member, a PSK and new group context extensions
    kp_carol = bytes.fromhex(ts.call("key_package", client=carol, suite=suite, identity="ts-carol")["key_package"])
    ts.call("add_external_psk", client=carol, psk_id=psk_id.hex(), psk=psk.hex())
    gce = Extension.required_capabilities(RequiredCapabilities(credential_types=(1,)))
    commit, welcome, alice = alice.commit(
        proposals=[GroupContextExtensions((gce,)), PreSharedKey(PreSharedKeyID.external(psk_id, os.urandom(32)))],
        add=[kp_carol],
        private=True,
    )
    assert welcome is not None
    p1, e1 = process_commit(p1, commit)
    p2, _ = process_commit(p2, commit)
    p3, e3 = process_commit(p3, commit)
    assert e3.self_removed and e1.updated == (2,) and e1.removed == (4,)
    ts_process(ts, bob, commit)
    ts.call("join", client=carol, welcome=welcome.hex())
    x = Group.join_from_welcome(welcome, kp_x, external_psks={psk_id: psk}).with_external_psk(psk_id, psk)
    assert (p1.own_leaf, p2.own_leaf) == (2, 3)
    for g in (alice, p1, p2, x):
        check_same_epoch(ts, g, bob)
        check_same_epoch(ts, g, carol)

    # now ts-mls commits a mix: our pending Update and Remove by reference, its own by value
    upd, x = x.propose_update()
    alice, p1, p2 = alice.process(upd)[0], p1.process(upd)[0], p2.process(upd)[0]
    rem, p2 = p2.propose_remove(2)  # p1
    alice, p1, x = alice.process(rem)[0], p1.process(rem)[0], x.process(rem)[0]
    for msg in (upd, rem):
        ts_process(ts, bob, msg)
        ts_process(ts, carol, msg)
    kp_pub_y, kp_y = make_key_package(suite, b"py-y")
    commit, welcome, _ = ts_commit(
        ts,
        bob,
        add=[kp_pub_y.hex()],
        psk=[{"kind": "external", "id": psk_id.hex(), "nonce": os.urandom(32).hex()}],
        ratchet_tree_extension=True,
    )
    assert welcome is not None
    alice, ev = process_commit(alice, commit)
    assert ev.removed == (2,) and ev.updated == (x.own_leaf,) and len(ev.added) == 1
    p1, ev = process_commit(p1, commit)
    assert ev.self_removed
    p2, _ = process_commit(p2, commit)
    x, _ = process_commit(x, commit)
    ts_process(ts, carol, commit)
    y = Group.join_from_welcome(welcome, kp_y, external_psks={psk_id: psk})
    for g in (alice, p2, x, y):
        check_same_epoch(ts, g, bob)
        check_same_epoch(ts, g, carol)


# ------------------------------------------------------------------------------ reinit and branch


def test_branch_both_ways(ts_peer: TsPeer) -> None:
    """Branch a subgroup with a ``branch`` resumption PSK (RFC 9420 section 11.3): we branch and
    ts-mls joins with its old state; ts-mls branches and we join with ours (``previous``)."""
    ts = ts_peer
    suite = 1
    bob, bob2, bob3 = tag("bob", suite), tag("bob2", suite), tag("bob3", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    _, welcome, alice = alice.commit(add=[kp_bob])
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())
    commit, _, _ = ts_commit(ts, bob)
    alice, _ = process_commit(alice, commit)

    # we branch; ts-mls bob joins with a new KeyPackage (same identity) and its old state
    kp_bob2 = bytes.fromhex(ts.call("key_package", client=bob2, suite=suite, identity="ts-bob")["key_package"])
    welcome, branch = alice.branch([kp_bob2])
    res = ts.call("join_linked", client=bob2, old_client=bob, welcome=welcome.hex(), kind="branch")
    assert res["epoch"] == 1
    check_same_epoch(ts, branch, bob2)
    branch = ts_to_us(ts, bob2, branch, b"in the branch")

    # ts-mls bob branches the original group; we join with our old group as `previous`
    kp_pub_a, kp_alice = make_key_package(suite, b"py-alice", signature_priv=alice.signature_priv)
    res = ts.call(
        "branch",
        client=bob,
        new_client=bob3,
        identity="ts-bob",
        key_packages=[kp_pub_a.hex()],
        group_id=os.urandom(16).hex(),
    )
    assert res["welcome"] is not None
    theirs = Group.join_from_welcome(
        bytes.fromhex(res["welcome"]), kp_alice, ratchet_tree=bytes.fromhex(res["ratchet_tree"]), previous=alice
    )
    assert theirs.epoch == 1
    check_same_epoch(ts, theirs, bob3)
    theirs = us_to_ts(ts, theirs, [bob3], b"in your branch")


def test_reinit_both_ways(ts_peer: TsPeer) -> None:
    """ReInit (RFC 9420 sections 11.2, 12.1.5): a committed ReInit suspends the group, then the
    new group is welcomed with a ``reinit`` resumption PSK; once led by us, once by ts-mls (both
    times moving from suite 1 to suite 3)."""
    ts = ts_peer
    bob, bob2, bob3 = tag("bob", 1), tag("bob2", 3), tag("bob3", 3)
    alice = Group.create(1, b"py-alice", group_id=os.urandom(16))
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=1, identity="ts-bob")["key_package"])
    _, welcome, alice = alice.commit(add=[kp_bob])
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())

    # we commit a ReInit to suite 3; ts-mls processes it and joins our new group
    new_gid = os.urandom(16)
    commit, _, old_alice = alice.commit(proposals=[ReInit(new_gid, 1, 3, ())])
    assert old_alice.reinit is not None
    assert ts_process(ts, bob, commit)["active"] == "suspendedPendingReinit"
    kp_bob2 = bytes.fromhex(ts.call("key_package", client=bob2, suite=3, identity="ts-bob")["key_package"])
    welcome, new_alice = old_alice.reinit_group([kp_bob2])
    res = ts.call("join_linked", client=bob2, old_client=bob, welcome=welcome.hex(), kind="reinit")
    assert res["epoch"] == 1 and new_alice.cipher_suite == 3
    check_same_epoch(ts, new_alice, bob2)
    new_alice = us_to_ts(ts, new_alice, [bob2], b"reinitialized")

    # ts-mls commits a ReInit of that group (back to a new suite-3 group); we follow and join
    newer_gid = os.urandom(16)
    commit = bytes.fromhex(ts.call("reinit", client=bob2, group_id=newer_gid.hex(), suite=3)["commit"])
    new_alice, event = process_commit(new_alice, commit)
    assert event.reinit is not None and event.reinit.group_id == newer_gid
    kp_pub_a, kp_alice = make_key_package(3, b"py-alice")
    res = ts.call(
        "reinit_create",
        client=bob2,
        new_client=bob3,
        identity="ts-bob",
        key_packages=[kp_pub_a.hex()],
        group_id=newer_gid.hex(),
        suite=3,
    )
    assert res["welcome"] is not None
    newest = Group.join_from_welcome(
        bytes.fromhex(res["welcome"]), kp_alice, ratchet_tree=bytes.fromhex(res["ratchet_tree"]), previous=new_alice
    )
    check_same_epoch(ts, newest, bob3)
    newest = ts_to_us(ts, bob3, newest, b"reinitialized again")


# ------------------------------------------------------------------------------ removed leaf reused


def test_removed_leaf_reused_in_same_commit(ts_peer: TsPeer) -> None:
    """A commit removing a member and adding another, who takes the freed leaf (RFC 9420
    section 12.3: removes first, then adds fill the leftmost blank leaf).  Our removed member
    learns it is out.  ts-mls 1.6.4 as the removed member cannot: it sees a leaf at its index,
    tries to decrypt the UpdatePath and fails with an InternalError (pinned here)."""
    ts = ts_peer
    suite = 1
    bob, carol = tag("bob", suite), tag("carol", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    kp_pub_d, kp_dave = make_key_package(suite, b"py-dave")
    _, welcome, alice = alice.commit(add=[kp_bob, kp_pub_d])
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())
    dave = Group.join_from_welcome(welcome, kp_dave)
    assert dave.own_leaf == 2

    # ts-mls (bob, leaf 1) removes our dave (leaf 2) and adds ts carol, who takes leaf 2
    kp_carol = ts.call("key_package", client=carol, suite=suite, identity="ts-carol")["key_package"]
    commit, welcome, _ = ts_commit(ts, bob, add=[kp_carol], remove=[2], ratchet_tree_extension=True)
    assert welcome is not None
    alice, event = process_commit(alice, commit)
    assert event.removed == (2,) and event.added == (2,)
    dave, event = process_commit(dave, commit)
    assert event.self_removed and not dave.active
    assert ts.call("join", client=carol, welcome=welcome.hex())["own_leaf"] == 2
    check_same_epoch(ts, alice, bob)
    check_same_epoch(ts, alice, carol)

    # we (alice) remove ts-mls bob (leaf 1) and add our erin, who takes leaf 1
    kp_pub_e, kp_erin = make_key_package(suite, b"py-erin")
    commit, welcome, alice = alice.commit(add=[kp_pub_e], remove=[1])
    assert welcome is not None
    ts_process(ts, carol, commit)
    erin = Group.join_from_welcome(welcome, kp_erin)
    assert erin.own_leaf == 1
    check_same_epoch(ts, alice, carol)
    check_same_epoch(ts, erin, carol)
    with pytest.raises(PeerError, match="No overlap between provided private keys and update path"):
        ts_process(ts, bob, commit)


# ------------------------------------------------------------------------------ mutated ts-mls messages


@pytest.mark.parametrize("public", [True, False])
def test_mutated_ts_mls_commits_are_typed_errors(ts_peer: TsPeer, public: bool) -> None:
    """Every single-bit flip (seeded sample of 150 positions) of a real ts-mls commit, and every
    truncation, is refused by us with a typed `RemoteInputError`, leaving our state byte-identical;
    then the genuine commit applies."""
    ts = ts_peer
    suite = 1
    bob = tag("bob", suite)
    alice = Group.create(suite, b"py-alice", group_id=os.urandom(16))
    kp_bob = bytes.fromhex(ts.call("key_package", client=bob, suite=suite, identity="ts-bob")["key_package"])
    kp_pub_c, _ = make_key_package(suite, b"py-carol")
    _, welcome, alice = alice.commit(add=[kp_bob])
    assert welcome is not None
    ts.call("join", client=bob, welcome=welcome.hex())
    commit, _, _ = ts_commit(ts, bob, add=[kp_pub_c.hex()], public_message=public)
    before = alice.to_bytes()
    rnd = random.Random(7 if public else 8)
    for pos in rnd.sample(range(len(commit) * 8), 150):
        bad = bytearray(commit)
        bad[pos // 8] ^= 1 << (pos % 8)
        with pytest.raises(RemoteInputError):
            alice.process(bytes(bad))
    for cut in rnd.sample(range(len(commit)), 30):
        with pytest.raises(RemoteInputError):
            alice.process(commit[:cut])
    assert alice.to_bytes() == before
    alice, event = process_commit(alice, commit)
    assert event.added == (2,)
    check_same_epoch(ts, alice, bob)


# ------------------------------------------------------------------------------ random soak


class _Ours:
    """One of our members in the soak test."""

    def __init__(self, name: str, group: Group) -> None:
        self.name, self.group = name, group

    @property
    def leaf(self) -> int:
        return self.group.own_leaf

    def protect(self, data: bytes) -> bytes:
        msg, self.group = self.group.protect_application(data)
        return msg

    def receive(self, msg: bytes) -> bytes | None:
        self.group, event = self.group.process(msg)
        return event.data if isinstance(event, ApplicationMessage) else None

    def commit(self, add: list[bytes], remove: list[int], private: bool) -> tuple[bytes, bytes | None]:
        commit, welcome, self.group = self.group.commit(add=add, remove=remove, private=private)
        return commit, welcome

    def propose_remove(self, leaf: int) -> bytes:
        msg, self.group = self.group.propose_remove(leaf)
        return msg

    def propose_update(self) -> bytes:
        msg, self.group = self.group.propose_update(private=True)
        return msg


class _Theirs:
    """One ts-mls member in the soak test."""

    def __init__(self, ts: TsPeer, name: str) -> None:
        self.ts, self.name = ts, name

    @property
    def leaf(self) -> int:
        leaf: int = self.ts.call("state", client=self.name)["own_leaf"]
        return leaf

    def protect(self, data: bytes) -> bytes:
        return bytes.fromhex(self.ts.call("protect", client=self.name, data=data.hex())["message"])

    def receive(self, msg: bytes) -> bytes | None:
        res = ts_process(self.ts, self.name, msg)
        return bytes.fromhex(str(res["data"])) if res["kind"] == "application" else None

    def commit(self, add: list[bytes], remove: list[int], private: bool) -> tuple[bytes, bytes | None]:
        commit, welcome, _ = ts_commit(
            self.ts,
            self.name,
            add=[k.hex() for k in add],
            remove=remove,
            public_message=not private,
            ratchet_tree_extension=True,
        )
        return commit, welcome

    def propose_remove(self, leaf: int) -> bytes:
        return bytes.fromhex(self.ts.call("propose", client=self.name, kind="remove", removed=leaf)["message"])


def _soak(ts: TsPeer, suite: int, steps: int, seed: int) -> None:
    """A seeded random history over a mixed group: messages, path commits, proposals committed
    by the other implementation, removals and fresh joins on both sides; after every commit all
    members agree (checked ts-mls member against each of ours)."""
    rnd = random.Random(seed)
    commits = {"_Ours": 0, "_Theirs": 0}
    counter = itertools.count()
    first = _Ours("py-0", Group.create(suite, b"py-0", group_id=os.urandom(16), rng=os.urandom))
    members: list[_Ours | _Theirs] = [first]

    def new_joiner(kind: str) -> tuple[bytes, Callable[[bytes], _Ours | _Theirs]]:
        n = next(counter)
        if kind == "ours":
            pub, priv = make_key_package(suite, f"py-{n}".encode())
            return pub, lambda w: _Ours(f"py-{n}", Group.join_from_welcome(w, priv))
        name = tag(f"ts{n}", suite)
        pub = bytes.fromhex(ts.call("key_package", client=name, suite=suite, identity=name)["key_package"])

        def join(w: bytes) -> _Theirs:
            ts.call("join", client=name, welcome=w.hex())
            return _Theirs(ts, name)

        return pub, join

    def broadcast(sender: _Ours | _Theirs, msg: bytes) -> list[bytes | None]:
        return [m.receive(msg) for m in members if m is not sender]

    def check() -> None:
        theirs = [m for m in members if isinstance(m, _Theirs)]
        for m in members:
            if isinstance(m, _Ours) and theirs:
                check_same_epoch(ts, m.group, theirs[0].name)

    def apply_commit(committer: _Ours | _Theirs, add: list[str], remove: list[int], private: bool) -> None:
        commits[type(committer).__name__] += 1
        joiners = [new_joiner(k) for k in add]
        commit, welcome = committer.commit([p for p, _ in joiners], remove, private)
        removed = [m for m in members if m is not committer and m.leaf in remove]
        for m in members:
            if m is committer or (isinstance(m, _Theirs) and m in removed and joiners):
                continue  # ts-mls cannot process a commit reusing its leaf (see test_removed_leaf_reused)
            m.receive(commit)
        for m in removed:
            if isinstance(m, _Ours):
                assert not m.group.active
            members.remove(m)
        if joiners:
            assert welcome is not None
            members.extend(join(welcome) for _, join in joiners)
        check()

    # grow to two of ours and two ts-mls members
    apply_commit(first, ["theirs", "ours", "theirs"], [], False)
    for step in range(steps):
        actor = rnd.choice(members)
        others = [m for m in members if m is not actor]
        action = rnd.choice(["message", "message", "commit", "remove_add", "proposal"])
        if len(members) < 4 and rnd.random() < 0.5:
            action = "grow"
        if action == "message":
            data = f"step {step} from {actor.leaf}".encode()
            assert all(got == data for got in broadcast(actor, actor.protect(data)))
        elif action == "commit":
            apply_commit(actor, [], [], rnd.random() < 0.5)
        elif action == "grow":
            apply_commit(actor, [rnd.choice(["ours", "theirs"])], [], rnd.random() < 0.5)
        elif action == "remove_add" and others:
            target = rnd.choice(others)
            apply_commit(actor, [rnd.choice(["ours", "theirs"])], [target.leaf], rnd.random() < 0.5)
        elif action == "proposal" and others:
            # a proposal from one implementation, committed by a member of the other when possible
            victim: _Ours | _Theirs | None = None
            if isinstance(actor, _Ours) and rnd.random() < 0.5:
                broadcast(actor, actor.propose_update())
            else:
                victim = rnd.choice(others)
                broadcast(actor, actor.propose_remove(victim.leaf))
            candidates = [m for m in members if m is not victim]
            committer = rnd.choice([m for m in candidates if type(m) is not type(actor)] or candidates)
            commit, _ = committer.commit([], [], rnd.random() < 0.5)
            commits[type(committer).__name__] += 1
            for m in members:
                if m is not committer:
                    m.receive(commit)
            if victim is not None:
                if isinstance(victim, _Ours):
                    assert not victim.group.active
                members.remove(victim)
            check()
    # the history really mixed the implementations (a fixed seed makes this deterministic)
    assert commits["_Ours"] >= steps // 10 and commits["_Theirs"] >= steps // 10, commits


def test_random_soak(ts_peer: TsPeer) -> None:
    """20 seeded random steps over a mixed group of two and two to start (suite 1)."""
    _soak(ts_peer, 1, 20, seed=20261125)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_random_soak_long(ts_peer: TsPeer, seed: int) -> None:
    """120 seeded random steps per seed (suite 1)."""
    _soak(ts_peer, 1, 120, seed=seed)


@pytest.mark.slow
def test_large_mixed_group(ts_peer: TsPeer) -> None:
    """40 of ours and 3 ts-mls members; 25 seeded random commits (path updates, remove+add of
    either kind) from members of both implementations; every member follows every commit and a
    random member of ours is checked against every ts-mls member after each one (suite 1)."""
    ts = ts_peer
    suite = 1
    rnd = random.Random(40)
    alice = Group.create(suite, b"py-0", group_id=os.urandom(16))
    privs, kps = [], []
    for i in range(1, 41):
        pub, priv = make_key_package(suite, f"py-{i}".encode())
        kps.append(pub)
        privs.append(priv)
    names = [tag(f"ts{i}", suite) for i in range(3)]
    for n in names:
        kps.append(bytes.fromhex(ts.call("key_package", client=n, suite=suite, identity=n)["key_package"]))
    _, welcome, alice = alice.commit(add=kps)
    assert welcome is not None
    members: list[_Ours | _Theirs] = [_Ours("py-0", alice)]
    members += [_Ours(f"py-{i + 1}", Group.join_from_welcome(welcome, p)) for i, p in enumerate(privs)]
    for n in names:
        ts.call("join", client=n, welcome=welcome.hex())
        members.append(_Theirs(ts, n))
    fresh = itertools.count(100)
    for _ in range(25):
        committer = rnd.choice(members)
        remove: list[int] = []
        add: list[bytes] = []
        joiner = None
        if rnd.random() < 0.5:
            victim = rnd.choice([m for m in members if m is not committer and isinstance(m, _Ours)])
            remove = [victim.leaf]
            if rnd.random() < 0.7:
                number = next(fresh)
                pub, joiner = make_key_package(suite, f"py-{number}".encode())
                add = [pub]
        commit, welcome = committer.commit(add, remove, rnd.random() < 0.5)
        for m in list(members):
            if m is committer:
                continue
            m.receive(commit)
            if isinstance(m, _Ours) and not m.group.active:
                members.remove(m)
        if joiner is not None:
            assert welcome is not None
            members.append(_Ours("joiner", Group.join_from_welcome(welcome, joiner)))
        ours = rnd.choice([m for m in members if isinstance(m, _Ours)])
        assert isinstance(ours, _Ours)
        for n in names:
            check_same_epoch(ts, ours.group, n)
    assert len(members) >= 30
