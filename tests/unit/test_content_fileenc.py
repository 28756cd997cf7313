"""Streaming single-file encryption (crdt_mls.content.fileenc; docs/content.md section 3)."""

from __future__ import annotations

import io
import itertools
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_mls.content.fileenc import (
    SLOT_LEN,
    Decryptor,
    decrypt_bytes,
    decrypt_file,
    decrypt_to_path,
    encrypt_bytes,
    encrypt_chunks,
    encrypt_file,
)
from crdt_mls.content.identity import Identity, ScryptParams
from crdt_mls.dag.audit import assert_no_plaintext
from crdt_mls.dag.cid import cid_for_raw
from crdt_mls.errors import (
    DecodeError,
    DecryptionError,
    InvalidArgument,
    NotRecipientError,
    OversizeError,
    RemoteInputError,
    TruncatedError,
    WrongPasswordError,
)
from crdt_mls.stores import MemoryStore

P = ScryptParams.for_tests()
LOG = 10  # 1 KiB chunks keep the tests small
CH = 1 << LOG
FULL = CH + 16

ALICE = Identity.derive("alice", "pw-a", P)
BOB = Identity.derive("bob", "pw-b", P)
CAROL = Identity.derive("carol", "pw-c", P)
EVE = Identity.derive("eve", "pw-e", P)


def _pw(data: bytes, **kw: object) -> bytes:
    return encrypt_bytes(data, password="hunter2", params=P, chunk_log=LOG, **kw)


def _rc(data: bytes, recipients: tuple[Identity, ...] = (BOB, CAROL), **kw: object) -> bytes:
    return encrypt_bytes(data, sender=ALICE, recipients=list(recipients), chunk_log=LOG, **kw)


def _header_len(ct: bytes, kind: int) -> int:
    if kind == 1:
        return 25 + 3 + 32 + 48
    n = int.from_bytes(ct[25:27], "big")
    return 27 + n * SLOT_LEN


def _split(ct: bytes, kind: int) -> tuple[bytes, list[bytes]]:
    """Header and chunk ciphertexts of a file (the final chunk may be shorter)."""
    h = _header_len(ct, kind)
    body = ct[h:]
    return ct[:h], [body[i : i + FULL] for i in range(0, len(body), FULL)]


SIZES = [0, 1, CH - 1, CH, CH + 1, 3 * CH, 3 * CH + 7]


@pytest.mark.parametrize("size", SIZES)
def test_password_round_trip(size: int) -> None:
    data = os.urandom(size)
    plain, info = decrypt_bytes(_pw(data), password="hunter2", insecure_for_tests=True)
    assert plain == data and info.size == size and info.sender is None and info.kind == 1


@pytest.mark.parametrize("size", SIZES)
def test_recipient_round_trip_authenticates_sender(size: int) -> None:
    data = os.urandom(size)
    ct = _rc(data)
    for who in (BOB, CAROL):
        plain, info = decrypt_bytes(ct, identity=who)
        assert plain == data and info.sender == ALICE.public and info.size == size


def test_wrong_password() -> None:
    with pytest.raises(WrongPasswordError):
        decrypt_bytes(_pw(b"top secret"), password="hunter3", insecure_for_tests=True)


def test_password_file_with_weak_params_needs_the_test_flag() -> None:
    with pytest.raises(InvalidArgument, match="minimum"):
        decrypt_bytes(_pw(b"x"), password="hunter2")
    with pytest.raises(InvalidArgument):
        encrypt_bytes(b"x", password="pw", params=ScryptParams(log_n=12))


def test_unknown_recipient() -> None:
    with pytest.raises(NotRecipientError):
        decrypt_bytes(_rc(b"for bob and carol"), identity=EVE)
    with pytest.raises(NotRecipientError):
        decrypt_bytes(_rc(b"for bob and carol"), identity=ALICE)  # the sender is not implicitly a recipient


def test_recipient_list_is_padded_and_hides_keys() -> None:
    one = _rc(b"data", (BOB,))
    three = _rc(b"data", (BOB, CAROL, EVE))
    five = _rc(b"data", (BOB, CAROL, EVE, ALICE, Identity.derive("x", "y", P)))
    assert len(one) == len(three)  # 4 slots either way
    assert len(five) == len(one) + 4 * SLOT_LEN
    header = three[: _header_len(three, 2)]
    for ident in (ALICE, BOB, CAROL, EVE):
        assert ident.box_public not in header and ident.signing_public not in header
    padded = _rc(b"data", (BOB,), pad_recipients_to=16)
    assert int.from_bytes(padded[25:27], "big") == 16
    assert decrypt_bytes(padded, identity=BOB)[0] == b"data"
    with pytest.raises(InvalidArgument):
        _rc(b"data", (BOB, CAROL), pad_recipients_to=1)


@pytest.mark.parametrize("kind", [1, 2])
def test_every_tampered_byte_is_rejected(kind: int) -> None:
    ct = _pw(os.urandom(2 * CH + 50)) if kind == 1 else _rc(os.urandom(2 * CH + 50))
    rnd = random.Random(kind)
    positions = sorted({*range(0, 30), *rnd.sample(range(len(ct)), 60), len(ct) - 1})
    for pos in positions:
        bad = bytearray(ct)
        bad[pos] ^= 0x01
        with pytest.raises(RemoteInputError):
            if kind == 1:
                decrypt_bytes(bytes(bad), password="hunter2", insecure_for_tests=True)
            else:
                decrypt_bytes(bytes(bad), identity=BOB)


@pytest.mark.parametrize("kind", [1, 2])
def test_tampered_chunk_is_a_decryption_error(kind: int) -> None:
    ct = _pw(os.urandom(3 * CH + 5)) if kind == 1 else _rc(os.urandom(3 * CH + 5))
    h = _header_len(ct, kind)
    bad = bytearray(ct)
    bad[h + FULL + 10] ^= 0x80  # inside chunk 1
    kw: dict[str, object] = {"password": "hunter2", "insecure_for_tests": True} if kind == 1 else {"identity": BOB}
    with pytest.raises(DecryptionError, match="chunk 1"):
        decrypt_bytes(bytes(bad), **kw)


@pytest.mark.parametrize("kind", [1, 2])
def test_truncated_reordered_duplicated_chunks(kind: int) -> None:
    data = os.urandom(3 * CH + 100)
    ct = _pw(data) if kind == 1 else _rc(data)
    kw: dict[str, object] = {"password": "hunter2", "insecure_for_tests": True} if kind == 1 else {"identity": BOB}
    header, chunks = _split(ct, kind)
    assert len(chunks) == 4
    # truncated at a chunk boundary: the final chunk is missing
    for keep in (1, 2, 3):
        with pytest.raises(TruncatedError):
            decrypt_bytes(header + b"".join(chunks[:keep]), **kw)
    with pytest.raises(TruncatedError):
        decrypt_bytes(header, **kw)
    # truncated anywhere
    for cut in (1, 17, FULL - 1, FULL + 1, len(ct) - len(header) - 1):
        with pytest.raises(DecryptionError):
            decrypt_bytes(ct[: len(header) + cut], **kw)
    with pytest.raises(TruncatedError):
        decrypt_bytes(header[:-1], **kw)
    # reordered, duplicated, dropped
    for order in ([1, 0, 2, 3], [0, 2, 1, 3], [0, 0, 1, 2, 3], [0, 1, 1, 2, 3], [0, 2, 3], [0, 1, 2, 3, 3]):
        with pytest.raises(DecryptionError):
            decrypt_bytes(header + b"".join(chunks[i] for i in order), **kw)
    # chunks of another file with the same key material cannot be spliced in
    other_header, other_chunks = _split(_pw(data) if kind == 1 else _rc(data), kind)
    with pytest.raises(DecryptionError):
        decrypt_bytes(header + other_chunks[0] + b"".join(chunks[1:]), **kw)
    with pytest.raises(RemoteInputError):
        decrypt_bytes(other_header + b"".join(chunks), **kw)


def test_extra_bytes_after_the_final_chunk_are_rejected() -> None:
    ct = _rc(os.urandom(CH // 2))
    with pytest.raises(DecryptionError):
        decrypt_bytes(ct + b"\x00", identity=BOB)


def test_a_recipient_cannot_forge_content_from_the_sender() -> None:
    """Bob knows the file key; rewritten chunks fail the sender's signature for Carol."""
    data = os.urandom(2 * CH + 10)
    ct = _rc(data)
    header, chunks = _split(ct, 2)
    dec = Decryptor(ct, identity=BOB)
    forged_first = dec._aead.encrypt(b"\x00" * 12, b"\x00" * CH, dec._hh)
    forged = header + forged_first + b"".join(chunks[1:])
    assert Decryptor(forged, identity=CAROL)  # header and slot are Alice's genuine ones
    with pytest.raises(DecryptionError, match="signature"):
        decrypt_bytes(forged, identity=CAROL)


def test_stream_api_yields_early_but_raises_on_a_bad_end(tmp_path: Path) -> None:
    data = os.urandom(4 * CH)
    ct = bytearray(_rc(data))
    ct[-3] ^= 1  # the final chunk (signature area)
    got: list[bytes] = []
    with pytest.raises(DecryptionError):
        for piece in Decryptor(io.BytesIO(bytes(ct)), identity=BOB):
            got.append(piece)
    assert b"".join(got) == data[: 3 * CH]  # released chunks were authentic but the file was not
    # the safe API leaves neither the target nor a temporary file behind, and keeps an existing target
    target = tmp_path / "out.bin"
    with pytest.raises(DecryptionError):
        decrypt_to_path(io.BytesIO(bytes(ct)), target, identity=BOB)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"previous")
    with pytest.raises(DecryptionError):
        decrypt_to_path(io.BytesIO(bytes(ct)), target, identity=BOB)
    assert target.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [target]
    good = tmp_path / "good.enc"
    good.write_bytes(_rc(data))
    info = decrypt_to_path(str(good), target, identity=BOB)
    assert target.read_bytes() == data and info.sender == ALICE.public


def test_file_objects_and_piecewise_iterators() -> None:
    data = os.urandom(5 * CH + 3)
    src, dst = io.BytesIO(data), io.BytesIO()
    encrypt_file(src, dst, password="pw", params=P, chunk_log=LOG)
    out = io.BytesIO()
    info = decrypt_file(io.BytesIO(dst.getvalue()), out, password="pw", insecure_for_tests=True)
    assert out.getvalue() == data and info.size == len(data)
    ct = dst.getvalue()
    pieces = [ct[i : i + 7] for i in range(0, len(ct), 7)]
    assert b"".join(Decryptor(iter([b"", *pieces, b""]), password="pw", insecure_for_tests=True)) == data
    with pytest.raises(InvalidArgument):
        list(Decryptor(iter([ct[:40], "text"]), password="pw", insecure_for_tests=True))  # type: ignore[arg-type]


def test_streaming_runs_in_constant_memory() -> None:
    """Encryption and decryption pull input lazily: a chunk out needs only about a chunk in."""
    pulled = {"n": 0}

    def source() -> Iterator[bytes]:
        for _ in range(1000):
            pulled["n"] += 1
            yield b"a" * 512

    out = encrypt_chunks(source(), password="pw", params=P, chunk_log=LOG)
    header = next(out)
    first = next(out)
    assert len(first) == FULL and pulled["n"] <= 3

    class Reader(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data, self.pos, self.peak = data, 0, 0

        def read(self, n: int = -1) -> bytes:
            assert n > 0
            chunk = self.data[self.pos : self.pos + n]
            self.pos += len(chunk)
            return chunk

    rest = b"".join(out)
    assert pulled["n"] == 1000
    reader = Reader(header + first + rest)
    it = iter(Decryptor(reader, password="pw", insecure_for_tests=True))
    assert next(it) == b"a" * CH
    assert reader.pos < len(header) + 4 * FULL + (1 << 16) + 1 < len(reader.data)


def test_mode_and_argument_errors() -> None:
    with pytest.raises(InvalidArgument):
        decrypt_bytes(_pw(b"x"), identity=BOB)
    with pytest.raises(InvalidArgument):
        decrypt_bytes(_rc(b"x"), password="pw")
    with pytest.raises(InvalidArgument):
        encrypt_bytes(b"x", password="pw", params=P, sender=ALICE, recipients=[BOB])
    with pytest.raises(InvalidArgument):
        encrypt_bytes(b"x", sender=ALICE, recipients=[])
    with pytest.raises(InvalidArgument):
        encrypt_bytes(b"x", sender=ALICE, recipients=[b"short"])
    with pytest.raises(InvalidArgument):
        encrypt_bytes(b"x", password="pw", params=P, chunk_log=30)
    dec = Decryptor(_pw(b"x"), password="hunter2", insecure_for_tests=True)
    list(dec)
    with pytest.raises(InvalidArgument):
        iter(dec)


def test_hostile_headers() -> None:
    ct = bytearray(_pw(b"x"))
    for pos, value, err in [
        (0, ord("X"), DecodeError),  # magic
        (6, 2, DecodeError),  # version
        (7, 9, DecodeError),  # kind
        (8, 40, DecodeError),  # chunk size
        (25, 31, DecodeError),  # scrypt log_n
        (26, 0, DecodeError),  # scrypt r
    ]:
        bad = bytearray(ct)
        bad[pos] = value
        with pytest.raises(err):
            decrypt_bytes(bytes(bad), password="hunter2", insecure_for_tests=True)
    heavy = bytearray(ct)
    heavy[25] = 20  # N = 2^20, r = 8: 1 GiB
    with pytest.raises(OversizeError):
        decrypt_bytes(bytes(heavy), password="hunter2", insecure_for_tests=True)
    heavy[25] = 12
    with pytest.raises(OversizeError):
        decrypt_bytes(bytes(heavy), password="hunter2", insecure_for_tests=True, max_scrypt_memory=1 << 20)
    rc = bytearray(_rc(b"x"))
    rc[25:27] = (0).to_bytes(2, "big")
    with pytest.raises(OversizeError):
        decrypt_bytes(bytes(rc), identity=BOB)
    rc[25:27] = (5000).to_bytes(2, "big")
    with pytest.raises(OversizeError):
        decrypt_bytes(bytes(rc), identity=BOB)
    rc[25:27] = (8).to_bytes(2, "big")  # claims more slots than present
    with pytest.raises(RemoteInputError):
        decrypt_bytes(bytes(rc[: 27 + 5 * SLOT_LEN]), identity=BOB)


def test_plaintext_does_not_appear_in_ciphertext() -> None:
    data = b"the quarterly numbers are terrible, signed alice " * 100
    store = MemoryStore()
    for ct in (_pw(data), _rc(data)):
        assert b"quarterly" not in ct and b"alice" not in ct and b"bob" not in ct
        store.put_blocks([(cid_for_raw(ct), ct)])
    assert_no_plaintext(store, ["quarterly numbers", "terrible", "alice", "carol", "hunter2"])


# ---------------------------------------------------------------------------- properties

_PW_CT = _pw(bytes(range(256)) * 9)  # 2304 bytes: 3 chunks
_RC_CT = _rc(bytes(range(256)) * 9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=3 * CH + 5), cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=6))
def test_property_round_trip_with_arbitrary_piece_boundaries(data: bytes, cuts: list[int]) -> None:
    ct = _rc(data, (BOB,))
    bounds = sorted({0, len(ct), *(c for c in cuts if c < len(ct))})
    pieces = [ct[a:b] for a, b in itertools.pairwise(bounds)]
    assert b"".join(Decryptor(iter(pieces), identity=BOB)) == data


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from([1, 2]),
    op=st.sampled_from(["flip", "delete", "insert", "truncate"]),
    pos=st.integers(min_value=0),
    length=st.integers(min_value=1, max_value=40),
    value=st.integers(min_value=1, max_value=255),
)
def test_property_any_mutation_is_rejected(kind: int, op: str, pos: int, length: int, value: int) -> None:
    ct = bytearray(_PW_CT if kind == 1 else _RC_CT)
    pos %= len(ct)
    if op == "flip":
        ct[pos] ^= value
    elif op == "delete":
        del ct[pos : pos + length]
    elif op == "insert":
        ct[pos:pos] = bytes([value]) * length
    else:
        del ct[pos:]
    kw: dict[str, object] = {"password": "hunter2", "insecure_for_tests": True} if kind == 1 else {"identity": BOB}
    with pytest.raises(RemoteInputError):
        decrypt_bytes(bytes(ct), **kw)
