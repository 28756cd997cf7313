"""Password-derived identities (crdt_mls.content.identity; docs/content.md section 2)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crdt_mls.content.identity import (
    DEFAULT_PARAMS,
    Identity,
    IdentityRecord,
    KeyRotation,
    ScryptParams,
    normalize_username,
    username_salt,
)
from crdt_mls.errors import (
    DecodeError,
    InvalidArgument,
    SignatureError,
    UnsupportedError,
    WrongPasswordError,
)
from crdt_mls.mls.group import Group
from crdt_mls.mls.messages import MLSMessage

P = ScryptParams.for_tests()


def _raw_pub(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_derivation_is_deterministic_and_bound_to_username_and_password() -> None:
    a1 = Identity.derive("alice", "correct horse", P)
    a2 = Identity.derive("  ALICE ", "correct horse", P)
    assert a1.public == a2.public and a1.username == "alice"
    assert Identity.derive("alice", "wrong horse", P).public != a1.public
    b = Identity.derive("bob", "correct horse", P)  # same password, other user: other salt
    assert b.public.signing_public != a1.public.signing_public
    assert b.public.box_public != a1.public.box_public
    assert username_salt("alice") != username_salt("bob")
    assert username_salt("Alice") == username_salt("alice")
    # the signing and box keys are domain separated
    assert a1.signing_seed != a1.box_secret


def test_public_keys_agree_with_independent_implementations() -> None:
    ident = Identity.derive("carol", "pw", P)
    assert _raw_pub(Ed25519PrivateKey.from_private_bytes(ident.signing_seed)) == ident.signing_public
    assert _raw_pub(X25519PrivateKey.from_private_bytes(ident.box_secret)) == ident.box_public
    sig = ident.sign(b"message")
    Ed25519PrivateKey.from_private_bytes(ident.signing_seed).public_key().verify(sig, b"message")
    ident.public.verify(b"message", sig)
    with pytest.raises(SignatureError):
        ident.public.verify(b"other message", sig)


def test_real_parameters_n_2_17() -> None:
    """The one test at the real cost: the default is N=2^17, r=8 and is what derive uses."""
    assert (DEFAULT_PARAMS.n, DEFAULT_PARAMS.r) == (1 << 17, 8) and not DEFAULT_PARAMS.insecure_for_tests
    ident = Identity.derive("dave", "a real password")
    master = hashlib.scrypt(
        b"a real password", salt=username_salt("dave"), n=1 << 17, r=8, p=1, maxmem=1 << 28, dklen=64
    )
    assert ident.public == Identity.from_master("dave", DEFAULT_PARAMS, master).public
    assert ident.params == DEFAULT_PARAMS and not ident.needs_upgrade()


@pytest.mark.parametrize(
    "params",
    [ScryptParams(log_n=16), ScryptParams(log_n=10), ScryptParams(r=4), ScryptParams(log_n=17, r=7)],
)
def test_weak_parameters_are_rejected_without_the_test_flag(params: ScryptParams) -> None:
    with pytest.raises(InvalidArgument, match="minimum"):
        params.validate()
    with pytest.raises(InvalidArgument):
        Identity.derive("alice", "pw", params)


@pytest.mark.parametrize(
    "params", [ScryptParams(log_n=0, insecure_for_tests=True), ScryptParams(log_n=25, r=64), ScryptParams(p=0)]
)
def test_out_of_range_parameters_are_rejected(params: ScryptParams) -> None:
    with pytest.raises(InvalidArgument):
        params.validate()


@pytest.mark.parametrize("name", ["", "   ", "a\x00b", "x" * 300])
def test_bad_usernames(name: str) -> None:
    with pytest.raises(InvalidArgument):
        normalize_username(name)


def test_empty_password_is_rejected() -> None:
    with pytest.raises(InvalidArgument):
        Identity.derive("alice", "", P)


def test_record_holds_only_public_parts_and_unlocks_with_the_password() -> None:
    ident = Identity.derive("Érin", "pässword", P)
    data = ident.record().to_bytes()
    assert ident.signing_seed not in data and ident.box_secret not in data
    assert ident.signing_public in data and ident.box_public in data
    rec = IdentityRecord.from_bytes(data, insecure_for_tests=True)
    assert rec == IdentityRecord(ident.username, rec.params, ident.public)
    assert Identity.unlock(rec, "pässword").public == ident.public
    assert Identity.unlock(data, "pässword", insecure_for_tests=True).public == ident.public
    with pytest.raises(WrongPasswordError):
        Identity.unlock(rec, "password")
    # a stored record with test parameters is refused for real use
    with pytest.raises(InvalidArgument, match="minimum"):
        IdentityRecord.from_bytes(data)


@pytest.mark.parametrize("cut", [0, 3, 7, 12, 20, 60])
def test_truncated_or_extended_records_are_decode_errors(cut: int) -> None:
    data = Identity.derive("alice", "pw", P).record().to_bytes()
    with pytest.raises(DecodeError):
        IdentityRecord.from_bytes(data[:cut], insecure_for_tests=True)
    with pytest.raises(DecodeError):
        IdentityRecord.from_bytes(data + b"\x00", insecure_for_tests=True)


def test_record_rejects_other_versions_and_unnormalized_names() -> None:
    data = bytearray(Identity.derive("alice", "pw", P).record().to_bytes())
    data[6] = 2
    with pytest.raises(DecodeError, match="version"):
        IdentityRecord.from_bytes(bytes(data), insecure_for_tests=True)
    data[6] = 1
    data[8] = ord("A")
    with pytest.raises(DecodeError, match="normalized"):
        IdentityRecord.from_bytes(bytes(data), insecure_for_tests=True)
    data = bytearray(Identity.derive("alice", "pw", P).record().to_bytes())
    data[13] = 31  # log_n
    with pytest.raises(DecodeError):
        IdentityRecord.from_bytes(bytes(data), insecure_for_tests=True)


def test_secrets_are_not_in_repr() -> None:
    ident = Identity.derive("alice", "pw", P)
    text = repr(ident)
    for secret in (ident.signing_seed, ident.box_secret):
        assert repr(secret) not in text and secret.hex() not in text
    assert "pw" not in text.replace("public", "")


def test_upgrade_raises_cost_and_signs_the_rotation() -> None:
    old = Identity.derive("alice", "pw", P)
    stronger = ScryptParams.for_tests(log_n=11)
    assert old.needs_upgrade(stronger)
    new, rotation = old.upgrade("pw", stronger)
    assert new.params == stronger and new.public != old.public
    assert new.public == Identity.derive("alice", "pw", stronger).public
    parsed = KeyRotation.from_bytes(rotation.to_bytes())
    assert (parsed.old, parsed.new) == (old.public, new.public)
    data = bytearray(rotation.to_bytes())
    data[10] ^= 1  # the old signing key
    with pytest.raises(SignatureError):
        KeyRotation.from_bytes(bytes(data))
    data = bytearray(rotation.to_bytes())
    data[-1] ^= 1
    with pytest.raises(SignatureError):
        KeyRotation.from_bytes(bytes(data))
    with pytest.raises(DecodeError):
        KeyRotation.from_bytes(rotation.to_bytes()[:-1])
    with pytest.raises(WrongPasswordError):
        old.upgrade("not pw", stronger)
    with pytest.raises(InvalidArgument, match="stronger"):
        old.upgrade("pw", P)


def test_key_package_is_signed_by_the_identity_and_joins_a_group() -> None:
    alice = Identity.derive("alice", "pw-a", P)
    bob = Identity.derive("bob", "pw-b", P)
    kp_bytes, kp = bob.make_key_package()
    body = MLSMessage.from_bytes(kp_bytes).body
    assert body.leaf_node.signature_key == bob.signing_public  # type: ignore[union-attr]
    assert b"bob" not in kp_bytes  # default credential is the signing key, not the username
    _, akp = alice.make_key_package(3, credential=b"alice")
    group = Group.create(3, akp)
    with pytest.raises(InvalidArgument):
        Group.create(1, akp)  # suite mismatch still checked by the group
    group1 = Group.create(1, alice.make_key_package(1)[1])
    _commit, welcome, group1 = group1.commit(add=[kp_bytes])
    assert welcome is not None
    joined = Group.join_from_welcome(welcome, kp)
    assert joined.epoch_authenticator == group1.epoch_authenticator
    assert group.leaf_node.signature_key == alice.signing_public
    with pytest.raises(UnsupportedError):
        alice.make_key_package(2)
