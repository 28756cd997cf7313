"""key-schedule.json (RFC 9420 section 8): every epoch's secrets, GroupContext and exporter."""

from __future__ import annotations

from typing import Any

import pytest

from crdt_mls.mls import codec
from crdt_mls.mls.key_schedule import derive_epoch_secrets, epoch_secrets_from_joiner
from crdt_mls.mls.messages import GroupContext
from crdt_mls.mls.suites import get_cipher_suite
from tests.vectors.loader import h, ids, load

ENTRIES = load("key-schedule")

_SECRETS = (
    "joiner_secret",
    "welcome_secret",
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


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_key_schedule(entry: dict[str, Any]) -> None:
    suite = get_cipher_suite(entry["cipher_suite"])
    group_id = h(entry["group_id"])
    init_secret = h(entry["initial_init_secret"])
    assert entry["epochs"], "vector entry without epochs"
    for epoch, ep in enumerate(entry["epochs"]):
        ctx = GroupContext(
            version=1,
            cipher_suite=entry["cipher_suite"],
            group_id=group_id,
            epoch=epoch,
            tree_hash=h(ep["tree_hash"]),
            confirmed_transcript_hash=h(ep["confirmed_transcript_hash"]),
            extensions=(),
        )
        assert codec.encode(ctx) == h(ep["group_context"])
        secrets = derive_epoch_secrets(suite, init_secret, h(ep["commit_secret"]), ctx, h(ep["psk_secret"]))
        for name in _SECRETS:
            assert getattr(secrets, name) == h(ep[name]), name
        assert secrets.external_pub() == h(ep["external_pub"])
        exp = ep["exporter"]
        # The exporter label is given as a (hex-looking) text string, used as its UTF-8 bytes.
        assert secrets.exporter(exp["label"], h(exp["context"]), exp["length"]) == h(exp["secret"])
        # A joiner starting from joiner_secret reaches the same epoch.
        joined = epoch_secrets_from_joiner(suite, secrets.joiner_secret, h(ep["group_context"]), h(ep["psk_secret"]))
        assert joined == secrets
        init_secret = secrets.init_secret
