"""The active Group API (crdt_mls.mls.group): groups of 2-20 members add, remove, update,
commit and exchange application messages; every member reaches the same epoch
authenticator in each epoch; removed members cannot read later messages; bad input raises
typed errors and leaves the state unchanged (RFC 9420 sections 6, 11, 12)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from crdt_mls.errors import (
    DecodeError,
    IntegrityError,
    InvalidArgument,
    InvalidState,
    MembershipTagError,
    ProposalError,
    RemoteInputError,
    ReplayError,
    SignatureError,
    WrongEpochError,
    WrongGroupError,
)
from crdt_mls.mls.group import ApplicationMessage, CommitApplied, Group, KeyPackagePrivate, ProposalReceived
from crdt_mls.mls.messages import MLSMessage, PreSharedKey, PreSharedKeyID, PublicMessage
from crdt_mls.mls.suites import get_cipher_suite as get_suite
from crdt_mls.mls.welcome import make_key_package


def det_rng(seed: str) -> Callable[[int], bytes]:
    """Deterministic randomness for reproducible tests."""
    state = {"n": 0}

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            state["n"] += 1
            out += hashlib.sha256(f"{seed}/{state['n']}".encode()).digest()
        return out[:n]

    return rng


class Harness:
    """A set of members in one linear group; every message is delivered to everybody else."""

    def __init__(self, suite: int = 1, seed: str = "h") -> None:
        self.suite = suite
        self.rng = det_rng(seed)
        self.members: dict[str, Group] = {"m0": Group.create(suite, b"m0", group_id=b"group-1", rng=self.rng)}
        self.counter = 1

    def new_kp(self, name: str) -> KeyPackagePrivate:
        return make_key_package(self.suite, name.encode(), rng=self.rng)

    def deliver(self, sender: str, message: bytes, skip: tuple[str, ...] = ()) -> None:
        for name, g in list(self.members.items()):
            if name == sender or name in skip or not g.active:
                continue
            new, _ = g.process(message)
            self.members[name] = new

    def add(self, committer: str, count: int) -> list[str]:
        kps = {}
        for _ in range(count):
            name = f"m{self.counter}"
            self.counter += 1
            kps[name] = self.new_kp(name)
        g = self.members[committer]
        commit, welcome, g2 = g.commit(add=[kp.public_message() for kp in kps.values()], rng=self.rng)
        assert welcome is not None
        self.members[committer] = g2
        self.deliver(committer, commit, skip=tuple(kps))
        for name, kp in kps.items():
            self.members[name] = Group.join_from_welcome(welcome, kp)
        return list(kps)

    def leaf(self, name: str) -> int:
        return self.members[name].own_leaf

    def check_agreement(self) -> None:
        active = [g for g in self.members.values() if g.active]
        auths = {g.epoch_authenticator for g in active}
        epochs = {g.epoch for g in active}
        assert len(auths) == 1, "members disagree on the epoch authenticator"
        assert len(epochs) == 1
        trees = {g.tree.tree_hash() for g in active}
        assert len(trees) == 1
        exports = {g.export_secret("test", b"ctx", 32) for g in active}
        assert len(exports) == 1


@pytest.mark.parametrize("suite", [1, 2, 3, 5, 7])
def test_two_members_all_suites(suite: int) -> None:
    h = Harness(suite, seed=f"s{suite}")
    h.add("m0", 1)
    h.check_agreement()
    msg, h.members["m0"] = h.members["m0"].protect_application(b"hello")
    data, h.members["m1"] = h.members["m1"].unprotect(msg)
    assert data == b"hello"
    msg, h.members["m1"] = h.members["m1"].protect_application(b"back", authenticated_data=b"ad")
    _g, ev = h.members["m0"].process(msg)
    assert (
        isinstance(ev, ApplicationMessage) and ev.data == b"back" and ev.sender == 1 and ev.authenticated_data == b"ad"
    )


@pytest.mark.parametrize("size", [2, 3, 5, 8, 13, 20])
def test_grow_update_remove_and_talk(size: int) -> None:
    h = Harness(seed=f"size{size}")
    rnd = random.Random(size)
    # grow in batches from several committers
    while len(h.members) < size:
        committer = rnd.choice(sorted(h.members))
        h.add(committer, min(rnd.randint(1, 4), size - len(h.members)))
        h.check_agreement()
    assert all(len(g.members()) == size for g in h.members.values())
    # everyone sends one application message that everybody else reads
    for name in sorted(h.members):
        msg, h.members[name] = h.members[name].protect_application(name.encode())
        for other in sorted(h.members):
            if other != name:
                data, h.members[other] = h.members[other].unprotect(msg)
                assert data == name.encode()
    # a member proposes an update, another commits it
    names = sorted(h.members)
    updater, committer = names[-1], names[0]
    prop, h.members[updater] = h.members[updater].propose_update(rng=h.rng)
    h.deliver(updater, prop)
    commit, welcome, h.members[committer] = h.members[committer].commit(rng=h.rng)
    assert welcome is None
    h.deliver(committer, commit)
    h.check_agreement()
    # an empty (path-only) commit from the updater
    commit, _, h.members[updater] = h.members[updater].commit(rng=h.rng)
    h.deliver(updater, commit)
    h.check_agreement()
    # remove a member; it can no longer read messages
    victim = names[len(names) // 2] if size > 2 else names[1]
    remover = names[0] if victim != names[0] else names[1]
    old_victim = h.members[victim]
    commit, _, h.members[remover] = h.members[remover].commit(remove=[h.leaf(victim)], rng=h.rng)
    h.deliver(remover, commit)
    removed_state = h.members.pop(victim)
    assert not removed_state.active
    with pytest.raises(InvalidState):
        removed_state.protect_application(b"x")
    h.check_agreement()
    msg, h.members[remover] = h.members[remover].protect_application(b"secret after removal")
    with pytest.raises(WrongEpochError):
        old_victim.process(msg)
    with pytest.raises(InvalidState):
        removed_state.process(msg)
    for other in h.members:
        if other != remover:
            data, h.members[other] = h.members[other].unprotect(msg)
            assert data == b"secret after removal"


def test_proposals_by_reference_from_several_members_and_private_handshake() -> None:
    h = Harness(seed="refs")
    h.add("m0", 4)
    kp = h.new_kp("late")
    p1, h.members["m1"] = h.members["m1"].propose_add(kp.public_message(), private=True)
    h.deliver("m1", p1)
    p2, h.members["m2"] = h.members["m2"].propose_remove(h.leaf("m3"))
    h.deliver("m2", p2)
    p3, h.members["m4"] = h.members["m4"].propose_update(private=True, rng=h.rng)
    h.deliver("m4", p3)
    commit, welcome, h.members["m0"] = h.members["m0"].commit(private=True, rng=h.rng)
    assert welcome is not None
    h.deliver("m0", commit)
    h.members.pop("m3")
    h.members["late"] = Group.join_from_welcome(welcome, kp)
    h.check_agreement()
    assert len(h.members["late"].members()) == 5


def test_welcome_without_tree_needs_tree() -> None:
    h = Harness(seed="notree")
    kp = h.new_kp("x")
    _, welcome, g = h.members["m0"].commit(add=[kp.public_message()], ratchet_tree_in_welcome=False, rng=h.rng)
    assert welcome is not None
    with pytest.raises(RemoteInputError):
        Group.join_from_welcome(welcome, kp)
    joined = Group.join_from_welcome(welcome, kp, ratchet_tree=g.tree.encode())
    assert joined.epoch_authenticator == g.epoch_authenticator


def test_external_join_and_resync() -> None:
    h = Harness(seed="ext")
    h.add("m0", 2)
    gi = h.members["m1"].group_info()
    commit, joiner = Group.join_external(gi, b"outsider", rng=h.rng)
    h.deliver("nobody", commit)
    h.members["outsider"] = joiner
    h.check_agreement()
    # the outsider talks to the group
    msg, h.members["outsider"] = h.members["outsider"].protect_application(b"hi from outside")
    data, h.members["m0"] = h.members["m0"].unprotect(msg)
    assert data == b"hi from outside"
    # resync: m2 rejoins externally, removing its old leaf
    gi = h.members["m0"].group_info(with_tree=False)
    old = h.members.pop("m2")
    commit, again = Group.join_external(
        gi,
        b"m2",
        signature_priv=old.signature_priv,
        ratchet_tree=h.members["m0"].tree.encode(),
        remove_leaf=old.own_leaf,
        rng=h.rng,
    )
    h.deliver("nobody", commit)
    h.members["m2"] = again
    h.check_agreement()


def test_external_psk_proposal() -> None:
    h = Harness(seed="psk")
    h.add("m0", 2)
    for name in h.members:
        h.members[name] = h.members[name].with_external_psk(b"psk-id", b"psk-value")
    psk = PreSharedKeyID.external(b"psk-id", bytes(32))
    commit, _, h.members["m0"] = h.members["m0"].commit([PreSharedKey(psk)], rng=h.rng)
    h.deliver("m0", commit)
    h.check_agreement()
    # a member without the PSK cannot process such a commit
    commit, _, _ = h.members["m1"].commit([PreSharedKey(PreSharedKeyID.external(b"psk-id", bytes(31) + b"\x01"))])
    stranger = replace(h.members["m2"], external_psks=())
    with pytest.raises(ProposalError):
        stranger.process(commit)


def test_snapshot_round_trip() -> None:
    h = Harness(seed="snap")
    h.add("m0", 3)
    p, h.members["m1"] = h.members["m1"].propose_update(rng=h.rng)
    h.deliver("m1", p)
    for name, g in h.members.items():
        raw = g.to_bytes()
        restored = Group.from_bytes(raw)
        assert restored.to_bytes() == raw
        assert restored.epoch_authenticator == g.epoch_authenticator
        h.members[name] = restored
    commit, _, h.members["m2"] = h.members["m2"].commit(rng=h.rng)
    h.deliver("m2", commit)
    h.check_agreement()
    g = h.members["m0"]
    text = repr(g) + repr(g.private_keys) + repr(g.epoch_secrets) + repr(g.secret_tree)
    for secret in (g.signature_priv, g.epoch_secrets.epoch_secret, g.epoch_secrets.init_secret):
        assert secret.hex() not in text and repr(secret) not in text
    for key in g.private_keys.keys.values():
        assert key.hex() not in text and repr(key) not in text
    raw = h.members["m0"].to_bytes()
    with pytest.raises(IntegrityError):
        Group.from_bytes(b"\x09" + raw[1:])
    with pytest.raises(IntegrityError):
        Group.from_bytes(raw[:-1])
    body = b"\x09" + raw[1:-32]
    with pytest.raises(DecodeError):
        Group.from_bytes(body + hashlib.sha256(body).digest())


# ------------------------------------------------------------------------- error paths


def _unchanged(g: Group, fn: Callable[[], object], exc: type[BaseException]) -> None:
    before = g.to_bytes()
    with pytest.raises(exc):
        fn()
    assert g.to_bytes() == before


@pytest.fixture
def trio() -> Harness:
    h = Harness(seed="errors")
    h.add("m0", 2)
    return h


def test_wrong_epoch(trio: Harness) -> None:
    old_m1 = trio.members["m1"]
    commit, _, trio.members["m0"] = trio.members["m0"].commit(rng=trio.rng)
    trio.deliver("m0", commit)
    msg, _ = old_m1.protect_application(b"stale")
    _unchanged(trio.members["m2"], lambda: trio.members["m2"].process(msg), WrongEpochError)
    # the same commit twice: the second is for an old epoch
    _unchanged(trio.members["m2"], lambda: trio.members["m2"].process(commit), WrongEpochError)


def test_wrong_group(trio: Harness) -> None:
    other = Harness(seed="other-group")
    other.members["m0"] = Group.create(1, b"z", group_id=b"group-2", rng=other.rng)
    msg, _ = other.members["m0"].protect_application(b"x")
    _unchanged(trio.members["m1"], lambda: trio.members["m1"].process(msg), WrongGroupError)


def test_replayed_application_message(trio: Harness) -> None:
    msg, trio.members["m0"] = trio.members["m0"].protect_application(b"once")
    _, trio.members["m1"] = trio.members["m1"].unprotect(msg)
    _unchanged(trio.members["m1"], lambda: trio.members["m1"].process(msg), ReplayError)


def test_replayed_proposal(trio: Harness) -> None:
    p, trio.members["m0"] = trio.members["m0"].propose_update(rng=trio.rng)
    trio.members["m1"], ev = trio.members["m1"].process(p)
    assert isinstance(ev, ProposalReceived)
    _unchanged(trio.members["m1"], lambda: trio.members["m1"].process(p), ReplayError)


def test_bad_signature(trio: Harness) -> None:
    # m2 forges a proposal as m1: the membership tag is valid (m2 knows the key) but the signature is not m1's
    g2 = trio.members["m2"]
    forged = replace(g2, own_leaf=1)
    p, _ = forged.propose_remove(0)
    _unchanged(trio.members["m0"], lambda: trio.members["m0"].process(p), SignatureError)


def test_tampered_commit(trio: Harness) -> None:
    commit, _, _ = trio.members["m0"].commit(rng=trio.rng)
    msg = MLSMessage.from_bytes(commit)
    body = msg.body
    assert isinstance(body, PublicMessage)
    # flip the authenticated data: membership tag fails
    bad = MLSMessage(replace(body, content=replace(body.content, authenticated_data=b"evil"))).to_bytes()
    _unchanged(trio.members["m1"], lambda: trio.members["m1"].process(bad), MembershipTagError)
    # flip a byte at the end (membership tag) and in the middle
    raw = bytearray(commit)
    raw[-1] ^= 1
    _unchanged(trio.members["m1"], lambda: trio.members["m1"].process(bytes(raw)), MembershipTagError)
    raw = bytearray(commit)
    raw[len(raw) // 2] ^= 0x40
    _unchanged(trio.members["m1"], lambda: trio.members["m1"].process(bytes(raw)), RemoteInputError)
    # truncated
    _unchanged(trio.members["m1"], lambda: trio.members["m1"].process(commit[:-5]), DecodeError)


def test_tampered_private_message(trio: Harness) -> None:
    msg, trio.members["m0"] = trio.members["m0"].protect_application(b"data")
    raw = bytearray(msg)
    raw[-3] ^= 0x01
    _unchanged(trio.members["m1"], lambda: trio.members["m1"].process(bytes(raw)), RemoteInputError)
    data, _ = trio.members["m1"].unprotect(msg)
    assert data == b"data"


def test_commit_with_unknown_reference_and_invalid_proposals(trio: Harness) -> None:
    p, _g1 = trio.members["m1"].propose_update(rng=trio.rng)
    g0, _ = trio.members["m0"].process(p)
    commit, _, _ = g0.commit(rng=trio.rng)
    # m2 never saw the proposal
    _unchanged(trio.members["m2"], lambda: trio.members["m2"].process(commit), ProposalError)
    # committer removing itself
    with pytest.raises(ProposalError):
        trio.members["m0"].commit(remove=[trio.leaf("m0")])
    # adding a member already in the group (same signature key)
    kp = make_key_package(1, b"dup", signature_priv=trio.members["m1"].signature_priv)
    with pytest.raises(ProposalError):
        trio.members["m0"].commit(add=[kp.public_message()])


def test_own_message_rejected(trio: Harness) -> None:
    msg, g0 = trio.members["m0"].protect_application(b"me")
    with pytest.raises(ReplayError):
        g0.process(msg)
    p, g0 = trio.members["m0"].propose_remove(1)
    _unchanged(g0, lambda: g0.process(p), RemoteInputError)


def test_events(trio: Harness) -> None:
    kp = trio.new_kp("n")
    commit, _, g0 = trio.members["m0"].commit(add=[kp.public_message()], remove=[trio.leaf("m2")], rng=trio.rng)
    g1, ev = trio.members["m1"].process(commit)
    assert isinstance(ev, CommitApplied)
    assert ev.epoch == g0.epoch == g1.epoch
    assert ev.removed == (2,) and ev.added == (2,)
    g2, ev2 = trio.members["m2"].process(commit)
    assert isinstance(ev2, CommitApplied) and ev2.self_removed and not g2.active


def test_reinit_to_another_suite() -> None:
    from crdt_mls.mls.messages import ReInit

    h = Harness(seed="reinit")
    h.add("m0", 2)
    commit, _, h.members["m1"] = h.members["m1"].commit([ReInit(b"group-1-v2", 1, 3, ())], rng=h.rng)
    h.deliver("m1", commit)
    for g in h.members.values():
        assert g.reinit is not None
        with pytest.raises(InvalidState):
            g.protect_application(b"no more")
    # each member publishes a KeyPackage for the new suite; m1 recreates the group
    kps = {n: make_key_package(3, n.encode(), rng=h.rng) for n in ("m0", "m2")}
    welcome, new1 = h.members["m1"].reinit_group([kp.public_message() for kp in kps.values()], rng=h.rng)
    assert new1.epoch == 1 and new1.cipher_suite == 3 and new1.group_id == b"group-1-v2"
    for n, kp in kps.items():
        joined = Group.join_from_welcome(welcome, kp, previous=h.members[n])
        assert joined.epoch_authenticator == new1.epoch_authenticator
        # without the old group's resumption PSK the Welcome cannot be used
        with pytest.raises(RemoteInputError):
            Group.join_from_welcome(welcome, kp)


def test_branch_subgroup() -> None:
    h = Harness(seed="branch")
    h.add("m0", 3)
    kp = make_key_package(1, b"m2", rng=h.rng)
    welcome, sub = h.members["m0"].branch([kp.public_message()], group_id=b"sub", rng=h.rng)
    joined = Group.join_from_welcome(welcome, kp, previous=h.members["m2"])
    assert joined.epoch == 1 and joined.epoch_authenticator == sub.epoch_authenticator
    msg, sub = sub.protect_application(b"sub only")
    data, _ = joined.unprotect(msg)
    assert data == b"sub only"
    # a branch with a stranger is refused by a member checking against the old group
    stranger = make_key_package(1, b"stranger", rng=h.rng)
    welcome, _ = h.members["m0"].branch([stranger.public_message()], rng=h.rng)
    with pytest.raises(RemoteInputError):
        Group.join_from_welcome(welcome, stranger, previous=h.members["m1"])


def test_key_package_lifetime_checked_only_with_now() -> None:
    from crdt_mls.mls.group import make_key_package as group_make_key_package
    from crdt_mls.mls.messages import Lifetime

    h = Harness(seed="lifetime")
    public, private = group_make_key_package(1, b"fresh", rng=h.rng)
    assert MLSMessage.from_bytes(public).body == private.key_package
    old = make_key_package(1, b"old", lifetime=Lifetime(0, 1000), rng=h.rng)
    with pytest.raises(ProposalError):
        h.members["m0"].commit(add=[old.public_message()], now=2000)
    _, welcome, g = h.members["m0"].commit(add=[old.public_message()], rng=h.rng)
    assert welcome is not None and len(g.members()) == 2


def test_invalid_proposal_rejected_on_receipt(trio: Harness) -> None:
    from crdt_mls.mls.messages import LeafNodeSource, Remove, Update

    g1 = trio.members["m1"]
    leaf = replace(g1.leaf_node, leaf_node_source=LeafNodeSource.UPDATE, lifetime=None, encryption_key=b"\x01" * 32)
    bad_update, _ = g1.propose(Update(leaf.with_signature(b"\x00" * 64)))
    _unchanged(trio.members["m0"], lambda: trio.members["m0"].process(bad_update), SignatureError)
    blank_remove, _ = g1.propose(Remove(7))
    _unchanged(trio.members["m0"], lambda: trio.members["m0"].process(blank_remove), ProposalError)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_operations_with_snapshots(seed: int) -> None:
    """40 epochs of random adds, removes, updates (by reference and by value), empty commits,
    public and private handshakes, and application traffic; every member restores from its
    snapshot each epoch and all members agree every epoch."""
    rnd = random.Random(seed)
    h = Harness(seed=f"random{seed}")
    h.add("m0", 3)
    for _ in range(40):
        names = sorted(h.members)
        private = rnd.random() < 0.5
        # some proposals by members who are not the committer
        committer = rnd.choice(names)
        for proposer in rnd.sample(names, k=min(len(names), rnd.randint(0, 2))):
            if proposer == committer:
                continue
            g = h.members[proposer]
            kind = rnd.random()
            if kind < 0.5:
                msg, h.members[proposer] = g.propose_update(private=private, rng=h.rng)
            elif kind < 0.8 and len(h.members) < 12:
                name = f"m{h.counter}"
                h.counter += 1
                kp = h.new_kp(name)
                h.pending = getattr(h, "pending", {})
                h.pending[name] = kp
                msg, h.members[proposer] = g.propose_add(kp.public_message(), private=private)
            else:
                continue
            h.deliver(proposer, msg)
        remove: list[int] = []
        if len(names) > 3 and rnd.random() < 0.3:
            victim = rnd.choice([n for n in names if n != committer])
            remove = [h.leaf(victim)]
        commit, welcome, h.members[committer] = h.members[committer].commit(remove=remove, private=private, rng=h.rng)
        h.deliver(committer, commit)
        for name in [n for n, g in h.members.items() if not g.active]:
            del h.members[name]
        pending = getattr(h, "pending", {})
        if welcome is not None:
            for name, kp in pending.items():
                h.members[name] = Group.join_from_welcome(welcome, kp)
        h.pending = {}
        h.check_agreement()
        for name, g in list(h.members.items()):
            h.members[name] = Group.from_bytes(g.to_bytes())
        speaker = rnd.choice(sorted(h.members))
        msg, h.members[speaker] = h.members[speaker].protect_application(b"tick", padding=rnd.randint(0, 8))
        for other in h.members:
            if other != speaker:
                data, h.members[other] = h.members[other].unprotect(msg)
                assert data == b"tick"


def test_external_sender_and_new_member_proposals() -> None:
    from crdt_mls.mls.group import external_proposal, new_member_proposal
    from crdt_mls.mls.messages import Credential, Extension, ExternalSender, Remove, Update

    rng = det_rng("extsender")
    server_priv, server_pub = get_suite(1).generate_signature_key_pair(rng)
    ext = Extension.external_senders([ExternalSender(server_pub, Credential.basic(b"server"))])
    h = Harness(seed="extsender")
    h.members["m0"] = Group.create(1, b"m0", group_id=b"group-1", extensions=[ext], rng=h.rng)
    h.add("m0", 2)
    g1 = h.members["m1"]
    # the server asks to remove m2; m1 commits it
    p = external_proposal(1, g1.group_id, g1.epoch, Remove(h.leaf("m2")), 0, server_priv)
    h.deliver("server", p)
    commit, _, h.members["m1"] = h.members["m1"].commit(rng=h.rng)
    h.deliver("m1", commit)
    h.members.pop("m2")
    h.check_agreement()
    # a wrong external signer is rejected
    other_priv, _ = get_suite(1).generate_signature_key_pair(rng)
    bad = external_proposal(1, g1.group_id, h.members["m0"].epoch, Remove(0), 0, other_priv)
    _unchanged(h.members["m0"], lambda: h.members["m0"].process(bad), SignatureError)
    with pytest.raises(InvalidArgument):
        external_proposal(1, g1.group_id, 0, Update(h.members["m0"].leaf_node), 0, server_priv)
    # a newcomer asks to join; m0 commits the Add and the newcomer joins from the Welcome
    kp = h.new_kp("newcomer")
    p = new_member_proposal(g1.group_id, h.members["m0"].epoch, kp)
    h.deliver("newcomer", p)
    commit, welcome, h.members["m0"] = h.members["m0"].commit(rng=h.rng)
    assert welcome is not None
    h.deliver("m0", commit, skip=("newcomer",))
    h.members["newcomer"] = Group.join_from_welcome(welcome, kp)
    h.check_agreement()


def test_commits_without_path() -> None:
    from crdt_mls.mls.messages import Commit

    def path_of(raw: bytes) -> object:
        body = MLSMessage.from_bytes(raw).body
        assert isinstance(body, PublicMessage) and isinstance(body.content.content, Commit)
        return body.content.content.path

    h = Harness(seed="nopath")
    h.add("m0", 2)
    kp = h.new_kp("late")
    commit, welcome, h.members["m1"] = h.members["m1"].commit(add=[kp.public_message()], force_path=False, rng=h.rng)
    assert path_of(commit) is None and welcome is not None
    h.deliver("m1", commit)
    h.members["late"] = Group.join_from_welcome(welcome, kp)
    h.check_agreement()
    # an Update by reference forces a path even with force_path=False
    p, h.members["m2"] = h.members["m2"].propose_update(rng=h.rng)
    h.deliver("m2", p)
    commit, _, h.members["late"] = h.members["late"].commit(force_path=False, rng=h.rng)
    assert path_of(commit) is not None
    h.deliver("late", commit)
    h.check_agreement()
    # an empty commit always has a path
    commit, _, h.members["m0"] = h.members["m0"].commit(force_path=False, rng=h.rng)
    assert path_of(commit) is not None
    h.deliver("m0", commit)
    h.check_agreement()


def test_reinit_by_reference_is_committed_alone() -> None:
    from crdt_mls.mls.messages import ReInit

    h = Harness(seed="reinit-ref")
    h.add("m0", 2)
    p, h.members["m1"] = h.members["m1"].propose(ReInit(b"v2", 1, 1, ()))
    h.deliver("m1", p)
    q, h.members["m2"] = h.members["m2"].propose_update(rng=h.rng)
    h.deliver("m2", q)
    # with another proposal pending, the ReInit waits
    commit, _, h.members["m0"] = h.members["m0"].commit(rng=h.rng)
    h.deliver("m0", commit)
    assert all(g.reinit is None for g in h.members.values())
    # resent alone, it is committed and freezes the group
    p, h.members["m1"] = h.members["m1"].propose(ReInit(b"v2", 1, 1, ()))
    h.deliver("m1", p)
    commit, _, h.members["m0"] = h.members["m0"].commit(rng=h.rng)
    h.deliver("m0", commit)
    assert all(g.reinit == ReInit(b"v2", 1, 1, ()) for g in h.members.values())
    h.check_agreement()


def test_group_context_extensions_proposal() -> None:
    from crdt_mls.mls.messages import Extension, GroupContextExtensions, RequiredCapabilities

    h = Harness(seed="gce")
    h.add("m0", 2)
    ext = Extension.required_capabilities(RequiredCapabilities(credential_types=(1,)))
    p, h.members["m2"] = h.members["m2"].propose(GroupContextExtensions((ext,)))
    h.deliver("m2", p)
    commit, _, h.members["m1"] = h.members["m1"].commit(rng=h.rng)
    h.deliver("m1", commit)
    h.check_agreement()
    assert all(g.group_context.extensions == (ext,) for g in h.members.values())
    # a group extension nobody supports is refused
    unknown = Extension(0xFF00, b"x")
    with pytest.raises(ProposalError):
        h.members["m0"].commit([GroupContextExtensions((unknown,))])


@pytest.mark.parametrize("members", [1, 2, 4])
def test_external_join_extends_full_tree(members: int) -> None:
    h = Harness(seed=f"extfull{members}")
    if members > 1:
        h.add("m0", members - 1)
    commit, joiner = Group.join_external(h.members["m0"].group_info(), b"outsider", rng=h.rng)
    h.deliver("nobody", commit)
    h.members["outsider"] = joiner
    assert joiner.own_leaf == members
    h.check_agreement()
    commit, _, h.members["outsider"] = h.members["outsider"].commit(rng=h.rng)
    h.deliver("outsider", commit)
    h.check_agreement()


def test_external_joiner_cannot_reuse_a_members_signature_key() -> None:
    h = Harness(seed="extdup")
    h.add("m0", 2)
    gi = h.members["m0"].group_info()
    commit, _ = Group.join_external(gi, b"m1", signature_priv=h.members["m1"].signature_priv, rng=h.rng)
    _unchanged(h.members["m0"], lambda: h.members["m0"].process(commit), RemoteInputError)


def test_add_with_duplicate_encryption_key_is_refused() -> None:
    from crdt_mls.mls.messages import KeyPackage

    h = Harness(seed="dupenc")
    h.add("m0", 1)
    suite = get_suite(1)
    kp = h.new_kp("dup")
    leaf = replace(kp.key_package.leaf_node, encryption_key=h.members["m1"].leaf_node.encryption_key, signature=b"")
    leaf = leaf.with_signature(suite.sign_with_label(kp.signature_priv, "LeafNodeTBS", leaf.tbs()))
    bad: KeyPackage = replace(kp.key_package, leaf_node=leaf, signature=b"")
    bad = replace(bad, signature=suite.sign_with_label(kp.signature_priv, "KeyPackageTBS", bad.tbs()))
    with pytest.raises(ProposalError):
        h.members["m0"].commit(add=[MLSMessage(bad).to_bytes()])
    p, _ = h.members["m0"].propose_add(MLSMessage(bad).to_bytes())
    _unchanged(h.members["m1"], lambda: h.members["m1"].process(p), ProposalError)


def test_add_of_a_current_member_is_refused_unless_the_commit_removes_it() -> None:
    """RFC 9420 section 12.2: an Add of a client already in the group is invalid, unless the
    same commit removes that member (checked from the leaf summary, not a member scan)."""
    h = Harness(seed="readd")
    h.add("m0", 3)
    m2 = h.members["m2"]
    # a new KeyPackage of the client at leaf 2 (same signature key, fresh encryption key)
    kp = make_key_package(1, b"m2", signature_priv=m2.signature_priv, rng=h.rng)
    with pytest.raises(ProposalError, match="already member 2"):
        h.members["m0"].commit(add=[kp.public_message()])
    # removing the old appearance in the same commit makes it valid
    commit, welcome, g0 = h.members["m0"].commit(add=[kp.public_message()], remove=[m2.own_leaf])
    assert welcome is not None
    got, event = h.members["m1"].process(commit)
    assert isinstance(event, CommitApplied) and event.removed == (2,) and event.added == (2,)
    assert got.epoch_authenticator == g0.epoch_authenticator


def test_state_saved_before_the_persistent_tree_still_loads() -> None:
    """`Group.to_bytes` stays byte-compatible: a state saved by fe3a6d2 (list-based ratchet
    tree, secret-tree ratchets in the tree nodes) loads, re-encodes to the same bytes, and
    decrypts the message it had skipped (a retained key) exactly once."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    saved = (data / "group_state_fe3a6d2.bin").read_bytes()
    pending = (data / "group_state_fe3a6d2_pending_message.bin").read_bytes()
    g = Group.from_bytes(saved)
    assert g.to_bytes() == saved
    assert (g.epoch, g.own_leaf, len(g.members())) == (2, 3, 6)
    assert g.tree.tree_hash() == g.group_context.tree_hash
    out, g2 = g.unprotect(pending)
    assert out == b"two"
    _unchanged(g2, lambda: g2.unprotect(pending), ReplayError)
    assert Group.from_bytes(g2.to_bytes()).to_bytes() == g2.to_bytes()
    # the loaded state keeps working: it commits (with its cached proposal) and can talk
    _, _, g3 = g2.commit(rng=det_rng("after-load"))
    assert g3.epoch == 3
    msg, _ = g3.protect_application(b"still here")
    assert isinstance(msg, bytes)


def test_with_secret_tree_is_replace() -> None:
    """The per-message state copy equals `dataclasses.replace` field by field."""
    h = Harness(seed="evolve")
    h.add("m0", 1)
    g = h.members["m0"]
    st = g.secret_tree.copy()
    fast = g._with_secret_tree(st)
    slow = replace(g, secret_tree=st)
    from dataclasses import fields

    for f in fields(Group):
        assert getattr(fast, f.name) is getattr(slow, f.name)
    assert fast == slow and fast.to_bytes() == slow.to_bytes()


def _deep_state(g: Group) -> tuple[object, ...]:
    """Everything a state holds, read through the public accessors (tree node by node, caches
    included) and its serialization."""
    t = g.tree
    return (
        g.to_bytes(),
        list(t.nodes()),
        t.tree_hash(),
        [t.resolution(x) for x in range(t.width)],
        sorted(t.encryption_keys()),
        t.free_leaf(),
        t.credential_support(),
    )


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
def test_deriving_states_never_changes_the_old_state(private: bool) -> None:
    """Group states share their ratchet tree and secret tree copy-on-write: commits, adds,
    removes, updates, processed messages, application traffic and rejected input derived from
    a state leave that state (and its caches) exactly as they were."""
    h = Harness(seed=f"derive-{private}")
    h.add("m0", 6)
    g0, g1, g2 = h.members["m0"], h.members["m1"], h.members["m2"]
    before = {name: _deep_state(g) for name, g in (("m0", g0), ("m1", g1), ("m2", g2))}
    # a chain of states derived from g0 and g1, and several siblings of the same parent state
    c1, _, a = g0.commit(private=private, rng=h.rng)
    c2, _, _b = g0.commit(remove=[h.leaf("m3")], private=private, rng=h.rng)
    kp = h.new_kp("late")
    c3, _, _c = g0.commit(add=[kp.public_message()], force_path=False, private=private, rng=h.rng)
    p, g2u = g2.propose_update(private=private, rng=h.rng)
    for c in (c1, c2, c3):
        r, _ = g1.process(c)
        r.protect_application(b"x")
    g1p, _ = g1.process(p)
    c4, _, _d = g1p.commit(private=private, rng=h.rng)
    g2u.process(c4)
    _m, _a2 = a.protect_application(b"hello")
    bad = bytearray(c1)
    bad[-5] ^= 1
    for _ in range(2):
        m0, g0x = g0.protect_application(b"app", rng=h.rng)
        g1.unprotect(m0)
        with pytest.raises(RemoteInputError):
            g1.process(bytes(bad))
    for name, g in (("m0", g0), ("m1", g1), ("m2", g2)):
        assert _deep_state(g) == before[name]
    # and the old states still work: g1 processes the first commit like before
    r1, _ = g1.process(c1)
    assert r1.epoch_authenticator == a.epoch_authenticator
    assert isinstance(g0x, Group)


def test_commit_with_a_forged_update_path_leaf_signature(trio: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The committer signs the commit correctly but its UpdatePath LeafNode carries a wrong
    signature (RFC 9420 section 7.3): rejected with `SignatureError`, the receiver unchanged.
    (The leaf signature is checked once, by the UpdatePath merge, not again by the leaf
    validation that follows it.)"""
    from crdt_mls.mls.suites import CipherSuite

    real = CipherSuite.sign_with_label

    def forge(self: CipherSuite, private_key: bytes, label: str, content: bytes) -> bytes:
        sig = real(self, private_key, label, content)
        return bytes(64) if label == "LeafNodeTBS" else sig

    monkeypatch.setattr(CipherSuite, "sign_with_label", forge)
    commit, _, _ = trio.members["m0"].commit(rng=trio.rng)
    monkeypatch.setattr(CipherSuite, "sign_with_label", real)
    _unchanged(trio.members["m1"], lambda: trio.members["m1"].process(commit), SignatureError)
