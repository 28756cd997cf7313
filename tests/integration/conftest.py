"""Fixtures that run real Kubo daemons on loopback for the integration tests (marker ``ipfs``).

The ``ipfs`` binary comes from ``$CRDT_MLS_IPFS_BIN`` or from the cache of
``.ci/install-ipfs.sh`` (``${CRDT_MLS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/crdt-mls}/kubo-v0.43.1/ipfs``).
Without a binary every test here FAILS with instructions, unless ``CRDT_MLS_SKIP_IPFS=1``
is set explicitly (then they are skipped, loudly).

Each daemon gets a temporary ``IPFS_PATH``, ``ipfs init --profile test`` (API, gateway and
swarm on 127.0.0.1 port 0, i.e. a free port picked by the kernel and read back from
``$IPFS_PATH/api`` and ``ipfs id``), no bootstrap peers, no MDNS, no routing, pubsub on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crdt_mls.stores.ipfs import parse_api_multiaddr
from crdt_mls.stores.kubo_rpc import KuboRpc

KUBO_VERSION = "v0.43.1"
START_TIMEOUT = 60.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.ipfs)


def default_binary_path() -> Path:
    root = os.environ.get("CRDT_MLS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "crdt-mls"
    )
    return Path(root) / f"kubo-{KUBO_VERSION}" / "ipfs"


def find_binary() -> str | None:
    env = os.environ.get("CRDT_MLS_IPFS_BIN")
    if env:
        return env if os.access(env, os.X_OK) else None
    path = default_binary_path()
    return str(path) if os.access(path, os.X_OK) else None


@pytest.fixture(scope="session")
def ipfs_bin() -> str:
    """Path of the Kubo binary; fails (or skips with CRDT_MLS_SKIP_IPFS=1) if there is none."""
    path = find_binary()
    if path is None:
        where = os.environ.get("CRDT_MLS_IPFS_BIN") or str(default_binary_path())
        msg = (
            f"no Kubo binary at {where}: run .ci/install-ipfs.sh (builds Kubo {KUBO_VERSION} once, ~5-10 min) "
            "or set CRDT_MLS_IPFS_BIN; set CRDT_MLS_SKIP_IPFS=1 to skip the IPFS integration tests on purpose"
        )
        if os.environ.get("CRDT_MLS_SKIP_IPFS") == "1":
            pytest.skip("CRDT_MLS_SKIP_IPFS=1: " + msg)
        pytest.fail(msg, pytrace=False)
    return path


class KuboNode:
    """One Kubo daemon in a temporary repo, on loopback."""

    def __init__(self, binary: str, name: str) -> None:
        self.binary = binary
        self.name = name
        self.repo = Path(tempfile.mkdtemp(prefix=f"crdt-mls-{name}-"))
        self.env = dict(os.environ, IPFS_PATH=str(self.repo), IPFS_TELEMETRY="off", GOLOG_LOG_LEVEL="error")
        self.log_path = self.repo / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.peer_id = ""
        self.swarm_addrs: list[str] = []

    def __repr__(self) -> str:
        return f"KuboNode({self.name}, api={self.host}:{self.port})"

    def _run(self, *args: str) -> str:
        res = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if res.returncode != 0:
            raise RuntimeError(f"ipfs {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        return res.stdout

    def _configure(self) -> None:
        cfg_path = self.repo / "config"
        cfg = json.loads(cfg_path.read_text())
        addrs = cfg.setdefault("Addresses", {})
        addrs["API"] = "/ip4/127.0.0.1/tcp/0"
        addrs["Gateway"] = "/ip4/127.0.0.1/tcp/0"
        addrs["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
        cfg["Bootstrap"] = []
        cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
        cfg.setdefault("Pubsub", {})["Enabled"] = True
        cfg.setdefault("Routing", {})["Type"] = "none"
        cfg.setdefault("AutoConf", {})["Enabled"] = False
        cfg.setdefault("AutoTLS", {})["Enabled"] = False
        cfg_path.write_text(json.dumps(cfg, indent=2))

    def start(self) -> None:
        self._run("init", "--profile", "test")
        self._configure()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "daemon"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        api_file = self.repo / "api"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Kubo daemon {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if api_file.exists() and b"Daemon is ready" in self.log_path.read_bytes():
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kubo daemon {self.name} not ready after {START_TIMEOUT:g} s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.host, self.port = parse_api_multiaddr(api_file.read_text())
        with self.rpc() as rpc:
            info = rpc.id()
        self.peer_id = str(info["ID"])
        self.swarm_addrs = [a for a in info.get("Addresses") or [] if a.startswith("/ip4/127.0.0.1/tcp/")]

    def rpc(self, timeout: float = 30.0) -> _ClosingRpc:
        return _ClosingRpc(self.host, self.port, timeout=timeout)

    @property
    def api(self) -> tuple[str, int]:
        return self.host, self.port

    def connect(self, other: KuboNode) -> None:
        """``swarm connect`` to ``other`` and wait until both see each other."""
        addr = (
            other.swarm_addrs[0] if "/p2p/" in other.swarm_addrs[0] else f"{other.swarm_addrs[0]}/p2p/{other.peer_id}"
        )
        with self.rpc() as rpc:
            rpc.swarm_connect(addr)
            deadline = time.monotonic() + 15
            while other.peer_id not in rpc.swarm_peers():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} could not connect to {other.name}")
                time.sleep(0.05)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.repo, ignore_errors=True)


class _ClosingRpc(KuboRpc):
    def __enter__(self) -> _ClosingRpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="module")
def kubo_factory(ipfs_bin: str) -> Iterator[Callable[[int], list[KuboNode]]]:
    """``start(n)`` starts ``n`` daemons (stopped at the end of the module)."""
    started: list[KuboNode] = []

    def start(n: int) -> list[KuboNode]:
        nodes = [KuboNode(ipfs_bin, f"node{len(started) + i}") for i in range(n)]
        started.extend(nodes)
        for node in nodes:
            node.start()
        return nodes

    try:
        yield start
    finally:
        for node in started:
            node.stop()


@pytest.fixture(scope="module")
def kubo_node(kubo_factory: Callable[[int], list[KuboNode]]) -> KuboNode:
    """One running daemon."""
    return kubo_factory(1)[0]


@pytest.fixture(scope="module")
def kubo_pair(kubo_factory: Callable[[int], list[KuboNode]]) -> tuple[KuboNode, KuboNode]:
    """Two running daemons joined with ``swarm connect``."""
    a, b = kubo_factory(2)
    a.connect(b)
    return a, b
