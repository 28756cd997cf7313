"""Sharing capabilities 1-1 (NaCl box) and 1-N through an MLS group's exporter (docs/content.md section 5).

Envelope format v1: ``"CMLSSH" || u8 version=1 || u8 kind || body``.

* kind 1, one recipient: ``body = crypto_box_seal(recipient, sender_box_pub || nonce[24] ||
  crypto_box(sender -> recipient, pad(payload)))``: the envelope names neither party.
* kind 2, a group epoch: ``body = key_id[16] || nonce[24] || XChaCha20-Poly1305(key, pad(payload),
  aad = envelope prefix || key_id)`` where ``secret = MLS-Exporter("crdt-mls content share v1",
  "", 32)`` of the epoch (RFC 9420 section 8.5), ``key = HKDF(secret, "share key")`` and
  ``key_id = HKDF(secret, "share key id")``.  One ciphertext per share however large the group.

Members keep a `ShareKeyring` of the share keys of the epochs they were in: a member who
joins later cannot read shares of earlier epochs (unless someone `reshare`s them into a
current epoch), and a removed member never learns the key of an epoch after its removal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import nacl.bindings as _nacl

from crdt_mls.content.cryptree import ReadCap, WriteCap, _pad, _unpad, decode_cap
from crdt_mls.content.identity import Identity, PublicIdentity, hkdf
from crdt_mls.errors import DecodeError, DecryptionError, InvalidArgument, NotRecipientError
from crdt_mls.mls.group import Group

__all__ = [
    "EXPORTER_LABEL",
    "OpenedShare",
    "ShareKeyring",
    "group_share_key",
    "open_share",
    "reshare",
    "share_to",
    "share_with_group",
]

Rng = Callable[[int], bytes]

MAGIC = b"CMLSSH"
VERSION = 1
KIND_DIRECT = 1
KIND_GROUP = 2
EXPORTER_LABEL = "crdt-mls content share v1"
MAX_PAYLOAD = 1 << 16
_MIN_PAD = 128
_GROUP_AAD = b"crdt-mls/share/v1/group\x00"


def _payload(item: bytes | ReadCap | WriteCap) -> bytes:
    if isinstance(item, (ReadCap, WriteCap)):
        return item.to_bytes()
    if isinstance(item, (bytes, bytearray, memoryview)):
        out = bytes(item)
        if len(out) > MAX_PAYLOAD:
            raise InvalidArgument(f"share payload larger than {MAX_PAYLOAD} bytes")
        return out
    raise InvalidArgument("a share payload is bytes or a capability")


def _head(data: bytes) -> int:
    data = bytes(data)
    if len(data) < len(MAGIC) + 2 or data[: len(MAGIC)] != MAGIC:
        raise DecodeError("not a crdt-mls share envelope")
    version, kind = data[len(MAGIC)], data[len(MAGIC) + 1]
    if version != VERSION:
        raise DecodeError(f"share envelope version {version} is not supported")
    if kind not in (KIND_DIRECT, KIND_GROUP):
        raise DecodeError(f"unknown share envelope kind {kind}")
    return kind


@dataclass(frozen=True, slots=True)
class OpenedShare:
    """An opened share: the payload, the sender's box key (direct shares) or the epoch (group shares)."""

    payload: bytes = field(repr=False)
    sender_box_public: bytes | None = None
    epoch: int | None = None

    def capability(self) -> ReadCap | WriteCap:
        """The payload parsed as a Cryptree capability (`DecodeError` otherwise)."""
        return decode_cap(self.payload)


# ------------------------------------------------------------------------ 1-1


def share_to(
    item: bytes | ReadCap | WriteCap,
    sender: Identity,
    recipient: bytes | PublicIdentity,
    *,
    rng: Rng = os.urandom,
) -> bytes:
    """Encrypt a capability (or any small payload) to one recipient's X25519 key, authenticated by ``sender``."""
    pk = recipient.box_public if isinstance(recipient, PublicIdentity) else recipient
    if not isinstance(pk, bytes) or len(pk) != 32:
        raise InvalidArgument("recipient must be a 32-byte X25519 public key or a PublicIdentity")
    nonce = rng(24)
    if len(nonce) != 24:
        raise InvalidArgument("rng returned the wrong number of bytes")
    padded = _pad(_payload(item), _MIN_PAD)
    try:
        boxed = _nacl.crypto_box(padded, nonce, pk, sender.box_secret)
    except Exception:
        raise InvalidArgument("recipient key is not a valid X25519 public key") from None
    return MAGIC + bytes([VERSION, KIND_DIRECT]) + _nacl.crypto_box_seal(sender.box_public + nonce + boxed, pk)


def _open_direct(data: bytes, identity: Identity) -> OpenedShare:
    body = data[len(MAGIC) + 2 :]
    try:
        inner = _nacl.crypto_box_seal_open(body, identity.box_public, identity.box_secret)
    except Exception:
        raise NotRecipientError("this share is not addressed to this identity") from None
    if len(inner) < 56 + 16:
        raise DecodeError("share envelope too short")
    sender_box, nonce, boxed = inner[:32], inner[32:56], inner[56:]
    try:
        padded = _nacl.crypto_box_open(boxed, nonce, sender_box, identity.box_secret)
    except Exception:
        raise DecryptionError("share is not authenticated by its sender key") from None
    return OpenedShare(_unpad(padded, "share"), sender_box_public=sender_box)


# ------------------------------------------------------------------------ 1-N via the group


def group_share_key(group: Group) -> tuple[bytes, bytes]:
    """(key id, key) of the group's current epoch, from the MLS exporter (RFC 9420 section 8.5)."""
    secret = group.export_secret(EXPORTER_LABEL, b"", 32)
    return hkdf(secret, b"share key id", 16), hkdf(secret, b"share key", 32)


class ShareKeyring:
    """The share keys of the epochs a member has been in: ``key id -> (epoch, key)``; repr hides keys.

    Keeping old epochs' share keys lets a member read old shares; `forget_before` drops them
    (forward secrecy for content: a compromised member device then reveals nothing older).
    """

    __slots__ = ("_keys",)

    def __init__(self, groups: Iterable[Group] = ()) -> None:
        self._keys: dict[bytes, tuple[int, bytes]] = {}
        for g in groups:
            self.add(g)

    def __repr__(self) -> str:
        return f"ShareKeyring(epochs={sorted({e for e, _ in self._keys.values()})})"

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, group: Group) -> None:
        """Remember the share key of ``group``'s current epoch."""
        key_id, key = group_share_key(group)
        self._keys[key_id] = (group.epoch, key)

    def forget_before(self, epoch: int) -> None:
        """Drop the keys of epochs older than ``epoch``."""
        self._keys = {k: v for k, v in self._keys.items() if v[0] >= epoch}

    def _lookup(self, key_id: bytes) -> tuple[int, bytes] | None:
        return self._keys.get(key_id)


def share_with_group(item: bytes | ReadCap | WriteCap, group: Group, *, rng: Rng = os.urandom) -> bytes:
    """Encrypt a capability once for every member of ``group``'s current epoch (O(1) in the group size)."""
    key_id, key = group_share_key(group)
    return _seal_group(_payload(item), key_id, key, rng)


def _seal_group(payload: bytes, key_id: bytes, key: bytes, rng: Rng) -> bytes:
    nonce = rng(24)
    if len(nonce) != 24:
        raise InvalidArgument("rng returned the wrong number of bytes")
    prefix = MAGIC + bytes([VERSION, KIND_GROUP]) + key_id
    ct = _nacl.crypto_aead_xchacha20poly1305_ietf_encrypt(_pad(payload, _MIN_PAD), _GROUP_AAD + prefix, nonce, key)
    return prefix + nonce + bytes(ct)


def _open_group(data: bytes, keys: ShareKeyring | Group | Iterable[Group]) -> OpenedShare:
    start = len(MAGIC) + 2
    if len(data) < start + 16 + 24 + 16:
        raise DecodeError("group share envelope too short")
    key_id, nonce, ct = data[start : start + 16], data[start + 16 : start + 40], data[start + 40 :]
    ring = keys if isinstance(keys, ShareKeyring) else ShareKeyring([keys] if isinstance(keys, Group) else keys)
    found = ring._lookup(key_id)
    if found is None:
        raise NotRecipientError("this share belongs to a group epoch whose key we do not have")
    epoch, key = found
    try:
        padded = _nacl.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, _GROUP_AAD + data[: start + 16], nonce, key)
    except Exception:
        raise DecryptionError("group share does not decrypt (tampered)") from None
    return OpenedShare(_unpad(bytes(padded), "share"), epoch=epoch)


def open_share(
    data: bytes, *, identity: Identity | None = None, keys: ShareKeyring | Group | Iterable[Group] | None = None
) -> OpenedShare:
    """Open a direct share with ``identity`` or a group share with ``keys`` (a keyring or group states).

    `NotRecipientError` if it is not for us, `DecryptionError` if tampered, `DecodeError` if malformed.
    """
    data = bytes(data)
    kind = _head(data)
    if kind == KIND_DIRECT:
        if identity is None:
            raise InvalidArgument("a direct share needs identity=")
        return _open_direct(data, identity)
    if keys is None:
        raise InvalidArgument("a group share needs keys= (a ShareKeyring or Group states)")
    return _open_group(data, keys)


def reshare(data: bytes, keys: ShareKeyring | Group | Iterable[Group], group: Group, *, rng: Rng = os.urandom) -> bytes:
    """Re-encrypt a group share of an older epoch under ``group``'s current epoch (for later joiners)."""
    opened = open_share(data, keys=keys)
    return share_with_group(opened.payload, group, rng=rng)
