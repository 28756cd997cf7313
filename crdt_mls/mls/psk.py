"""Pre-shared keys: the ``psk_secret`` input of the key schedule (RFC 9420 section 8.4).

`compute_psk_secret` chains a list of ``(PreSharedKeyID, psk)`` pairs, in the order of
the Commit's PreSharedKey proposals (or of ``GroupSecrets.psks``), into ``psk_secret``.
The PreSharedKeyID struct itself lives in `crdt_mls.mls.messages`; anything with an
``encode(Writer)`` method is accepted here.
"""

from __future__ import annotations

from collections.abc import Sequence

from crdt_mls.errors import InvalidArgument
from crdt_mls.mls.codec import Encodable, Writer
from crdt_mls.mls.suites import CipherSuite

__all__ = ["MAX_PSKS", "compute_psk_secret", "psk_label"]

#: PSKLabel.count is a uint16.
MAX_PSKS = 0xFFFF


def psk_label(psk_id: Encodable, index: int, count: int) -> bytes:
    """Encoding of ``PSKLabel {PreSharedKeyID id; uint16 index; uint16 count;}`` (RFC 9420 section 8.4)."""
    w = Writer()
    psk_id.encode(w)
    w.u16(index)
    w.u16(count)
    return w.getvalue()


def compute_psk_secret(suite: CipherSuite, psks: Sequence[tuple[Encodable, bytes]]) -> bytes:
    """``psk_secret`` for the given PSKs (RFC 9420 section 8.4); all-zero when ``psks`` is empty.

    ``psk_extracted_i = Extract(0, psk_i)``, ``psk_input_i = ExpandWithLabel(psk_extracted_i,
    "derived psk", PSKLabel, Nh)``, ``psk_secret_{i+1} = Extract(psk_input_i, psk_secret_i)``.
    """
    nh = suite.hash_length
    count = len(psks)
    if count > MAX_PSKS:
        raise InvalidArgument(f"{count} PSKs exceed the maximum of {MAX_PSKS}")
    zero = bytes(nh)
    secret = zero
    for index, (psk_id, psk) in enumerate(psks):
        extracted = suite.kdf_extract(zero, psk)
        psk_input = suite.expand_with_label(extracted, "derived psk", psk_label(psk_id, index, count), nh)
        secret = suite.kdf_extract(psk_input, secret)
    return secret
