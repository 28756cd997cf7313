"""welcome.json (test-vectors.md "Welcome"; RFC 9420 section 12.4.3.1): find our
EncryptedGroupSecrets, decrypt them with init_priv, decrypt the GroupInfo with the welcome
key, verify its signature with signer_pub and its confirmation tag."""

from __future__ import annotations

import pytest

from crdt_mls.errors import ConfirmationTagError, SignatureError
from crdt_mls.mls.key_schedule import epoch_secrets_from_joiner
from crdt_mls.mls.messages import MLSMessage, Welcome
from crdt_mls.mls.transcript import verify_confirmation_tag
from crdt_mls.mls.welcome import KeyPackagePrivate, decrypt_group_info, open_group_secrets, verify_group_info
from tests.vectors.loader import h, ids, load

ENTRIES = load("welcome")


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES, "welcome-"))
def test_welcome(entry: dict[str, str]) -> None:
    kp = KeyPackagePrivate.from_vector(h(entry["key_package"]), h(entry["init_priv"]), b"", b"")
    suite = kp.suite
    welcome = MLSMessage.from_bytes(h(entry["welcome"])).body
    assert isinstance(welcome, Welcome)
    secrets = open_group_secrets(welcome, kp)
    assert secrets.psks == ()
    psk_secret = bytes(suite.hash_length)
    gi = decrypt_group_info(suite, welcome, secrets.joiner_secret, psk_secret)
    verify_group_info(suite, gi, h(entry["signer_pub"]))
    epoch = epoch_secrets_from_joiner(suite, secrets.joiner_secret, gi.group_context, psk_secret)
    verify_confirmation_tag(
        suite, epoch.confirmation_key, gi.group_context.confirmed_transcript_hash, gi.confirmation_tag
    )
    # negative checks: a wrong signer key and a wrong confirmation tag are rejected
    with pytest.raises(SignatureError):
        verify_group_info(suite, gi, suite.generate_signature_key_pair()[1])
    with pytest.raises(ConfirmationTagError):
        verify_confirmation_tag(
            suite, epoch.confirmation_key, gi.group_context.confirmed_transcript_hash, bytes(len(gi.confirmation_tag))
        )
