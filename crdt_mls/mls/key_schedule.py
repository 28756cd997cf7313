"""The MLS key schedule (RFC 9420 section 8).

`derive_epoch_secrets` runs one step of the schedule: from the previous epoch's
``init_secret``, the ``commit_secret``, the ``psk_secret`` and the new epoch's encoded
GroupContext it returns a frozen `EpochSecrets` holding every secret of table 4 of
section 8 plus the ``joiner_secret``, ``welcome_secret`` and the next ``init_secret``.
Joiners that receive a ``joiner_secret`` in a Welcome use `epoch_secrets_from_joiner`.

Everything here is deterministic and sans-I/O; secrets never appear in ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from crdt_mls.errors import InvalidArgument
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.mls.messages import GroupContext
from crdt_mls.mls.suites import CipherSuite, get_cipher_suite

__all__ = [
    "EpochSecrets",
    "derive_epoch_secrets",
    "epoch_secrets_from_joiner",
    "expand_with_label_bytes",
    "group_context_bytes",
    "mls_exporter",
    "new_group_epoch_secrets",
    "welcome_key_nonce",
]

_LABEL_PREFIX = b"MLS 1.0 "


def expand_with_label_bytes(suite: CipherSuite, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """ExpandWithLabel with an arbitrary byte-string label (RFC 9420 section 8).

    The exporter (section 8.5) lets applications choose any label, which need not be
    UTF-8; this builds the KDFLabel struct directly from bytes.
    """
    w = Writer()
    w.u16(length)
    w.opaque(_LABEL_PREFIX + label)
    w.opaque(context)
    return suite.kdf_expand(secret, w.getvalue(), length)


def group_context_bytes(group_context: GroupContext | bytes) -> bytes:
    """The TLS encoding of a GroupContext given either as bytes or as a struct with ``encode``."""
    if isinstance(group_context, bytes | bytearray | memoryview):
        return bytes(group_context)
    if isinstance(group_context, GroupContext):
        return codec.encode(group_context)
    raise InvalidArgument("group_context must be a GroupContext or its encoding")


def _check_len(name: str, value: bytes, expected: int) -> None:
    if len(value) != expected:
        raise InvalidArgument(f"{name} must be {expected} bytes, got {len(value)}")


@dataclass(frozen=True, slots=True)
class EpochSecrets:
    """All secrets of one epoch (RFC 9420 section 8, table 4).

    ``init_secret`` is the init secret for the *next* epoch.
    """

    cipher_suite: int
    joiner_secret: bytes = field(repr=False)
    welcome_secret: bytes = field(repr=False)
    epoch_secret: bytes = field(repr=False)
    sender_data_secret: bytes = field(repr=False)
    encryption_secret: bytes = field(repr=False)
    exporter_secret: bytes = field(repr=False)
    external_secret: bytes = field(repr=False)
    confirmation_key: bytes = field(repr=False)
    membership_key: bytes = field(repr=False)
    resumption_psk: bytes = field(repr=False)
    epoch_authenticator: bytes = field(repr=False)
    init_secret: bytes = field(repr=False)

    @property
    def suite(self) -> CipherSuite:
        return get_cipher_suite(self.cipher_suite)

    def exporter(self, label: bytes | str, context: bytes, length: int) -> bytes:
        """MLS-Exporter(Label, Context, Length) (RFC 9420 section 8.5)."""
        return mls_exporter(self.suite, self.exporter_secret, label, context, length)

    def external_key_pair(self) -> tuple[bytes, bytes]:
        """``(external_priv, external_pub) = KEM.DeriveKeyPair(external_secret)`` (RFC 9420 section 8)."""
        priv, pub = self.suite.derive_key_pair(self.external_secret)
        return priv, pub

    def external_pub(self) -> bytes:
        """The public half of the external key pair, as published in GroupInfo (RFC 9420 section 8)."""
        return self.external_key_pair()[1]

    def welcome_key_nonce(self) -> tuple[bytes, bytes]:
        """Key and nonce protecting the Welcome's GroupInfo (RFC 9420 section 12.4.3.1)."""
        return welcome_key_nonce(self.suite, self.welcome_secret)

    # -- snapshot ---------------------------------------------------------------------------
    _FIELDS = (
        "joiner_secret",
        "welcome_secret",
        "epoch_secret",
        "sender_data_secret",
        "encryption_secret",
        "exporter_secret",
        "external_secret",
        "confirmation_key",
        "membership_key",
        "resumption_psk",
        "epoch_authenticator",
        "init_secret",
    )

    def encode(self, w: Writer) -> None:
        """Private snapshot encoding (not a wire format): suite id then every secret."""
        w.u16(self.cipher_suite)
        for name in self._FIELDS:
            w.opaque(getattr(self, name))

    @classmethod
    def decode(cls, r: Reader) -> EpochSecrets:
        suite = r.u16()
        values = [r.opaque() for _ in cls._FIELDS]
        return cls(suite, *values)

    def to_bytes(self) -> bytes:
        return codec.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> EpochSecrets:
        return codec.decode(cls, data)


def _from_epoch_secret(
    suite: CipherSuite, epoch_secret: bytes, joiner_secret: bytes, welcome_secret: bytes
) -> EpochSecrets:
    def d(label: str) -> bytes:
        return suite.derive_secret(epoch_secret, label)

    return EpochSecrets(
        cipher_suite=suite.suite_id,
        joiner_secret=joiner_secret,
        welcome_secret=welcome_secret,
        epoch_secret=epoch_secret,
        sender_data_secret=d("sender data"),
        encryption_secret=d("encryption"),
        exporter_secret=d("exporter"),
        external_secret=d("external"),
        confirmation_key=d("confirm"),
        membership_key=d("membership"),
        resumption_psk=d("resumption"),
        epoch_authenticator=d("authentication"),
        init_secret=d("init"),
    )


def _from_joiner(suite: CipherSuite, joiner_secret: bytes, psk_secret: bytes, context: bytes) -> EpochSecrets:
    nh = suite.hash_length
    member_secret = suite.kdf_extract(joiner_secret, psk_secret)
    welcome_secret = suite.derive_secret(member_secret, "welcome")
    epoch_secret = suite.expand_with_label(member_secret, "epoch", context, nh)
    return _from_epoch_secret(suite, epoch_secret, joiner_secret, welcome_secret)


def epoch_secrets_from_joiner(
    suite: CipherSuite, joiner_secret: bytes, group_context: GroupContext | bytes, psk_secret: bytes | None = None
) -> EpochSecrets:
    """Key schedule from the ``joiner_secret`` on (RFC 9420 section 8; used when joining by Welcome).

    ``psk_secret`` defaults to the all-zero vector (no PSKs).
    """
    nh = suite.hash_length
    psk = bytes(nh) if psk_secret is None else psk_secret
    _check_len("joiner_secret", joiner_secret, nh)
    _check_len("psk_secret", psk, nh)
    return _from_joiner(suite, joiner_secret, psk, group_context_bytes(group_context))


def derive_epoch_secrets(
    suite: CipherSuite,
    init_secret: bytes,
    commit_secret: bytes | None,
    group_context: GroupContext | bytes,
    psk_secret: bytes | None = None,
) -> EpochSecrets:
    """One step of the key schedule (RFC 9420 section 8).

    ``init_secret`` is the previous epoch's init secret (random for a new group),
    ``commit_secret`` the path secret after the root (``None`` means the all-zero vector
    used by commits without a path), ``group_context`` the new epoch's GroupContext
    (bytes or struct), ``psk_secret`` from `crdt_mls.mls.psk.psk_secret` (``None`` = zero).
    """
    nh = suite.hash_length
    commit = bytes(nh) if commit_secret is None else commit_secret
    psk = bytes(nh) if psk_secret is None else psk_secret
    _check_len("init_secret", init_secret, nh)
    _check_len("commit_secret", commit, nh)
    _check_len("psk_secret", psk, nh)
    context = group_context_bytes(group_context)
    joiner_secret = suite.expand_with_label(suite.kdf_extract(init_secret, commit), "joiner", context, nh)
    return _from_joiner(suite, joiner_secret, psk, context)


def mls_exporter(suite: CipherSuite, exporter_secret: bytes, label: bytes | str, context: bytes, length: int) -> bytes:
    """MLS-Exporter (RFC 9420 section 8.5):
    ``ExpandWithLabel(DeriveSecret(exporter_secret, Label), "exported", Hash(Context), Length)``."""
    if length < 0 or length > 0xFFFF:
        raise InvalidArgument(f"exporter length {length} out of range 0..65535")
    raw = label.encode("utf-8") if isinstance(label, str) else bytes(label)
    derived = expand_with_label_bytes(suite, exporter_secret, raw, b"", suite.hash_length)
    return expand_with_label_bytes(suite, derived, b"exported", suite.hash(context), length)


def welcome_key_nonce(suite: CipherSuite, welcome_secret: bytes) -> tuple[bytes, bytes]:
    """``welcome_key``/``welcome_nonce`` (RFC 9420 section 12.4.3.1)."""
    key = suite.expand_with_label(welcome_secret, "key", b"", suite.aead_key_length)
    nonce = suite.expand_with_label(welcome_secret, "nonce", b"", suite.aead_nonce_length)
    return key, nonce


def new_group_epoch_secrets(suite: CipherSuite, rng: Callable[[int], bytes] = os.urandom) -> EpochSecrets:
    """Epoch 0 of a new group (RFC 9420 section 11): the epoch secret is a fresh random value
    of ``KDF.Nh`` bytes; there is no joiner or welcome secret (both are empty)."""
    epoch_secret = rng(suite.hash_length)
    if len(epoch_secret) != suite.hash_length:
        raise InvalidArgument("rng returned the wrong number of bytes")
    return _from_epoch_secret(suite, epoch_secret, b"", b"")
