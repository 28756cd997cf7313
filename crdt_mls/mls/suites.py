"""MLS cipher suites 1-7 (RFC 9420 sections 5 and 17.1).

`get_cipher_suite(suite_id)` returns a `CipherSuite` bundling hash, HKDF, AEAD, HPKE
(RFC 9180 base mode, `crdt_mls.mls.hpke`) and the signature scheme, plus the labeled
helpers of RFC 9420 section 5.1 (`expand_with_label`, `derive_secret`, `sign_with_label`,
`encrypt_with_label`, ...) and section 5.2 (`ref_hash`).  Labels are passed WITHOUT the
``"MLS 1.0 "`` prefix, which is added here.

Key formats (matching the official test vectors): EdDSA private keys are the raw 32/57-byte
seeds and public keys the RFC 8032 encoding; ECDSA private keys are the big-endian scalar
and public keys uncompressed SEC1 points; ECDSA signatures are DER encoded (RFC 9420 5.1.2).

Errors: malformed remote public keys are `DecodeError` (or `SignatureError` from
`verify`, `DecryptionError` from `hpke_open`); malformed local private keys and wrong
lengths passed by the caller are `InvalidArgument`; unknown suites `UnsupportedError`.
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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crdt_mls.errors import DecodeError, InvalidArgument, SignatureError, UnsupportedError
from crdt_mls.mls import hpke as _hpke
from crdt_mls.mls import parallel, sodium
from crdt_mls.mls.codec import encode_varint

try:  # the C HMAC object behind hmac.new (faster than _hashlib.hmac_digest: see crdt_mls.mls.hpke)
    from _hashlib import hmac_new as _hmac_new
except ImportError:  # pragma: no cover - CPython without OpenSSL
    _hmac_new = hmac.new  # type: ignore[assignment]

Rng = Callable[[int], bytes]
R = TypeVar("R")

_MLS_PREFIX = b"MLS 1.0 "

# ---------------------------------------------------------------------------- signatures


class SignatureScheme(Protocol):
    """A signature algorithm of RFC 9420 section 17.1 (TLS SignatureScheme code point)."""

    @property
    def scheme_id(self) -> int: ...
    @property
    def private_key_length(self) -> int: ...
    @property
    def public_key_length(self) -> int: ...

    def sign(self, private_key: bytes, message: bytes) -> bytes: ...
    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None: ...
    def public_key(self, private_key: bytes) -> bytes: ...
    def check_public_key(self, public_key: bytes) -> None: ...
    def generate(self, rng: Rng) -> bytes: ...


def _rand(rng: Rng, n: int) -> bytes:
    out = rng(n)
    if len(out) != n:
        raise InvalidArgument(f"rng returned {len(out)} bytes instead of {n}")
    return out


@lru_cache(maxsize=256)
def _ed25519_expand(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, libsodium 64-byte secret key) of an Ed25519 seed."""
    pk, sk = _nacl.crypto_sign_seed_keypair(seed)
    return pk, sk


@dataclass(frozen=True, slots=True)
class _Ed25519:
    """Ed25519 (RFC 8032) via libsodium, which measured faster than OpenSSL here."""

    scheme_id: int = 0x0807
    private_key_length: int = 32
    public_key_length: int = 32

    def _keys(self, private_key: bytes) -> tuple[bytes, bytes]:
        if len(private_key) != 32:
            raise InvalidArgument(f"Ed25519 private key must be 32 bytes, got {len(private_key)}")
        return _ed25519_expand(bytes(private_key))

    def sign(self, private_key: bytes, message: bytes) -> bytes:
        sig: bytes = _nacl.crypto_sign(message, self._keys(private_key)[1])[:64]
        return sig

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        if len(public_key) != 32:
            raise SignatureError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
        if len(signature) != 64:
            raise SignatureError(f"Ed25519 signature must be 64 bytes, got {len(signature)}")
        try:
            _nacl.crypto_sign_open(bytes(signature) + message, bytes(public_key))
        except Exception:  # nacl BadSignatureError / ValueError for an invalid point
            raise SignatureError("Ed25519 signature did not verify") from None

    def public_key(self, private_key: bytes) -> bytes:
        return self._keys(private_key)[0]

    def check_public_key(self, public_key: bytes) -> None:
        if len(public_key) != 32:
            raise DecodeError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")

    def generate(self, rng: Rng) -> bytes:
        return _rand(rng, 32)


#: Batches of at least this many signature checks use the worker threads.
_PARALLEL_VERIFIES = 16


@lru_cache(maxsize=256)
def _ed448_private(sk: bytes) -> ed448.Ed448PrivateKey:
    return ed448.Ed448PrivateKey.from_private_bytes(sk)


@lru_cache(maxsize=4096)
def _ed448_public(pk: bytes) -> ed448.Ed448PublicKey:
    return ed448.Ed448PublicKey.from_public_bytes(pk)


@dataclass(frozen=True, slots=True)
class _Ed448:
    """Ed448 (RFC 8032) via `cryptography`."""

    scheme_id: int = 0x0808
    private_key_length: int = 57
    public_key_length: int = 57

    def _priv(self, private_key: bytes) -> ed448.Ed448PrivateKey:
        if len(private_key) != 57:
            raise InvalidArgument(f"Ed448 private key must be 57 bytes, got {len(private_key)}")
        return _ed448_private(bytes(private_key))

    def sign(self, private_key: bytes, message: bytes) -> bytes:
        return self._priv(private_key).sign(message)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        if len(public_key) != 57:
            raise SignatureError(f"Ed448 public key must be 57 bytes, got {len(public_key)}")
        try:
            _ed448_public(bytes(public_key)).verify(signature, message)
        except (InvalidSignature, ValueError):
            raise SignatureError("Ed448 signature did not verify") from None

    def public_key(self, private_key: bytes) -> bytes:
        return self._priv(private_key).public_key().public_bytes_raw()

    def check_public_key(self, public_key: bytes) -> None:
        if len(public_key) != 57:
            raise DecodeError(f"Ed448 public key must be 57 bytes, got {len(public_key)}")
        try:
            _ed448_public(bytes(public_key))
        except ValueError:
            raise DecodeError("malformed Ed448 public key") from None

    def generate(self, rng: Rng) -> bytes:
        return _rand(rng, 57)


@dataclass(frozen=True, slots=True)
class _Ecdsa:
    """ECDSA over a NIST curve with DER signatures (RFC 9420 section 5.1.2) via `cryptography`."""

    scheme_id: int
    curve: ec.EllipticCurve = field(repr=False)
    hash_algorithm: hashes.HashAlgorithm = field(repr=False)
    private_key_length: int
    public_key_length: int
    order: int = field(repr=False)

    def sign(self, private_key: bytes, message: bytes) -> bytes:
        priv = _hpke.ec_private_key(self.curve, self.private_key_length, bytes(private_key))
        return priv.sign(message, ec.ECDSA(self.hash_algorithm))

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        try:
            pub = _hpke.ec_public_key(self.curve, self.public_key_length, bytes(public_key))
        except DecodeError:
            raise SignatureError(f"malformed {self.curve.name} public key") from None
        try:
            pub.verify(signature, message, ec.ECDSA(self.hash_algorithm))
        except (InvalidSignature, ValueError):
            raise SignatureError(f"ECDSA {self.curve.name} signature did not verify") from None

    def public_key(self, private_key: bytes) -> bytes:
        priv = _hpke.ec_private_key(self.curve, self.private_key_length, bytes(private_key))
        return priv.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def check_public_key(self, public_key: bytes) -> None:
        _hpke.ec_public_key(self.curve, self.public_key_length, bytes(public_key))

    def generate(self, rng: Rng) -> bytes:
        n = self.private_key_length
        mask = 0x01 if n == 66 else 0xFF
        for _ in range(256):
            cand = bytearray(_rand(rng, n))
            cand[0] &= mask
            if 0 < int.from_bytes(cand, "big") < self.order:
                return bytes(cand)
        raise InvalidArgument("rng failed to produce a valid ECDSA scalar")  # pragma: no cover


# --------------------------------------------------------------------------- cipher suite


def _vec(data: bytes) -> bytes:
    """``opaque x<V>`` (RFC 9420 section 2.1.2)."""
    return encode_varint(len(data)) + data


_LABELS: dict[str, bytes] = {}
#: (label, length) -> the ``uint16 length || opaque label<V>`` head of a KDFLabel
_EXPAND_HEADS: dict[tuple[str, int], bytes] = {}
#: (label, Nh) -> KDFLabel of DeriveSecret with the HKDF-Expand counter byte appended
_DERIVE_INFO: dict[tuple[str, int], bytes] = {}


def _label(label: str) -> bytes:
    """The encoded ``opaque label<V> = "MLS 1.0 " + label`` (memoized: labels are a small fixed set)."""
    out = _LABELS.get(label)
    if out is None:
        out = _vec(_MLS_PREFIX + label.encode())
        if len(_LABELS) < 1024:
            _LABELS[label] = out
    return out


@dataclass(frozen=True, slots=True)
class CipherSuite:
    """One MLS cipher suite (RFC 9420 section 5.1, table in section 17.1).  Holds no secrets."""

    suite_id: int
    name: str
    hash_name: str
    hash_length: int  # Nh (KDF.Nh = hash output length for all seven suites)
    aead_key_length: int  # Nk
    aead_nonce_length: int  # Nn
    kem_output_length: int  # Nenc
    hpke_public_key_length: int  # Npk
    hpke_private_key_length: int  # Nsk
    signature_scheme: int  # TLS SignatureScheme code point
    signature_private_key_length: int
    signature_public_key_length: int
    _hpke: _hpke.Hpke = field(repr=False, compare=False)
    _sig: SignatureScheme = field(repr=False, compare=False)
    _hash_fn: Callable[[bytes], hashlib._Hash] = field(repr=False, compare=False)

    # -- hash, MAC, KDF ------------------------------------------------------------------
    def hash(self, data: bytes) -> bytes:
        """The suite hash."""
        return self._hash_fn(data).digest()

    def mac(self, key: bytes, data: bytes) -> bytes:
        """HMAC with the suite hash (RFC 9420 section 5.1)."""
        return _hmac_new(key, data, self.hash_name).digest()

    def verify_mac(self, key: bytes, data: bytes, tag: bytes) -> bool:
        """Constant-time comparison of ``tag`` with ``mac(key, data)``."""
        return hmac.compare_digest(_hmac_new(key, data, self.hash_name).digest(), tag)

    def kdf_extract(self, salt: bytes, ikm: bytes) -> bytes:
        """HKDF-Extract with the suite hash."""
        return self._hpke.kdf.extract(salt, ikm)

    def kdf_expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        """HKDF-Expand with the suite hash (RFC 5869 section 2.3; up to ``Nh`` bytes it is
        one HMAC, ``T(1)`` truncated, computed here directly)."""
        if 0 <= length <= self.hash_length:
            return _hmac_new(prk, info + b"\x01", self.hash_name).digest()[:length]
        return self._hpke.kdf.expand(prk, info, length)

    def expand_with_label(self, secret: bytes, label: str, context: bytes, length: int) -> bytes:
        """ExpandWithLabel (RFC 9420 section 5.1): KDF.Expand(secret, KDFLabel, length), with
        the KDFLabel's ``length || label`` head memoized per (label, length)."""
        head = _EXPAND_HEADS.get((label, length))
        if head is None:
            if not 0 <= length <= 0xFFFF:
                raise InvalidArgument(f"ExpandWithLabel length {length} is not a uint16")
            head = length.to_bytes(2, "big") + _label(label)
            if len(_EXPAND_HEADS) < 1024:
                _EXPAND_HEADS[(label, length)] = head
        return self.kdf_expand(secret, head + encode_varint(len(context)) + context, length)

    def derive_secret(self, secret: bytes, label: str) -> bytes:
        """DeriveSecret (RFC 9420 section 5.1) = ExpandWithLabel(secret, label, "", Nh): one
        HMAC, ``T(1) = HMAC(secret, KDFLabel || 0x01)`` (RFC 5869 section 2.3), with the
        encoded KDFLabel memoized per label."""
        nh = self.hash_length
        info = _DERIVE_INFO.get((label, nh))
        if info is None:
            info = nh.to_bytes(2, "big") + _label(label) + b"\x00\x01"  # empty context, then the counter
            if len(_DERIVE_INFO) < 1024:
                _DERIVE_INFO[(label, nh)] = info
        return _hmac_new(secret, info, self.hash_name).digest()

    def derive_tree_secret(self, secret: bytes, label: str, generation: int, length: int) -> bytes:
        """DeriveTreeSecret (RFC 9420 section 9.1): the context is the uint32 generation."""
        if not 0 <= generation < 1 << 32:
            raise InvalidArgument(f"generation {generation} is not a uint32")
        return self.expand_with_label(secret, label, generation.to_bytes(4, "big"), length)

    def ref_hash(self, label: str, value: bytes) -> bytes:
        """RefHash (RFC 9420 section 5.2) with label ``"MLS 1.0 " + label``.

        ``ref_hash("KeyPackage Reference", kp)`` is MakeKeyPackageRef and
        ``ref_hash("Proposal Reference", ac)`` is MakeProposalRef.  Because the RFC spells
        these labels with the prefix, a label already starting with ``"MLS 1.0 "`` is used as is.
        """
        raw = label.encode()
        if not raw.startswith(_MLS_PREFIX):
            raw = _MLS_PREFIX + raw
        return self.ref_hash_raw(raw, value)

    def ref_hash_raw(self, label: bytes, value: bytes) -> bytes:
        """RefHash (RFC 9420 section 5.2) with the label used verbatim (as in the test vectors)."""
        return self._hash_fn(_vec(label) + _vec(value)).digest()

    # -- AEAD ----------------------------------------------------------------------------
    def aead_seal(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        """AEAD.Seal of the suite; returns ciphertext || tag."""
        return self._hpke.aead.seal(key, nonce, aad, plaintext)

    def aead_open(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        """AEAD.Open of the suite; `DecryptionError` if authentication fails."""
        return self._hpke.aead.open(key, nonce, aad, ciphertext)

    # -- HPKE ----------------------------------------------------------------------------
    def hpke_seal(
        self, public_key: bytes, info: bytes, aad: bytes, plaintext: bytes, rng: Rng = os.urandom
    ) -> tuple[bytes, bytes]:
        """HPKE SealBase (RFC 9180 section 6.1) -> (kem_output, ciphertext)."""
        return self._hpke.seal(bytes(public_key), info, aad, plaintext, rng)

    def hpke_open(self, private_key: bytes, kem_output: bytes, info: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        """HPKE OpenBase (RFC 9180 section 6.1); `DecryptionError` on failure."""
        return self._hpke.open(bytes(private_key), bytes(kem_output), info, aad, ciphertext)

    def encrypt_with_label(
        self, public_key: bytes, label: str, context: bytes, plaintext: bytes, rng: Rng = os.urandom
    ) -> tuple[bytes, bytes]:
        """EncryptWithLabel (RFC 9420 section 5.1.3) -> (kem_output, ciphertext)."""
        info = _label(label) + _vec(context)
        return self._hpke.seal(bytes(public_key), info, b"", plaintext, rng)

    def encrypt_with_label_many(
        self, jobs: Sequence[tuple[bytes, bytes]], label: str, context: bytes, rng: Rng = os.urandom
    ) -> list[tuple[bytes, bytes]]:
        """EncryptWithLabel (RFC 9420 section 5.1.3) of many ``(public_key, plaintext)`` pairs
        under one label and context -> [(kem_output, ciphertext)], in job order.

        The same values (for the same ``rng``) as calling `encrypt_with_label` for each job in
        order; large batches run on the worker threads of `crdt_mls.mls.parallel`.
        """
        info = _label(label) + _vec(context)
        return self._hpke.seal_many([(bytes(pk), pt) for pk, pt in jobs], info, b"", rng)

    def encrypt_with_label_many_then(
        self,
        public_keys: Sequence[bytes],
        plaintexts: Sequence[bytes],
        label: str,
        context: bytes,
        post: Callable[[int, bytes, bytes], R],
        rng: Rng = os.urandom,
    ) -> list[R]:
        """`encrypt_with_label_many` of ``public_keys[i]`` and ``plaintexts[i]`` with
        ``post(i, kem_output, ciphertext)`` applied to each result."""
        info = _label(label) + _vec(context)
        keys = [bytes(pk) for pk in public_keys]
        return self._hpke.seal_many_then(keys, plaintexts, info, b"", post, rng)

    def start_encrypt_with_label(
        self, public_keys: Sequence[bytes], rng: Rng = os.urandom, *, derive_public: Sequence[bytes] = ()
    ) -> EncryptBatch:
        """Start EncryptWithLabel (RFC 9420 section 5.1.3) to each of ``public_keys`` before the
        label, context and plaintexts are known: the randomness and the Diffie-Hellman work now
        (on the worker threads for large batches), the rest in `EncryptBatch.encrypt`.
        ``derive_public`` are HPKE private keys (`derive_hpke_private_key`) whose public keys
        are computed in the same batch (`EncryptBatch.derived_public_keys`).  For the same
        ``rng`` the ciphertexts are those of `encrypt_with_label` called for each key in order,
        provided nothing else draws from ``rng`` between the two steps."""
        return EncryptBatch(self._hpke.seal_batch(public_keys, rng, derive_public=derive_public))

    def decrypt_with_label(
        self, private_key: bytes, label: str, context: bytes, kem_output: bytes, ciphertext: bytes
    ) -> bytes:
        """DecryptWithLabel (RFC 9420 section 5.1.3); `DecryptionError` on failure."""
        info = _label(label) + _vec(context)
        return self._hpke.open(bytes(private_key), bytes(kem_output), info, b"", ciphertext)

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """HPKE DeriveKeyPair (RFC 9180 section 7.1.3) -> (private, public)."""
        return self._hpke.kem.derive_key_pair(ikm)

    def derive_hpke_private_key(self, ikm: bytes) -> bytes:
        """The private key of HPKE DeriveKeyPair (RFC 9180 section 7.1.3), without its public
        key (computed in a batch by `start_encrypt_with_label`)."""
        return self._hpke.kem.derive_private_key(ikm)

    def generate_hpke_key_pair(self, rng: Rng = os.urandom) -> tuple[bytes, bytes]:
        """A fresh HPKE key pair -> (private, public)."""
        return self._hpke.kem.generate_key_pair(rng)

    def hpke_public_key(self, private_key: bytes) -> bytes:
        """The serialized HPKE public key of a private key; `InvalidArgument` if malformed."""
        return self._hpke.kem.public_key(bytes(private_key))

    def check_hpke_public_key(self, public_key: bytes) -> None:
        """`DecodeError` unless ``public_key`` is a valid serialized KEM public key."""
        self._hpke.kem.check_public_key(bytes(public_key))

    # -- signatures ----------------------------------------------------------------------
    def sign(self, private_key: bytes, message: bytes) -> bytes:
        """Signature.Sign of the suite's scheme."""
        return self._sig.sign(private_key, message)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        """Signature.Verify; `SignatureError` if invalid (including a malformed key)."""
        self._sig.verify(public_key, message, signature)

    def sign_with_label(self, private_key: bytes, label: str, content: bytes) -> bytes:
        """SignWithLabel (RFC 9420 section 5.1.2)."""
        return self._sig.sign(private_key, _label(label) + _vec(content))

    def verify_with_label(self, public_key: bytes, label: str, content: bytes, signature: bytes) -> None:
        """VerifyWithLabel (RFC 9420 section 5.1.2); `SignatureError` if invalid."""
        self._sig.verify(public_key, _label(label) + _vec(content), signature)

    def verify_with_label_many(self, jobs: Sequence[tuple[bytes, str, bytes, bytes]]) -> list[bool]:
        """VerifyWithLabel (RFC 9420 section 5.1.2) of many ``(public_key, label, content,
        signature)`` jobs -> whether each one verifies (a malformed key or signature is False).

        Ed25519 batches run on the worker threads of `crdt_mls.mls.parallel` (libsodium
        releases the GIL); other schemes run in the calling thread.
        """
        out = [False] * len(jobs)
        by_label: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_label.setdefault(job[1], []).append(i)
        for label, idx in by_label.items():
            ok = self.verify_labeled_many(
                [jobs[i][0] for i in idx], label, [jobs[i][2] for i in idx], [jobs[i][3] for i in idx]
            )
            for i, good in zip(idx, ok, strict=True):
                out[i] = good
        return out

    def verify_labeled_many(
        self,
        public_keys: Sequence[bytes],
        label: str,
        contents: Sequence[bytes],
        signatures: Sequence[bytes],
    ) -> list[bool]:
        """VerifyWithLabel (RFC 9420 section 5.1.2) of ``signatures[i]`` over ``contents[i]``
        with ``public_keys[i]``, all with one label -> whether each verifies (a malformed key or
        signature is False).  Ed25519 batches run on the worker threads of
        `crdt_mls.mls.parallel`, other schemes in the calling thread."""
        n = len(public_keys)
        if len(contents) != n or len(signatures) != n:
            raise InvalidArgument("one content and one signature per public key")
        lbl = _label(label)
        if isinstance(self._sig, _Ed25519):
            # signature || labeled message built here; only libsodium runs on the worker threads
            signed: list[bytes | None] = [None] * n
            keys: list[bytes] = [b""] * n
            join = b"".join
            for i in range(n):
                pk, sig, content = public_keys[i], signatures[i], contents[i]
                if len(pk) == 32 and len(sig) == 64:
                    signed[i] = join((sig, lbl, encode_varint(len(content)), content))
                    keys[i] = bytes(pk)
            return parallel.map_ranges(
                lambda lo, hi: sodium.ed25519_open_range(signed, keys, lo, hi), n, min_items=_PARALLEL_VERIFIES
            )
        out: list[bool] = []
        for i in range(n):
            try:
                self._sig.verify(public_keys[i], lbl + _vec(contents[i]), signatures[i])
            except (SignatureError, DecodeError):
                out.append(False)
            else:
                out.append(True)
        return out

    def generate_signature_key_pair(self, rng: Rng = os.urandom) -> tuple[bytes, bytes]:
        """A fresh signature key pair -> (private, public)."""
        sk = self._sig.generate(rng)
        return sk, self._sig.public_key(sk)

    def signature_public_key(self, private_key: bytes) -> bytes:
        """The public key of a signature private key; `InvalidArgument` if malformed."""
        return self._sig.public_key(private_key)

    def check_signature_public_key(self, public_key: bytes) -> None:
        """`DecodeError` unless ``public_key`` is a well-formed key of the suite's scheme."""
        self._sig.check_public_key(public_key)


class EncryptBatch:
    """EncryptWithLabel (RFC 9420 section 5.1.3) to a list of public keys, started by
    `CipherSuite.start_encrypt_with_label`; `encrypt` finishes it (once)."""

    __slots__ = ("_batch",)

    def __init__(self, batch: _hpke.SealBatch) -> None:
        self._batch = batch

    @property
    def derived_public_keys(self) -> list[bytes]:
        """The public keys of the batch's ``derive_public`` private keys, in order."""
        return self._batch.derived_public_keys

    def encrypt(
        self, plaintexts: Sequence[bytes], label: str, context: bytes, post: Callable[[int, bytes, bytes], R]
    ) -> list[R]:
        """EncryptWithLabel of ``plaintexts[i]`` to the i-th public key with ``post(i,
        kem_output, ciphertext)`` applied to each result, in order."""
        return self._batch.seal(plaintexts, _label(label) + _vec(context), b"", post)


def _suite(
    suite_id: int,
    name: str,
    kem: _hpke.DhKem,
    kdf: _hpke.Kdf,
    aead: _hpke.Aead,
    hash_fn: Callable[[bytes], hashlib._Hash],
    sig: SignatureScheme,
) -> CipherSuite:
    return CipherSuite(
        suite_id=suite_id,
        name=name,
        hash_name=kdf.hash_name,
        hash_length=kdf.nh,
        aead_key_length=aead.nk,
        aead_nonce_length=aead.nn,
        kem_output_length=kem.nenc,
        hpke_public_key_length=kem.npk,
        hpke_private_key_length=kem.nsk,
        signature_scheme=sig.scheme_id,
        signature_private_key_length=sig.private_key_length,
        signature_public_key_length=sig.public_key_length,
        _hpke=_hpke.Hpke(kem, kdf, aead),
        _sig=sig,
        _hash_fn=hash_fn,
    )


_ED25519 = _Ed25519()
_ED448 = _Ed448()
_ECDSA_P256 = _Ecdsa(0x0403, ec.SECP256R1(), hashes.SHA256(), 32, 65, _hpke.P256_ORDER)
_ECDSA_P384 = _Ecdsa(0x0503, ec.SECP384R1(), hashes.SHA384(), 48, 97, _hpke.P384_ORDER)
_ECDSA_P521 = _Ecdsa(0x0603, ec.SECP521R1(), hashes.SHA512(), 66, 133, _hpke.P521_ORDER)


def clear_key_caches() -> None:
    """Drop every cached parsed key (signature private keys included).

    Signature private keys are cached by value to make `sign` fast; call this after
    deleting a signature key if it must not stay in process memory.  HPKE private keys
    are never cached (forward secrecy relies on deleting them, RFC 9420 section 16.6).
    """
    _ed25519_expand.cache_clear()
    _ed448_private.cache_clear()
    _ed448_public.cache_clear()
    _hpke.ec_private_key.cache_clear()
    _hpke.clear_public_key_caches()


_SUITES: dict[int, CipherSuite] = {
    s.suite_id: s
    for s in (
        _suite(
            1,
            "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
            _hpke.DHKEM_X25519,
            _hpke.HKDF_SHA256,
            _hpke.AES_128_GCM,
            hashlib.sha256,
            _ED25519,
        ),
        _suite(
            2,
            "MLS_128_DHKEMP256_AES128GCM_SHA256_P256",
            _hpke.DHKEM_P256,
            _hpke.HKDF_SHA256,
            _hpke.AES_128_GCM,
            hashlib.sha256,
            _ECDSA_P256,
        ),
        _suite(
            3,
            "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
            _hpke.DHKEM_X25519,
            _hpke.HKDF_SHA256,
            _hpke.CHACHA20_POLY1305,
            hashlib.sha256,
            _ED25519,
        ),
        _suite(
            4,
            "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448",
            _hpke.DHKEM_X448,
            _hpke.HKDF_SHA512,
            _hpke.AES_256_GCM,
            hashlib.sha512,
            _ED448,
        ),
        _suite(
            5,
            "MLS_256_DHKEMP521_AES256GCM_SHA512_P521",
            _hpke.DHKEM_P521,
            _hpke.HKDF_SHA512,
            _hpke.AES_256_GCM,
            hashlib.sha512,
            _ECDSA_P521,
        ),
        _suite(
            6,
            "MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448",
            _hpke.DHKEM_X448,
            _hpke.HKDF_SHA512,
            _hpke.CHACHA20_POLY1305,
            hashlib.sha512,
            _ED448,
        ),
        _suite(
            7,
            "MLS_256_DHKEMP384_AES256GCM_SHA384_P384",
            _hpke.DHKEM_P384,
            _hpke.HKDF_SHA384,
            _hpke.AES_256_GCM,
            hashlib.sha384,
            _ECDSA_P384,
        ),
    )
}

#: Identifiers of every supported cipher suite.
SUPPORTED_SUITES: tuple[int, ...] = tuple(sorted(_SUITES))


def get_cipher_suite(suite_id: int) -> CipherSuite:
    """The cipher suite with this RFC 9420 section 17.1 identifier; `UnsupportedError` otherwise."""
    try:
        return _SUITES[suite_id]
    except (KeyError, TypeError):
        raise UnsupportedError(f"cipher suite {suite_id!r} is not supported") from None


__all__ = ["SUPPORTED_SUITES", "CipherSuite", "EncryptBatch", "clear_key_caches", "get_cipher_suite"]
