"""Identities derived from a username and a password (docs/content.md section 2).

``scrypt(password, salt=H("crdt-mls/identity/v1/salt" || username), N, r, p)`` gives 64
bytes from which domain-separated HKDF-SHA256 derives an Ed25519 signing seed and an
X25519 (NaCl box) secret key.  Nothing secret is ever stored: an `IdentityRecord` holds the
normalized username, the scrypt parameters and the two public keys, and `Identity.unlock`
re-derives the keys from the password and checks them against the record.

Parameters are raised over time: `Identity.upgrade` re-derives with stronger parameters
(which yields new keys, since the keys *are* the password's image) and returns a
`KeyRotation` signed by both the old and the new signing key so contacts can follow.

The real minimum is N = 2^17, r = 8 (the origin note's "CostFactor >= 17, r = 8"); tests use
`ScryptParams.for_tests()`, which sets the explicit ``insecure_for_tests`` flag.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.bindings as _nacl
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crdt_mls.errors import (
    DecodeError,
    InvalidArgument,
    OversizeError,
    SignatureError,
    UnsupportedError,
    WrongPasswordError,
)
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.mls.messages import Credential
from crdt_mls.mls.suites import get_cipher_suite
from crdt_mls.mls.welcome import KeyPackagePrivate
from crdt_mls.mls.welcome import make_key_package as _make_key_package

__all__ = [
    "DEFAULT_PARAMS",
    "MIN_LOG_N",
    "MIN_R",
    "Identity",
    "IdentityRecord",
    "KeyRotation",
    "PublicIdentity",
    "ScryptParams",
    "derive_key",
    "normalize_password",
    "normalize_username",
    "username_salt",
]

Rng = Callable[[int], bytes]

MIN_LOG_N = 17  #: minimum scrypt cost for real use: N = 2^17
MIN_R = 8  #: minimum scrypt block size
MAX_SCRYPT_MEMORY = 2 << 30  #: refuse parameters needing more than 2 GiB (128 * r * N)
MAX_USERNAME_BYTES = 256
_ED25519_SCHEME = 0x0807

_SALT_LABEL = b"crdt-mls/identity/v1/salt\x00"
_HKDF_SALT = b"crdt-mls/identity/v1"
_RECORD_MAGIC = b"CMLSID"
_RECORD_VERSION = 1
_ROTATION_MAGIC = b"CMLSRT"
_ROTATION_VERSION = 1
_ROTATION_LABEL = b"crdt-mls/identity/v1/key-rotation\x00"


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost parameters (RFC 7914): N = 2^log_n, r, p.

    `validate` rejects N < 2^17 or r < 8 with `InvalidArgument` unless ``insecure_for_tests``.
    """

    log_n: int = MIN_LOG_N
    r: int = MIN_R
    p: int = 1
    insecure_for_tests: bool = False

    @classmethod
    def for_tests(cls, log_n: int = 10) -> ScryptParams:
        """Cheap parameters for unit tests only (explicitly flagged insecure)."""
        return cls(log_n=log_n, r=MIN_R, p=1, insecure_for_tests=True)

    @property
    def n(self) -> int:
        return 1 << self.log_n

    @property
    def memory(self) -> int:
        """Bytes of memory scrypt needs (128 * r * N, plus 128 * r * p)."""
        return 128 * self.r * (self.n + self.p)

    @property
    def cost(self) -> int:
        """A comparable work factor (N * r * p)."""
        return self.n * self.r * self.p

    def validate(self) -> ScryptParams:
        """Return ``self`` if usable; `InvalidArgument` otherwise."""
        for name in ("log_n", "r", "p"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidArgument(f"scrypt {name} must be a positive int")
        if self.log_n > 30 or self.r > 64 or self.p > 16:
            raise InvalidArgument("scrypt parameters out of range (log_n <= 30, r <= 64, p <= 16)")
        if self.memory > MAX_SCRYPT_MEMORY:
            raise InvalidArgument(f"scrypt parameters need {self.memory >> 20} MiB (limit {MAX_SCRYPT_MEMORY >> 20})")
        if not self.insecure_for_tests and (self.log_n < MIN_LOG_N or self.r < MIN_R):
            raise InvalidArgument(
                f"scrypt N=2^{self.log_n}, r={self.r} is below the minimum N=2^{MIN_LOG_N}, r={MIN_R} "
                "(set insecure_for_tests=True only in tests)"
            )
        return self

    def encode(self, w: Writer) -> None:
        w.u8(self.log_n)
        w.u8(self.r)
        w.u8(self.p)

    @classmethod
    def decode(cls, r: Reader, *, insecure_for_tests: bool = False) -> ScryptParams:
        """Parse stored parameters; hostile values raise `DecodeError`/`OversizeError`."""
        params = cls(r.u8(), r.u8(), r.u8(), insecure_for_tests)
        if params.log_n < 1 or params.r < 1 or params.p < 1 or params.log_n > 30 or params.p > 16 or params.r > 64:
            raise DecodeError("stored scrypt parameters are out of range")
        if params.memory > MAX_SCRYPT_MEMORY:
            raise OversizeError(f"stored scrypt parameters need {params.memory >> 20} MiB")
        if not insecure_for_tests and (params.log_n < MIN_LOG_N or params.r < MIN_R):
            raise InvalidArgument(
                f"stored scrypt parameters N=2^{params.log_n}, r={params.r} are below the minimum; "
                "pass insecure_for_tests=True only in tests"
            )
        return params


DEFAULT_PARAMS = ScryptParams()


def normalize_username(username: str) -> str:
    """NFKC, trimmed, case-folded; 1..256 UTF-8 bytes without control characters."""
    if not isinstance(username, str):
        raise InvalidArgument("username must be a str")
    norm = unicodedata.normalize("NFKC", username).strip().casefold()
    if not norm:
        raise InvalidArgument("username is empty")
    if len(norm.encode("utf-8")) > MAX_USERNAME_BYTES:
        raise InvalidArgument(f"username longer than {MAX_USERNAME_BYTES} bytes")
    if any(unicodedata.category(c).startswith("C") for c in norm):
        raise InvalidArgument("username contains control characters")
    return norm


def normalize_password(password: str | bytes) -> bytes:
    """A str password is NFKC-normalized and UTF-8 encoded; bytes are used as given."""
    if isinstance(password, str):
        out = unicodedata.normalize("NFKC", password).encode("utf-8")
    elif isinstance(password, (bytes, bytearray, memoryview)):
        out = bytes(password)
    else:
        raise InvalidArgument("password must be str or bytes")
    if not out:
        raise InvalidArgument("password is empty")
    return out


def username_salt(username: str) -> bytes:
    """The scrypt salt bound to a username: SHA-256(domain label || normalized username)."""
    return hashlib.sha256(_SALT_LABEL + normalize_username(username).encode("utf-8")).digest()


def derive_key(password: str | bytes, salt: bytes, params: ScryptParams, length: int = 64) -> bytes:
    """scrypt(password, salt, N, r, p) -> ``length`` bytes (RFC 7914), after `ScryptParams.validate`."""
    params.validate()
    return hashlib.scrypt(
        normalize_password(password),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=params.memory + (1 << 24),
        dklen=length,
    )


def hkdf(ikm: bytes, info: bytes, length: int = 32, salt: bytes = _HKDF_SALT) -> bytes:
    """HKDF-SHA256 (RFC 5869) with a domain-separating ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _check_key(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise InvalidArgument(f"{what} must be 32 bytes")
    return bytes(value)


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """The public half of an identity: Ed25519 signing key and X25519 box key."""

    signing_public: bytes
    box_public: bytes

    def __post_init__(self) -> None:
        _check_key(self.signing_public, "signing public key")
        _check_key(self.box_public, "box public key")

    def verify(self, message: bytes, signature: bytes) -> None:
        """`SignatureError` unless ``signature`` is this identity's Ed25519 signature of ``message``."""
        _verify(self.signing_public, message, signature)


def _verify(public: bytes, message: bytes, signature: bytes) -> None:
    if len(signature) != 64:
        raise SignatureError("Ed25519 signature must be 64 bytes")
    try:
        _nacl.crypto_sign_open(bytes(signature) + bytes(message), bytes(public))
    except Exception:  # BadSignatureError, or ValueError for a bad point
        raise SignatureError("Ed25519 signature did not verify") from None


def _sign(seed: bytes, message: bytes) -> bytes:
    _, sk = _nacl.crypto_sign_seed_keypair(seed)
    sig: bytes = _nacl.crypto_sign(bytes(message), sk)[:64]
    return sig


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """What may be stored on disk: username, scrypt parameters, public keys.  No secrets.

    Encoding (v1): ``"CMLSID" || u8 version || opaque8 username || u8 log_n || u8 r || u8 p ||
    signing_public[32] || box_public[32]``.
    """

    username: str
    params: ScryptParams
    public: PublicIdentity

    def to_bytes(self) -> bytes:
        w = Writer()
        w.fixed(_RECORD_MAGIC)
        w.u8(_RECORD_VERSION)
        w.opaque8(self.username.encode("utf-8"))
        self.params.encode(w)
        w.fixed(self.public.signing_public)
        w.fixed(self.public.box_public)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, insecure_for_tests: bool = False) -> IdentityRecord:
        """Parse a record; `DecodeError` if malformed, `InvalidArgument` if its parameters are too weak."""
        r = Reader(bytes(data))
        if r.fixed(len(_RECORD_MAGIC)) != _RECORD_MAGIC:
            raise DecodeError("not an identity record")
        version = r.u8()
        if version != _RECORD_VERSION:
            raise DecodeError(f"identity record version {version} is not supported")
        try:
            username = r.opaque8().decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("identity record username is not UTF-8") from None
        params = ScryptParams.decode(r, insecure_for_tests=insecure_for_tests)
        public = PublicIdentity(r.fixed(32), r.fixed(32))
        r.finish()
        try:
            if normalize_username(username) != username:
                raise DecodeError("identity record username is not normalized")
        except InvalidArgument:
            raise DecodeError("identity record username is invalid") from None
        return cls(username, params, public)


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """A statement that ``old`` moved to ``new`` (after a parameter upgrade), signed by both.

    Encoding (v1): ``"CMLSRT" || u8 version || old.sign || old.box || new.sign || new.box ||
    u8 log_n || u8 r || u8 p || sig_old[64] || sig_new[64]``; both signatures are over
    ``label || everything before sig_old``.
    """

    old: PublicIdentity
    new: PublicIdentity
    params: ScryptParams
    signature_old: bytes
    signature_new: bytes

    @staticmethod
    def _tbs(old: PublicIdentity, new: PublicIdentity, params: ScryptParams) -> bytes:
        w = Writer()
        w.fixed(_ROTATION_MAGIC)
        w.u8(_ROTATION_VERSION)
        for k in (old.signing_public, old.box_public, new.signing_public, new.box_public):
            w.fixed(k)
        params.encode(w)
        return w.getvalue()

    def to_bytes(self) -> bytes:
        return self._tbs(self.old, self.new, self.params) + self.signature_old + self.signature_new

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRotation:
        """Parse and verify both signatures (`DecodeError`, `SignatureError`)."""
        r = Reader(bytes(data))
        if r.fixed(len(_ROTATION_MAGIC)) != _ROTATION_MAGIC:
            raise DecodeError("not a key rotation")
        version = r.u8()
        if version != _ROTATION_VERSION:
            raise DecodeError(f"key rotation version {version} is not supported")
        old = PublicIdentity(r.fixed(32), r.fixed(32))
        new = PublicIdentity(r.fixed(32), r.fixed(32))
        params = ScryptParams.decode(r, insecure_for_tests=True)
        sig_old, sig_new = r.fixed(64), r.fixed(64)
        r.finish()
        tbs = _ROTATION_LABEL + cls._tbs(old, new, params)
        old.verify(tbs, sig_old)
        new.verify(tbs, sig_new)
        return cls(old, new, params, sig_old, sig_new)


@dataclass(frozen=True, slots=True)
class Identity:
    """A password-derived identity: Ed25519 signing seed and X25519 box secret (hidden in repr)."""

    username: str
    params: ScryptParams
    signing_seed: bytes = field(repr=False)
    box_secret: bytes = field(repr=False)
    public: PublicIdentity

    @classmethod
    def derive(cls, username: str, password: str | bytes, params: ScryptParams = DEFAULT_PARAMS) -> Identity:
        """Derive the keys of ``username`` from ``password`` (one scrypt, about 0.25 s at N=2^17)."""
        norm = normalize_username(username)
        master = derive_key(password, username_salt(norm), params)
        return cls.from_master(norm, params, master)

    @classmethod
    def from_master(cls, username: str, params: ScryptParams, master: bytes) -> Identity:
        """Keys from a scrypt output (HKDF with labels "ed25519 signing seed" / "x25519 box key")."""
        seed = hkdf(master, b"ed25519 signing seed")
        box_secret = hkdf(master, b"x25519 box key")
        sign_pub, _ = _nacl.crypto_sign_seed_keypair(seed)
        box_pub = _nacl.crypto_scalarmult_base(box_secret)
        return cls(username, params, seed, box_secret, PublicIdentity(sign_pub, box_pub))

    @classmethod
    def unlock(
        cls, record: IdentityRecord | bytes, password: str | bytes, *, insecure_for_tests: bool = False
    ) -> Identity:
        """Re-derive the identity of a stored record; `WrongPasswordError` if the keys differ."""
        if isinstance(record, IdentityRecord):
            rec = record
        else:
            rec = IdentityRecord.from_bytes(record, insecure_for_tests=insecure_for_tests)
        ident = cls.derive(rec.username, password, rec.params)
        if ident.public != rec.public:
            raise WrongPasswordError("the password does not unlock this identity")
        return ident

    @property
    def signing_public(self) -> bytes:
        return self.public.signing_public

    @property
    def box_public(self) -> bytes:
        return self.public.box_public

    def record(self) -> IdentityRecord:
        """The storable public record (username, params, public keys)."""
        return IdentityRecord(self.username, self.params, self.public)

    def needs_upgrade(self, target: ScryptParams = DEFAULT_PARAMS) -> bool:
        """Whether the stored parameters are weaker than ``target``."""
        p = self.params
        return p.log_n < target.log_n or p.r < target.r or p.cost < target.cost

    def upgrade(self, password: str | bytes, params: ScryptParams) -> tuple[Identity, KeyRotation]:
        """Re-derive with stronger ``params`` -> (new identity, rotation signed by old and new keys).

        `WrongPasswordError` if ``password`` is not this identity's; `InvalidArgument` if the new
        parameters are not stronger.
        """
        params.validate()
        if params.cost <= self.params.cost or params.log_n < self.params.log_n or params.r < self.params.r:
            raise InvalidArgument("upgrade parameters must be stronger than the current ones")
        if Identity.derive(self.username, password, self.params).public != self.public:
            raise WrongPasswordError("the password does not unlock this identity")
        new = Identity.derive(self.username, password, params)
        tbs = _ROTATION_LABEL + KeyRotation._tbs(self.public, new.public, params)
        return new, KeyRotation(self.public, new.public, params, self.sign(tbs), new.sign(tbs))

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature of ``message``."""
        return _sign(self.signing_seed, message)

    def make_key_package(
        self,
        cipher_suite: int = 1,
        *,
        credential: Credential | bytes | None = None,
        rng: Rng = os.urandom,
    ) -> tuple[bytes, KeyPackagePrivate]:
        """A KeyPackage signed with this identity's Ed25519 key (RFC 9420 section 10).

        The init and leaf encryption keys are fresh (a KeyPackage is used once, section 10);
        the basic credential defaults to the signing public key, so the username is not
        published.  Only Ed25519 suites (1 and 3) can use a password identity.
        """
        suite = get_cipher_suite(cipher_suite)
        if suite.signature_scheme != _ED25519_SCHEME:
            raise UnsupportedError(f"cipher suite {cipher_suite} does not use Ed25519")
        cred = self.signing_public if credential is None else credential
        kp = _make_key_package(cipher_suite, cred, signature_priv=self.signing_seed, rng=rng)
        return kp.public_message(), kp
