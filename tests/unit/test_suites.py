"""Unit tests of crdt_mls.mls.suites and crdt_mls.mls.hpke (RFC 9420 section 5, RFC 9180)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from crdt_mls.errors import (
    DecodeError,
    DecryptionError,
    InvalidArgument,
    RemoteInputError,
    SignatureError,
    UnsupportedError,
)
from crdt_mls.mls.suites import SUPPORTED_SUITES, CipherSuite, get_cipher_suite

SUITES = pytest.mark.parametrize("suite_id", SUPPORTED_SUITES)


def seeded(seed: bytes) -> Callable[[int], bytes]:
    counter = [0]

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha512(seed + counter[0].to_bytes(4, "big")).digest()
        return out[:n]

    return rng


def cs_of(suite_id: int) -> CipherSuite:
    return get_cipher_suite(suite_id)


# ------------------------------------------------------------------------- registry / params


def test_supported_suites() -> None:
    assert SUPPORTED_SUITES == (1, 2, 3, 4, 5, 6, 7)


@pytest.mark.parametrize("bad", [0, 8, 0x0A0A, -1, 65536])
def test_unknown_suite(bad: int) -> None:
    with pytest.raises(UnsupportedError):
        get_cipher_suite(bad)


@pytest.mark.parametrize(
    ("suite_id", "nh", "nk", "nenc", "npk", "nsk", "sig_pk"),
    [
        (1, 32, 16, 32, 32, 32, 32),
        (2, 32, 16, 65, 65, 32, 65),
        (3, 32, 32, 32, 32, 32, 32),
        (4, 64, 32, 56, 56, 56, 57),
        (5, 64, 32, 133, 133, 66, 133),
        (6, 64, 32, 56, 56, 56, 57),
        (7, 48, 32, 97, 97, 48, 97),
    ],
)
def test_parameters(suite_id: int, nh: int, nk: int, nenc: int, npk: int, nsk: int, sig_pk: int) -> None:
    cs = cs_of(suite_id)
    assert cs.suite_id == suite_id
    assert (cs.hash_length, cs.aead_key_length, cs.aead_nonce_length) == (nh, nk, 12)
    assert (cs.kem_output_length, cs.hpke_public_key_length, cs.hpke_private_key_length) == (nenc, npk, nsk)
    assert cs.signature_public_key_length == sig_pk
    assert len(cs.hash(b"x")) == nh
    assert len(cs.mac(b"k", b"x")) == nh
    assert get_cipher_suite(suite_id) is cs


# ------------------------------------------------------------------------------ KDF helpers


def test_hkdf_rfc5869_case1() -> None:
    """RFC 5869 appendix A.1 (HKDF-SHA256)."""
    cs = cs_of(1)
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    prk = cs.kdf_extract(salt, ikm)
    assert prk == bytes.fromhex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
    okm = cs.kdf_expand(prk, info, 42)
    assert okm == bytes.fromhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")


def test_hkdf_rfc5869_case3_empty_salt() -> None:
    """RFC 5869 appendix A.3: empty salt means Nh zero bytes."""
    cs = cs_of(1)
    prk = cs.kdf_extract(b"", bytes.fromhex("0b" * 22))
    assert prk == bytes.fromhex("19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04")
    assert cs.kdf_expand(prk, b"", 42) == bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


@SUITES
def test_expand_too_long(suite_id: int) -> None:
    cs = cs_of(suite_id)
    with pytest.raises(InvalidArgument):
        cs.kdf_expand(bytes(cs.hash_length), b"", 255 * cs.hash_length + 1)
    assert len(cs.kdf_expand(bytes(cs.hash_length), b"", 255 * cs.hash_length)) == 255 * cs.hash_length


def test_derive_tree_secret_generation_range() -> None:
    cs = cs_of(1)
    with pytest.raises(InvalidArgument):
        cs.derive_tree_secret(bytes(32), "key", 1 << 32, 16)
    with pytest.raises(InvalidArgument):
        cs.derive_tree_secret(bytes(32), "key", -1, 16)


def test_ref_hash_prefix_added_once() -> None:
    cs = cs_of(1)
    v = b"value"
    assert cs.ref_hash("KeyPackage Reference", v) == cs.ref_hash_raw(b"MLS 1.0 KeyPackage Reference", v)
    assert cs.ref_hash("MLS 1.0 KeyPackage Reference", v) == cs.ref_hash("KeyPackage Reference", v)


@SUITES
def test_verify_mac(suite_id: int) -> None:
    cs = cs_of(suite_id)
    tag = cs.mac(b"key", b"data")
    assert cs.verify_mac(b"key", b"data", tag)
    assert not cs.verify_mac(b"key", b"data!", tag)


# ------------------------------------------------------------------------------------ AEAD


@SUITES
def test_aead_round_trip_and_tamper(suite_id: int) -> None:
    cs = cs_of(suite_id)
    key, nonce = bytes(range(cs.aead_key_length)), bytes(12)
    ct = cs.aead_seal(key, nonce, b"aad", b"hello")
    assert len(ct) == 5 + 16
    assert cs.aead_open(key, nonce, b"aad", ct) == b"hello"
    tampered = bytes([ct[0] ^ 1]) + ct[1:]
    for args in (
        (key, nonce, b"aad", tampered),
        (key, nonce, b"aaX", ct),
        (bytes(cs.aead_key_length), nonce, b"aad", ct),
        (key, b"\x01" * 12, b"aad", ct),
        (key, nonce, b"aad", ct[:10]),
        (key, nonce, b"aad", b""),
    ):
        with pytest.raises(DecryptionError):
            cs.aead_open(*args)


def test_aead_bad_lengths() -> None:
    cs = cs_of(1)
    with pytest.raises(InvalidArgument):
        cs.aead_seal(bytes(15), bytes(12), b"", b"x")
    with pytest.raises(InvalidArgument):
        cs.aead_open(bytes(16), bytes(11), b"", bytes(32))


# ------------------------------------------------------------------------------------ HPKE


@SUITES
def test_hpke_round_trip(suite_id: int) -> None:
    cs = cs_of(suite_id)
    sk, pk = cs.generate_hpke_key_pair(seeded(b"r%d" % suite_id))
    assert len(sk) == cs.hpke_private_key_length and len(pk) == cs.hpke_public_key_length
    assert cs.hpke_public_key(sk) == pk
    enc, ct = cs.hpke_seal(pk, b"info", b"aad", b"secret message")
    assert len(enc) == cs.kem_output_length
    assert cs.hpke_open(sk, enc, b"info", b"aad", ct) == b"secret message"
    # Deterministic with a fixed rng.
    a = cs.hpke_seal(pk, b"info", b"aad", b"m", rng=seeded(b"e"))
    b = cs.hpke_seal(pk, b"info", b"aad", b"m", rng=seeded(b"e"))
    assert a == b


@SUITES
def test_hpke_failures_are_typed(suite_id: int) -> None:
    cs = cs_of(suite_id)
    sk, pk = cs.generate_hpke_key_pair(seeded(b"a"))
    sk2, _ = cs.generate_hpke_key_pair(seeded(b"b"))
    enc, ct = cs.hpke_seal(pk, b"info", b"aad", b"payload", rng=seeded(b"c"))
    # Wrong key, wrong info/aad, tampered ciphertext or enc.
    bad_cases = [
        (sk2, enc, b"info", b"aad", ct),
        (sk, enc, b"inf0", b"aad", ct),
        (sk, enc, b"info", b"", ct),
        (sk, enc, b"info", b"aad", ct[:-1] + bytes([ct[-1] ^ 0x80])),
        (sk, enc[:-1] + bytes([enc[-1] ^ 0x01]), b"info", b"aad", ct),
        (sk, enc[:-1], b"info", b"aad", ct),
        (sk, b"", b"info", b"aad", ct),
        (sk, enc + b"\x00", b"info", b"aad", ct),
        (sk, bytes(len(enc)), b"info", b"aad", ct),
    ]
    for args in bad_cases:
        with pytest.raises(DecryptionError):
            cs.hpke_open(*args)


@SUITES
def test_hpke_malformed_public_key(suite_id: int) -> None:
    cs = cs_of(suite_id)
    _, pk = cs.generate_hpke_key_pair(seeded(b"m"))
    bad = [pk[:-1], pk + b"\x00", b""]
    if suite_id in (2, 5, 7):
        bad.append(b"\x02" + pk[1 : 1 + (len(pk) - 1) // 2])  # compressed form is not allowed
        bad.append(b"\x04" + bytes(len(pk) - 1))  # not on the curve
        bad.append(b"\x04" + b"\xff" * (len(pk) - 1))  # coordinates out of range
    else:
        bad.append(bytes(len(pk)))  # the all-zero (low-order) point
    for p in bad:
        with pytest.raises(DecodeError):
            cs.hpke_seal(p, b"", b"", b"x")
        with pytest.raises(DecodeError):
            cs.encrypt_with_label(p, "L", b"", b"x")
        if suite_id in (2, 5, 7) or len(p) != len(pk):
            # X25519/X448 keys are any string of the right length; low order shows at DH time.
            with pytest.raises(DecodeError):
                cs.check_hpke_public_key(p)
    cs.check_hpke_public_key(pk)


@SUITES
def test_hpke_malformed_private_key(suite_id: int) -> None:
    cs = cs_of(suite_id)
    with pytest.raises(InvalidArgument):
        cs.hpke_public_key(b"\x01" * (cs.hpke_private_key_length - 1))
    if suite_id in (2, 5, 7):
        with pytest.raises(InvalidArgument):
            cs.hpke_public_key(bytes(cs.hpke_private_key_length))  # zero scalar
        with pytest.raises(InvalidArgument):
            cs.hpke_public_key(b"\xff" * cs.hpke_private_key_length)  # >= order


@SUITES
def test_derive_key_pair_deterministic(suite_id: int) -> None:
    cs = cs_of(suite_id)
    sk, pk = cs.derive_key_pair(b"ikm")
    assert (sk, pk) == cs.derive_key_pair(b"ikm")
    assert cs.derive_key_pair(b"ikm2") != (sk, pk)
    assert cs.hpke_public_key(sk) == pk
    kem_output, ct = cs.encrypt_with_label(pk, "Label", b"ctx", b"pt")
    assert cs.decrypt_with_label(sk, "Label", b"ctx", kem_output, ct) == b"pt"
    with pytest.raises(DecryptionError):
        cs.decrypt_with_label(sk, "Other", b"ctx", kem_output, ct)


# RFC 9180 appendix A test vectors (mode_base): DeriveKeyPair(ikmR) and one encryption.
RFC9180 = [
    pytest.param(
        1,  # DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM (A.1.1)
        "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
        "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
        "3948cfe0ad1ddb695d780e59077195da6c56506b",
        id="x25519",
    ),
    pytest.param(
        2,  # DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-128-GCM (A.3.1)
        "668b37171f1072f3cf12ea8a236a45df23fc13b82af3609ad1e354f6ef817550",
        "f3ce7fdae57e1a310d87f1ebbde6f328be0a99cdbcadf4d6589cf29de4b8ffd2",
        "04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f706a826a779b4cf969b8a0e539c7f62fb3d30ad6aa8f80e30f1d128aafd68a2ce72ea0",
        id="p256",
    ),
]


@pytest.mark.parametrize(("suite_id", "ikm_r", "sk_r", "pk_r"), RFC9180)
def test_rfc9180_derive_key_pair(suite_id: int, ikm_r: str, sk_r: str, pk_r: str) -> None:
    cs = cs_of(suite_id)
    sk, pk = cs.derive_key_pair(bytes.fromhex(ikm_r))
    assert sk.hex() == sk_r
    if len(pk_r) > 40:
        assert pk.hex() == pk_r
    else:
        assert pk.hex().startswith(pk_r)


# ------------------------------------------------------------------------------ signatures


@SUITES
def test_signature_round_trip(suite_id: int) -> None:
    cs = cs_of(suite_id)
    sk, pk = cs.generate_signature_key_pair(seeded(b"s%d" % suite_id))
    assert len(sk) == cs.signature_private_key_length and len(pk) == cs.signature_public_key_length
    assert cs.signature_public_key(sk) == pk
    cs.check_signature_public_key(pk)
    sig = cs.sign(sk, b"msg")
    cs.verify(pk, b"msg", sig)
    sig2 = cs.sign_with_label(sk, "LeafNodeTBS", b"content")
    cs.verify_with_label(pk, "LeafNodeTBS", b"content", sig2)
    with pytest.raises(SignatureError):
        cs.verify(pk, b"msg", sig2)


@SUITES
def test_bad_signatures_are_typed(suite_id: int) -> None:
    cs = cs_of(suite_id)
    sk, pk = cs.generate_signature_key_pair(seeded(b"x"))
    _, pk2 = cs.generate_signature_key_pair(seeded(b"y"))
    sig = cs.sign(sk, b"msg")
    for p, m, s in (
        (pk2, b"msg", sig),
        (pk, b"msh", sig),
        (pk, b"msg", sig[:-1] + bytes([sig[-1] ^ 1])),
        (pk, b"msg", sig[:-1]),
        (pk, b"msg", b""),
        (pk, b"msg", b"\x30\x00"),
        (pk, b"msg", bytes(len(sig))),
        (pk[:-1], b"msg", sig),
        (b"", b"msg", sig),
        (bytes(len(pk)), b"msg", sig),
    ):
        with pytest.raises(SignatureError):
            cs.verify(p, m, s)


@SUITES
def test_malformed_signature_public_key(suite_id: int) -> None:
    cs = cs_of(suite_id)
    _, pk = cs.generate_signature_key_pair(seeded(b"k"))
    for p in (pk[:-1], pk + b"\x00", b""):
        with pytest.raises(DecodeError):
            cs.check_signature_public_key(p)
    if suite_id in (2, 5, 7):
        with pytest.raises(DecodeError):
            cs.check_signature_public_key(b"\x04" + bytes(len(pk) - 1))


@SUITES
def test_malformed_signature_private_key(suite_id: int) -> None:
    cs = cs_of(suite_id)
    with pytest.raises(InvalidArgument):
        cs.sign(b"\x01" * (cs.signature_private_key_length + 1), b"m")
    with pytest.raises(InvalidArgument):
        cs.signature_public_key(b"")


def test_ecdsa_signature_is_der() -> None:
    cs = cs_of(2)
    sk, _ = cs.generate_signature_key_pair(seeded(b"der"))
    sig = cs.sign(sk, b"m")
    assert sig[0] == 0x30 and sig[1] == len(sig) - 2


def test_errors_are_remote_input_errors() -> None:
    assert issubclass(SignatureError, RemoteInputError)
    assert issubclass(DecryptionError, RemoteInputError)
    assert issubclass(DecodeError, RemoteInputError)


# ------------------------------------------------------------------------------ no leakage


@SUITES
def test_repr_leaks_nothing(suite_id: int) -> None:
    cs = cs_of(suite_id)
    r = repr(cs)
    assert str(suite_id) in r
    assert "_hpke" not in r and "_sig" not in r
    sk, pk = cs.generate_hpke_key_pair(seeded(b"leak"))
    enc, ct = cs.hpke_seal(pk, b"", b"", b"p")
    try:
        cs.hpke_open(sk, enc, b"x", b"", ct)
    except DecryptionError as e:
        msg = str(e) + repr(e)
        assert sk.hex() not in msg and pk.hex() not in msg
        assert e.__cause__ is None and e.__suppress_context__
    ssk, spk = cs.generate_signature_key_pair(seeded(b"leak2"))
    try:
        cs.verify(spk, b"m", cs.sign(ssk, b"n"))
    except SignatureError as e:
        msg = str(e) + repr(e)
        assert ssk.hex() not in msg and spk.hex() not in msg
    try:
        cs.sign(ssk[:-1], b"m")
    except InvalidArgument as e:
        assert ssk[:-1].hex() not in str(e)
