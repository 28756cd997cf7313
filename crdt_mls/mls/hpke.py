"""HPKE base mode (RFC 9180) composed from DH, HKDF and AEAD primitives.

Only what MLS needs (RFC 9420 section 5.1.3): `SealBase`/`OpenBase` single-shot with
sequence number 0, `DeriveKeyPair`, `GenerateKeyPair` and the five DHKEMs
(X25519, X448, P-256, P-384, P-521, RFC 9180 section 4.1 and 7.1).

Key formats: X25519/X448 private and public keys are the raw RFC 7748 strings; P-curve
private keys are the big-endian scalar of ``Nsk`` bytes and public keys the uncompressed
SEC1 point (RFC 9180 section 7.1.1).

Errors: a malformed recipient public key given to `Hpke.seal` is a `DecodeError`; any
failure while opening (malformed ``enc``, low-order point, wrong key, tampered ciphertext)
is a `DecryptionError`; a malformed local private key is an `InvalidArgument`.  No message
contains key material.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol, TypeVar

import nacl.bindings as _nacl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, x448
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crdt_mls.errors import DecodeError, DecryptionError, InvalidArgument
from crdt_mls.mls import parallel, sodium

try:  # the C HMAC object behind hmac.new, without its per-call dispatch: for short inputs
    # hmac_new(...).digest() measured ~1.3 us against ~2.2 us for _hashlib.hmac_digest (which
    # looks the digest up by name on every call); both keep the GIL
    from _hashlib import hmac_new as _hmac_new
except ImportError:  # pragma: no cover - CPython without OpenSSL
    _hmac_new = hmac.new  # type: ignore[assignment]

Rng = Callable[[int], bytes]
R = TypeVar("R")

_HPKE_V1 = b"HPKE-v1"
_ZERO = {n: bytes(n) for n in (32, 48, 64)}

# ----------------------------------------------------------------------------------- KDF


@dataclass(frozen=True, slots=True)
class Kdf:
    """HKDF with one hash (RFC 5869; RFC 9180 section 7.2), over stdlib ``hmac``."""

    kdf_id: int
    hash_name: str
    nh: int

    def extract(self, salt: bytes, ikm: bytes) -> bytes:
        """HKDF-Extract; an empty salt means ``Nh`` zero bytes (RFC 5869 section 2.2)."""
        return _hmac_new(salt or _ZERO[self.nh], ikm, self.hash_name).digest()

    def expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        """HKDF-Expand (RFC 5869 section 2.3)."""
        nh = self.nh
        if length > 255 * nh or length < 0:
            raise InvalidArgument(f"HKDF-Expand length {length} exceeds 255*Nh")
        name = self.hash_name
        if length <= nh:
            return _hmac_new(prk, info + b"\x01", name).digest()[:length]
        out = bytearray()
        t = b""
        i = 1
        while len(out) < length:
            t = _hmac_new(prk, t + info + bytes((i,)), name).digest()
            out += t
            i += 1
        return bytes(out[:length])

    def labeled_extract(self, suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        """LabeledExtract (RFC 9180 section 4)."""
        return self.extract(salt, _HPKE_V1 + suite_id + label + ikm)

    def labeled_expand(self, suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        """LabeledExpand (RFC 9180 section 4)."""
        return self.expand(prk, length.to_bytes(2, "big") + _HPKE_V1 + suite_id + label + info, length)


HKDF_SHA256 = Kdf(0x0001, "sha256", 32)
HKDF_SHA384 = Kdf(0x0002, "sha384", 48)
HKDF_SHA512 = Kdf(0x0003, "sha512", 64)

# ---------------------------------------------------------------------------------- AEAD


@dataclass(frozen=True, slots=True)
class Aead:
    """An AEAD of RFC 9180 section 7.3 (AES-128-GCM, AES-256-GCM, ChaCha20Poly1305)."""

    aead_id: int
    nk: int
    nn: int
    nt: int = 16
    _cls: type[AESGCM] | type[ChaCha20Poly1305] = field(default=AESGCM, repr=False, compare=False)

    def _check(self, key: bytes, nonce: bytes) -> None:
        if len(key) != self.nk:
            raise InvalidArgument(f"AEAD key must be {self.nk} bytes, got {len(key)}")
        if len(nonce) != self.nn:
            raise InvalidArgument(f"AEAD nonce must be {self.nn} bytes, got {len(nonce)}")

    def seal(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        """Seal: ciphertext || tag."""
        self._check(key, nonce)
        return self._cls(key).encrypt(nonce, plaintext, aad)

    def open(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        """Open; a wrong key, nonce, aad or a tampered ciphertext is a `DecryptionError`."""
        self._check(key, nonce)
        if len(ciphertext) < self.nt:
            raise DecryptionError(f"AEAD ciphertext of {len(ciphertext)} bytes is shorter than the tag")
        try:
            return self._cls(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise DecryptionError("AEAD authentication failed") from None


AES_128_GCM = Aead(0x0001, 16, 12, 16, AESGCM)
AES_256_GCM = Aead(0x0002, 32, 12, 16, AESGCM)
CHACHA20_POLY1305 = Aead(0x0003, 32, 12, 16, ChaCha20Poly1305)

# ----------------------------------------------------------------------------------- KEM


class DhGroup(Protocol):
    """The Diffie-Hellman group underneath a DHKEM (RFC 9180 section 4.1)."""

    @property
    def npk(self) -> int: ...
    @property
    def nsk(self) -> int: ...

    def generate_private(self, rng: Rng) -> bytes: ...
    def derive_private(self, kem: DhKem, ikm: bytes) -> bytes: ...
    def public_key(self, sk: bytes) -> bytes: ...
    def ephemeral_dh(self, rng: Rng, pk: bytes) -> tuple[bytes, bytes]: ...
    def static_dh(self, sk: bytes, pk: bytes) -> tuple[bytes, bytes]: ...
    def check_public(self, pk: bytes) -> None: ...


class _BadPoint(Exception):
    """Internal: a public key is malformed or DH produced the identity / all-zero output."""


class _BadPrivate(Exception):
    """Internal: a private key is malformed."""


#: SHA-256(group name || private key) -> public key.  Keyed by a one-way hash so that no
#: private key is retained (forward secrecy); saves a scalar multiplication per Decap and
#: per `public_key` call on a key seen before (e.g. DeriveKeyPair then OpenBase).
_PUBLIC: dict[bytes, bytes] = {}
_PUBLIC_MAX = 4096


def _public_cached(group: bytes, sk: bytes, compute: Callable[[bytes], bytes]) -> bytes:
    tag = hashlib.sha256(group + sk).digest()
    pk = _PUBLIC.get(tag)
    if pk is None:
        pk = compute(sk)
        if len(_PUBLIC) >= _PUBLIC_MAX:
            _PUBLIC.pop(next(iter(_PUBLIC)), None)
        _PUBLIC[tag] = pk
    return pk


def _remember_public(group: bytes, sk: bytes, pk: bytes) -> None:
    """Enter a public key computed elsewhere (a batch) into the `_public_cached` cache."""
    if len(_PUBLIC) >= _PUBLIC_MAX:
        _PUBLIC.pop(next(iter(_PUBLIC)), None)
    _PUBLIC[hashlib.sha256(group + sk).digest()] = pk


@dataclass(frozen=True, slots=True)
class _X25519:
    """X25519 (RFC 7748) via libsodium (faster than OpenSSL for single operations here)."""

    npk: int = 32
    nsk: int = 32

    def generate_private(self, rng: Rng) -> bytes:
        sk = rng(32)
        if len(sk) != 32:
            raise InvalidArgument("rng returned the wrong number of bytes")
        return sk

    def derive_private(self, kem: DhKem, ikm: bytes) -> bytes:
        """``LabeledExtract("", "dkp_prk", ikm)`` then ``LabeledExpand(prk, "sk", "", 32)``
        (RFC 9180 section 7.1.3), each one HMAC (the expand fits one block)."""
        name = kem.kdf.hash_name
        sid = kem.suite_id
        prk = _hmac_new(_ZERO[kem.kdf.nh], _HPKE_V1 + sid + b"dkp_prk" + ikm, name).digest()
        return _hmac_new(prk, b"\x00\x20" + _HPKE_V1 + sid + b"sk\x01", name).digest()[:32]

    def public_key(self, sk: bytes) -> bytes:
        if len(sk) != 32:
            raise _BadPrivate
        return _public_cached(b"X25519", sk, _nacl.crypto_scalarmult_base)

    def check_public(self, pk: bytes) -> None:
        if len(pk) != 32:
            raise _BadPoint

    def ephemeral_dh(self, rng: Rng, pk: bytes) -> tuple[bytes, bytes]:
        """Fresh ephemeral key -> (its public key, DH with ``pk``)."""
        sk = self.generate_private(rng)
        return _nacl.crypto_scalarmult_base(sk), self.dh(sk, pk)

    def static_dh(self, sk: bytes, pk: bytes) -> tuple[bytes, bytes]:
        """(DH(sk, pk), public key of sk) for Decap."""
        return self.dh(sk, pk), self.public_key(sk)

    def dh(self, sk: bytes, pk: bytes) -> bytes:
        if len(sk) != 32:
            raise _BadPrivate
        if len(pk) != 32:
            raise _BadPoint
        try:
            return _nacl.crypto_scalarmult(sk, pk)
        except Exception:  # libsodium rejects an all-zero (low-order) result
            raise _BadPoint from None


@dataclass(frozen=True, slots=True)
class _X448:
    """X448 (RFC 7748) via `cryptography`."""

    npk: int = 56
    nsk: int = 56

    def generate_private(self, rng: Rng) -> bytes:
        sk = rng(56)
        if len(sk) != 56:
            raise InvalidArgument("rng returned the wrong number of bytes")
        return sk

    def derive_private(self, kem: DhKem, ikm: bytes) -> bytes:
        prk = kem.labeled_extract(b"", b"dkp_prk", ikm)
        return kem.labeled_expand(prk, b"sk", b"", 56)

    def public_key(self, sk: bytes) -> bytes:
        return _public_cached(b"X448", sk, lambda k: _x448_private(k).public_key().public_bytes_raw())

    def check_public(self, pk: bytes) -> None:
        _x448_public(pk)

    def ephemeral_dh(self, rng: Rng, pk: bytes) -> tuple[bytes, bytes]:
        """Fresh ephemeral key -> (its public key, DH with ``pk``)."""
        dh, enc = self.static_dh(self.generate_private(rng), pk)
        return enc, dh

    def static_dh(self, sk: bytes, pk: bytes) -> tuple[bytes, bytes]:
        """(DH(sk, pk), public key of sk) for Decap."""
        priv = _x448_private(sk)
        pub = _x448_public(pk)
        try:
            return priv.exchange(pub), priv.public_key().public_bytes_raw()
        except ValueError:
            raise _BadPoint from None


def _x448_private(sk: bytes) -> x448.X448PrivateKey:
    if len(sk) != 56:
        raise _BadPrivate
    return x448.X448PrivateKey.from_private_bytes(sk)


@lru_cache(maxsize=4096)
def _x448_public(pk: bytes) -> x448.X448PublicKey:
    if len(pk) != 56:
        raise _BadPoint
    try:
        return x448.X448PublicKey.from_public_bytes(pk)
    except ValueError:
        raise _BadPoint from None


@dataclass(frozen=True, slots=True)
class _NistCurve:
    """P-256 / P-384 / P-521 ECDH (RFC 9180 section 7.1) via `cryptography`."""

    curve: ec.EllipticCurve
    order: int
    nsk: int
    npk: int
    bitmask: int

    def generate_private(self, rng: Rng) -> bytes:
        for _ in range(256):
            cand = bytearray(rng(self.nsk))
            if len(cand) != self.nsk:
                raise InvalidArgument("rng returned the wrong number of bytes")
            cand[0] &= self.bitmask
            sk = int.from_bytes(cand, "big")
            if 0 < sk < self.order:
                return bytes(cand)
        raise InvalidArgument("rng failed to produce a valid scalar")  # pragma: no cover

    def derive_private(self, kem: DhKem, ikm: bytes) -> bytes:
        """DeriveKeyPair by rejection sampling with a bitmask (RFC 9180 section 7.1.3)."""
        prk = kem.labeled_extract(b"", b"dkp_prk", ikm)
        for counter in range(256):
            cand = bytearray(kem.labeled_expand(prk, b"candidate", bytes((counter,)), self.nsk))
            cand[0] &= self.bitmask
            sk = int.from_bytes(cand, "big")
            if 0 < sk < self.order:
                return bytes(cand)
        raise InvalidArgument("DeriveKeyPair failed after 256 candidates")  # pragma: no cover

    def public_key(self, sk: bytes) -> bytes:
        return _public_cached(self.curve.name.encode(), sk, self._public_uncached)

    def _public_uncached(self, sk: bytes) -> bytes:
        priv = _ec_private(self.curve, self.nsk, sk)
        return priv.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def check_public(self, pk: bytes) -> None:
        _ec_public(self.curve, self.npk, pk)

    def ephemeral_dh(self, rng: Rng, pk: bytes) -> tuple[bytes, bytes]:
        """Fresh ephemeral key -> (its public key, DH with ``pk``)."""
        dh, enc = self.static_dh(self.generate_private(rng), pk)
        return enc, dh

    def static_dh(self, sk: bytes, pk: bytes) -> tuple[bytes, bytes]:
        """(DH(sk, pk), public key of sk) for Decap; the private key is parsed once."""
        priv = _ec_private(self.curve, self.nsk, sk)
        pub = _ec_public(self.curve, self.npk, pk)
        own = priv.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        try:
            return priv.exchange(ec.ECDH(), pub), own
        except ValueError:
            raise _BadPoint from None


def _ec_private(curve: ec.EllipticCurve, nsk: int, sk: bytes) -> ec.EllipticCurvePrivateKey:
    if len(sk) != nsk:
        raise _BadPrivate
    try:
        return ec.derive_private_key(int.from_bytes(sk, "big"), curve)
    except ValueError:
        raise _BadPrivate from None


@lru_cache(maxsize=4096)
def _ec_public(curve: ec.EllipticCurve, npk: int, pk: bytes) -> ec.EllipticCurvePublicKey:
    if len(pk) != npk or pk[0] != 0x04:
        raise _BadPoint
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, pk)
    except ValueError:
        raise _BadPoint from None


@lru_cache(maxsize=256)
def ec_private_key(curve: ec.EllipticCurve, nsk: int, sk: bytes) -> ec.EllipticCurvePrivateKey:
    """Parsed P-curve private key from a big-endian scalar; `InvalidArgument` if bad.

    Cached: meant for long-lived signature keys only (HPKE keys are never cached, so that
    deleting them keeps forward secrecy; see `crdt_mls.mls.suites.clear_key_caches`).
    """
    try:
        return _ec_private(curve, nsk, sk)
    except _BadPrivate:
        raise InvalidArgument(f"malformed {curve.name} private key") from None


def ec_public_key(curve: ec.EllipticCurve, npk: int, pk: bytes) -> ec.EllipticCurvePublicKey:
    """Parsed (cached) uncompressed SEC1 P-curve point; `DecodeError` if it is not on the curve."""
    try:
        return _ec_public(curve, npk, pk)
    except _BadPoint:
        raise DecodeError(f"malformed {curve.name} public key ({len(pk)} bytes)") from None


@dataclass(frozen=True, slots=True)
class DhKem:
    """DHKEM(Group, HKDF) of RFC 9180 section 4.1."""

    kem_id: int
    group: DhGroup = field(repr=False, compare=False)
    kdf: Kdf = field(repr=False)
    nsecret: int
    suite_id: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "suite_id", b"KEM" + self.kem_id.to_bytes(2, "big"))

    @property
    def nenc(self) -> int:
        return self.group.npk

    @property
    def npk(self) -> int:
        return self.group.npk

    @property
    def nsk(self) -> int:
        return self.group.nsk

    def labeled_extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return self.kdf.labeled_extract(self.suite_id, salt, label, ikm)

    def labeled_expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        return self.kdf.labeled_expand(self.suite_id, prk, label, info, length)

    def _extract_and_expand(self, dh: bytes, kem_context: bytes) -> bytes:
        eae_prk = self.labeled_extract(b"", b"eae_prk", dh)
        return self.labeled_expand(eae_prk, b"shared_secret", kem_context, self.nsecret)

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """DeriveKeyPair (RFC 9180 section 7.1.3) -> (private, public)."""
        sk = self.group.derive_private(self, ikm)
        return sk, self.public_key(sk)

    def derive_private_key(self, ikm: bytes) -> bytes:
        """The private half of DeriveKeyPair (RFC 9180 section 7.1.3), without the scalar
        multiplication of its public key (see `Hpke.seal_batch`)."""
        return self.group.derive_private(self, ikm)

    def generate_key_pair(self, rng: Rng = os.urandom) -> tuple[bytes, bytes]:
        """GenerateKeyPair with caller-supplied randomness -> (private, public)."""
        sk = self.group.generate_private(rng)
        return sk, self.public_key(sk)

    def public_key(self, sk: bytes) -> bytes:
        """SerializePublicKey(pk(sk)); `InvalidArgument` if ``sk`` is malformed."""
        try:
            return self.group.public_key(sk)
        except _BadPrivate:
            raise InvalidArgument(f"malformed HPKE private key ({len(sk)} bytes)") from None

    def check_public_key(self, pk: bytes) -> None:
        """DeserializePublicKey validation; `DecodeError` if ``pk`` is not a valid point."""
        try:
            self.group.check_public(pk)
        except _BadPoint:
            raise DecodeError(f"malformed HPKE public key ({len(pk)} bytes)") from None

    def encap(self, pk_r: bytes, rng: Rng = os.urandom) -> tuple[bytes, bytes]:
        """Encap -> (shared_secret, enc); `DecodeError` for a malformed ``pk_r``."""
        self.check_public_key(pk_r)
        try:
            enc, dh = self.group.ephemeral_dh(rng, pk_r)
        except _BadPoint:
            raise DecodeError("HPKE public key is a low-order point") from None
        return self._extract_and_expand(dh, enc + pk_r), enc

    def decap(self, enc: bytes, sk_r: bytes) -> bytes:
        """Decap -> shared_secret; `DecryptionError` for a malformed ``enc``."""
        try:
            dh, pk_r = self.group.static_dh(sk_r, enc)
        except _BadPoint:
            raise DecryptionError(f"malformed HPKE encapsulation ({len(enc)} bytes)") from None
        except _BadPrivate:
            raise InvalidArgument(f"malformed HPKE private key ({len(sk_r)} bytes)") from None
        return self._extract_and_expand(dh, enc + pk_r)


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P384_ORDER = int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16)
P521_ORDER = int(
    "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
    16,
)

DHKEM_P256 = DhKem(0x0010, _NistCurve(ec.SECP256R1(), P256_ORDER, 32, 65, 0xFF), HKDF_SHA256, 32)
DHKEM_P384 = DhKem(0x0011, _NistCurve(ec.SECP384R1(), P384_ORDER, 48, 97, 0xFF), HKDF_SHA384, 48)
DHKEM_P521 = DhKem(0x0012, _NistCurve(ec.SECP521R1(), P521_ORDER, 66, 133, 0x01), HKDF_SHA512, 64)
DHKEM_X25519 = DhKem(0x0020, _X25519(), HKDF_SHA256, 32)
DHKEM_X448 = DhKem(0x0021, _X448(), HKDF_SHA512, 64)

# ---------------------------------------------------------------------------------- HPKE


@dataclass(frozen=True, slots=True)
class Hpke:
    """One HPKE ciphersuite (KEM, KDF, AEAD), base mode only (RFC 9180 section 5.1.1)."""

    kem: DhKem
    kdf: Kdf
    aead: Aead
    suite_id: bytes = field(init=False, repr=False)
    _psk_id_hash: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        sid = (
            b"HPKE"
            + self.kem.kem_id.to_bytes(2, "big")
            + self.kdf.kdf_id.to_bytes(2, "big")
            + self.aead.aead_id.to_bytes(2, "big")
        )
        object.__setattr__(self, "suite_id", sid)
        object.__setattr__(self, "_psk_id_hash", self.kdf.labeled_extract(sid, b"", b"psk_id_hash", b""))

    def _info_hash(self, info: bytes) -> bytes:
        """LabeledExtract("", "info_hash", info), memoized per suite for repeated (public) infos."""
        return _info_hash(self.kdf, self.suite_id, bytes(info))

    def _key_schedule(self, shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
        """KeySchedule for mode_base with empty PSK (RFC 9180 section 5.1) -> (key, base_nonce)."""
        kdf, sid = self.kdf, self.suite_id
        info_hash = self._info_hash(info)
        context = b"\x00" + self._psk_id_hash + info_hash
        secret = kdf.labeled_extract(sid, shared_secret, b"secret", b"")
        key = kdf.labeled_expand(sid, secret, b"key", context, self.aead.nk)
        nonce = kdf.labeled_expand(sid, secret, b"base_nonce", context, self.aead.nn)
        return key, nonce

    def seal(
        self, pk_r: bytes, info: bytes, aad: bytes, plaintext: bytes, rng: Rng = os.urandom
    ) -> tuple[bytes, bytes]:
        """SealBase -> (enc, ciphertext) (RFC 9180 section 6.1)."""
        shared, enc = self.kem.encap(pk_r, rng)
        key, nonce = self._key_schedule(shared, info)
        return enc, self.aead.seal(key, nonce, aad, plaintext)

    def seal_many(
        self, jobs: Sequence[tuple[bytes, bytes]], info: bytes, aad: bytes, rng: Rng = os.urandom
    ) -> list[tuple[bytes, bytes]]:
        """SealBase of many ``(pk_r, plaintext)`` pairs under one ``info`` and ``aad``
        -> [(enc, ciphertext)], exactly as ``[self.seal(pk, info, aad, pt, rng) for pk, pt in jobs]``.

        For the X25519 KEM the ephemeral keys are drawn from ``rng`` first (one 32-byte
        draw per job, in job order: the same draws the serial loop makes) and the scalar
        multiplications run on the worker threads of `crdt_mls.mls.parallel` (libsodium
        releases the GIL).  The first malformed public key (in job order) raises the same
        `DecodeError` as `seal`.
        """
        return self.seal_many_then([pk for pk, _ in jobs], [pt for _, pt in jobs], info, aad, _pair, rng)

    def seal_many_then(
        self,
        public_keys: Sequence[bytes],
        plaintexts: Sequence[bytes],
        info: bytes,
        aad: bytes,
        post: Callable[[int, bytes, bytes], R],
        rng: Rng = os.urandom,
    ) -> list[R]:
        """`seal_many` of ``public_keys[i]`` and ``plaintexts[i]``, with ``post(i, enc,
        ciphertext)`` applied to each result (in order)."""
        if len(plaintexts) != len(public_keys):
            raise InvalidArgument("one plaintext per public key")
        return self.seal_batch(public_keys, rng).seal(plaintexts, info, aad, post)

    def seal_batch(
        self, public_keys: Sequence[bytes], rng: Rng = os.urandom, *, derive_public: Sequence[bytes] = ()
    ) -> SealBatch:
        """Start SealBase to each of ``public_keys``: the randomness and the Diffie-Hellman work
        now, the key schedules and AEADs in `SealBatch.seal` once ``info`` and the plaintexts
        are known.  ``derive_public`` are private keys whose public keys (the public half of
        DeriveKeyPair, RFC 9180 section 7.1.3) are computed in the same batch
        (`SealBatch.derived_public_keys`).  The bytes are those of `seal` called for each key
        in order with the same ``rng``, provided nothing else draws from ``rng`` in between."""
        return SealBatch(self, public_keys, rng, derive_public)

    def open(self, sk_r: bytes, enc: bytes, info: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        """OpenBase (RFC 9180 section 6.1); `DecryptionError` on any failure caused by the input."""
        shared = self.kem.decap(enc, sk_r)
        key, nonce = self._key_schedule(shared, info)
        try:
            return self.aead.open(key, nonce, aad, ciphertext)
        except DecryptionError:
            raise DecryptionError("HPKE ciphertext did not decrypt") from None


#: Batches of at least this many seals use the worker threads (below it the hand-off costs more).
_PARALLEL_SEALS = 32


class SealBatch:
    """SealBase (RFC 9180 sections 5.1 and 6.1) to a list of recipients, in two steps (made by
    `Hpke.seal_batch`).

    With the X25519 KEM the constructor draws one 32-byte ephemeral secret per recipient
    from ``rng`` (in recipient order: the draws `Hpke.seal` makes) and runs every scalar
    multiplication of the batch -- ``pk(skE)`` and ``DH(skE, pkR)`` per recipient and the
    public keys of ``derive_public`` -- on the worker threads of `crdt_mls.mls.parallel`
    (libsodium releases the GIL); `seal` then runs the key schedules and AEADs in the
    calling thread.  Other KEMs compute the public keys at once and draw their randomness
    and seal in `seal`.  A malformed or low-order recipient key raises the `DecodeError` of
    `Hpke.seal` from `seal`, for the first such key in order.
    """

    __slots__ = ("_hpke", "_pairs", "_public_keys", "_rng", "derived_public_keys")

    def __init__(self, hpke: Hpke, public_keys: Sequence[bytes], rng: Rng, derive_public: Sequence[bytes] = ()) -> None:
        self._hpke = hpke
        self._public_keys = [bytes(pk) for pk in public_keys]
        self._rng: Rng | None = rng
        self._pairs: list[bytes | None] | None = None
        kem = hpke.kem
        if not isinstance(kem.group, _X25519):
            self.derived_public_keys = [kem.public_key(sk) for sk in derive_public]
            return
        k, n = len(derive_public), len(self._public_keys)
        secrets: list[bytes] = []
        for sk in derive_public:
            if len(sk) != 32:
                raise InvalidArgument(f"malformed HPKE private key ({len(sk)} bytes)")
            secrets.append(sk)
        for _ in range(n):
            sk = rng(32)
            if len(sk) != 32:
                raise InvalidArgument("rng returned the wrong number of bytes")
            secrets.append(sk)
        peers: list[bytes | None] = [None] * k
        peers += self._public_keys
        # the scalar multiplications on the worker threads (libsodium, GIL released)
        out = parallel.map_ranges(
            lambda lo, hi: sodium.x25519_pairs_range(secrets, peers, lo, hi), k + n, min_items=_PARALLEL_SEALS
        )
        pubs: list[bytes] = []
        for sk, pk in zip(derive_public, out[:k], strict=True):
            assert pk is not None
            _remember_public(b"X25519", sk, pk)
            pubs.append(pk)
        self.derived_public_keys = pubs
        self._pairs = out[k:]

    def seal(
        self, plaintexts: Sequence[bytes], info: bytes, aad: bytes, post: Callable[[int, bytes, bytes], R]
    ) -> list[R]:
        """SealBase of ``plaintexts[i]`` to the i-th recipient under ``info`` and ``aad``, with
        ``post(i, enc, ciphertext)`` applied to each result (in order).  Once per batch."""
        rng = self._rng
        if rng is None:
            raise InvalidArgument("a seal batch is sealed once")
        self._rng = None
        keys = self._public_keys
        if len(plaintexts) != len(keys):
            raise InvalidArgument("one plaintext per public key")
        pairs = self._pairs
        self._pairs = None  # the ephemeral secrets' results are not kept
        hpke = self._hpke
        if pairs is None:
            return [post(i, *hpke.seal(keys[i], info, aad, plaintexts[i], rng)) for i in range(len(keys))]
        return _X25519Sealer(hpke, info, aad).finish(keys, plaintexts, pairs, post)


class _X25519Sealer:
    """SealBase with DHKEM(X25519) inlined (RFC 9180 sections 4.1, 5.1, 6.1), for `SealBatch`.

    Computes, per job, from ``enc = pk(skE)`` and ``dh = DH(skE, pkR)``:
    ``shared_secret = ExtractAndExpand(dh, enc || pkR)``, then the KeySchedule of mode_base
    with the precomputed ``key_schedule_context`` and AEAD.Seal.  Same operations and bytes
    as `Hpke.seal`; what depends only on the batch is computed once: the labels, the HMAC
    state of ``LabeledExtract("", "eae_prk", .)`` (its key, the empty salt, is fixed) up to
    the DH output, and ``key``/``base_nonce`` share one keyed HMAC state (RFC 2104).
    """

    __slots__ = (
        "_aad",
        "_aead",
        "_eae_inner",
        "_eae_outer",
        "_kdf_hash",
        "_kem_hash",
        "_key",
        "_nk",
        "_nn",
        "_nonce",
        "_nsecret",
        "_secret",
        "_ss",
    )

    def __init__(self, hpke: Hpke, info: bytes, aad: bytes) -> None:
        kem, kdf, aead = hpke.kem, hpke.kdf, hpke.aead
        context = b"\x00" + hpke._psk_id_hash + hpke._info_hash(info)
        sid = hpke.suite_id
        self._kem_hash = kem.kdf.hash_name
        self._kdf_hash = kdf.hash_name
        # LabeledExtract("", "eae_prk", dh) = HMAC(zeros, "HPKE-v1" || kem suite_id || "eae_prk" || dh):
        # the inner hash state after the key pad and the label, and the outer key pad state
        zero = _ZERO[kem.kdf.nh]
        block = hashlib.new(self._kem_hash).block_size
        key = zero.ljust(block, b"\x00")
        inner = hashlib.new(self._kem_hash, bytes(b ^ 0x36 for b in key))
        inner.update(_HPKE_V1 + kem.suite_id + b"eae_prk")
        self._eae_inner = inner
        self._eae_outer = hashlib.new(self._kem_hash, bytes(b ^ 0x5C for b in key))
        # LabeledExpand(eae_prk, "shared_secret", kem_context, Nsecret)
        self._ss = kem.nsecret.to_bytes(2, "big") + _HPKE_V1 + kem.suite_id + b"shared_secret"
        # LabeledExtract(shared_secret, "secret", "") and the key / base_nonce LabeledExpands
        self._secret = _HPKE_V1 + sid + b"secret"
        self._nk, self._nn, self._nsecret = aead.nk, aead.nn, kem.nsecret
        self._key = aead.nk.to_bytes(2, "big") + _HPKE_V1 + sid + b"key" + context + b"\x01"
        self._nonce = aead.nn.to_bytes(2, "big") + _HPKE_V1 + sid + b"base_nonce" + context + b"\x01"
        if kem.nsecret > kem.kdf.nh or aead.nk > kdf.nh or aead.nn > kdf.nh:  # pragma: no cover - all suites
            raise InvalidArgument("inlined HPKE needs single-block expands")
        self._aead = aead._cls
        self._aad = bytes(aad)

    def finish(
        self,
        public_keys: Sequence[bytes],
        plaintexts: Sequence[bytes],
        pairs: Sequence[bytes | None],
        post: Callable[[int, bytes, bytes], R],
    ) -> list[R]:
        """ExtractAndExpand, KeySchedule and Seal for each job from its ``enc || dh``; the
        first bad public key (in job order) raises the `DecodeError` `Hpke.seal` raises."""
        mac = _hmac_new
        kem_hash, kdf_hash = self._kem_hash, self._kdf_hash
        inner_copy, outer_copy = self._eae_inner.copy, self._eae_outer.copy
        ss_info, secret_label, key_info, nonce_info = self._ss, self._secret, self._key, self._nonce
        nk, nn, nsecret, aead, aad = self._nk, self._nn, self._nsecret, self._aead, self._aad
        out: list[R] = []
        append = out.append
        for i, pair in enumerate(pairs):
            pk_r = public_keys[i]
            if pair is None:
                if len(pk_r) != 32:
                    raise DecodeError(f"malformed HPKE public key ({len(pk_r)} bytes)")
                raise DecodeError("HPKE public key is a low-order point")
            enc = pair[:32]
            h = inner_copy()
            h.update(pair[32:])
            o = outer_copy()
            o.update(h.digest())
            shared = mac(o.digest(), ss_info + enc + pk_r + b"\x01", kem_hash).digest()[:nsecret]
            k = mac(mac(shared, secret_label, kdf_hash).digest(), b"", kdf_hash)
            kn = k.copy()
            k.update(key_info)
            kn.update(nonce_info)
            append(post(i, enc, aead(k.digest()[:nk]).encrypt(kn.digest()[:nn], plaintexts[i], aad)))
        return out


def _pair(_i: int, enc: bytes, ciphertext: bytes) -> tuple[bytes, bytes]:
    return enc, ciphertext


__all__ = [
    "AES_128_GCM",
    "P256_ORDER",
    "P384_ORDER",
    "P521_ORDER",
    "AES_256_GCM",
    "CHACHA20_POLY1305",
    "DHKEM_P256",
    "DHKEM_P384",
    "DHKEM_P521",
    "DHKEM_X25519",
    "DHKEM_X448",
    "HKDF_SHA256",
    "HKDF_SHA384",
    "HKDF_SHA512",
    "Aead",
    "DhKem",
    "Hpke",
    "Kdf",
    "SealBatch",
    "clear_public_key_caches",
    "ec_private_key",
    "ec_public_key",
]


@lru_cache(maxsize=128)
def _info_hash(kdf: Kdf, suite_id: bytes, info: bytes) -> bytes:
    # info is public (EncryptContext = label and group context): fine to memoize.
    return kdf.labeled_extract(suite_id, b"", b"info_hash", info)


def clear_public_key_caches() -> None:
    """Drop the caches of parsed public keys and other public memoized values."""
    _x448_public.cache_clear()
    _ec_public.cache_clear()
    _info_hash.cache_clear()
    _PUBLIC.clear()
