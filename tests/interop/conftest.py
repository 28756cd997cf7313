"""A live ts-mls peer for the interop tests (marker ``interop``; docs/interop.md).

``tests/interop/ts_peer/peer.mjs`` runs under Node.js >= 20 with ts-mls installed by
``.ci/install-ts-mls.sh`` (``npm ci`` into ``tests/interop/ts_peer/node_modules``).  One
process per test module speaks JSON lines; bytes cross the pipe as hex MLSMessages.
Without Node or ts-mls every test here FAILS with instructions, unless
``CRDT_MLS_SKIP_INTEROP=1`` is set explicitly (then they are skipped).
"""

from __future__ import annotations

import itertools
import json
import os
import selectors
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

PEER_DIR = Path(__file__).parent / "ts_peer"
PEER_SCRIPT = PEER_DIR / "peer.mjs"
#: Seconds one request may take (key generation and commits take milliseconds; this only stops hangs).
REQUEST_TIMEOUT = 60.0


def pytest_configure(config: pytest.Config) -> None:
    # registered here until pyproject.toml lists it (--strict-markers)
    config.addinivalue_line("markers", "interop: live interop with another MLS implementation (ts-mls under Node.js)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.interop)


class PeerError(Exception):
    """ts-mls answered a request with an error (its message is kept verbatim)."""


class TsPeer:
    """A ts-mls process: ``call(op, **args)`` -> result dict; raises `PeerError` on a ts-mls error."""

    def __init__(self, node: str) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._proc = subprocess.Popen(
            [node, str(PEER_SCRIPT)],
            cwd=PEER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._ids = itertools.count(1)
        self._sel = selectors.DefaultSelector()
        assert self._proc.stdout is not None
        self._sel.register(self._proc.stdout, selectors.EVENT_READ)
        hello = self._read()
        if not hello.get("ok") or not hello["result"].get("ready"):
            raise RuntimeError(f"ts-mls peer did not start: {hello}")
        self.node_version: str = hello["result"]["node"]

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-4000:].decode(errors="replace")

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        if not self._sel.select(REQUEST_TIMEOUT):
            raise RuntimeError(f"ts-mls peer did not answer within {REQUEST_TIMEOUT}s")
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"ts-mls peer exited ({self._proc.poll()}); stderr:\n{self._stderr_tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None
        rid = next(self._ids)
        self._proc.stdin.write(json.dumps({"id": rid, "op": op, **args}).encode() + b"\n")
        self._proc.stdin.flush()
        answer = self._read()
        if answer.get("id") != rid:
            raise RuntimeError(f"ts-mls peer answered request {answer.get('id')} instead of {rid}")
        if not answer["ok"]:
            raise PeerError(f"ts-mls {op}: {answer['error']}")
        result: dict[str, Any] = answer["result"]
        return result

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._sel.close()
        self._stderr.close()


def _missing() -> str | None:
    node = shutil.which("node")
    if node is None:
        return "Node.js (>= 20) is not on PATH"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major = version.lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 20:
        return f"Node.js >= 20 is needed, found {version or 'nothing'} at {node}"
    if not (PEER_DIR / "node_modules" / "ts-mls" / "package.json").is_file():
        return f"ts-mls is not installed in {PEER_DIR}/node_modules"
    return None


@pytest.fixture(scope="module")
def ts_peer() -> Iterator[TsPeer]:
    """One ts-mls process for the module; FAILS if Node/ts-mls are missing (skip: CRDT_MLS_SKIP_INTEROP=1)."""
    why = _missing()
    if why is not None:
        msg = f"{why}: run .ci/install-ts-mls.sh (Node >= 20 and npm needed), or set CRDT_MLS_SKIP_INTEROP=1 to skip"
        if os.environ.get("CRDT_MLS_SKIP_INTEROP") == "1":
            pytest.skip(msg)
        pytest.fail(msg, pytrace=False)
    node = shutil.which("node")
    assert node is not None
    peer = TsPeer(node)
    try:
        yield peer
    finally:
        peer.close()
