"""KuboRpc / IpfsStore against a fake, misbehaving daemon (no Kubo binary needed).

A lying node (wrong CID on put, wrong bytes on get), a hanging node, garbage answers and
dropped keep-alive connections must all end in typed errors, bounded in time, with the
store unchanged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dag_cbor
import pytest

from crdt_mls.dag.cid import cid_for_block, cid_to_str
from crdt_mls.errors import IntegrityError, InvalidArgument, StorageError, TransportError
from crdt_mls.stores.ipfs import IpfsStore, parse_api_multiaddr
from crdt_mls.stores.kubo_rpc import KuboRpc, decode_multibase, encode_topic
from crdt_mls.stores.sqlite import SqliteStore

pytestmark = pytest.mark.ipfs

Handler = Callable[[BaseHTTPRequestHandler], None]


class FakeKubo:
    def __init__(self, handler: Handler) -> None:
        outer = self
        self.handler = handler
        self.requests: list[str] = []

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                outer.requests.append(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.handler(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply(h: BaseHTTPRequestHandler, body: bytes, status: int = 200, close: bool = False) -> None:
    h.send_response(status)
    h.send_header("Content-Length", str(len(body)))
    if close:
        h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def fake() -> Iterator[Callable[[Handler], FakeKubo]]:
    servers: list[FakeKubo] = []

    def make(handler: Handler) -> FakeKubo:
        servers.append(FakeKubo(handler))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def block(i: int) -> tuple[bytes, bytes]:
    data = dag_cbor.encode({"fake": i})
    return cid_for_block(data), data


def test_helpers() -> None:
    assert encode_topic("a/b c") == "uYS9iIGM"
    assert decode_multibase(encode_topic(b"\x00\xff\xfe")) == b"\x00\xff\xfe"
    assert decode_multibase("mAP8") == b"\x00\xff"
    assert decode_multibase("f00ff") == b"\x00\xff"
    with pytest.raises(TransportError):
        decode_multibase("zabc")
    with pytest.raises(TransportError):
        decode_multibase("")
    assert parse_api_multiaddr("/ip4/127.0.0.1/tcp/5001\n") == ("127.0.0.1", 5001)
    for bad in ("/ip4/127.0.0.1/udp/5001", "127.0.0.1:5001", "/ip4/x/tcp/port"):
        with pytest.raises(InvalidArgument):
            parse_api_multiaddr(bad)
    with pytest.raises(InvalidArgument):
        KuboRpc("127.0.0.1", 0)


def test_lying_put_is_an_integrity_error(fake: Callable[[Handler], FakeKubo], tmp_path: Path) -> None:
    other_cid, _ = block(999)

    def handler(h: BaseHTTPRequestHandler) -> None:
        if "block/put" in h.path:
            reply(h, json.dumps({"Key": cid_to_str(other_cid), "Size": 5}).encode())
        else:
            reply(h, b"{}")

    srv = fake(handler)
    store = IpfsStore(KuboRpc("127.0.0.1", srv.port, timeout=5), SqliteStore(tmp_path / "s.sqlite"))
    with store, pytest.raises(IntegrityError):
        store.write_batch([block(1)], {"heads": b"x"})
    with SqliteStore(tmp_path / "s.sqlite") as local:
        assert local.get_meta("heads") is None
        assert list(local.iter_cids()) == []
    assert not any("pin/add" in p for p in srv.requests)  # nothing pinned either


def test_lying_get_is_an_integrity_error(fake: Callable[[Handler], FakeKubo], tmp_path: Path) -> None:
    srv = fake(lambda h: reply(h, b"\xa1afdtampered"))
    with (
        IpfsStore(KuboRpc("127.0.0.1", srv.port, timeout=5), SqliteStore(":memory:")) as store,
        pytest.raises(IntegrityError),
    ):
        store.fetch_block(block(1)[0], timeout=1)


def test_hanging_daemon_times_out(fake: Callable[[Handler], FakeKubo]) -> None:
    release = threading.Event()

    def handler(h: BaseHTTPRequestHandler) -> None:
        release.wait(10)

    srv = fake(handler)
    rpc = KuboRpc("127.0.0.1", srv.port, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(TransportError, match="no answer within"):
        rpc.version()
    # block/get: Kubo's own timeout + 5 s of socket slack
    with pytest.raises(TransportError, match="no answer within"):
        rpc.block_get(cid_to_str(block(1)[0]), timeout=0.2)
    assert time.monotonic() - start < 9
    release.set()
    rpc.close()


def test_garbage_and_error_answers(fake: Callable[[Handler], FakeKubo]) -> None:
    answers = iter(
        [
            (b"not json", 200),
            (json.dumps({"Message": "boom", "Code": 0, "Type": "error"}).encode(), 500),
            (b'{"Key": "bafy"}\n{"Message": "late failure", "Type": "error"}', 200),
        ]
    )

    def handler(h: BaseHTTPRequestHandler) -> None:
        body, status = next(answers)
        reply(h, body, status)

    srv = fake(handler)
    rpc = KuboRpc("127.0.0.1", srv.port, timeout=5)
    with pytest.raises(TransportError, match="not JSON"):
        rpc.version()
    with pytest.raises(TransportError, match="boom"):
        rpc.version()
    with pytest.raises(TransportError, match="late failure"):
        rpc.block_put_many([b"x"])
    rpc.close()
    with pytest.raises(TransportError, match="closed"):
        rpc.version()


def test_dropped_keepalive_is_retried(fake: Callable[[Handler], FakeKubo]) -> None:
    def handler(h: BaseHTTPRequestHandler) -> None:
        reply(h, json.dumps({"Version": "0.43.1"}).encode(), close=True)

    srv = fake(handler)
    rpc = KuboRpc("127.0.0.1", srv.port, timeout=5)
    assert rpc.version() == "0.43.1"
    assert rpc.version() == "0.43.1"  # new connection after the server closed the old one
    rpc.close()


def test_store_write_failure_is_storage_error(fake: Callable[[Handler], FakeKubo], tmp_path: Path) -> None:
    srv = fake(lambda h: reply(h, json.dumps({"Message": "disk full", "Type": "error"}).encode(), 500))
    with IpfsStore(KuboRpc("127.0.0.1", srv.port, timeout=5), SqliteStore(":memory:")) as store:
        with pytest.raises(StorageError, match="disk full"):
            store.put_blocks([block(1)])
        assert not store.has_block(block(1)[0])
