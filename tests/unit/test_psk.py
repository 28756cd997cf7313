"""Unit tests of crdt_mls.mls.psk (RFC 9420 section 8.4)."""

from __future__ import annotations

import pytest

from crdt_mls.errors import ProposalError
from crdt_mls.mls.messages import PreSharedKeyID, ResumptionPSKUsage
from crdt_mls.mls.psk import compute_psk_secret, psk_label, resolve_psks
from crdt_mls.mls.suites import get_cipher_suite

SUITE = get_cipher_suite(1)
NH = SUITE.hash_length
EXT = PreSharedKeyID.external(b"ext-id", b"\x01" * NH)
RES = PreSharedKeyID.resumption(ResumptionPSKUsage.APPLICATION, b"group", 5, b"\x02" * NH)


def test_empty_is_zero() -> None:
    assert compute_psk_secret(SUITE, []) == bytes(NH)


def test_order_and_values_matter() -> None:
    a = compute_psk_secret(SUITE, [(EXT, b"k1"), (RES, b"k2")])
    b = compute_psk_secret(SUITE, [(RES, b"k2"), (EXT, b"k1")])
    c = compute_psk_secret(SUITE, [(EXT, b"k1"), (RES, b"k3")])
    assert len({a, b, c}) == 3


def test_psk_label_encoding() -> None:
    label = psk_label(EXT, 1, 2)
    assert label.endswith(b"\x00\x01\x00\x02")


def test_resolve() -> None:
    got = resolve_psks(SUITE, [EXT, RES], {b"ext-id": b"k1"}, lambda g, e: b"k2" if (g, e) == (b"group", 5) else None)
    assert got == [(EXT, b"k1"), (RES, b"k2")]


def test_resolve_errors() -> None:
    def none(g: bytes, e: int) -> bytes | None:
        return None

    with pytest.raises(ProposalError):
        resolve_psks(SUITE, [EXT], {}, none)
    with pytest.raises(ProposalError):
        resolve_psks(SUITE, [RES], {}, none)
    with pytest.raises(ProposalError):
        resolve_psks(SUITE, [EXT, EXT], {b"ext-id": b"k"}, none)
    with pytest.raises(ProposalError):
        resolve_psks(SUITE, [PreSharedKeyID.external(b"ext-id", b"short")], {b"ext-id": b"k"}, none)
