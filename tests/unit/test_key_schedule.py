"""Unit tests of crdt_mls.mls.key_schedule (RFC 9420 section 8)."""

from __future__ import annotations

import pytest

from crdt_mls.errors import DecodeError, InvalidArgument
from crdt_mls.mls.key_schedule import (
    EpochSecrets,
    derive_epoch_secrets,
    epoch_secrets_from_joiner,
    mls_exporter,
    new_group_epoch_secrets,
    welcome_key_nonce,
)
from crdt_mls.mls.messages import GroupContext
from crdt_mls.mls.suites import get_cipher_suite

SUITE = get_cipher_suite(1)
NH = SUITE.hash_length
CTX = GroupContext(1, 1, b"group", 3, b"\x01" * 32, b"\x02" * 32, ())


def secrets() -> EpochSecrets:
    return derive_epoch_secrets(SUITE, b"\x11" * NH, b"\x22" * NH, CTX, b"\x33" * NH)


def test_deterministic_and_context_bound() -> None:
    assert secrets() == secrets()
    other = derive_epoch_secrets(SUITE, b"\x11" * NH, b"\x22" * NH, GroupContext(1, 1, b"group", 4, b"", b"", ()))
    assert other.epoch_secret != secrets().epoch_secret


def test_defaults_are_zero_vectors() -> None:
    a = derive_epoch_secrets(SUITE, b"\x11" * NH, None, CTX)
    b = derive_epoch_secrets(SUITE, b"\x11" * NH, bytes(NH), CTX, bytes(NH))
    assert a == b


def test_group_context_bytes_or_struct() -> None:
    from crdt_mls.mls import codec

    assert derive_epoch_secrets(SUITE, b"\x11" * NH, b"\x22" * NH, codec.encode(CTX), b"\x33" * NH) == secrets()


def test_joiner_path_matches() -> None:
    s = secrets()
    assert epoch_secrets_from_joiner(SUITE, s.joiner_secret, CTX, b"\x33" * NH) == s


def test_all_secrets_distinct() -> None:
    s = secrets()
    values = [getattr(s, f) for f in EpochSecrets._FIELDS]
    assert len(set(values)) == len(values)
    assert all(len(v) == NH for v in values)


def test_wrong_lengths_rejected() -> None:
    with pytest.raises(InvalidArgument):
        derive_epoch_secrets(SUITE, b"\x11" * (NH - 1), None, CTX)
    with pytest.raises(InvalidArgument):
        derive_epoch_secrets(SUITE, b"\x11" * NH, b"\x22", CTX)
    with pytest.raises(InvalidArgument):
        derive_epoch_secrets(SUITE, b"\x11" * NH, None, CTX, b"\x33")
    with pytest.raises(InvalidArgument):
        epoch_secrets_from_joiner(SUITE, b"", CTX)
    with pytest.raises(InvalidArgument):
        derive_epoch_secrets(SUITE, b"\x11" * NH, None, object())  # type: ignore[arg-type]


def test_repr_hides_secrets() -> None:
    s = secrets()
    text = repr(s)
    for f in EpochSecrets._FIELDS:
        assert getattr(s, f).hex() not in text
        assert repr(getattr(s, f)) not in text


def test_snapshot_round_trip() -> None:
    s = secrets()
    assert EpochSecrets.from_bytes(s.to_bytes()) == s
    with pytest.raises(DecodeError):
        EpochSecrets.from_bytes(s.to_bytes()[:-1])


def test_exporter() -> None:
    s = secrets()
    a = s.exporter("label", b"ctx", 42)
    assert len(a) == 42
    assert a == mls_exporter(SUITE, s.exporter_secret, b"label", b"ctx", 42)
    assert a != s.exporter("label", b"ctx2", 42)
    assert a != s.exporter("label2", b"ctx", 42)
    with pytest.raises(InvalidArgument):
        s.exporter("label", b"", 1 << 16)


def test_external_key_pair_and_welcome_keys() -> None:
    s = secrets()
    priv, pub = s.external_key_pair()
    assert SUITE.hpke_public_key(priv) == pub == s.external_pub()
    key, nonce = s.welcome_key_nonce()
    assert (key, nonce) == welcome_key_nonce(SUITE, s.welcome_secret)
    assert len(key) == SUITE.aead_key_length and len(nonce) == SUITE.aead_nonce_length


def test_new_group() -> None:
    s = new_group_epoch_secrets(SUITE, rng=lambda n: b"\x07" * n)
    assert s.epoch_secret == b"\x07" * NH
    assert s.joiner_secret == b"" and s.welcome_secret == b""
    assert s.confirmation_key == SUITE.derive_secret(s.epoch_secret, "confirm")
    assert new_group_epoch_secrets(SUITE) != new_group_epoch_secrets(SUITE)
    with pytest.raises(InvalidArgument):
        new_group_epoch_secrets(SUITE, rng=lambda n: b"")
