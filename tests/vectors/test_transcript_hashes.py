"""transcript-hashes.json (RFC 9420 section 8.2): confirmed/interim hashes and the confirmation tag."""

from __future__ import annotations

from typing import Any

import pytest

from crdt_mls.errors import ConfirmationTagError
from crdt_mls.mls import codec
from crdt_mls.mls.messages import AuthenticatedContent
from crdt_mls.mls.suites import get_cipher_suite
from crdt_mls.mls.transcript import (
    TranscriptHashes,
    confirmation_tag,
    confirmed_transcript_hash,
    interim_transcript_hash,
    verify_confirmation_tag,
)
from tests.vectors.loader import h, ids, load

ENTRIES = load("transcript-hashes")


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_transcript_hashes(entry: dict[str, Any]) -> None:
    suite = get_cipher_suite(entry["cipher_suite"])
    ac = codec.decode(AuthenticatedContent, h(entry["authenticated_content"]))
    tag = ac.auth.confirmation_tag
    assert tag is not None
    confirmed = confirmed_transcript_hash(suite, h(entry["interim_transcript_hash_before"]), ac)
    assert confirmed == h(entry["confirmed_transcript_hash_after"])
    assert interim_transcript_hash(suite, confirmed, tag) == h(entry["interim_transcript_hash_after"])
    key = h(entry["confirmation_key"])
    assert confirmation_tag(suite, key, confirmed) == tag
    verify_confirmation_tag(suite, key, confirmed, tag)
    with pytest.raises(ConfirmationTagError):
        verify_confirmation_tag(suite, key, confirmed, bytes([tag[0] ^ 1]) + tag[1:])
    after = TranscriptHashes(b"", h(entry["interim_transcript_hash_before"])).after_commit(suite, ac)
    assert after == TranscriptHashes(confirmed, h(entry["interim_transcript_hash_after"]))
