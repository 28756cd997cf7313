"""Unit tests of crdt_mls.mls.transcript (RFC 9420 section 8.2)."""

from __future__ import annotations

import pytest

from crdt_mls.errors import ConfirmationTagError, InvalidArgument
from crdt_mls.mls.messages import (
    AuthenticatedContent,
    Commit,
    FramedContent,
    FramedContentAuthData,
    Sender,
    WireFormat,
)
from crdt_mls.mls.messages import (
    confirmed_transcript_hash_input as messages_cthi,
)
from crdt_mls.mls.suites import get_cipher_suite
from crdt_mls.mls.transcript import (
    TranscriptHashes,
    confirmation_tag,
    confirmed_transcript_hash,
    confirmed_transcript_hash_input,
    interim_transcript_hash,
    verify_confirmation_tag,
)

SUITE = get_cipher_suite(1)


def commit_content(tag: bytes | None) -> AuthenticatedContent:
    fc = FramedContent(b"g", 0, Sender.member(0), b"", Commit())
    return AuthenticatedContent(WireFormat.MLS_PUBLIC_MESSAGE, fc, FramedContentAuthData(b"sig", tag))


def test_input_matches_messages_module() -> None:
    ac = commit_content(b"tag")
    assert confirmed_transcript_hash_input(ac.wire_format, ac.content, b"sig") == messages_cthi(ac)


def test_chain() -> None:
    key = b"\x05" * 32
    start = TranscriptHashes.for_new_group(SUITE, key)
    assert start.confirmed == b""
    assert start.interim == interim_transcript_hash(SUITE, b"", confirmation_tag(SUITE, key, b""))
    confirmed = confirmed_transcript_hash(SUITE, start.interim, commit_content(None))
    tag = confirmation_tag(SUITE, key, confirmed)
    after = start.after_commit(SUITE, commit_content(tag))
    assert after.confirmed == confirmed
    assert after.interim == SUITE.hash(confirmed + bytes([len(tag)]) + tag)
    verify_confirmation_tag(SUITE, key, confirmed, tag)
    with pytest.raises(ConfirmationTagError):
        verify_confirmation_tag(SUITE, b"\x06" * 32, confirmed, tag)


def test_after_commit_needs_tag() -> None:
    with pytest.raises(InvalidArgument):
        TranscriptHashes().after_commit(SUITE, commit_content(None))
