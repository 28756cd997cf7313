"""Chunk blocks of large payloads (crdt_mls.dag.chunks): round trips, sizes, every tampering."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mls.dag.chunks import chunk_count, join_plain, open_chunks, plain_chunks, seal_chunks
from crdt_mls.dag.cid import cid_for_raw
from crdt_mls.errors import DecodeError, DecryptionError, InvalidArgument

KEY = bytes(range(32))


@given(st.binary(max_size=3000), st.integers(64, 700))
@settings(max_examples=150, deadline=None)
def test_round_trip_and_equal_sizes(data: bytes, size: int) -> None:
    sealed = seal_chunks(KEY, data, b"lbl", chunk_size=size)
    assert len(sealed) == chunk_count(len(data), size)
    assert all(len(b) == size and c == cid_for_raw(b) for c, b in sealed)
    assert open_chunks(KEY, [b for _, b in sealed], b"lbl") == data
    plain = plain_chunks(data, chunk_size=size)
    assert len(plain) == chunk_count(len(data), size, sealed=False)
    assert all(len(b) == size and c == cid_for_raw(b) for c, b in plain)
    assert join_plain([b for _, b in plain]) == data


def test_sealed_chunks_hide_the_content() -> None:
    data = b"alice bob carol " * 200
    sealed = seal_chunks(KEY, data, b"tree", chunk_size=256)
    assert all(b"alice" not in b for _, b in sealed)
    # the size is visible only to within one chunk
    assert {len(b) for _, b in seal_chunks(KEY, data[:-100], b"tree", chunk_size=256)} == {256}


def test_tampering_is_detected() -> None:
    data = bytes(range(256)) * 10
    blocks = [b for _, b in seal_chunks(KEY, data, b"lbl", chunk_size=512)]
    assert len(blocks) > 2
    with pytest.raises(DecryptionError):
        open_chunks(bytes(32), blocks, b"lbl")  # wrong key
    with pytest.raises(DecryptionError):
        open_chunks(KEY, blocks, b"other")  # another payload's label
    with pytest.raises(DecryptionError):
        open_chunks(KEY, [blocks[1], blocks[0], *blocks[2:]], b"lbl")  # reordered
    with pytest.raises(DecryptionError):
        open_chunks(KEY, blocks[:-1], b"lbl")  # truncated
    with pytest.raises(DecryptionError):
        open_chunks(KEY, [*blocks, blocks[-1]], b"lbl")  # repeated
    flipped = bytearray(blocks[1])
    flipped[7] ^= 1
    with pytest.raises(DecryptionError):
        open_chunks(KEY, [blocks[0], bytes(flipped), *blocks[2:]], b"lbl")
    with pytest.raises(DecodeError):
        open_chunks(KEY, [blocks[0][:-1], *blocks[1:]], b"lbl")  # unequal sizes
    with pytest.raises(DecodeError):
        open_chunks(KEY, [], b"lbl")


def test_plain_stream_checks() -> None:
    blocks = [b for _, b in plain_chunks(b"x" * 100, chunk_size=64)]
    bad_len = bytearray(blocks[0])
    bad_len[0] = 0xFF
    with pytest.raises(DecodeError, match="length"):
        join_plain([bytes(bad_len), *blocks[1:]])
    bad_pad = bytearray(blocks[-1])
    bad_pad[-1] = 1
    with pytest.raises(DecodeError, match="padding"):
        join_plain([*blocks[:-1], bytes(bad_pad)])
    with pytest.raises(InvalidArgument):
        seal_chunks(b"short", b"x", b"l")
    with pytest.raises(InvalidArgument):
        plain_chunks(b"x", chunk_size=10)
