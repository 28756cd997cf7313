"""Transcript hashes and the confirmation tag (RFC 9420 sections 8.2 and 6.1).

``confirmed_transcript_hash_[n] = Hash(interim_[n-1] || ConfirmedTranscriptHashInput)`` and
``interim_transcript_hash_[n] = Hash(confirmed_[n] || InterimTranscriptHashInput)``; the
confirmation tag is ``MAC(confirmation_key, confirmed_transcript_hash)``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from crdt_mls.errors import ConfirmationTagError, InvalidArgument
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Writer
from crdt_mls.mls.suites import CipherSuite

__all__ = [
    "TranscriptHashes",
    "confirmation_tag",
    "confirmed_transcript_hash",
    "confirmed_transcript_hash_input",
    "interim_transcript_hash",
    "verify_confirmation_tag",
]


def confirmed_transcript_hash_input(wire_format: int, content: Any, signature: bytes) -> bytes:
    """Encoding of ConfirmedTranscriptHashInput (RFC 9420 section 8.2).

    ``content`` is the FramedContent (a struct with ``encode``, or its encoding as bytes).
    """
    w = Writer()
    w.u16(wire_format)
    if isinstance(content, bytes | bytearray):
        w.fixed(bytes(content))
    else:
        w.fixed(codec.encode(content))
    w.opaque(signature)
    return w.getvalue()


def confirmed_transcript_hash(
    suite: CipherSuite, interim_before: bytes, authenticated_content: Any, content_bytes: bytes | None = None
) -> bytes:
    """``Hash(interim_transcript_hash_[n-1] || ConfirmedTranscriptHashInput_[n])`` (RFC 9420 section 8.2).

    ``authenticated_content`` is an AuthenticatedContent carrying a Commit; ``content_bytes``
    the encoding of its FramedContent if the caller has it.
    """
    ac = authenticated_content
    content = ac.content if content_bytes is None else content_bytes
    data = confirmed_transcript_hash_input(ac.wire_format, content, ac.auth.signature)
    return suite.hash(interim_before + data)


def interim_transcript_hash(suite: CipherSuite, confirmed: bytes, confirmation_tag: bytes) -> bytes:
    """``Hash(confirmed_transcript_hash || InterimTranscriptHashInput)`` (RFC 9420 section 8.2)."""
    w = Writer()
    w.opaque(confirmation_tag)
    return suite.hash(confirmed + w.getvalue())


def confirmation_tag(suite: CipherSuite, confirmation_key: bytes, confirmed_hash: bytes) -> bytes:
    """``MAC(confirmation_key, GroupContext.confirmed_transcript_hash)`` (RFC 9420 section 6.1)."""
    return suite.mac(confirmation_key, confirmed_hash)


def verify_confirmation_tag(suite: CipherSuite, confirmation_key: bytes, confirmed_hash: bytes, tag: bytes) -> None:
    """Raise `ConfirmationTagError` unless ``tag`` is the confirmation tag (RFC 9420 section 6.1)."""
    expected = confirmation_tag(suite, confirmation_key, confirmed_hash)
    if not hmac.compare_digest(expected, tag):
        raise ConfirmationTagError("confirmation tag does not match the confirmed transcript hash")


@dataclass(frozen=True, slots=True)
class TranscriptHashes:
    """The pair of transcript hashes of one epoch (RFC 9420 section 8.2); both empty at epoch 0."""

    confirmed: bytes = b""
    interim: bytes = b""

    @classmethod
    def for_new_group(cls, suite: CipherSuite, confirmation_key: bytes) -> TranscriptHashes:
        """Epoch 0 (RFC 9420 section 11): empty confirmed hash, interim hash over the
        confirmation tag of the empty confirmed hash."""
        tag = confirmation_tag(suite, confirmation_key, b"")
        return cls(b"", interim_transcript_hash(suite, b"", tag))

    def after_commit(self, suite: CipherSuite, authenticated_content: Any) -> TranscriptHashes:
        """The hashes of the epoch started by ``authenticated_content`` (a Commit with its confirmation tag)."""
        tag = authenticated_content.auth.confirmation_tag
        if tag is None:
            raise InvalidArgument("a commit's AuthenticatedContent must carry a confirmation tag")
        confirmed = confirmed_transcript_hash(suite, self.interim, authenticated_content)
        return TranscriptHashes(confirmed, interim_transcript_hash(suite, confirmed, tag))
