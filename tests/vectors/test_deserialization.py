"""deserialization.json: variable-length vector headers (RFC 9420 section 2.1.2)."""

from __future__ import annotations

import pytest

from crdt_mls.errors import DecodeError
from crdt_mls.mls.codec import Reader, encode_varint
from tests.vectors.loader import h, load

ENTRIES = load("deserialization")


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["vlbytes_header"] for e in ENTRIES])
def test_vlbytes_header(entry: dict[str, object]) -> None:
    header = h(entry["vlbytes_header"])  # type: ignore[arg-type]
    r = Reader(header)
    assert r.varint() == entry["length"]
    r.finish()
    assert encode_varint(entry["length"]) == header  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["c0", "4000", "403f", "80000000", "80003fff", "40", "8000"])
def test_rejects_invalid_or_non_minimal(bad: str) -> None:
    with pytest.raises(DecodeError):
        Reader(bytes.fromhex(bad)).varint()
