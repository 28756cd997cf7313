"""Unit tests of crdt_mls.mls.suites and crdt_mls.mls.hpke (RFC 9420 section 5, RFC 9180)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# RFC 9180 appendix A test vectors (mode_base), for the HPKE suites equal to MLS suites
# 1 (A.1.1), 3 (A.2.1), 2 (A.3.1) and 5 (A.6.1).  "" marks a value not checked.
INFO = "4f6465206f6e2061204772656369616e2055726e"
PT = "4265617574792069732074727574682c20747275746820626561757479"
AAD0 = "436f756e742d30"
RFC9180 = [
    pytest.param(
        1,
        "7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
        "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
        "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
        "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
        "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
        "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
        "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
        id="A.1.1-x25519-aes128",
    ),
    pytest.param(
        3,
        "",
        "f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600",
        "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95",  # prefix
        "",
        "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb",
        "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a",
        "",
        "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28",
        id="A.2.1-x25519-chacha",
    ),
    pytest.param(
        2,
        "4270e54ffd08d79d5928020af4686d8f6b7d35dbe470265f1f5aa22816ce860e",
        "4995788ef4b9d6132b249ce59a77281493eb39af373d236a1fe415cb0c2d7beb",
        "04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b325ac98536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18c4",
        "668b37171f1072f3cf12ea8a236a45df23fc13b82af3609ad1e354f6ef817550",
        "f3ce7fdae57e1a310d87f1ebbde6f328be0a99cdbcadf4d6589cf29de4b8ffd2",
        "04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f706a826a779b4cf969b8a0e539c7f62fb3d30ad6aa8f80e30f1d128aafd68a2ce72ea0",
        "c0d26aeab536609a572b07695d933b589dcf363ff9d93c93adea537aeabb8cb8",
        "5ad590bb8baa577f8619db35a36311226a896e7342a6d836d8b7bcd2f20b6c7f9076ac232e3ab2523f39513434",
        id="A.3.1-p256-aes128",
    ),
    pytest.param(
        5,
        "7f06ab8215105fc46aceeb2e3dc5028b44364f960426eb0d8e4026c2f8b5d7e7a986688f1591abf5ab753c357a5d6f0440414b4ed4ede71317772ac98d9239f70904",
        "014784c692da35df6ecde98ee43ac425dbdd0969c0c72b42f2e708ab9d535415a8569bdacfcc0a114c85b8e3f26acf4d68115f8c91a66178cdbd03b7bcc5291e374b",
        "040138b385ca16bb0d5fa0c0665fbbd7e69e3ee29f63991d3e9b5fa740aab8900aaeed46ed73a49055758425a0ce36507c54b29cc5b85a5cee6bae0cf1c21f2731ece2013dc3fb7c8d21654bb161b463962ca19e8c654ff24c94dd2898de12051f1ed0692237fb02b2f8d1dc1c73e9b366b529eb436e98a996ee522aef863dd5739d2f29b0",
        "",
        "01462680369ae375e4b3791070a7458ed527842f6a98a79ff5e0d4cbde83c27196a3916956655523a6a2556a7af62c5cadabe2ef9da3760bb21e005202f7b2462847",
        "0401b45498c1714e2dce167d3caf162e45e0642afc7ed435df7902ccae0e84ba0f7d373f646b7738bbbdca11ed91bdeae3cdcba3301f2457be452f271fa6837580e661012af49583a62e48d44bed350c7118c0d8dc861c238c72a2bda17f64704f464b57338e7f40b60959480c0e58e6559b190d81663ed816e523b6b6a418f66d2451ec64",
        "776ab421302f6eff7d7cb5cb1adaea0cd50872c71c2d63c30c4f1d5e43653336fef33b103c67e7a98add2d3b66e2fda95b5b2a667aa9dac7e59cc1d46d30e818",
        "",
        id="A.6.1-p521-aes256",
    ),
]


def fixed_rng(value: bytes) -> Callable[[int], bytes]:
    """An rng that returns ``value`` once (the ephemeral private key of a test vector)."""
    state = [value]

    def rng(n: int) -> bytes:
        v = state.pop()
        assert len(v) == n
        return v

    return rng


@pytest.mark.parametrize(("suite_id", "ikm_e", "sk_e", "pk_e", "ikm_r", "sk_r", "pk_r", "shared", "ct"), RFC9180)
def test_rfc9180_base_mode(
    suite_id: int, ikm_e: str, sk_e: str, pk_e: str, ikm_r: str, sk_r: str, pk_r: str, shared: str, ct: str
) -> None:
    cs = cs_of(suite_id)
    kem = cs._hpke.kem
    if ikm_e:
        assert cs.derive_key_pair(bytes.fromhex(ikm_e)) == (bytes.fromhex(sk_e), kem.public_key(bytes.fromhex(sk_e)))
        assert kem.public_key(bytes.fromhex(sk_e)).hex() == pk_e
    if ikm_r:
        assert cs.derive_key_pair(bytes.fromhex(ikm_r)) == (bytes.fromhex(sk_r), bytes.fromhex(pk_r))
    assert cs.hpke_public_key(bytes.fromhex(sk_r)).hex() == pk_r
    # Encap with the vector's ephemeral key gives the vector's enc and shared secret.
    ss, enc = kem.encap(bytes.fromhex(pk_r), fixed_rng(bytes.fromhex(sk_e)))
    assert enc.hex().startswith(pk_e)
    if shared:
        assert ss.hex() == shared
        assert kem.decap(enc, bytes.fromhex(sk_r)).hex() == shared
    if ct:
        enc2, ct2 = cs.hpke_seal(
            bytes.fromhex(pk_r),
            bytes.fromhex(INFO),
            bytes.fromhex(AAD0),
            bytes.fromhex(PT),
            fixed_rng(bytes.fromhex(sk_e)),
        )
        assert (enc2, ct2.hex()) == (enc, ct)
        opened = cs.hpke_open(bytes.fromhex(sk_r), enc, bytes.fromhex(INFO), bytes.fromhex(AAD0), bytes.fromhex(ct))
        assert opened.hex() == PT


def test_p256_derive_key_pair_rejection_sampling() -> None:
    """draft-ietf-hpke-hpke (RFC 9180 successor) appendix D.1: the counter=0 candidate exceeds the order."""
    sk, pk = cs_of(2).derive_key_pair(bytes.fromhex("68706b652d656467652d703235362d72656a656374696f6e00000001c6be4ce7"))
    assert sk.hex() == "d9cbff7adaa1c604a2e4fcfb762c9e1c5ed7d2e33b15fcad4c6c3f23a9637325"
    assert pk.hex() == (
        "04d3bec6a691f47bbedd5caa1d51c7228f6afeeec5576495b855bbe6595e49643570be005fc177b3d80f6eeef280b1cf8a565d7ca28116dee2e875550ef3050ca8"
    )


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


# ---------------------------------------------------------------------------------- misc


@SUITES
def test_clear_key_caches(suite_id: int) -> None:
    from crdt_mls.mls.suites import clear_key_caches

    cs = cs_of(suite_id)
    sk, pk = cs.generate_signature_key_pair(seeded(b"cache"))
    sig = cs.sign(sk, b"m")
    clear_key_caches()
    cs.verify(pk, b"m", sig)
    cs.verify(pk, b"m", cs.sign(sk, b"m"))


def test_expand_with_label_length_is_uint16() -> None:
    cs = cs_of(1)
    with pytest.raises(InvalidArgument):
        cs.expand_with_label(bytes(32), "x", b"", 1 << 16)
    with pytest.raises(InvalidArgument):
        cs.expand_with_label(bytes(32), "x", b"", -1)


@SUITES
def test_hpke_open_malformed_private_key(suite_id: int) -> None:
    cs = cs_of(suite_id)
    _, pk = cs.generate_hpke_key_pair(seeded(b"p"))
    enc, ct = cs.hpke_seal(pk, b"", b"", b"x")
    with pytest.raises(InvalidArgument):
        cs.hpke_open(b"\x01" * (cs.hpke_private_key_length + 1), enc, b"", b"", ct)


@SUITES
def test_bytearray_and_memoryview_inputs(suite_id: int) -> None:
    cs = cs_of(suite_id)
    sk, pk = cs.generate_signature_key_pair(seeded(b"ba"))
    # The annotations say bytes; buffers from a decoder must still work at run time.
    sig = cs.sign_with_label(bytearray(sk), "L", b"c")  # type: ignore[arg-type]
    cs.verify_with_label(memoryview(pk), "L", b"c", sig)  # type: ignore[arg-type]
    hsk, hpk = cs.generate_hpke_key_pair(seeded(b"bb"))
    enc, ct = cs.encrypt_with_label(bytearray(hpk), "L", b"c", b"p")  # type: ignore[arg-type]
    assert cs.decrypt_with_label(memoryview(hsk), "L", b"c", bytearray(enc), ct) == b"p"  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ properties


@settings(max_examples=40, deadline=None)
@given(
    suite_id=st.sampled_from(SUPPORTED_SUITES),
    info=st.binary(max_size=64),
    aad=st.binary(max_size=64),
    pt=st.binary(max_size=200),
    flip=st.integers(min_value=0),
)
def test_hpke_round_trip_and_any_bit_flip_fails(suite_id: int, info: bytes, aad: bytes, pt: bytes, flip: int) -> None:
    cs = cs_of(suite_id)
    sk, pk = cs.derive_key_pair(b"property")
    enc, ct = cs.hpke_seal(pk, info, aad, pt)
    assert len(ct) == len(pt) + 16
    assert cs.hpke_open(sk, enc, info, aad, ct) == pt
    blob = bytearray(enc + ct)
    pos = flip % (len(blob) * 8)
    blob[pos // 8] ^= 1 << (pos % 8)
    with pytest.raises(DecryptionError):
        cs.hpke_open(sk, bytes(blob[: len(enc)]), info, aad, bytes(blob[len(enc) :]))


@settings(max_examples=40, deadline=None)
@given(
    suite_id=st.sampled_from(SUPPORTED_SUITES),
    label=st.text(max_size=20),
    content=st.binary(max_size=200),
    flip=st.integers(min_value=0),
)
def test_signature_round_trip_and_any_bit_flip_fails(suite_id: int, label: str, content: bytes, flip: int) -> None:
    cs = cs_of(suite_id)
    sk, pk = cs.generate_signature_key_pair(seeded(b"prop-sig"))
    sig = cs.sign_with_label(sk, label, content)
    cs.verify_with_label(pk, label, content, sig)
    blob = bytearray(sig)
    pos = flip % (len(blob) * 8)
    blob[pos // 8] ^= 1 << (pos % 8)
    with pytest.raises(SignatureError):
        cs.verify_with_label(pk, label, content, bytes(blob))


@pytest.mark.parametrize("suite_id", [1, 2, 4])
def test_public_key_cache_holds_no_private_key(monkeypatch: pytest.MonkeyPatch, suite_id: int) -> None:
    from crdt_mls.mls import hpke

    monkeypatch.setattr(hpke, "_PUBLIC_MAX", 8)
    hpke.clear_public_key_caches()
    cs = cs_of(suite_id)
    keys = [cs.derive_key_pair(bytes([i])) for i in range(20)]
    assert len(hpke._PUBLIC) <= 8
    for sk, pk in keys:
        assert sk not in hpke._PUBLIC and sk not in hpke._PUBLIC.values()
        assert cs.hpke_public_key(sk) == pk  # cached or recomputed, always right
    enc, ct = cs.hpke_seal(keys[0][1], b"i", b"a", b"p")
    assert cs.hpke_open(keys[0][0], enc, b"i", b"a", ct) == b"p"


@pytest.mark.parametrize("suite_id", [1, 2, 3, 5, 7])
def test_interop_with_cryptography_hpke(suite_id: int) -> None:
    """Cross-check against the independent HPKE of `cryptography` (no X448 there)."""
    from cryptography.hazmat.primitives import hpke as chpke
    from cryptography.hazmat.primitives.asymmetric import ec, x25519

    cs = cs_of(suite_id)
    kem, kdf, aead = {
        1: (chpke.KEM.X25519, chpke.KDF.HKDF_SHA256, chpke.AEAD.AES_128_GCM),
        2: (chpke.KEM.P256, chpke.KDF.HKDF_SHA256, chpke.AEAD.AES_128_GCM),
        3: (chpke.KEM.X25519, chpke.KDF.HKDF_SHA256, chpke.AEAD.CHACHA20_POLY1305),
        5: (chpke.KEM.P521, chpke.KDF.HKDF_SHA512, chpke.AEAD.AES_256_GCM),
        7: (chpke.KEM.P384, chpke.KDF.HKDF_SHA384, chpke.AEAD.AES_256_GCM),
    }[suite_id]
    theirs = chpke.Suite(kem, kdf, aead)
    sk, pk = cs.derive_key_pair(b"interop")
    csk: x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
    cpk: x25519.X25519PublicKey | ec.EllipticCurvePublicKey
    if suite_id in (1, 3):
        csk = x25519.X25519PrivateKey.from_private_bytes(sk)
        cpk = x25519.X25519PublicKey.from_public_bytes(pk)
    else:
        curve = {2: ec.SECP256R1(), 5: ec.SECP521R1(), 7: ec.SECP384R1()}[suite_id]
        csk = ec.derive_private_key(int.from_bytes(sk, "big"), curve)
        cpk = ec.EllipticCurvePublicKey.from_encoded_point(curve, pk)
    n = cs.kem_output_length
    blob = theirs.encrypt(b"plaintext", cpk, info=b"info")
    assert cs.hpke_open(sk, blob[:n], b"info", b"", blob[n:]) == b"plaintext"
    enc, ct = cs.hpke_seal(pk, b"info", b"", b"plaintext")
    assert theirs.decrypt(enc + ct, csk, info=b"info") == b"plaintext"


def test_ed25519_interop_with_openssl() -> None:
    """libsodium (ours) and OpenSSL (`cryptography`) agree on Ed25519 (deterministic signatures)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    cs = cs_of(1)
    sk, pk = cs.generate_signature_key_pair(seeded(b"ed"))
    other = ed25519.Ed25519PrivateKey.from_private_bytes(sk)
    assert other.public_key().public_bytes_raw() == pk
    assert other.sign(b"message") == cs.sign(sk, b"message")
    other.public_key().verify(cs.sign(sk, b"m2"), b"m2")
    cs.verify(pk, b"m3", other.sign(b"m3"))


def test_ed25519_rfc8032_test1() -> None:
    """RFC 8032 section 7.1, TEST 1 (empty message)."""
    cs = cs_of(1)
    sk = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert cs.signature_public_key(sk) == pk
    assert cs.sign(sk, b"") == sig
    cs.verify(pk, b"", sig)


def _hkdf_expand_reference(cs: CipherSuite, prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand through `cryptography` (an independent implementation)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    algo = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[cs.hash_name]
    return HKDFExpand(algo, length, info).derive(prk) if length else b""


@SUITES
@given(
    label=st.text(max_size=20),
    context=st.binary(max_size=300),
    length=st.integers(0, 200),
)
@settings(max_examples=60, deadline=None)
def test_expand_with_label_is_hkdf_expand_of_the_kdf_label(
    suite_id: int, label: str, context: bytes, length: int
) -> None:
    cs = cs_of(suite_id)
    secret = hashlib.sha256(label.encode() + context).digest() * 2
    mls_label = b"MLS 1.0 " + label.encode()
    kdf_label = length.to_bytes(2, "big") + _varint(len(mls_label)) + mls_label + _varint(len(context)) + context
    want = _hkdf_expand_reference(cs, secret, kdf_label, length)
    assert cs.expand_with_label(secret, label, context, length) == want
    assert cs.expand_with_label(secret, label, context, length) == want  # memoized head
    assert cs.kdf_expand(secret, kdf_label, length) == want


def _varint(n: int) -> bytes:
    """RFC 9420 section 2.1.2 variable-length integer (written out here as the reference)."""
    if n < 1 << 6:
        return n.to_bytes(1, "big")
    if n < 1 << 14:
        return (n | 0x4000).to_bytes(2, "big")
    return (n | 0x80000000).to_bytes(4, "big")
