"""mls-rs adapter (PyPI ``agentvault-mls-rs-uniffi``, the UniFFI bindings of mls-rs).

The bindings expose: ``Client(id, signature_keypair, config)``,
``generate_key_package_message``, ``create_group``, ``join_group(ratchet_tree, welcome)``,
``Group.add_members/commit/remove_members/encrypt_application_message/
process_incoming_message/export_secret/export_tree/write_to_storage``.  A commit the group
created stays pending until the group processes its own commit message; the committer's
timed cost includes that step (our `Group.commit` returns the next epoch's state too).
Cipher suite CURVE25519_AES128 = RFC 9420 suite 1, as ours.
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import PEER, Progress

try:  # the peer is optional (pip install crdt-mls[bench])
    import mls_rs_uniffi as mls  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - reported by available()
    mls = None


def available() -> bool:
    return mls is not None


class PeerImpl:
    """Drives one mls-rs group of ``n`` members (leaf i = member i)."""

    name = PEER

    def __init__(self, n: int, extra: int = 16) -> None:
        assert mls is not None, "mls_rs_uniffi is not installed"
        self.n = n
        self.extra = extra
        self.suite = mls.CipherSuite.CURVE25519_AES128
        self.clients: list[Any] = []
        self.kps: list[Any] = []
        self.spare: list[Any] = []
        self.state: dict[int, Any] = {}
        self.welcome: Any = None
        self.tree: Any = None

    def _client(self, i: int) -> Any:
        assert mls is not None
        cfg = mls.client_config_default()
        cfg.use_ratchet_tree_extension = False  # the tree travels outside the Welcome
        return mls.Client(b"member-%d" % i, mls.generate_signature_keypair(self.suite), cfg)

    def prepare(self, progress: Progress) -> None:
        for i in range(self.n + self.extra):
            c = self._client(i)
            self.clients.append(c)
            if 0 < i < self.n:
                self.kps.append(c.generate_key_package_message())
            elif i >= self.n:
                self.spare.append(c.generate_key_package_message())
            progress.update(i, "key packages")

    def _apply_own(self, leaf: int, out: Any) -> Any:
        self.state[leaf].process_incoming_message(out.commit_message)
        return out.commit_message

    def add_all(self) -> None:
        g = self.clients[0].create_group(None)
        self.state = {0: g}
        out = g.add_members(self.kps)
        self._apply_own(0, out)
        self.welcome = out.welcome_message
        self.tree = out.ratchet_tree if out.ratchet_tree is not None else g.export_tree()

    def join(self, leaf: int) -> None:
        self.state[leaf] = self.clients[leaf].join_group(self.tree, self.welcome).group

    def commit(self, leaf: int) -> Any:
        return self._apply_own(leaf, self.state[leaf].commit())

    def process(self, leaf: int, msg: Any) -> None:
        self.state[leaf].process_incoming_message(msg)

    def add_one(self, leaf: int) -> Any:
        return self._apply_own(leaf, self.state[leaf].add_members([self.spare.pop()]))

    def remove(self, leaf: int, target: int) -> Any:
        ident = self.clients[target].signing_identity()
        return self._apply_own(leaf, self.state[leaf].remove_members([ident]))

    def app_message(self, sender: int, receiver: int, data: bytes) -> None:
        msg = self.state[sender].encrypt_application_message(data)
        got = self.state[receiver].process_incoming_message(msg)
        assert got.data == data

    def check_agree(self, a: int, b: int) -> bool:
        ga, gb = self.state[a], self.state[b]
        return bool(ga.export_secret(b"bench", b"", 16) == gb.export_secret(b"bench", b"", 16))
