"""Pre-shared keys: the ``psk_secret`` input of the key schedule (RFC 9420 section 8.4).

`compute_psk_secret` chains a list of ``(PreSharedKeyID, psk)`` pairs, in the order of
the Commit's PreSharedKey proposals (or of ``GroupSecrets.psks``), into ``psk_secret``.
The PreSharedKeyID struct itself lives in `crdt_mls.mls.messages`; anything with an
``encode(Writer)`` method is accepted here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from crdt_mls.errors import InvalidArgument, ProposalError
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Encodable, Writer
from crdt_mls.mls.messages import PreSharedKeyID, PSKType
from crdt_mls.mls.suites import CipherSuite

__all__ = ["MAX_PSKS", "compute_psk_secret", "psk_label", "resolve_psks"]

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


def resolve_psks(
    suite: CipherSuite,
    psk_ids: Sequence[PreSharedKeyID],
    external_psks: Mapping[bytes, bytes],
    resumption_psk: Callable[[bytes, int], bytes | None],
) -> list[tuple[PreSharedKeyID, bytes]]:
    """Look up the PSK value of each PreSharedKeyID, in order (RFC 9420 sections 8.4, 12.2).

    ``external_psks`` maps ``psk_id`` to the PSK; ``resumption_psk(group_id, epoch)``
    returns that epoch's ``resumption_psk`` or ``None`` if it is not (or no longer) known.
    Raises `ProposalError` for a ``psk_nonce`` not of length ``KDF.Nh``, a repeated
    PreSharedKeyID or an unknown PSK.  The result feeds `compute_psk_secret`.
    """
    if len(psk_ids) > MAX_PSKS:
        raise ProposalError(f"{len(psk_ids)} PSKs exceed the maximum of {MAX_PSKS}")
    seen: set[bytes] = set()
    out: list[tuple[PreSharedKeyID, bytes]] = []
    for i, pid in enumerate(psk_ids):
        if len(pid.psk_nonce) != suite.hash_length:
            raise ProposalError(f"PSK {i}: psk_nonce is {len(pid.psk_nonce)} bytes, expected {suite.hash_length}")
        encoded = codec.encode(pid)
        if encoded in seen:
            raise ProposalError(f"PSK {i}: the same PreSharedKeyID appears twice")
        seen.add(encoded)
        psk: bytes | None
        if pid.psktype == PSKType.EXTERNAL and pid.psk_id is not None:
            psk = external_psks.get(pid.psk_id)
        elif pid.psktype == PSKType.RESUMPTION and pid.psk_group_id is not None and pid.psk_epoch is not None:
            psk = resumption_psk(pid.psk_group_id, pid.psk_epoch)
        else:
            raise ProposalError(f"PSK {i}: malformed PreSharedKeyID")
        if psk is None:
            raise ProposalError(f"PSK {i}: unknown {pid.psktype.name.lower()} PSK")
        out.append((pid, psk))
    return out
