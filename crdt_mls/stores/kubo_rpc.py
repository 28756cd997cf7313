"""A small client for the Kubo (go-ipfs) HTTP RPC API, stdlib only.

Only the calls the IPFS store needs: ``block/put|get|stat``, ``pin/add|rm``, ``pubsub/pub|sub``,
``id``, ``swarm/connect|peers``.  Every call is a ``POST`` on one keep-alive
:class:`http.client.HTTPConnection` with a socket timeout; calls that may wait on the network
(``block/get``) also pass Kubo's own ``timeout=`` option so the daemon gives up first.
Failures raise :class:`~crdt_mls.errors.TransportError` with the command and the daemon's
message; nothing here can hang forever.

See docs/ipfs.md for the quirks this client works around.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import queue
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from crdt_mls.errors import InvalidArgument, TransportError

__all__ = ["KuboRpc", "PubsubMessage", "Subscription", "decode_multibase", "encode_topic"]

_BOUNDARY: Final = "crdt-mls-boundary-7f3c1e9a"
_USER_AGENT: Final = "crdt-mls/0.1"
# Kubo rejects anything it cannot parse; answers above this size are a broken or hostile daemon.
_MAX_RESPONSE: Final = 64 * 1024 * 1024


def encode_topic(topic: str | bytes) -> str:
    """Topics and pubsub data travel multibase-encoded (``u`` + unpadded base64url) in the RPC."""
    raw = topic.encode() if isinstance(topic, str) else bytes(topic)
    return "u" + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_multibase(text: str) -> bytes:
    """Decode the multibase strings Kubo emits in pubsub JSON (``u`` base64url, ``m`` base64, ``f`` hex)."""
    if not text:
        raise TransportError("empty multibase string from the IPFS daemon")
    prefix, body = text[0], text[1:]
    try:
        if prefix == "u":
            return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if prefix == "U":
            return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if prefix == "m":
            return base64.b64decode(body + "=" * (-len(body) % 4))
        if prefix == "M":
            return base64.b64decode(body + "=" * (-len(body) % 4))
        if prefix in "fF":
            return bytes.fromhex(body)
    except ValueError as exc:
        raise TransportError(f"malformed multibase string from the IPFS daemon ({len(text)} chars)") from exc
    raise TransportError(f"unsupported multibase prefix {prefix!r} from the IPFS daemon")


@dataclass(frozen=True, slots=True)
class PubsubMessage:
    """One message received on a pubsub topic (Kubo ``pubsub/sub`` JSON line, decoded)."""

    sender: str
    data: bytes
    seqno: bytes
    topics: tuple[str, ...]


class KuboRpc:
    """Blocking client for one Kubo daemon's RPC API (``/api/v0``), thread-safe.

    ``timeout`` is the socket timeout of every call, in seconds.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5001, *, timeout: float = 30.0) -> None:
        if not 0 < port < 65536:
            raise InvalidArgument(f"port out of range: {port}")
        if timeout <= 0:
            raise InvalidArgument("timeout must be positive")
        self.host = host
        self.port = port
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"KuboRpc({self.host}:{self.port})"

    # ------------------------------------------------------------------ plumbing

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        elif self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        else:
            self._conn.timeout = timeout
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @staticmethod
    def _path(command: str, args: Sequence[str], options: dict[str, str]) -> str:
        query = [("arg", a) for a in args] + list(options.items())
        return f"/api/v0/{command}" + ("?" + urllib.parse.urlencode(query) if query else "")

    @staticmethod
    def multipart(files: Sequence[bytes]) -> bytes:
        """A ``multipart/form-data`` body with one part per file (Kubo file arguments)."""
        parts: list[bytes] = []
        for data in files:
            parts.append(
                f"--{_BOUNDARY}\r\n"
                'Content-Disposition: form-data; name="file"; filename="file"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode()
            )
            parts.append(bytes(data))
            parts.append(b"\r\n")
        parts.append(f"--{_BOUNDARY}--\r\n".encode())
        return b"".join(parts)

    def call(
        self,
        command: str,
        args: Sequence[str] = (),
        options: dict[str, str] | None = None,
        *,
        files: Sequence[bytes] | None = None,
        timeout: float | None = None,
        retry: bool = True,
    ) -> bytes:
        """POST one RPC command and return the raw body; :class:`TransportError` on any failure.

        ``retry``: reconnect and resend once if the kept-alive connection turned out to be dead
        (the daemon closed it while idle, so it never saw the request).
        """
        if self._closed:
            raise TransportError("IPFS RPC client is closed")
        path = self._path(command, args, options or {})
        body = self.multipart(files) if files is not None else None
        headers = {"User-Agent": _USER_AGENT, "Connection": "keep-alive"}
        if body is not None:
            headers["Content-Type"] = f"multipart/form-data; boundary={_BOUNDARY}"
        sock_timeout = self.timeout if timeout is None else timeout
        with self._lock:
            for attempt in (0, 1):
                conn = self._connection(sock_timeout)
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read(_MAX_RESPONSE + 1)
                    status = resp.status
                    if resp.will_close or len(data) > _MAX_RESPONSE:
                        self._drop()
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                    self._drop()
                    if attempt == 0 and retry:
                        continue
                    raise TransportError(f"IPFS RPC {command}: connection to {self.host}:{self.port} lost") from exc
                except TimeoutError as exc:
                    self._drop()
                    raise TransportError(f"IPFS RPC {command}: no answer within {sock_timeout:g} s") from exc
                except (OSError, http.client.HTTPException) as exc:
                    self._drop()
                    raise TransportError(
                        f"IPFS RPC {command}: cannot reach {self.host}:{self.port} or bad answer ({exc.__class__.__name__})"
                    ) from exc
                break
        if len(data) > _MAX_RESPONSE:
            raise TransportError(f"IPFS RPC {command}: answer larger than {_MAX_RESPONSE} bytes")
        if status != 200:
            raise TransportError(f"IPFS RPC {command} failed (HTTP {status}): {_error_message(data)}")
        return data

    def call_json(
        self, command: str, args: Sequence[str] = (), options: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        """Like :meth:`call`, parsing the body as one JSON value."""
        data = self.call(command, args, options, **kw)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise TransportError(f"IPFS RPC {command}: answer is not JSON") from exc

    def call_json_stream(
        self, command: str, args: Sequence[str] = (), options: dict[str, str] | None = None, **kw: Any
    ) -> list[Any]:
        """Like :meth:`call`, parsing a body of concatenated / newline-separated JSON values."""
        data = self.call(command, args, options, **kw).decode("utf-8", "replace")
        out: list[Any] = []
        dec = json.JSONDecoder()
        pos = 0
        try:
            while True:
                while pos < len(data) and data[pos].isspace():
                    pos += 1
                if pos >= len(data):
                    break
                value, pos = dec.raw_decode(data, pos)
                out.append(value)
        except ValueError as exc:
            raise TransportError(f"IPFS RPC {command}: answer is not a JSON stream") from exc
        for value in out:
            if isinstance(value, dict) and value.get("Type") == "error":
                raise TransportError(f"IPFS RPC {command} failed: {str(value.get('Message', ''))[:300]}")
        return out

    def close(self) -> None:
        """Close the kept-alive connection; later calls raise :class:`TransportError`."""
        with self._lock:
            self._closed = True
            self._drop()

    # ------------------------------------------------------------------ commands

    def id(self) -> dict[str, Any]:
        """``id``: the peer ID and the addresses of the daemon."""
        value = self.call_json("id")
        if not isinstance(value, dict) or "ID" not in value:
            raise TransportError("IPFS RPC id: unexpected answer")
        return value

    def version(self) -> str:
        """``version``: the daemon's version string."""
        value = self.call_json("version")
        if not isinstance(value, dict):
            raise TransportError("IPFS RPC version: unexpected answer")
        return str(value.get("Version", ""))

    def block_put_many(
        self, blocks: Sequence[bytes], *, codec: str = "dag-cbor", mhtype: str = "sha2-256"
    ) -> list[str]:
        """``block/put`` of several blocks in one request; returns the CIDs (base32 strings) in order."""
        if not blocks:
            return []
        values = self.call_json_stream(
            "block/put",
            options={"cid-codec": codec, "mhtype": mhtype, "pin": "false", "cid-base": "base32"},
            files=list(blocks),
            timeout=self.timeout + 0.01 * len(blocks),
        )
        keys = [v.get("Key") for v in values if isinstance(v, dict)]
        if len(keys) != len(blocks) or not all(isinstance(k, str) for k in keys):
            raise TransportError(f"IPFS RPC block/put: expected {len(blocks)} CIDs, got {len(keys)}")
        return [str(k) for k in keys]

    def block_get(self, cid: str, *, timeout: float = 10.0, offline: bool = False) -> bytes:
        """``block/get``; the daemon gives up after ``timeout`` seconds (TransportError)."""
        options = {"timeout": f"{timeout:g}s"}
        if offline:
            options["offline"] = "true"
        return self.call("block/get", [cid], options, timeout=timeout + 5.0)

    def block_stat_local(self, cid: str) -> int | None:
        """``block/stat --offline``: the size of a locally stored block, or ``None`` if not stored."""
        try:
            value = self.call_json("block/stat", [cid], {"offline": "true", "timeout": f"{self.timeout:g}s"})
        except TransportError as exc:
            if _is_not_found(str(exc)):
                return None
            raise
        if not isinstance(value, dict) or not isinstance(value.get("Size"), int):
            raise TransportError("IPFS RPC block/stat: unexpected answer")
        return int(value["Size"])

    def pin_add(self, cids: Sequence[str], *, recursive: bool = False) -> None:
        """``pin/add`` (direct pins by default: O(1) per block, children need not be present)."""
        if cids:
            # Kubo spends several ms per pin (it persists each one): scale the wait with the count.
            self.call_json_stream(
                "pin/add",
                list(cids),
                {"recursive": "true" if recursive else "false"},
                timeout=self.timeout + 0.1 * len(cids),
            )

    def pin_rm(self, cids: Sequence[str], *, recursive: bool = False) -> None:
        """``pin/rm``; unpinning a block that is not pinned is not an error."""
        for cid in cids:
            try:
                self.call_json_stream("pin/rm", [cid], {"recursive": "true" if recursive else "false"})
            except TransportError as exc:
                if "not pinned" not in str(exc):
                    raise

    def pin_ls(self, *, pin_type: str = "direct") -> set[str]:
        """``pin/ls``: the CIDs pinned with ``pin_type`` (``direct``, ``recursive``, ``all``)."""
        values = self.call_json_stream("pin/ls", options={"type": pin_type, "cid-base": "base32", "stream": "true"})
        out: set[str] = set()
        for v in values:
            if isinstance(v, dict):
                if isinstance(v.get("Cid"), str):
                    out.add(v["Cid"])
                elif isinstance(v.get("Keys"), dict):
                    out.update(str(k) for k in v["Keys"])
        return out

    def swarm_connect(self, multiaddr: str) -> None:
        """``swarm/connect`` to a peer's full multiaddr (``.../p2p/<peer id>``)."""
        self.call_json("swarm/connect", [multiaddr])

    def swarm_peers(self) -> list[str]:
        """``swarm/peers``: the peer IDs this daemon is connected to."""
        value = self.call_json("swarm/peers")
        peers = value.get("Peers") if isinstance(value, dict) else None
        return [str(p.get("Peer")) for p in peers or [] if isinstance(p, dict)]

    def pubsub_pub(self, topic: str | bytes, data: bytes) -> None:
        """``pubsub/pub``: publish ``data`` on ``topic`` (best effort: pubsub has no delivery guarantee)."""
        self.call("pubsub/pub", [encode_topic(topic)], files=[data])

    def pubsub_peers(self, topic: str | bytes) -> list[str]:
        """``pubsub/peers``: the peers known to subscribe to ``topic``."""
        value = self.call_json("pubsub/peers", [encode_topic(topic)])
        strings = value.get("Strings") if isinstance(value, dict) else None
        return [str(s) for s in strings or []]

    def pubsub_sub(self, topic: str | bytes) -> Subscription:
        """``pubsub/sub``: a subscription on its own connection (see :class:`Subscription`)."""
        return Subscription(self.host, self.port, topic, connect_timeout=self.timeout)


class Subscription:
    """A live ``pubsub/sub`` stream, read by a daemon thread into a queue.

    Use :meth:`get` (wait at most ``timeout`` seconds, ``None`` if nothing came) or iterate with
    :meth:`drain`.  A broken stream is reported by :meth:`get` as :class:`TransportError`.
    Always :meth:`close` it (also a context manager).
    """

    def __init__(self, host: str, port: int, topic: str | bytes, *, connect_timeout: float = 30.0) -> None:
        self.topic = topic
        self._queue: queue.Queue[PubsubMessage | BaseException] = queue.Queue()
        self._closed = threading.Event()
        path = KuboRpc._path("pubsub/sub", [encode_topic(topic)], {})
        try:
            self._conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
            self._conn.request("POST", path, headers={"User-Agent": _USER_AGENT})
            self._resp = self._conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise TransportError(f"IPFS RPC pubsub/sub: cannot subscribe at {host}:{port}") from exc
        if self._resp.status != 200:
            data = self._resp.read(65536)
            self._conn.close()
            raise TransportError(f"IPFS RPC pubsub/sub failed (HTTP {self._resp.status}): {_error_message(data)}")
        # Blocking reads from now on: the stream is quiet until someone publishes.
        if self._conn.sock is not None:
            self._conn.sock.settimeout(None)
        self._thread = threading.Thread(target=self._run, name="kubo-pubsub-sub", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Subscription(topic={self.topic!r})"

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                line = self._resp.readline(1 << 20)
                if not line:
                    if not self._closed.is_set():
                        self._queue.put(TransportError("IPFS pubsub stream ended"))
                    return
                line = line.strip()
                if not line:
                    continue
                try:
                    self._queue.put(_parse_pubsub(line))
                except TransportError as exc:
                    self._queue.put(exc)
        except Exception as exc:  # http.client raises odd types when the socket is closed under it
            if not self._closed.is_set():
                self._queue.put(TransportError(f"IPFS pubsub stream failed ({exc.__class__.__name__})"))

    def get(self, timeout: float) -> PubsubMessage | None:
        """The next message, waiting at most ``timeout`` seconds; ``None`` if none arrived."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def drain(self) -> Iterator[PubsubMessage]:
        """Every message already received, without waiting."""
        while True:
            msg = self.get(0)
            if msg is None:
                return
            yield msg

    def close(self) -> None:
        """Stop the stream (closes the socket; the reader thread then exits)."""
        if self._closed.is_set():
            return
        self._closed.set()
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_pubsub(line: bytes) -> PubsubMessage:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise TransportError("IPFS pubsub: message is not JSON") from exc
    if not isinstance(value, dict):
        raise TransportError("IPFS pubsub: message is not a JSON object")
    if value.get("Type") == "error":
        raise TransportError(f"IPFS pubsub failed: {str(value.get('Message', ''))[:300]}")
    data = value.get("data")
    if not isinstance(data, str):
        raise TransportError("IPFS pubsub: message without data")
    topics = value.get("topicIDs") or []
    seqno = value.get("seqno")
    return PubsubMessage(
        sender=str(value.get("from", "")),
        data=decode_multibase(data),
        seqno=decode_multibase(seqno) if isinstance(seqno, str) and seqno else b"",
        topics=tuple(decode_multibase(t).decode("utf-8", "replace") for t in topics if isinstance(t, str)),
    )


def _error_message(data: bytes) -> str:
    text = data[:2000].decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except ValueError:
        return text.strip()[:300] or "(empty answer)"
    if isinstance(value, dict) and "Message" in value:
        return str(value["Message"])[:300]
    return text.strip()[:300]


def _is_not_found(message: str) -> bool:
    m = message.lower()
    return "not found" in m or "blockservice: key not found" in m or "ipld: could not find" in m
