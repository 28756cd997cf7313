"""psk_secret.json (RFC 9420 section 8.4): chaining external PSKs into psk_secret."""

from __future__ import annotations

from typing import Any

import pytest

from crdt_mls.mls.messages import PreSharedKeyID, PSKType
from crdt_mls.mls.psk import compute_psk_secret
from crdt_mls.mls.suites import get_cipher_suite
from tests.vectors.loader import h, ids, load

ENTRIES = load("psk_secret")


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_psk_secret(entry: dict[str, Any]) -> None:
    suite = get_cipher_suite(entry["cipher_suite"])
    psks = [
        (PreSharedKeyID(psktype=PSKType.EXTERNAL, psk_id=h(p["psk_id"]), psk_nonce=h(p["psk_nonce"])), h(p["psk"]))
        for p in entry["psks"]
    ]
    assert compute_psk_secret(suite, psks) == h(entry["psk_secret"])
