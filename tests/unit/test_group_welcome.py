"""Key packages and Welcome handling (crdt_mls.mls.welcome; RFC 9420 sections 10, 12.4.3.1)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from crdt_mls.errors import DecryptionError, ProposalError, SignatureError, WelcomeError
from crdt_mls.mls.group import Group
from crdt_mls.mls.messages import MLSMessage, Welcome
from crdt_mls.mls.welcome import KeyPackagePrivate, make_key_package, open_group_secrets, verify_key_package
from tests.unit.test_group import Harness, det_rng


@pytest.mark.parametrize("suite", [1, 2, 3, 4, 5, 6, 7])
def test_key_package_is_valid_and_round_trips(suite: int) -> None:
    kp = make_key_package(suite, b"alice", rng=det_rng(f"kp{suite}"))
    verify_key_package(kp.key_package, now=1_700_000_000)
    assert KeyPackagePrivate.from_bytes(kp.to_bytes()) == kp
    public = kp.public_message()
    again = KeyPackagePrivate.from_vector(public, kp.init_priv, kp.encryption_priv, kp.signature_priv)
    assert again == kp
    text = repr(kp)
    for secret in (kp.init_priv, kp.encryption_priv, kp.signature_priv):
        assert secret.hex() not in text and repr(secret) not in text


def test_key_package_checks() -> None:
    kp = make_key_package(1, b"alice", rng=det_rng("checks")).key_package
    with pytest.raises(SignatureError):
        verify_key_package(replace(kp, signature=bytes(64)))
    with pytest.raises(SignatureError):
        verify_key_package(replace(kp, init_key=bytes(32)))
    with pytest.raises(ProposalError):
        verify_key_package(replace(kp, init_key=kp.leaf_node.encryption_key))
    with pytest.raises(ProposalError):
        verify_key_package(replace(kp, version=2))


def test_p521_short_private_keys_are_padded() -> None:
    kp = make_key_package(5, b"p521", rng=det_rng("p521"))
    short = kp.init_priv.lstrip(b"\x00") or b"\x00"
    again = KeyPackagePrivate.from_vector(kp.public_message(), short, kp.encryption_priv, kp.signature_priv)
    assert again.init_priv == kp.init_priv


def test_welcome_errors() -> None:
    h = Harness(seed="welcome-errors")
    kp = h.new_kp("joiner")
    other = h.new_kp("other")
    _, welcome, _ = h.members["m0"].commit(add=[kp.public_message()], rng=h.rng)
    assert welcome is not None
    w = MLSMessage.from_bytes(welcome).body
    assert isinstance(w, Welcome)
    # not for this KeyPackage
    with pytest.raises(WelcomeError):
        Group.join_from_welcome(welcome, other)
    # wrong init key
    with pytest.raises(DecryptionError):
        open_group_secrets(w, replace(kp, init_priv=other.init_priv))
    # wrong suite
    with pytest.raises(WelcomeError):
        Group.join_from_welcome(replace(w, cipher_suite=2), kp)
    # tampered GroupInfo ciphertext
    bad = replace(w, encrypted_group_info=w.encrypted_group_info[:-1] + bytes([w.encrypted_group_info[-1] ^ 1]))
    with pytest.raises(DecryptionError):
        Group.join_from_welcome(bad, kp)
    # a KeyPackage message is not a Welcome
    with pytest.raises(WelcomeError):
        Group.join_from_welcome(kp.public_message(), kp)
    joined = Group.join_from_welcome(welcome, kp)
    assert joined.epoch == 1 and joined.own_leaf == 1
