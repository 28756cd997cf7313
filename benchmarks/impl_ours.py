"""crdt-mls adapter for the scenario driver (`benchmarks.scenarios`).

Member states are immutable `crdt_mls.mls.group.Group` values; the adapter keeps the
current state of each member it drives in a dict.  Cipher suite 1
(MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519), the same as the peer's.
"""

from __future__ import annotations

import os
from dataclasses import replace

from benchmarks.harness import OURS, Progress
from crdt_mls.mls import treemath
from crdt_mls.mls.group import Group, KeyPackagePrivate, make_key_package
from crdt_mls.mls.messages import ParentNode

SUITE = 1


class OursImpl:
    """Drives one crdt-mls group of ``n`` members (leaf i = member i)."""

    name = OURS

    def __init__(self, n: int, extra: int = 16) -> None:
        self.n = n
        self.extra = extra
        self.kps: list[tuple[bytes, KeyPackagePrivate]] = []
        self.spare: list[tuple[bytes, KeyPackagePrivate]] = []
        self.state: dict[int, Group] = {}
        self.welcome: bytes = b""
        self.tree: bytes = b""

    def prepare(self, progress: Progress) -> None:
        """KeyPackages of members 1..n-1 and a few spares for add_one (not timed)."""
        for i in range(1, self.n + self.extra):
            kp = make_key_package(SUITE, b"member-%d" % i)
            (self.kps if i < self.n else self.spare).append(kp)
            progress.update(i, "key packages")

    def add_all(self) -> None:
        """create_add_all: one commit adding n-1 members; ratchet tree outside the Welcome."""
        g = Group.create(SUITE, b"member-0")
        _, welcome, g1 = g.commit(add=[kp for kp, _ in self.kps], ratchet_tree_in_welcome=False)
        assert welcome is not None
        self.state = {0: g1}
        self.welcome = welcome
        self.tree = g1.tree.encode()

    def join(self, leaf: int) -> None:
        """Member ``leaf`` joins from the Welcome with the ratchet tree given separately."""
        g = Group.join_from_welcome(self.welcome, self.kps[leaf - 1][1], ratchet_tree=self.tree)
        assert g.own_leaf == leaf
        self.state[leaf] = g

    def commit(self, leaf: int) -> bytes:
        """An empty commit with a path by ``leaf``, applied to its own state."""
        msg, _, g = self.state[leaf].commit()
        self.state[leaf] = g
        return msg

    def process(self, leaf: int, msg: bytes) -> None:
        g, _ = self.state[leaf].process(msg)
        self.state[leaf] = g

    def add_one(self, leaf: int) -> bytes:
        """Commit adding one spare member (no path needed, RFC 9420 12.4)."""
        kp, _ = self.spare.pop()
        msg, _, g = self.state[leaf].commit(add=[kp], force_path=False, ratchet_tree_in_welcome=False)
        self.state[leaf] = g
        return msg

    def remove(self, leaf: int, target: int) -> bytes:
        msg, _, g = self.state[leaf].commit(remove=[target])
        self.state[leaf] = g
        return msg

    def app_message(self, sender: int, receiver: int, data: bytes) -> None:
        msg, gs = self.state[sender].protect_application(data)
        out, gr = self.state[receiver].unprotect(msg)
        assert out == data
        self.state[sender] = gs
        self.state[receiver] = gr

    def check_agree(self, a: int, b: int) -> bool:
        """Both members derive the same epoch secret (sanity check of the scenario)."""
        ga, gb = self.state[a], self.state[b]
        return ga.epoch == gb.epoch and ga.export_secret(b"bench", b"", 16) == gb.export_secret(b"bench", b"", 16)

    def state_bytes(self, leaf: int) -> bytes:
        return self.state[leaf].to_bytes()

    # ------------------------------------------------------------------ full tree

    def full_tree_pair(self, committer: int, receiver: int) -> tuple[Group, Group]:
        """Committer and receiver states over the current tree with every blank parent node
        (above at least one member) filled, so that no node is blank.

        Other members would have written these nodes in earlier commits; here they get
        random X25519 public keys, except on the receiver's direct path where the receiver
        gets real key pairs.  Both states are otherwise the members' real states, so the
        commit and its processing run the library's normal code.
        """
        gc, gr = self.state[committer], self.state[receiver]
        suite = gc.suite
        tree = gc.tree.copy()
        n_leaves = tree.n_leaves
        occupied = [False] * tree.width
        for i, _leaf in tree.members():
            occupied[2 * i] = True
        # a parent is "above a member" if any leaf below it is occupied
        for lvl in range(1, treemath.level(tree.root) + 1):
            step = 1 << lvl
            for x in range((1 << lvl) - 1, tree.width, 2 * step):
                left, right = x - (step >> 1), x + (step >> 1)
                occupied[x] = occupied[left] or (right < tree.width and occupied[right])
        rpath = set(treemath.direct_path(2 * receiver, n_leaves))
        new_keys: dict[int, bytes] = {}
        for x in range(1, tree.width, 2):
            if tree.node(x) is not None or not occupied[x]:
                continue
            if x in rpath:
                priv, pub = suite.generate_hpke_key_pair()
                new_keys[x] = priv
            else:
                pub = os.urandom(32)
            tree.set_node(x, ParentNode(pub, b"", ()))
        # warm the caches a long-lived replica's tree has (hashes, key index, leaf summary)
        tree.tree_hash()
        tree.has_encryption_key(b"")
        tree._summary()
        committer_state = replace(gc, tree=tree)
        receiver_state = replace(gr, tree=tree, private_keys=gr.private_keys.with_keys(new_keys))
        return committer_state, receiver_state
