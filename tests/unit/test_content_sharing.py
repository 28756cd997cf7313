"""Sharing capabilities 1-1 and through an MLS group (crdt_mls.content.sharing; docs/content.md section 5)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from crdt_mls.content.cryptree import Cryptree, ReadCap
from crdt_mls.content.identity import Identity, ScryptParams
from crdt_mls.content.sharing import (
    EXPORTER_LABEL,
    ShareKeyring,
    group_share_key,
    open_share,
    reshare,
    share_to,
    share_with_group,
)
from crdt_mls.dag.audit import assert_no_plaintext
from crdt_mls.errors import DecodeError, DecryptionError, InvalidArgument, NotRecipientError, RemoteInputError
from crdt_mls.mls.group import Group
from crdt_mls.stores import MemoryStore

P = ScryptParams.for_tests()
ALICE = Identity.derive("alice", "pw-a", P)
BOB = Identity.derive("bob", "pw-b", P)
CAROL = Identity.derive("carol", "pw-c", P)


def det_rng(seed: str) -> Callable[[int], bytes]:
    state = {"n": 0}

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            state["n"] += 1
            out += hashlib.sha256(f"{seed}/{state['n']}".encode()).digest()
        return out[:n]

    return rng


class Members:
    """A linear MLS group of password identities; every commit is delivered to every member."""

    def __init__(self, names: list[str], seed: str = "g") -> None:
        self.rng = det_rng(seed)
        self.ids = {n: Identity.derive(n, "pw-" + n, P) for n in names}
        first = names[0]
        self.groups = {first: Group.create(1, self.ids[first].make_key_package(rng=self.rng)[1], rng=self.rng)}
        self.add(first, names[1:])

    def add(self, committer: str, names: list[str]) -> None:
        if not names:
            return
        kps = {}
        for n in names:
            self.ids.setdefault(n, Identity.derive(n, "pw-" + n, P))
            kps[n] = self.ids[n].make_key_package(rng=self.rng)
        commit, welcome, g = self.groups[committer].commit(add=[kp[0] for kp in kps.values()], rng=self.rng)
        assert welcome is not None
        self._deliver(committer, commit, g)
        for n, (_, priv) in kps.items():
            self.groups[n] = Group.join_from_welcome(welcome, priv)

    def remove(self, committer: str, name: str) -> None:
        leaf = self.groups[name].own_leaf
        commit, _, g = self.groups[committer].commit(remove=[leaf], rng=self.rng)
        removed = self.groups.pop(name)
        self._deliver(committer, commit, g)
        self.removed = removed.process(commit)[0]

    def _deliver(self, committer: str, commit: bytes, new: Group) -> None:
        for n, g in list(self.groups.items()):
            self.groups[n] = new if n == committer else g.process(commit)[0]


def _cap() -> tuple[Cryptree, ReadCap]:
    t = Cryptree(MemoryStore())
    root = t.create_root()
    f = t.write_file(root, "minutes.txt", b"board meeting minutes")
    return t, f.read_cap


# ---------------------------------------------------------------------------- 1-1


def test_direct_share_of_a_capability() -> None:
    t, cap = _cap()
    env = share_to(cap, ALICE, BOB.public)
    opened = open_share(env, identity=BOB)
    assert opened.capability() == cap and opened.sender_box_public == ALICE.box_public
    assert t.read_file(opened.capability()) == b"board meeting minutes"
    for key in (ALICE.box_public, BOB.box_public, ALICE.signing_public, cap.read_key, cap.location):
        assert key not in env
    with pytest.raises(NotRecipientError):
        open_share(env, identity=CAROL)
    with pytest.raises(NotRecipientError):
        open_share(env, identity=ALICE)


def test_direct_share_rejects_tampering_and_garbage() -> None:
    env = share_to(b"payload bytes", ALICE, BOB.box_public)
    for pos in (8, 20, 60, len(env) - 1):
        bad = bytearray(env)
        bad[pos] ^= 1
        with pytest.raises(DecryptionError):
            open_share(bytes(bad), identity=BOB)
    for bad_env in (b"", b"CMLSSH", env[:6] + b"\x02" + env[7:], env[:7] + b"\x09" + env[8:], b"XXXXXX" + env[6:]):
        with pytest.raises(DecodeError):
            open_share(bad_env, identity=BOB)
    with pytest.raises(InvalidArgument):
        open_share(env)
    with pytest.raises(InvalidArgument):
        share_to(b"x", ALICE, b"short")
    with pytest.raises(InvalidArgument):
        share_to(b"x" * 70000, ALICE, BOB.public)


def test_payload_length_is_padded() -> None:
    assert len(share_to(b"a", ALICE, BOB.public)) == len(share_to(b"a" * 100, ALICE, BOB.public))


# ---------------------------------------------------------------------------- 1-N


def test_group_share_is_one_ciphertext_readable_by_every_member() -> None:
    m = Members(["alice", "bob", "carol", "dave"])
    _, cap = _cap()
    env = share_with_group(cap, m.groups["alice"])
    for g in m.groups.values():
        opened = open_share(env, keys=g)
        assert opened.capability() == cap and opened.epoch == g.epoch
    big = Members([f"m{i}" for i in range(12)], seed="big")
    assert len(share_with_group(cap, big.groups["m0"])) == len(env)  # O(1) whatever the group size
    # an outsider with its own group cannot read it
    other = Members(["eve", "mallory"], seed="other")
    with pytest.raises(NotRecipientError):
        open_share(env, keys=other.groups["eve"])
    assert cap.read_key not in env and m.groups["alice"].group_id not in env


def test_group_share_key_is_the_exporter_of_the_epoch() -> None:
    m = Members(["alice", "bob"])
    g = m.groups["alice"]
    key_id, key = group_share_key(g)
    assert group_share_key(m.groups["bob"]) == (key_id, key)
    assert g.export_secret(EXPORTER_LABEL, b"", 32) not in (key_id, key)
    m.add("alice", ["carol"])
    assert group_share_key(m.groups["alice"])[0] != key_id


def test_late_joiner_and_removed_member() -> None:
    m = Members(["alice", "bob", "carol"])
    early = share_with_group(b"shared in epoch 1", m.groups["alice"])
    alice_ring = ShareKeyring([m.groups["alice"]])
    bob_ring = ShareKeyring([m.groups["bob"]])

    m.add("alice", ["dave"])  # dave joins later
    alice_ring.add(m.groups["alice"])
    bob_ring.add(m.groups["bob"])
    with pytest.raises(NotRecipientError):
        open_share(early, keys=m.groups["dave"])  # the epoch key of the share does not allow it
    later = share_with_group(b"shared in epoch 2", m.groups["bob"])
    assert open_share(later, keys=m.groups["dave"]).payload == b"shared in epoch 2"
    # someone who has the old epoch key can re-share into the current epoch
    again = reshare(early, alice_ring, m.groups["alice"])
    assert open_share(again, keys=m.groups["dave"]).payload == b"shared in epoch 1"

    m.remove("alice", "bob")  # bob is removed
    after = share_with_group(b"shared after bob left", m.groups["carol"])
    for keys in (bob_ring, m.removed, [m.removed]):
        with pytest.raises(NotRecipientError):
            open_share(after, keys=keys)
    assert open_share(after, keys=m.groups["dave"]).payload == b"shared after bob left"
    # bob keeps what was shared while he was a member
    assert open_share(early, keys=bob_ring).payload == b"shared in epoch 1"
    # alice's keyring spans the epochs she was in
    alice_ring.add(m.groups["alice"])
    for env in (early, later, after):
        assert open_share(env, keys=alice_ring).payload.startswith(b"shared")
    assert "epochs=[1, 2, 3]" in repr(alice_ring) and len(alice_ring) == 3
    alice_ring.forget_before(3)
    with pytest.raises(NotRecipientError):
        open_share(early, keys=alice_ring)


def test_group_share_tampering() -> None:
    m = Members(["alice", "bob"])
    env = share_with_group(b"payload", m.groups["alice"])
    for pos in range(len(env)):
        bad = bytearray(env)
        bad[pos] ^= 1
        with pytest.raises(RemoteInputError):
            open_share(bytes(bad), keys=m.groups["bob"])
    with pytest.raises(DecodeError):
        open_share(env[:40], keys=m.groups["bob"])
    with pytest.raises(InvalidArgument):
        open_share(env)


def test_shared_cryptree_blocks_and_envelopes_hold_no_plaintext() -> None:
    store = MemoryStore()
    t = Cryptree(store)
    root = t.create_root()
    d = t.mkdir(root, "project-phoenix")
    t.write_file(d, "budget.xlsx", b"phoenix budget: 4 million for carol")
    m = Members(["alice", "bob"])
    env1 = share_to(d.read_cap, ALICE, BOB.public)
    env2 = share_with_group(d.read_cap, m.groups["alice"])
    store.put_blocks([(b"\x01\x55\x12\x20" + hashlib.sha256(e).digest(), e) for e in (env1, env2)])
    assert_no_plaintext(store, ["project-phoenix", "budget", "phoenix", "4 million", "alice", "carol"])
    cap = open_share(env2, keys=m.groups["bob"]).capability()
    assert t.read_file(t.walk(cap, "budget.xlsx")) == b"phoenix budget: 4 million for carol"
