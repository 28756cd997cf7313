"""End to end: the ``crdt-mls`` program as separate processes for three members, each on its
own Kubo daemon (connected on loopback), blocks moving only through IPFS (bitswap).

Create, invite by key package, join from the invitation CID, chat, share a directory,
remove a member; the removed member reads nothing sent after its removal; a member
listening on pubsub (``sync --listen``) gets a message live from the announced heads; and no block
written to any daemon during the session contains a member's name, a message's words, a
file name or a file's content.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crdt_mls.dag.audit import encodings_of
from crdt_mls.stores.kubo_rpc import decode_multibase

from .conftest import KuboNode

pytestmark = pytest.mark.ipfs

ROOT = Path(__file__).resolve().parents[2]
CID_RE = re.compile(r"baf[a-z2-7]+")  # refs/local lists multihashes as CIDv1 raw (bafk...)


def local_refs(node: KuboNode) -> set[str]:
    with node.rpc() as rpc:
        body = rpc.call("refs/local")
    return set(CID_RE.findall(body.decode()))


def wait_for_topic(node: KuboNode) -> str:
    """The crdt-mls topic a process subscribed to on ``node`` (fails after 30 s without one)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with node.rpc() as rpc:
            value = rpc.call_json("pubsub/ls")
        for t in (value.get("Strings") or []) if isinstance(value, dict) else []:
            topic = decode_multibase(str(t)).decode("utf-8", "replace")
            if topic.startswith("crdt-mls/"):
                return topic
        time.sleep(0.1)
    raise AssertionError(f"no crdt-mls pubsub subscription on {node.name}")


def wait_for_mesh(node: KuboNode, topic: str, peer_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with node.rpc() as rpc:
            if peer_id in rpc.pubsub_peers(topic):
                return
        time.sleep(0.1)
    raise AssertionError(f"{node.name} never saw {peer_id} on {topic}")


def block(node: KuboNode, cid: str) -> bytes:
    with node.rpc() as rpc:
        return rpc.block_get(cid, offline=True)


class Member:
    def __init__(self, name: str, node: KuboNode, home: Path) -> None:
        self.name = name
        self.node = node
        self.data = home / name

    def command(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "crdt_mls",
            "--data-dir",
            str(self.data),
            "--ipfs",
            f"http://{self.node.host}:{self.node.port}",
            "--timeout",
            "20",
            *args,
        ]

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            CRDT_MLS_PASSWORD=f"{self.name} password",  # each member its own password
            CRDT_MLS_INSECURE_TEST_SCRYPT="1",  # test-only cheap scrypt parameters
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.data.parent,
        )

    def run(self, *args: str, expect: int = 0) -> str:
        res = subprocess.run(
            self.command(*args), env=self.env(), capture_output=True, text=True, timeout=180, cwd=self.data.parent
        )
        assert res.returncode == expect, (self.name, args, res.stdout, res.stderr)
        return res.stdout + res.stderr

    def heads(self) -> list[str]:
        return self.run("heads").split()


def test_three_members_over_ipfs(kubo_factory: Callable[[int], list[KuboNode]], tmp_path: Path) -> None:
    n1, n2, n3 = kubo_factory(3)
    n1.connect(n2)
    n1.connect(n3)
    n2.connect(n3)
    before = {n: local_refs(n) for n in (n1, n2, n3)}

    alice, bobby, carol = Member("alice", n1, tmp_path), Member("bobby", n2, tmp_path), Member("carol", n3, tmp_path)
    alice.run("create", "alice")
    bobby.run("init", "bobby")
    carol.run("init", "carol")
    bobby.run("key-package", "-o", str(tmp_path / "bobby.kp"))
    carol.run("key-package", "-o", str(tmp_path / "carol.kp"))
    out = alice.run("invite", str(tmp_path / "bobby.kp"), str(tmp_path / "carol.kp"))
    invitation = re.search(r"invitation: (bafy[a-z2-7]+)", out)
    assert invitation is not None, out
    assert "members: alice, bobby, carol" in bobby.run("join", invitation.group(1))
    assert "members: alice, bobby, carol" in carol.run("join", invitation.group(1))

    bobby.run("send", "meet at the harbour tomorrow")
    heads = bobby.heads()
    assert "bobby: meet at the harbour tomorrow" in alice.run("sync", *heads)
    assert "bobby: meet at the harbour tomorrow" in carol.run("sync", *heads)

    share = tmp_path / "expedition-notes"
    (share / "maps").mkdir(parents=True)
    (share / "route-description.txt").write_text("north along the glacier ridge")
    (share / "maps" / "campsite-coordinates.txt").write_text("sixty one degrees north")
    assert "shared directory expedition-notes: 2 file(s)" in alice.run("share", str(share))
    heads = alice.heads()
    assert "alice shared directory expedition-notes" in carol.run("sync", *heads)
    assert "alice shared directory expedition-notes" in bobby.run("sync", *heads)
    carol.run("fetch", "expedition-notes", str(tmp_path / "carol-out"))
    got = tmp_path / "carol-out" / "expedition-notes"
    assert (got / "route-description.txt").read_text() == "north along the glacier ridge"
    assert (got / "maps" / "campsite-coordinates.txt").read_text() == "sixty one degrees north"

    assert "bobby was removed" in alice.run("remove", "bobby")
    alice.run("send", "the password is marmalade")
    heads = alice.heads()
    out = bobby.run("sync", *heads)
    assert "removed from the group by alice" in out
    assert "marmalade" not in out
    assert "marmalade" not in bobby.run("read", "--all")
    assert "marmalade" in carol.run("sync", *heads)
    assert carol.run("members").splitlines() == ["0: alice", "2: carol (you)"]
    bobby.run("send", "can I still talk?", expect=1)

    # live: carol listens for heads announced on pubsub while alice sends
    listener = carol.start("sync", "--listen", "20")
    try:
        topic = wait_for_topic(n3)
        wait_for_mesh(n1, topic, n3.peer_id)
        alice.run("send", "heard over pubsub")
        out, _ = listener.communicate(timeout=90)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert "alice: heard over pubsub" in out, out

    # no block written during the session holds anything readable
    words = [
        "alice",
        "bobby",
        "carol",
        "harbour",
        "tomorrow",
        "marmalade",
        "password",
        "expedition",
        "route-description",
        "campsite",
        "glacier ridge",
        "sixty one",
        "pubsub",
    ]
    patterns = [(w, p.lower()) for w in words for p in encodings_of(w)]
    checked = 0
    for node in (n1, n2, n3):
        new = local_refs(node) - before[node]
        assert new, f"no blocks written to {node.name}"
        for cid in new:
            data = block(node, cid).lower()
            for w, p in patterns:
                assert p not in data, f"{w!r} readable in block {cid} on {node.name}"
            checked += 1
    assert checked > 30
