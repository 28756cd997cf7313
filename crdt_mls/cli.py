"""The ``crdt-mls`` command line program (docs/cli.md).

One data directory holds one member: its identity, its replica of one group and a block
store (``store.sqlite``: embedded SQLite by default, or a Kubo node with ``--ipfs URL``, the
SQLite file then holding only the local index and the private replica state).  Operations
travel as signed, encrypted blocks; pointers to them (invitations, heads) and key packages
travel out of band.  Everything readable stays in the private meta table or on screen.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import getpass
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from crdt_mls.dag.cid import CODEC_DAG_CBOR, CODEC_RAW, cid_from_str, cid_to_str, parse_cid
from crdt_mls.dag.node import decode_node
from crdt_mls.errors import CrdtMlsError, DecodeError, InvalidArgument, InvalidState, TransportError
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.replica import (
    Event,
    MessageReceived,
    Replica,
    describe,
    open_meta,
    seal_meta,
)
from crdt_mls.stores.base import Store
from crdt_mls.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from crdt_mls.content.cryptree import ReadCap, WriteCap
    from crdt_mls.content.identity import Identity, IdentityRecord

__all__ = ["PASSWORD_ENV", "TEST_SCRYPT_ENV", "derive_state_key", "main", "new_identity", "run_demo", "unlock_identity"]

STORE_FILE = "store.sqlite"
_INBOX = "cli/inbox"
_READ_MARK = "cli/read"
_IDENTITY = "cli/identity"  #: the public identity record (username, scrypt parameters, public keys)
#: the password, for scripts and tests (otherwise it is asked for; never a command-line argument)
PASSWORD_ENV = "CRDT_MLS_PASSWORD"
#: TEST ONLY: "1" selects cheap, insecure scrypt parameters (ScryptParams.for_tests())
TEST_SCRYPT_ENV = "CRDT_MLS_INSECURE_TEST_SCRYPT"
_STATE_KEY_INFO = b"crdt-mls replica state key"
_SHARES = "cli/shares"
_KIND_TEXT = 0
_KIND_SHARE = 1


# ----------------------------------------------------------------------------- output helpers


def _say(text: str) -> None:
    print(text, flush=True)


class Progress:
    """A stdlib progress bar on stderr (shown when stderr is a terminal or CRDT_MLS_PROGRESS=1)."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.enabled = (self.stream.isatty() or os.environ.get("CRDT_MLS_PROGRESS") == "1") and self.total > 0

    def step(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self.enabled:
            width = 30
            filled = width * self.done // self.total
            line = f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
            self.stream.write(line)
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# ----------------------------------------------------------------------------- application payloads


@dataclass(frozen=True, slots=True)
class ShareRecord:
    """A shared file or directory as carried inside an (MLS-encrypted) application message."""

    name: str
    is_dir: bool
    cap: bytes
    pointers: tuple[bytes, ...]
    cids: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        w = Writer()
        w.opaque(self.name.encode("utf-8"))
        w.boolean(self.is_dir)
        w.opaque(self.cap)
        w.vector(self.pointers, _w_opaque)
        w.vector(self.cids, _w_opaque)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareRecord:
        r = Reader(data)
        try:
            name = r.opaque().decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("share name is not UTF-8") from None
        is_dir = r.boolean()
        cap = r.opaque()
        pointers = tuple(r.vector(_r_opaque))
        cids = tuple(r.vector(_r_opaque))
        r.finish()
        return cls(name, is_dir, cap, pointers, cids)


def _w_opaque(w: Writer, data: bytes) -> None:
    w.opaque(data)


def _r_opaque(r: Reader) -> bytes:
    return r.opaque()


@dataclass(frozen=True, slots=True)
class InboxEntry:
    epoch: int
    sender: str
    kind: int
    body: bytes


def _load_list(s: Session, key: str) -> list[bytes]:
    raw = s.get_private(key)
    if raw is None:
        return []
    return list(Reader(raw).vector(_r_opaque))


def _save_list(s: Session, key: str, items: Sequence[bytes]) -> None:
    w = Writer()
    w.vector(items, _w_opaque)
    s.put_private({key: w.getvalue()})


def _encode_entry(e: InboxEntry) -> bytes:
    w = Writer()
    w.u64(e.epoch)
    w.opaque(e.sender.encode("utf-8"))
    w.u8(e.kind)
    w.opaque(e.body)
    return w.getvalue()


def _decode_entry(data: bytes) -> InboxEntry:
    r = Reader(data)
    epoch = r.u64()
    sender = r.opaque().decode("utf-8", "replace")
    kind = r.u8()
    body = r.opaque()
    return InboxEntry(epoch, sender, kind, body)


# ----------------------------------------------------------------------------- password identity (issue 6)


def derive_state_key(master: bytes) -> bytes:
    """The 32-byte key sealing replica and CLI state at rest: HKDF-SHA256 of the identity's
    scrypt output with its own label (distinct from the signing and box keys)."""
    from crdt_mls.content.identity import hkdf

    return hkdf(master, _STATE_KEY_INFO)


def new_identity(username: str, password: str | bytes, *, insecure_for_tests: bool = False) -> tuple[Identity, bytes]:
    """A password identity (scrypt N=2^17, r=8; cheap test parameters only if asked) and its state key."""
    from crdt_mls.content.identity import (
        DEFAULT_PARAMS,
        Identity,
        ScryptParams,
        derive_key,
        normalize_username,
        username_salt,
    )

    params = ScryptParams.for_tests() if insecure_for_tests else DEFAULT_PARAMS
    norm = normalize_username(username)
    master = derive_key(password, username_salt(norm), params.validate())
    return Identity.from_master(norm, params, master), derive_state_key(master)


def unlock_identity(
    record: IdentityRecord | bytes, password: str | bytes, *, insecure_for_tests: bool = False
) -> tuple[Identity, bytes]:
    """Unlock a stored identity record with its password -> (identity, state key);
    `WrongPasswordError` if the password derives other keys."""
    from crdt_mls.content.identity import Identity, IdentityRecord, derive_key, username_salt
    from crdt_mls.errors import WrongPasswordError

    rec = (
        record
        if isinstance(record, IdentityRecord)
        else IdentityRecord.from_bytes(record, insecure_for_tests=insecure_for_tests)
    )
    master = derive_key(password, username_salt(rec.username), rec.params)
    ident = Identity.from_master(rec.username, rec.params, master)
    if ident.public != rec.public:
        raise WrongPasswordError("wrong password: it does not unlock this identity")
    return ident, derive_state_key(master)


def _test_scrypt() -> bool:
    return os.environ.get(TEST_SCRYPT_ENV) == "1"


def _password(prompt: str, *, confirm: bool = False) -> str:
    """The password from $CRDT_MLS_PASSWORD or an interactive prompt (asked twice when new)."""
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    pw = getpass.getpass(prompt)
    if confirm and getpass.getpass("repeat the password: ") != pw:
        raise InvalidArgument("the two passwords differ")
    return pw


# ----------------------------------------------------------------------------- the session


class Session:
    """A data directory opened for one command: store, replica, content tree."""

    def __init__(self, data_dir: Path, ipfs: str | None, *, fetch_timeout: float = 10.0) -> None:
        self.data_dir = data_dir
        self.ipfs = ipfs
        self.fetch_timeout = fetch_timeout
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / STORE_FILE
        if ipfs is not None:
            from crdt_mls.stores.ipfs import IpfsStore

            self.store: Store = IpfsStore.open(_parse_api(ipfs), path)
        else:
            self.store = SqliteStore(path)
        self._unlocked: tuple[Identity, bytes] | None = None

    def close(self) -> None:
        self.store.close()

    # -- the password identity and state sealed at rest (issue 6)

    def unlock(self) -> tuple[Identity, bytes]:
        """The identity and state key of this directory, unlocked with the password (once)."""
        if self._unlocked is None:
            record = self.store.get_meta(_IDENTITY)
            if record is None:
                if self.has_replica():
                    raise InvalidState(f"{self.data_dir} holds no password identity (made by an older version)")
                raise InvalidState(f"no replica saved in {self.data_dir}: run crdt-mls init NAME or create NAME")
            from crdt_mls.content.identity import IdentityRecord

            rec = IdentityRecord.from_bytes(record, insecure_for_tests=_test_scrypt())
            self._unlocked = unlock_identity(rec, _password(f"password for {rec.username}: "))
        return self._unlocked

    def create_identity(self, name: str) -> Replica:
        """Derive a new password identity, store its public record and a new (sealed) replica."""
        if self.has_replica() or self.store.get_meta(_IDENTITY) is not None:
            raise InvalidState(f"{self.data_dir} already holds an identity")
        ident, key = new_identity(
            name, _password(f"new password for {name}: ", confirm=True), insecure_for_tests=_test_scrypt()
        )
        r = Replica.new_member(ident.username, self.store, signature_priv=ident.signing_seed, state_key=key)
        self.store.write_batch([], {_IDENTITY: ident.record().to_bytes()})
        self._unlocked = (ident, key)
        return r

    def get_private(self, key: str) -> bytes | None:
        """A CLI meta value, opened with the state key."""
        raw = self.store.get_meta(key)
        return None if raw is None else open_meta(self.unlock()[1], key, raw)

    def put_private(self, values: dict[str, bytes]) -> None:
        """Seal CLI meta values with the state key and write them in one batch."""
        state_key = self.unlock()[1]
        self.store.write_batch([], {k: seal_meta(state_key, k, v) for k, v in values.items()})

    def replica(self) -> Replica:
        return Replica.load(self.store, state_key=self.unlock()[1])

    def has_replica(self) -> bool:
        return self.store.get_meta("replica/state") is not None

    # -- events

    def record(self, events: Iterable[Event]) -> None:
        """Print events; keep messages and shares in the private meta table."""
        inbox = _load_list(self, _INBOX)
        shares = _load_list(self, _SHARES)
        changed = False
        for ev in events:
            if isinstance(ev, MessageReceived):
                kind, body = (ev.data[0], ev.data[1:]) if ev.data else (_KIND_TEXT, b"")
                if kind == _KIND_SHARE:
                    from crdt_mls.content.cryptree import Cryptree

                    try:
                        rec = ShareRecord.from_bytes(body)
                        tree = Cryptree(self.store)
                        for p in rec.pointers:
                            tree.import_pointer(p)
                    except CrdtMlsError as e:
                        _say(f"[epoch {ev.epoch}] {ev.sender} shared something unreadable: {e}")
                        continue
                    shares.append(_encode_entry(InboxEntry(ev.epoch, ev.sender, kind, body)))
                    _say(f"[epoch {ev.epoch}] {ev.sender} shared {'directory' if rec.is_dir else 'file'} {rec.name}")
                else:
                    _say(f"[epoch {ev.epoch}] {ev.sender}: {body.decode('utf-8', 'replace')}")
                inbox.append(_encode_entry(InboxEntry(ev.epoch, ev.sender, kind, body)))
                changed = True
            else:
                _say(describe(ev))
        if changed:
            _save_list(self, _INBOX, inbox)
            _save_list(self, _SHARES, shares)

    def keep_own(self, replica: Replica, kind: int, body: bytes) -> None:
        """Keep our own message in the private inbox (marked read)."""
        inbox = _load_list(self, _INBOX)
        mark = self.get_private(_READ_MARK)
        inbox.append(_encode_entry(InboxEntry(replica.epoch, replica.name, kind, body)))
        _save_list(self, _INBOX, inbox)
        if mark is not None and int.from_bytes(mark, "big") == len(inbox) - 1:
            self.put_private({_READ_MARK: len(inbox).to_bytes(8, "big")})

    def publish(self, replica: Replica) -> None:
        """After a local operation: blocks are already stored (and, over IPFS, on the node)."""
        out = replica.take_outgoing()
        if self.ipfs is not None and out:
            from crdt_mls.stores.ipfs import IpfsStore

            if isinstance(self.store, IpfsStore) and replica.group_tag:
                heads = b"".join(replica.heads())
                # pubsub is best effort; peers can also sync from the printed heads
                with contextlib.suppress(TransportError, CrdtMlsError):
                    self.store.announce(_topic(replica.group_tag), heads)

    # -- pulling operations

    def pull_peer(self, replica: Replica, peer_dir: Path) -> list[Event]:
        """Read every block of another data directory's store that we lack."""
        path = peer_dir / STORE_FILE
        if not path.exists():
            raise InvalidArgument(f"no crdt-mls store in {peer_dir}")
        peer = SqliteStore(path)
        try:
            want = [c for c in peer.iter_cids() if not self.store.has_block(c)]
            blocks: list[tuple[bytes, bytes]] = []
            bar = Progress(f"sync {peer_dir.name}", len(want))
            for c in want:
                data = peer.get_block(c)
                if data is not None:
                    blocks.append((c, data))
                bar.step()
            bar.close()
        finally:
            peer.close()
        return self._take(replica, blocks)

    def pull_ipfs(self, replica: Replica, heads: Sequence[bytes]) -> list[Event]:
        """Fetch ``heads`` and every ancestor we lack from IPFS (bitswap), then receive them."""
        from crdt_mls.stores.ipfs import IpfsStore

        if not isinstance(self.store, IpfsStore):
            raise InvalidArgument("fetching by CID needs --ipfs URL")
        todo = [h for h in heads if not self.store.has_block(h)]
        seen: set[bytes] = set(todo)
        blocks: list[tuple[bytes, bytes]] = []
        bar = Progress("fetch operations", len(todo))
        while todo:
            cid = todo.pop()
            data = self.store.fetch_block(cid, timeout=self.fetch_timeout)
            blocks.append((cid, data))
            bar.step()
            if parse_cid(cid).codec == CODEC_DAG_CBOR:
                node = decode_node(data, cid)
                links = [*node.parents, *([node.prev] if node.prev is not None else [])]
                for link in links:
                    if link not in seen and not self.store.has_block(link):
                        seen.add(link)
                        todo.append(link)
                        bar.total += 1
        bar.close()
        events = self._take(replica, blocks)
        # chunk blocks of large operations that this member needs (docs/schema.md, version 2)
        while True:
            want = [c for c in replica.missing() if parse_cid(c).codec == CODEC_RAW and c not in seen]
            if not want:
                return events
            seen.update(want)
            bar = Progress("fetch chunks", len(want))
            got: list[tuple[bytes, bytes]] = []
            for c in want:
                got.append((c, self.store.fetch_block(c, timeout=self.fetch_timeout)))
                bar.step()
            bar.close()
            events += self._take(replica, got)

    def fetch_cids(self, cids: Sequence[bytes], label: str) -> None:
        """Make sure the given (content) blocks are local, fetching them from IPFS if needed."""
        from crdt_mls.stores.ipfs import IpfsStore

        want = [c for c in cids if not self.store.has_block(c)]
        if not want:
            return
        if not isinstance(self.store, IpfsStore):
            raise InvalidState(f"{len(want)} block(s) of this share are missing: sync with the sharer first")
        bar = Progress(label, len(want))
        got: list[tuple[bytes, bytes]] = []
        for c in want:
            got.append((c, self.store.fetch_block(c, timeout=self.fetch_timeout)))
            bar.step()
        bar.close()
        self.store.put_blocks(got)

    def _take(self, replica: Replica, blocks: list[tuple[bytes, bytes]]) -> list[Event]:
        ops = [(c, b) for c, b in blocks if parse_cid(c).codec == CODEC_DAG_CBOR]
        other = [(c, b) for c, b in blocks if parse_cid(c).codec != CODEC_DAG_CBOR]
        if other:
            self.store.put_blocks(other)
        # the replica also looks for chunk blocks its waiting operations need in the store
        return replica.receive(ops)


def _topic(tag: bytes) -> str:
    return "crdt-mls/" + tag.hex()


def _parse_api(url: str) -> tuple[str, int]:
    """``http://127.0.0.1:5001``, ``127.0.0.1:5001`` or ``/ip4/127.0.0.1/tcp/5001``."""
    text = url.strip()
    if text.startswith("/"):
        from crdt_mls.stores.ipfs import parse_api_multiaddr

        return parse_api_multiaddr(text)
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidArgument(f"not an IPFS API address: {url!r} (use http://HOST:PORT)")
    return host or "127.0.0.1", int(port)


# ----------------------------------------------------------------------------- commands


def _cmd_init(s: Session, a: argparse.Namespace) -> None:
    r = s.create_identity(a.name)
    _say(f"identity {r.name} created in {s.data_dir}")


def _cmd_create(s: Session, a: argparse.Namespace) -> None:
    if s.has_replica():
        r = s.replica()
        from crdt_mls.content.identity import normalize_username

        if a.name and normalize_username(a.name) != r.name:
            raise InvalidState(f"{s.data_dir} already holds the identity {r.name}")
        events = r.start_group()
    else:
        if not a.name:
            raise InvalidArgument("no identity yet: give a NAME (crdt-mls create NAME)")
        r = s.create_identity(a.name)
        events = r.start_group()
    s.publish(r)
    s.record(events)
    _say(f"group created by {r.name}; epoch 0 ({cid_to_str(r.epoch_id)})")


def _cmd_key_package(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    kp = r.key_package()
    text = base64.b64encode(kp).decode()
    if a.output:
        Path(a.output).write_text(text + "\n")
        _say(f"key package of {r.name} written to {a.output}")
    else:
        _say(text)


def _read_key_package(arg: str) -> bytes:
    p = Path(arg)
    text = p.read_text() if p.exists() else arg
    try:
        return base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise InvalidArgument(f"{arg[:60]!r} is neither a key package file nor base64") from None


def _cmd_invite(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    kps = [_read_key_package(x) for x in a.key_packages]
    events = r.add(kps)
    s.publish(r)
    s.record(events)
    _say(f"invitation: {cid_to_str(r.epoch_id)}")


def _cmd_join(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    if r.in_group:
        raise InvalidState("already in a group")
    events = _pull(s, r, a)
    s.record(events)
    if not r.in_group:
        raise InvalidState("no Welcome for this member in what was received (yet)")
    _say(f"{r.name} joined; epoch {r.epoch}; members: {', '.join(n for _, n in r.members())}")


def _pull(s: Session, r: Replica, a: argparse.Namespace) -> list[Event]:
    events: list[Event] = []
    for peer in a.peer or []:
        events.extend(s.pull_peer(r, Path(peer)))
    cids = [cid_from_str(c) for c in getattr(a, "cids", None) or []]
    if cids:
        events.extend(s.pull_ipfs(r, cids))
    listen = getattr(a, "listen", 0.0) or 0.0
    if listen > 0:
        events.extend(_listen(s, r, listen))
    if not a.peer and not cids and listen <= 0:
        raise InvalidArgument("nothing to sync from: give --peer DIR, CIDs (with --ipfs) or --listen SECONDS")
    return events


def _listen(s: Session, r: Replica, seconds: float) -> list[Event]:
    from crdt_mls.stores.ipfs import IpfsStore

    if not isinstance(s.store, IpfsStore) or not r.group_tag:
        raise InvalidArgument("--listen needs --ipfs URL and a group")
    events: list[Event] = []
    deadline = time.monotonic() + seconds
    with s.store.subscribe(_topic(r.group_tag)) as sub:
        while (left := deadline - time.monotonic()) > 0:
            msg = sub.get(min(left, 0.5))
            if msg is None:
                continue
            data = msg.data
            heads = [data[i : i + 36] for i in range(0, len(data) - len(data) % 36, 36)]
            try:
                events.extend(s.pull_ipfs(r, heads))
            except CrdtMlsError as e:
                _say(f"ignored an announcement: {e}")
    return events


def _cmd_sync(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    events = _pull(s, r, a)
    s.record(events)
    if not events:
        _say("up to date")


def _cmd_heads(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    for h in r.heads():
        _say(cid_to_str(h))


def _cmd_send(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    cid = r.send(bytes([_KIND_TEXT]) + a.text.encode("utf-8"))
    s.publish(r)
    s.keep_own(r, _KIND_TEXT, a.text.encode("utf-8"))
    _say(f"sent ({cid_to_str(cid)})")


def _cmd_read(s: Session, a: argparse.Namespace) -> None:
    inbox = [_decode_entry(x) for x in _load_list(s, _INBOX)]
    mark_raw = s.get_private(_READ_MARK)
    start = 0 if a.all or mark_raw is None else int.from_bytes(mark_raw, "big")
    for e in inbox[start:]:
        if e.kind == _KIND_SHARE:
            rec = ShareRecord.from_bytes(e.body)
            _say(f"[epoch {e.epoch}] {e.sender} shared {'directory' if rec.is_dir else 'file'} {rec.name}")
        else:
            _say(f"[epoch {e.epoch}] {e.sender}: {e.body.decode('utf-8', 'replace')}")
    s.put_private({_READ_MARK: len(inbox).to_bytes(8, "big")})


def _cmd_share(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    if not r.in_group:
        raise InvalidState("not in a group")
    path = Path(a.path)
    if not path.exists():
        raise InvalidArgument(f"no such file or directory: {a.path}")
    from crdt_mls.content.cryptree import Cryptree

    before = set(s.store.iter_cids())
    tree = Cryptree(s.store)
    root = tree.create_root()
    files = [p for p in sorted(path.rglob("*")) if p.is_file()] if path.is_dir() else [path]
    bar = Progress(f"encrypt {path.name}", len(files))
    if path.is_dir():
        dirs: dict[Path, WriteCap] = {path: root}
        for p in sorted(path.rglob("*")):
            parent = dirs[p.parent]
            if p.is_dir():
                dirs[p] = tree.mkdir(parent, p.name)
            elif p.is_file():
                with p.open("rb") as f:
                    tree.write_file(parent, p.name, f)
                bar.step()
        cap: ReadCap = root.read_cap
        is_dir = True
    else:
        with path.open("rb") as f:
            fcap = tree.write_file(root, path.name, f)
        bar.step()
        cap = fcap.read_cap
        is_dir = False
    bar.close()
    locations = [root.location, *(e.cap.location for _, e in tree.iter_tree(root))]
    pointers = tuple(tree.export_pointer(loc) for loc in locations)
    cids = tuple(sorted(c for c in s.store.iter_cids() if c not in before))
    rec = ShareRecord(path.name, is_dir, cap.to_bytes(), pointers, cids)
    msg_cid = r.send(bytes([_KIND_SHARE]) + rec.to_bytes())
    s.publish(r)
    _say(f"shared {'directory' if is_dir else 'file'} {path.name}: {len(files)} file(s), {len(cids)} block(s)")
    _say(f"sent ({cid_to_str(msg_cid)})")


def _shares(s: Session) -> list[tuple[InboxEntry, ShareRecord]]:
    out = []
    for raw in _load_list(s, _SHARES):
        e = _decode_entry(raw)
        out.append((e, ShareRecord.from_bytes(e.body)))
    return out


def _cmd_shares(s: Session, a: argparse.Namespace) -> None:
    for i, (e, rec) in enumerate(_shares(s)):
        _say(f"{i}: {'directory' if rec.is_dir else 'file'} {rec.name} from {e.sender} (epoch {e.epoch})")


def _cmd_fetch(s: Session, a: argparse.Namespace) -> None:
    shares = _shares(s)
    chosen = [rec for i, (_, rec) in enumerate(shares) if a.share in (str(i), rec.name)]
    if not chosen:
        raise InvalidArgument(f"no received share named {a.share!r} (see crdt-mls shares)")
    rec = chosen[-1]
    from crdt_mls.content.cryptree import Cryptree, decode_cap

    s.fetch_cids(rec.cids, f"fetch {rec.name}")
    tree = Cryptree(s.store)
    cap = decode_cap(rec.cap)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    if rec.is_dir:
        target = out / rec.name
        target.mkdir(exist_ok=True)
        for rel, entry in tree.iter_tree(cap):
            dest = target / rel
            if entry.is_dir:
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tree.read_file(entry.cap))
                count += 1
    else:
        (out / rec.name).write_bytes(tree.read_file(cap))
        count = 1
    _say(f"fetched {rec.name}: {count} file(s) into {out}")


def _cmd_members(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    for leaf, name in r.members():
        me = " (you)" if name == r.name and leaf == r.group.own_leaf else ""
        _say(f"{leaf}: {name}{me}")


def _cmd_epochs(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    if not r.in_group:
        _say("removed from the group" if r._current else "not in a group yet")
        return
    _say(f"epoch {r.epoch} ({cid_to_str(r.epoch_id)})")
    heads = r.epoch_heads()
    if len(heads) > 1:
        _say(f"concurrent epoch heads (merge needed): {', '.join(cid_to_str(h) for h in heads)}")
    _say(f"members: {len(r.members())}")


def _cmd_remove(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    events = r.remove(a.names)
    s.publish(r)
    s.record(events)


def _cmd_merge(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    events = r.merge()
    s.publish(r)
    s.record(events)


def _cmd_update(s: Session, a: argparse.Namespace) -> None:
    r = s.replica()
    events = r.update()
    s.publish(r)
    s.record(events)


# ----------------------------------------------------------------------------- demo


def run_demo(out: Callable[[str], None] = _say, *, data_dir: Path | None = None) -> int:
    """A scripted session of four members on embedded SQLite stores in a temporary directory."""
    tmp = Path(tempfile.mkdtemp(prefix="crdt-mls-demo-")) if data_dir is None else data_dir
    stores: list[SqliteStore] = []
    try:
        net: list[tuple[bytes, bytes]] = []

        def member(name: str, create: bool = False) -> Replica:
            # a throw-away demo store: NORMAL sync (FULL is the default for real replicas)
            st = SqliteStore(tmp / f"{name}.sqlite", synchronous="NORMAL")
            stores.append(st)
            return Replica.create(name, st) if create else Replica.new_member(name, st)

        def show(who: Replica, events: Iterable[Event]) -> None:
            for ev in events:
                out(f"  {who.name:<6}| {describe(ev)}")

        def publish(r: Replica) -> None:
            net.extend(r.take_outgoing())

        def deliver(rs: Iterable[Replica], blocks: list[tuple[bytes, bytes]] | None = None) -> None:
            for r in rs:
                show(r, r.receive(list(net if blocks is None else blocks)))

        out("crdt-mls demo: five members, no server; every operation is a signed, encrypted block")
        out(f"(stores: SQLite files in {tmp})")
        alice = member("alice", create=True)
        bob, carol, dave = member("bob"), member("carol"), member("dave")
        publish(alice)
        out("* alice creates a group and invites bob, carol and dave with their key packages")
        show(alice, alice.add([bob.key_package(), carol.key_package(), dave.key_package()]))
        publish(alice)
        deliver([bob, carol, dave])
        out("* chat")
        bob.send("hi all, bob here")
        publish(bob)
        carol.send("hello from carol")
        publish(carol)
        deliver([alice, dave])
        deliver([bob], carol_blocks := net[-1:])
        deliver([carol], net[-2:-1])
        del carol_blocks
        out("* bob updates his keys (post-compromise security)")
        show(bob, bob.update())
        publish(bob)
        deliver([alice, carol, dave], net[-1:])
        out("* alice removes dave; dave cannot read what follows")
        show(alice, alice.remove(["dave"]))
        publish(alice)
        alice.send("dave is gone, this is just for us")
        publish(alice)
        deliver([bob, carol, dave], net[-2:])
        out("* a message arrives before the commit it depends on: it waits, then is delivered")
        show(carol, carol.update())
        publish(carol)
        carol.send("new keys, same group")
        publish(carol)
        deliver([bob], net[-1:])
        deliver([bob], net[-2:-1])
        deliver([alice], net[-2:])
        out("* partition: {alice, bob} | {carol}; both sides keep working")
        erin = member("erin")
        show(alice, alice.add([erin.key_package()]))
        side_a = alice.take_outgoing()
        alice.send("side one: erin is with us")
        side_a += alice.take_outgoing()
        show(erin, erin.receive(net + side_a))
        show(carol, carol.update())
        side_c = carol.take_outgoing()
        carol.send("side two: carol alone")
        side_c += carol.take_outgoing()
        deliver([bob], side_a)
        out("* the partition heals: each side receives the other's operations")
        deliver([alice, bob, erin], side_c)
        deliver([carol], side_a)
        net.extend(side_a + side_c)
        everyone = [alice, bob, carol, erin]
        merger = next(r for r in everyone if r.signature_key == alice.merge_leader)
        out(f"* {merger.name} (the designated merger) issues a merge commit")
        show(merger, merger.merge())
        merge = merger.take_outgoing()
        net.extend(merge)
        deliver([r for r in everyone if r is not merger], merge)
        same = len({r.export_secret("demo") for r in everyone}) == 1
        out(f"  all {len(everyone)} members in epoch {merger.epoch} with one shared secret: {'yes' if same else 'NO'}")
        erin.send("hello everyone, one group again")
        publish(erin)
        deliver([alice, bob, carol], net[-1:])
        out("* restart: carol reloads her replica from its SQLite file")
        carol2 = Replica.load(carol.store)
        out(f"  carol | reloaded at epoch {carol2.epoch} with {', '.join(n for _, n in carol2.members())}")
        out("demo finished")
        return 0
    finally:
        for st in stores:
            st.close()
        if data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _cmd_demo(s: Session | None, a: argparse.Namespace) -> None:
    run_demo()


# ----------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crdt-mls", description="End-to-end encrypted groups over IPFS, no server.")
    p.add_argument(
        "--data-dir",
        default=os.environ.get("CRDT_MLS_HOME") or str(Path.home() / ".crdt-mls"),
        help="directory of this member's identity, replica and store (default: $CRDT_MLS_HOME or ~/.crdt-mls)",
    )
    p.add_argument("--ipfs", metavar="URL", help="store blocks on this Kubo node (e.g. http://127.0.0.1:5001)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for one block from IPFS")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(name: str, fn: Callable[..., None], help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(func=fn)
        return sp

    cmd("init", _cmd_init, "create an identity (to be invited)").add_argument("name")
    cmd("create", _cmd_create, "create a group (and the identity NAME if none)").add_argument("name", nargs="?")
    cmd("key-package", _cmd_key_package, "print or write a key package to give an inviter").add_argument(
        "-o", "--output", help="write to this file"
    )
    cmd("invite", _cmd_invite, "add members by key package (files or base64)").add_argument("key_packages", nargs="+")
    for name, fn, text in (
        ("join", _cmd_join, "join from an invitation: fetch it from IPFS (CID) or a peer's data dir"),
        ("sync", _cmd_sync, "pull operations from peers' data dirs or from IPFS (CIDs, --listen)"),
    ):
        sp = cmd(name, fn, text)
        sp.add_argument("cids", nargs="*", help="invitation / head CIDs to fetch over IPFS")
        sp.add_argument("--peer", action="append", help="another member's data directory (repeatable)")
        sp.add_argument("--listen", type=float, default=0.0, help="seconds to listen for heads on IPFS pubsub")
    cmd("heads", _cmd_heads, "print this replica's operation heads (for peers' sync)")
    cmd("send", _cmd_send, "send a message to the group").add_argument("text")
    cmd("read", _cmd_read, "print received messages (new ones, or --all)").add_argument("--all", action="store_true")
    cmd("share", _cmd_share, "share a file or a directory with the group").add_argument("path")
    cmd("shares", _cmd_shares, "list received shares")
    sp = cmd("fetch", _cmd_fetch, "decrypt a received share into a directory")
    sp.add_argument("share", help="share name or number (see shares)")
    sp.add_argument("output", help="directory to write into")
    cmd("members", _cmd_members, "list the members of the current epoch")
    cmd("epochs", _cmd_epochs, "show the current epoch and concurrent epoch heads")
    cmd("remove", _cmd_remove, "remove members by name").add_argument("names", nargs="+")
    cmd("update", _cmd_update, "commit fresh keys for this member (post-compromise security)")
    cmd("merge", _cmd_merge, "merge concurrent epoch heads with a merge commit")
    cmd("demo", _cmd_demo, "run a scripted multi-member session on temporary stores")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crdt-mls``; returns the exit status (0 ok, 1 error, 2 usage)."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        try:
            return run_demo()
        except CrdtMlsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    try:
        session = Session(Path(args.data_dir), args.ipfs, fetch_timeout=args.timeout)
    except CrdtMlsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        args.func(session, args)
    except CrdtMlsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}", file=sys.stderr)
        return 1
    finally:
        session.close()
    return 0
