"""Key packages and Welcome messages (RFC 9420 sections 10 and 12.4.3.1).

The joiner side: find our `EncryptedGroupSecrets` by KeyPackageRef, HPKE-decrypt the
`GroupSecrets` with the KeyPackage's ``init_key`` private key, derive the welcome key and
nonce from ``joiner_secret`` and ``psk_secret`` and decrypt the `GroupInfo`, then verify its
signature.  The committer side builds the Welcome.  The group state built from a Welcome
lives in `crdt_mls.mls.group`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from crdt_mls.errors import (
    DecodeError,
    DecryptionError,
    InvalidArgument,
    ProposalError,
    SignatureError,
    UnsupportedError,
    WelcomeError,
)
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Reader, Writer, encode_varint
from crdt_mls.mls.key_schedule import welcome_key_nonce
from crdt_mls.mls.messages import (
    MLS10,
    Capabilities,
    Credential,
    CredentialType,
    EncryptedGroupSecrets,
    Extension,
    GroupInfo,
    GroupSecrets,
    HPKECiphertext,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    MLSMessage,
    PreSharedKeyID,
    Welcome,
    WireFormat,
)
from crdt_mls.mls.suites import CipherSuite, get_cipher_suite

__all__ = [
    "ALL_SUITES",
    "KeyPackagePrivate",
    "build_welcome",
    "build_welcome_message",
    "check_key_packages",
    "decrypt_group_info",
    "key_package_ref",
    "make_key_package",
    "open_group_secrets",
    "sign_group_info",
    "verify_group_info",
    "verify_key_package",
    "verify_key_package_signatures",
]

Rng = Callable[[int], bytes]

#: Cipher suites advertised in the capabilities of the key packages we make.
ALL_SUITES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)


def key_package_ref(suite: CipherSuite, key_package: KeyPackage) -> bytes:
    """``MakeKeyPackageRef`` = RefHash("MLS 1.0 KeyPackage Reference", KeyPackage) (RFC 9420 section 5.2)."""
    return suite.ref_hash("KeyPackage Reference", key_package.to_bytes())


def _left_pad(key: bytes, length: int) -> bytes:
    """Big-endian scalars (ECDSA/P-521 keys) are sometimes serialized without leading zeros."""
    if len(key) < length:
        return bytes(length - len(key)) + key
    return key


@dataclass(frozen=True, slots=True)
class KeyPackagePrivate:
    """A KeyPackage with the private keys that go with it (RFC 9420 section 10).

    ``init_priv`` decrypts the Welcome, ``encryption_priv`` is the leaf's HPKE key,
    ``signature_priv`` the member's signature key.  ``repr`` hides the private keys.
    """

    key_package: KeyPackage
    init_priv: bytes = field(repr=False)
    encryption_priv: bytes = field(repr=False)
    signature_priv: bytes = field(repr=False)

    @property
    def suite(self) -> CipherSuite:
        return get_cipher_suite(self.key_package.cipher_suite)

    @property
    def ref(self) -> bytes:
        """The KeyPackageRef (RFC 9420 section 5.2)."""
        return key_package_ref(self.suite, self.key_package)

    def public_message(self) -> bytes:
        """The KeyPackage as MLSMessage bytes, to be published."""
        return MLSMessage(self.key_package).to_bytes()

    @classmethod
    def from_vector(
        cls, key_package: bytes, init_priv: bytes, encryption_priv: bytes, signature_priv: bytes
    ) -> KeyPackagePrivate:
        """From test-vector fields: ``key_package`` as MLSMessage or bare KeyPackage bytes.

        P-521 private scalars without their leading zero bytes are left-padded to 66 bytes.
        """
        try:
            msg = MLSMessage.from_bytes(key_package)
            kp = msg.body
        except DecodeError:
            kp = codec.decode(KeyPackage, key_package)
        if not isinstance(kp, KeyPackage):
            raise InvalidArgument("key_package is not a KeyPackage")
        suite = get_cipher_suite(kp.cipher_suite)
        return cls(
            kp,
            _left_pad(init_priv, suite.hpke_private_key_length),
            _left_pad(encryption_priv, suite.hpke_private_key_length),
            _left_pad(signature_priv, suite.signature_private_key_length),
        )

    # -- snapshot (contains secrets) --------------------------------------------------------
    def encode(self, w: Writer) -> None:
        self.key_package.encode(w)
        w.opaque(self.init_priv)
        w.opaque(self.encryption_priv)
        w.opaque(self.signature_priv)

    @classmethod
    def decode(cls, r: Reader) -> KeyPackagePrivate:
        return cls(KeyPackage.decode(r), r.opaque(), r.opaque(), r.opaque())

    def to_bytes(self) -> bytes:
        return codec.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyPackagePrivate:
        return codec.decode(cls, data)


def verify_key_package(key_package: KeyPackage, now: int | None = None) -> None:
    """KeyPackage checks of RFC 9420 section 10.1 (signature, version, suite, leaf source,
    init_key distinct from the leaf encryption key, lifetime if ``now`` is given).

    Raises `SignatureError` or `ProposalError`.
    """
    if key_package.version != MLS10:
        raise ProposalError(f"KeyPackage version {key_package.version} is not mls10")
    suite = get_cipher_suite(key_package.cipher_suite)
    leaf = key_package.leaf_node
    if leaf.leaf_node_source != LeafNodeSource.KEY_PACKAGE:
        raise ProposalError("the LeafNode of a KeyPackage must have leaf_node_source key_package")
    if key_package.init_key == leaf.encryption_key:
        raise ProposalError("KeyPackage init_key equals the leaf encryption_key")
    if not key_package._signatures_ok:  # else verified already by verify_key_package_signatures
        try:
            suite.verify_with_label(leaf.signature_key, "KeyPackageTBS", key_package.tbs(), key_package.signature)
        except (SignatureError, DecodeError):
            raise SignatureError("KeyPackage signature does not verify") from None
        try:
            suite.verify_with_label(leaf.signature_key, "LeafNodeTBS", leaf.tbs(), leaf.signature)
        except (SignatureError, DecodeError):
            raise SignatureError("LeafNode signature of the KeyPackage does not verify") from None
    if now is not None and leaf.lifetime is not None:
        lt = leaf.lifetime
        if not lt.not_before <= now <= lt.not_after:
            raise ProposalError("KeyPackage lifetime does not cover the current time")


_T = TypeVar("_T")


def check_key_packages(items: Sequence[_T], parse: Callable[[_T], KeyPackage]) -> list[KeyPackage]:
    """``[parse(x) for x in items]``, then the two signatures of every KeyPackage (RFC 9420
    section 10.1: KeyPackageTBS and the leaf's LeafNodeTBS) checked in one batch on the worker
    threads of `crdt_mls.mls.parallel`.

    Only ``parse`` raises (the error of the first failing item, as the serial loop would).  A
    KeyPackage whose signatures verify is marked, and `verify_key_package` then skips its
    signature checks (they depend only on the immutable KeyPackage); any other is checked
    again, with the usual errors, by `verify_key_package`.
    """
    kps = [parse(x) for x in items]
    by_suite: dict[int, list[KeyPackage]] = {}
    for kp in kps:
        if not kp._signatures_ok and kp.leaf_node.leaf_node_source == LeafNodeSource.KEY_PACKAGE:
            by_suite.setdefault(kp.cipher_suite, []).append(kp)
    for suite_id, todo in by_suite.items():
        try:
            suite = get_cipher_suite(suite_id)
        except UnsupportedError:
            continue  # verify_key_package reports it
        keys = [kp.leaf_node.signature_key for kp in todo]
        kp_ok = suite.verify_labeled_many(
            keys, "KeyPackageTBS", [kp.tbs() for kp in todo], [kp.signature for kp in todo]
        )
        leaves = [kp.leaf_node for kp in todo]
        leaf_ok = suite.verify_labeled_many(
            keys, "LeafNodeTBS", [lf.tbs() for lf in leaves], [lf.signature for lf in leaves]
        )
        for kp, good, good_leaf in zip(todo, kp_ok, leaf_ok, strict=True):
            if good and good_leaf:
                object.__setattr__(kp, "_signatures_ok", True)
    return kps


def verify_key_package_signatures(key_packages: Sequence[KeyPackage]) -> int:
    """Check the signatures of many KeyPackages in one parallel batch (see
    `check_key_packages`); returns how many are marked as verified.  Raises nothing."""
    checked = check_key_packages(key_packages, _same)
    return sum(1 for kp in checked if kp._signatures_ok)


def _same(kp: KeyPackage) -> KeyPackage:
    return kp


def make_key_package(
    cipher_suite: int,
    credential: Credential | bytes,
    *,
    signature_priv: bytes | None = None,
    capabilities: Capabilities | None = None,
    lifetime: Lifetime | None = None,
    leaf_extensions: Sequence[Extension] = (),
    extensions: Sequence[Extension] = (),
    rng: Rng = os.urandom,
) -> KeyPackagePrivate:
    """A fresh signed KeyPackage and its private keys (RFC 9420 section 10).

    ``credential`` is a Credential or the identity of a basic credential.  The lifetime
    defaults to the eternal one (0, 2^64-1).
    """
    suite = get_cipher_suite(cipher_suite)
    cred = credential if isinstance(credential, Credential) else Credential.basic(bytes(credential))
    if signature_priv is None:
        signature_priv, signature_pub = suite.generate_signature_key_pair(rng)
    else:
        signature_pub = suite.signature_public_key(signature_priv)
    init_priv, init_pub = suite.generate_hpke_key_pair(rng)
    enc_priv, enc_pub = suite.generate_hpke_key_pair(rng)
    caps = capabilities or Capabilities(
        versions=(MLS10,),
        cipher_suites=ALL_SUITES,
        extensions=(),
        proposals=(),
        credentials=(CredentialType.BASIC, CredentialType.X509),
    )
    leaf = LeafNode(
        encryption_key=enc_pub,
        signature_key=signature_pub,
        credential=cred,
        capabilities=caps,
        leaf_node_source=LeafNodeSource.KEY_PACKAGE,
        lifetime=lifetime or Lifetime(0, (1 << 64) - 1),
        extensions=tuple(leaf_extensions),
    )
    leaf = leaf.with_signature(suite.sign_with_label(signature_priv, "LeafNodeTBS", leaf.tbs()))
    kp = KeyPackage(MLS10, cipher_suite, init_pub, leaf, tuple(extensions))
    kp = KeyPackage(
        kp.version,
        kp.cipher_suite,
        kp.init_key,
        kp.leaf_node,
        kp.extensions,
        suite.sign_with_label(signature_priv, "KeyPackageTBS", kp.tbs()),
    )
    return KeyPackagePrivate(kp, init_priv, enc_priv, signature_priv)


def open_group_secrets(welcome: Welcome, key_package: KeyPackagePrivate) -> GroupSecrets:
    """Find and decrypt our EncryptedGroupSecrets (RFC 9420 section 12.4.3.1)."""
    kp = key_package.key_package
    if welcome.cipher_suite != kp.cipher_suite:
        raise WelcomeError(
            f"Welcome cipher suite {welcome.cipher_suite} differs from the KeyPackage's {kp.cipher_suite}"
        )
    suite = key_package.suite
    ref = key_package.ref
    entry = next((s for s in welcome.secrets if s.new_member == ref), None)
    if entry is None:
        raise WelcomeError("the Welcome has no EncryptedGroupSecrets for this KeyPackage")
    ct = entry.encrypted_group_secrets
    try:
        raw = suite.decrypt_with_label(
            key_package.init_priv, "Welcome", welcome.encrypted_group_info, ct.kem_output, ct.ciphertext
        )
    except (DecryptionError, DecodeError):
        raise DecryptionError("cannot decrypt the Welcome's GroupSecrets") from None
    try:
        return codec.decode(GroupSecrets, raw)
    except DecodeError as e:
        raise WelcomeError(f"malformed GroupSecrets: {e}") from None


def _welcome_secret(suite: CipherSuite, joiner_secret: bytes, psk_secret: bytes) -> bytes:
    """``welcome_secret = DeriveSecret(Extract(joiner_secret, psk_secret), "welcome")`` (RFC 9420 section 8)."""
    return suite.derive_secret(suite.kdf_extract(joiner_secret, psk_secret), "welcome")


def decrypt_group_info(suite: CipherSuite, welcome: Welcome, joiner_secret: bytes, psk_secret: bytes) -> GroupInfo:
    """Decrypt ``encrypted_group_info`` with the welcome key and nonce (RFC 9420 section 12.4.3.1)."""
    if len(joiner_secret) != suite.hash_length:
        raise WelcomeError(f"joiner_secret has {len(joiner_secret)} bytes, expected {suite.hash_length}")
    key, nonce = welcome_key_nonce(suite, _welcome_secret(suite, joiner_secret, psk_secret))
    try:
        raw = suite.aead_open(key, nonce, b"", welcome.encrypted_group_info)
    except DecryptionError:
        raise DecryptionError("cannot decrypt the Welcome's GroupInfo") from None
    try:
        return codec.decode(GroupInfo, raw)
    except DecodeError as e:
        raise WelcomeError(f"malformed GroupInfo: {e}") from None


def verify_group_info(suite: CipherSuite, group_info: GroupInfo, signer_public_key: bytes) -> None:
    """Verify the GroupInfo signature (RFC 9420 section 12.4.3); `SignatureError` if invalid."""
    try:
        suite.verify_with_label(signer_public_key, "GroupInfoTBS", group_info.tbs(), group_info.signature)
    except (SignatureError, DecodeError):
        raise SignatureError(f"GroupInfo signature of signer {group_info.signer} does not verify") from None


def sign_group_info(suite: CipherSuite, group_info: GroupInfo, signature_priv: bytes) -> GroupInfo:
    """Return ``group_info`` with its signature set (RFC 9420 section 12.4.3)."""
    sig = suite.sign_with_label(signature_priv, "GroupInfoTBS", group_info.tbs())
    return GroupInfo(
        group_info.group_context, group_info.extensions, group_info.confirmation_tag, group_info.signer, sig
    )


def build_welcome(
    suite: CipherSuite,
    group_info: GroupInfo,
    joiner_secret: bytes,
    psk_secret: bytes,
    psks: Sequence[PreSharedKeyID],
    recipients: Sequence[tuple[KeyPackage, bytes | None]],
    rng: Rng = os.urandom,
) -> Welcome:
    """Encrypt a signed GroupInfo and one GroupSecrets per new member (RFC 9420 section 12.4.3.1).

    ``recipients`` are ``(KeyPackage, path_secret or None)`` pairs.
    """

    def entry(i: int, kem_output: bytes, ciphertext: bytes) -> EncryptedGroupSecrets:
        ref = key_package_ref(suite, recipients[i][0])
        return EncryptedGroupSecrets(ref, HPKECiphertext(kem_output, ciphertext))

    encrypted_group_info, secrets = _seal_welcome(
        suite, group_info, joiner_secret, psk_secret, psks, recipients, entry, rng
    )
    return Welcome(suite.suite_id, tuple(secrets), encrypted_group_info)


def build_welcome_message(
    suite: CipherSuite,
    group_info: GroupInfo,
    joiner_secret: bytes,
    psk_secret: bytes,
    psks: Sequence[PreSharedKeyID],
    recipients: Sequence[tuple[KeyPackage, bytes | None]],
    rng: Rng = os.urandom,
) -> bytes:
    """`build_welcome` encoded as MLSMessage bytes (RFC 9420 sections 6, 12.4.3.1), the same
    bytes as ``MLSMessage(build_welcome(...)).to_bytes()``: each EncryptedGroupSecrets is
    encoded as it is sealed, with no objects per new member."""

    def entry(i: int, kem_output: bytes, ciphertext: bytes) -> bytes:
        ref = key_package_ref(suite, recipients[i][0])
        return b"".join(
            (
                encode_varint(len(ref)),
                ref,
                encode_varint(len(kem_output)),
                kem_output,
                encode_varint(len(ciphertext)),
                ciphertext,
            )
        )

    encrypted_group_info, secrets = _seal_welcome(
        suite, group_info, joiner_secret, psk_secret, psks, recipients, entry, rng
    )
    w = Writer()
    w.u16(MLS10)
    w.u16(WireFormat.MLS_WELCOME)
    w.u16(suite.suite_id)
    w.opaque(b"".join(secrets))
    w.opaque(encrypted_group_info)
    return w.getvalue()


def _seal_welcome(
    suite: CipherSuite,
    group_info: GroupInfo,
    joiner_secret: bytes,
    psk_secret: bytes,
    psks: Sequence[PreSharedKeyID],
    recipients: Sequence[tuple[KeyPackage, bytes | None]],
    entry: Callable[[int, bytes, bytes], _T],
    rng: Rng,
) -> tuple[bytes, list[_T]]:
    """The encrypted GroupInfo and ``entry(i, kem_output, ciphertext)`` of each recipient's
    sealed GroupSecrets (RFC 9420 section 12.4.3.1); the seals run as one parallel batch."""
    key, nonce = welcome_key_nonce(suite, _welcome_secret(suite, joiner_secret, psk_secret))
    encrypted_group_info = suite.aead_seal(key, nonce, b"", codec.encode(group_info))
    # GroupSecrets differ only by path secret: encode each distinct one once
    psk_ids = tuple(psks)
    encoded: dict[bytes | None, bytes] = {}
    init_keys: list[bytes] = []
    plaintexts: list[bytes] = []
    for kp, path_secret in recipients:
        plaintext = encoded.get(path_secret)
        if plaintext is None:
            plaintext = encoded[path_secret] = codec.encode(GroupSecrets(joiner_secret, path_secret, psk_ids))
        init_keys.append(kp.init_key)
        plaintexts.append(plaintext)
    secrets = suite.encrypt_with_label_many_then(init_keys, plaintexts, "Welcome", encrypted_group_info, entry, rng=rng)
    return encrypted_group_info, secrets
