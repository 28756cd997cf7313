"""Tests of crdt_mls.dag.cid against the multiformats reference implementation."""

from __future__ import annotations

import dag_cbor
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiformats import CID, multihash

from crdt_mls.dag.cid import (
    CODEC_DAG_CBOR,
    CODEC_RAW,
    HASH_SHA2_256,
    check_cid,
    cid_for_block,
    cid_for_raw,
    cid_from_str,
    cid_matches,
    cid_to_str,
    parse_cid,
    verify_block,
)
from crdt_mls.errors import DecodeError, IntegrityError, InvalidArgument


@settings(deadline=None)
@given(st.binary(max_size=512))
def test_cid_matches_multiformats(data: bytes) -> None:
    ref = CID("base32", 1, "dag-cbor", multihash.digest(data, "sha2-256"))
    cid = cid_for_block(data)
    assert cid == bytes(ref)
    assert cid_to_str(cid) == str(ref)
    assert cid_from_str(str(ref)) == cid
    raw = CID("base32", 1, "raw", multihash.digest(data, "sha2-256"))
    assert cid_for_raw(data) == bytes(raw)
    assert cid_from_str(str(raw)) == bytes(raw)


def test_known_value() -> None:
    block = dag_cbor.encode({"hello": "world"})
    cid = cid_for_block(block)
    assert cid[:4] == bytes([0x01, 0x71, 0x12, 0x20]) and len(cid) == 36
    assert cid_to_str(cid).startswith("bafyrei")
    parts = parse_cid(cid)
    assert (parts.codec, parts.hash_code) == (CODEC_DAG_CBOR, HASH_SHA2_256)
    assert parse_cid(cid_for_raw(b"x")).codec == CODEC_RAW


def test_verify_block() -> None:
    cid = cid_for_block(b"abc")
    verify_block(cid, b"abc")
    assert cid_matches(cid, b"abc")
    assert not cid_matches(cid, b"abd")
    assert not cid_matches(b"\x00", b"abc")
    with pytest.raises(IntegrityError):
        verify_block(cid, b"abd")
    sha512 = CID("base32", 1, "dag-cbor", multihash.digest(b"abc", "sha2-512"))
    assert parse_cid(bytes(sha512)).digest == multihash.unwrap(multihash.digest(b"abc", "sha2-512"))
    with pytest.raises(IntegrityError, match="unsupported hash"):
        verify_block(bytes(sha512), b"abc")


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x00\x71\x12\x20" + bytes(32),  # version 0 marker
        b"\x12\x20" + bytes(32),  # CIDv0
        b"\x01\x71\x12\x20" + bytes(31),  # short digest
        b"\x01\x71\x12\x20" + bytes(33),  # long digest
        b"\x01\x71\x12\x10" + bytes(16),  # sha2-256 with 16-byte digest
        b"\x01\xf1\x00\x12\x20" + bytes(32),  # non-minimal varint codec
        b"\x01\xff",  # truncated varint
        b"\x01" + b"\xff" * 10,  # over-long varint
        b"\x01\x71\x12\x20" + bytes(200),  # too long
    ],
)
def test_bad_binary_cids(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        check_cid(bad)
    assert not cid_matches(bad, b"")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",  # CIDv0
        "BAFYREIGDYRZT5SFP7UDM7HU76UH7Y26NF3EFUYLQABF3OCLGTQY55FBZDI",  # upper case
        "bafyreigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzd1",  # '1' not base32
        "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",  # base58
        "bafyreigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdj",  # non-canonical last char
        "b" + "a" * 300,
    ],
)
def test_bad_text_cids(bad: str) -> None:
    with pytest.raises(DecodeError):
        cid_from_str(bad)


def test_text_type_error() -> None:
    with pytest.raises(InvalidArgument):
        cid_from_str(b"bafy")  # type: ignore[arg-type]
