"""Single-file encryption to a password or to public keys, streamed in chunks (docs/content.md section 3).

Minilock's model: one file, any number of recipients, the sender authenticated, the
recipients hidden.  Format v1 (all integers big-endian)::

    header  = "CMLSFE" || u8 version=1 || u8 kind || u8 chunk_log || file_id[16] || body
    kind 1 (password):   body = u8 log_n || u8 r || u8 p || salt[32] || wrapped_key[48]
    kind 2 (recipients): body = u16 n_slots || slot[200] * n_slots
    chunks  = ChaCha20-Poly1305(chunk_key, nonce = u8 final || 0[3] || u64 index, aad = H(header))

``file_key`` is random.  Password mode: ``kek = HKDF(scrypt(password, salt))`` and
``wrapped_key = AEAD(kek, 0, file_key, aad = header prefix)``.  Recipient mode: each slot is
``crypto_box_seal(recipient, sender_box_pub || nonce || crypto_box(sender -> recipient,
file_key || file_id || sender_sign_pub))``, an anonymous box; the list is padded with slots
sealed to throw-away keys up to a power of two (at least 4) and shuffled, so only an upper
bound of the recipient count leaks.  ``chunk_key = HKDF(file_key, salt = H(header))``.

Every non-final chunk holds exactly ``2^chunk_log`` plaintext bytes, the final chunk 0 to
``2^chunk_log`` bytes (in recipient mode followed by the sender's Ed25519 signature over
``H(header) || SHA-256(plaintext)``) and is flagged final in its nonce: truncation,
reordering, duplication and tampering all fail authentication.

Streaming semantics: `Decryptor` yields each non-final chunk as soon as it is authenticated,
but the file as a whole (its end, and in recipient mode the sender's signature) is only
verified when the last chunk is reached.  A consumer that writes chunks as they come MUST
discard its output when iteration raises; `decrypt_to_path` does this for you (temp file,
renamed only on success).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

import nacl.bindings as _nacl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from crdt_mls.content.identity import (
    DEFAULT_PARAMS,
    Identity,
    PublicIdentity,
    ScryptParams,
    derive_key,
    hkdf,
)
from crdt_mls.errors import (
    DecodeError,
    DecryptionError,
    InvalidArgument,
    NotRecipientError,
    OversizeError,
    SignatureError,
    TruncatedError,
    WrongPasswordError,
)
from crdt_mls.mls.codec import Reader

__all__ = [
    "DEFAULT_CHUNK_LOG",
    "Decryptor",
    "FileInfo",
    "decrypt_bytes",
    "decrypt_file",
    "decrypt_to_path",
    "encrypt_bytes",
    "encrypt_chunks",
    "encrypt_file",
]

Rng = Callable[[int], bytes]

MAGIC = b"CMLSFE"
VERSION = 1
KIND_PASSWORD = 1
KIND_RECIPIENTS = 2
DEFAULT_CHUNK_LOG = 16  #: 64 KiB chunks
MIN_CHUNK_LOG = 10
MAX_CHUNK_LOG = 24
MAX_SLOTS = 4096
MIN_SLOTS = 4
DEFAULT_MAX_SCRYPT_MEMORY = 1 << 29  #: a password file may ask for at most 512 MiB of scrypt memory (N=2^19, r=8)
TAG = 16
SIG = 64
_BOX_PLAIN = 32 + 16 + 32  # file_key || file_id || sender_sign_pub
_SLOT_PLAIN = 32 + 24 + _BOX_PLAIN + 16  # sender_box_pub || nonce || box
SLOT_LEN = _SLOT_PLAIN + 48  # sealed box overhead: ephemeral key + MAC
_FIXED = len(MAGIC) + 3 + 16
_SIG_LABEL = b"crdt-mls/file/v1/signature\x00"


@runtime_checkable
class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _nonce(index: int, final: bool) -> bytes:
    return struct.pack(">B3xQ", 1 if final else 0, index)


def _recipient_key(r: bytes | PublicIdentity | Identity) -> bytes:
    if isinstance(r, Identity):
        return r.box_public
    if isinstance(r, PublicIdentity):
        return r.box_public
    if isinstance(r, (bytes, bytearray)) and len(r) == 32:
        return bytes(r)
    raise InvalidArgument("a recipient must be a 32-byte X25519 public key or a (Public)Identity")


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What a successful decryption learned: the mode, the authenticated sender (recipient mode), the size."""

    kind: int
    sender: PublicIdentity | None
    size: int


# ---------------------------------------------------------------------------- encryption


def encrypt_chunks(
    chunks: Iterable[bytes],
    *,
    password: str | bytes | None = None,
    params: ScryptParams = DEFAULT_PARAMS,
    sender: Identity | None = None,
    recipients: Sequence[bytes | PublicIdentity | Identity] = (),
    pad_recipients_to: int | None = None,
    chunk_log: int = DEFAULT_CHUNK_LOG,
    rng: Rng = os.urandom,
) -> Iterator[bytes]:
    """Encrypt a stream of plaintext pieces (any sizes) -> header, then one ciphertext per chunk.

    Exactly one mode: ``password`` (with scrypt ``params``) or ``sender`` + ``recipients``.
    Memory use is one chunk whatever the file size.  Arguments are checked before anything is yielded.
    """
    header, chunk_key, signer = _make_header(password, params, sender, recipients, pad_recipients_to, chunk_log, rng)
    return _encrypt_iter(header, chunk_key, signer, chunks, 1 << chunk_log)


def _make_header(
    password: str | bytes | None,
    params: ScryptParams,
    sender: Identity | None,
    recipients: Sequence[bytes | PublicIdentity | Identity],
    pad_to: int | None,
    chunk_log: int,
    rng: Rng,
) -> tuple[bytes, bytes, Identity | None]:
    if not isinstance(chunk_log, int) or not MIN_CHUNK_LOG <= chunk_log <= MAX_CHUNK_LOG:
        raise InvalidArgument(f"chunk_log must be in {MIN_CHUNK_LOG}..{MAX_CHUNK_LOG}")
    file_key = _rand(rng, 32)
    file_id = _rand(rng, 16)
    if password is not None:
        if sender is not None or recipients:
            raise InvalidArgument("give either a password or a sender with recipients, not both")
        params.validate()
        salt = _rand(rng, 32)
        prefix = MAGIC + bytes([VERSION, KIND_PASSWORD, chunk_log]) + file_id
        prefix += bytes([params.log_n, params.r, params.p]) + salt
        kek = hkdf(derive_key(password, salt, params), b"file key-encryption key")
        header = prefix + ChaCha20Poly1305(kek).encrypt(bytes(12), file_key, prefix)
        signer = None
    else:
        if sender is None or not recipients:
            raise InvalidArgument("recipient mode needs a sender identity and at least one recipient")
        keys = [_recipient_key(r) for r in recipients]
        n_slots = max(MIN_SLOTS, _next_pow2(len(keys)))
        if pad_to is not None:
            if pad_to < len(keys):
                raise InvalidArgument("pad_recipients_to is smaller than the number of recipients")
            n_slots = max(pad_to, len(keys))
        if n_slots > MAX_SLOTS:
            raise InvalidArgument(f"at most {MAX_SLOTS} recipient slots")
        box_plain = file_key + file_id + sender.signing_public
        slots: list[bytes] = []
        for pk in keys:
            nonce = _rand(rng, 24)
            try:
                boxed = _nacl.crypto_box(box_plain, nonce, pk, sender.box_secret)
            except Exception:
                raise InvalidArgument("a recipient key is not a valid X25519 public key") from None
            slots.append(_nacl.crypto_box_seal(sender.box_public + nonce + boxed, pk))
        while len(slots) < n_slots:  # indistinguishable padding: sealed to a throw-away key
            dummy_pk = _nacl.crypto_scalarmult_base(_rand(rng, 32))
            slots.append(_nacl.crypto_box_seal(_rand(rng, _SLOT_PLAIN), dummy_pk))
        order = random.Random(_rand(rng, 32)).sample(range(len(slots)), len(slots))
        header = MAGIC + bytes([VERSION, KIND_RECIPIENTS, chunk_log]) + file_id
        header += struct.pack(">H", n_slots) + b"".join(slots[i] for i in order)
        signer = sender
    header_hash = hashlib.sha256(header).digest()
    return header, hkdf(file_key, b"file chunk key", salt=header_hash), signer


def _rand(rng: Rng, n: int) -> bytes:
    out = rng(n)
    if len(out) != n:
        raise InvalidArgument(f"rng returned {len(out)} bytes instead of {n}")
    return out


def _encrypt_iter(
    header: bytes, chunk_key: bytes, signer: Identity | None, chunks: Iterable[bytes], size: int
) -> Iterator[bytes]:
    aead = ChaCha20Poly1305(chunk_key)
    header_hash = hashlib.sha256(header).digest()
    transcript = hashlib.sha256()
    yield header
    buf = bytearray()
    index = 0
    for piece in chunks:
        if not isinstance(piece, (bytes, bytearray, memoryview)):
            raise InvalidArgument("plaintext pieces must be bytes")
        buf += piece
        # keep at least one byte back so the final chunk is never empty unless the file is
        while len(buf) > size:
            block = bytes(buf[:size])
            del buf[:size]
            transcript.update(block)
            yield aead.encrypt(_nonce(index, False), block, header_hash)
            index += 1
    last = bytes(buf)
    transcript.update(last)
    if signer is not None:
        last += signer.sign(_SIG_LABEL + header_hash + transcript.digest())
    yield aead.encrypt(_nonce(index, True), last, header_hash)


def _pieces(src: _Readable, size: int) -> Iterator[bytes]:
    while True:
        piece = src.read(size)
        if not piece:
            return
        yield piece


def encrypt_file(src: BinaryIO, dst: BinaryIO, **kw: object) -> None:
    """Encrypt the file object ``src`` into ``dst`` in constant memory (keywords of `encrypt_chunks`)."""
    for out in encrypt_chunks(_pieces(src, 1 << 16), **kw):  # type: ignore[arg-type]
        dst.write(out)


def encrypt_bytes(data: bytes, **kw: object) -> bytes:
    """Encrypt ``data`` in memory (keywords of `encrypt_chunks`)."""
    return b"".join(encrypt_chunks([bytes(data)], **kw))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- decryption


class _Source:
    """Bytes from a file object or an iterator of pieces, read exactly."""

    __slots__ = ("_buf", "_eof", "_it", "_src")

    def __init__(self, src: _Readable | Iterable[bytes] | bytes) -> None:
        self._buf = bytearray()
        self._eof = False
        self._src: _Readable | None = None
        self._it: Iterator[bytes] | None = None
        if isinstance(src, (bytes, bytearray, memoryview)):
            self._buf += src
            self._eof = True
        elif isinstance(src, _Readable):
            self._src = src
        else:
            self._it = iter(src)

    def _more(self, want: int) -> bool:
        if self._eof:
            return False
        if self._src is not None:
            piece = self._src.read(max(want, 1 << 16))
        else:
            assert self._it is not None
            piece = b""
            for piece in self._it:
                if not isinstance(piece, (bytes, bytearray, memoryview)) or piece:
                    break
        if not isinstance(piece, (bytes, bytearray, memoryview)):
            raise InvalidArgument("ciphertext pieces must be bytes")
        if not piece:
            self._eof = True
            return False
        self._buf += piece
        return True

    def fill(self, n: int) -> int:
        """Buffer at least ``n`` bytes if the source has them; return the buffered length."""
        while len(self._buf) < n and self._more(n - len(self._buf)):
            pass
        return len(self._buf)

    def take(self, n: int) -> bytes:
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def exact(self, n: int, what: str) -> bytes:
        if self.fill(n) < n:
            raise TruncatedError(f"encrypted file ends inside its {what}")
        return self.take(n)


class Decryptor:
    """Parse the header of an encrypted file, then iterate over authenticated plaintext chunks.

    ``password`` opens a password file, ``identity`` a recipient file; a password file whose
    scrypt parameters need more than ``max_scrypt_memory`` is refused (`OversizeError`) so a
    hostile header cannot make us spend gigabytes.  After the header:
    ``kind`` and (recipient mode) ``sender``, which is authenticated only once iteration
    has finished without error (see the module docstring on streaming semantics).
    """

    __slots__ = ("_aead", "_chunk", "_hh", "_src", "_started", "kind", "sender", "size")

    def __init__(
        self,
        source: _Readable | Iterable[bytes] | bytes,
        *,
        password: str | bytes | None = None,
        identity: Identity | None = None,
        insecure_for_tests: bool = False,
        max_scrypt_memory: int = DEFAULT_MAX_SCRYPT_MEMORY,
    ) -> None:
        self._src = _Source(source)
        self._started = False
        self.size = 0
        fixed = self._src.exact(_FIXED, "header")
        if fixed[: len(MAGIC)] != MAGIC:
            raise DecodeError("not a crdt-mls encrypted file")
        version, kind, chunk_log = fixed[len(MAGIC) : len(MAGIC) + 3]
        if version != VERSION:
            raise DecodeError(f"encrypted file version {version} is not supported")
        if not MIN_CHUNK_LOG <= chunk_log <= MAX_CHUNK_LOG:
            raise DecodeError(f"encrypted file chunk size 2^{chunk_log} is out of range")
        file_id = fixed[-16:]
        self._chunk = 1 << chunk_log
        self.kind = kind
        self.sender: PublicIdentity | None = None
        if kind == KIND_PASSWORD:
            if password is None:
                raise InvalidArgument("this file is encrypted to a password; give password=")
            body = self._src.exact(3 + 32 + 48, "password header")
            params = ScryptParams.decode(Reader(body[:3]), insecure_for_tests=insecure_for_tests)
            if params.memory > max_scrypt_memory:
                raise OversizeError(
                    f"the file asks for scrypt with {params.memory >> 20} MiB (limit {max_scrypt_memory >> 20} MiB)"
                )
            prefix = fixed + body[:35]
            kek = hkdf(derive_key(password, body[3:35], params), b"file key-encryption key")
            try:
                file_key = ChaCha20Poly1305(kek).decrypt(bytes(12), body[35:], prefix)
            except InvalidTag:
                raise WrongPasswordError("wrong password for this file (or its header was altered)") from None
            header = prefix + body[35:]
        elif kind == KIND_RECIPIENTS:
            if identity is None:
                raise InvalidArgument("this file is encrypted to public keys; give identity=")
            count = self._src.exact(2, "recipient count")
            (n_slots,) = struct.unpack(">H", count)
            if not 1 <= n_slots <= MAX_SLOTS:
                raise OversizeError(f"{n_slots} recipient slots (limit {MAX_SLOTS})")
            slots = self._src.exact(n_slots * SLOT_LEN, "recipient slots")
            header = fixed + count + slots
            file_key = b""
            for i in range(n_slots):
                opened = _open_slot(slots[i * SLOT_LEN : (i + 1) * SLOT_LEN], identity, file_id)
                if opened is not None:
                    file_key, self.sender = opened
                    break
            if self.sender is None:
                raise NotRecipientError("this key is not among the file's recipients")
        else:
            raise DecodeError(f"unknown encrypted file kind {kind}")
        self._hh = hashlib.sha256(header).digest()
        self._aead = ChaCha20Poly1305(hkdf(file_key, b"file chunk key", salt=self._hh))

    def __repr__(self) -> str:
        return f"Decryptor(kind={self.kind}, chunk={self._chunk})"

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise InvalidArgument("a Decryptor can be iterated once")
        self._started = True
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        sig = SIG if self.kind == KIND_RECIPIENTS else 0
        full = self._chunk + TAG
        transcript = hashlib.sha256()
        index = 0
        while self._src.fill(full + sig + 1) > full + sig:
            block = self._src.take(full)
            try:
                plain = self._aead.decrypt(_nonce(index, False), block, self._hh)
            except InvalidTag:
                raise DecryptionError(
                    f"chunk {index} failed authentication (tampered, reordered, duplicated or from another file)"
                ) from None
            transcript.update(plain)
            self.size += len(plain)
            index += 1
            yield plain
        rest = self._src.take(full + sig)
        if len(rest) < TAG + sig:
            raise TruncatedError(f"encrypted file ends after chunk {index - 1} without its final chunk")
        try:
            last = self._aead.decrypt(_nonce(index, True), rest, self._hh)
        except InvalidTag:
            if len(rest) >= full and _authentic(self._aead, index, rest[:full], self._hh):
                raise TruncatedError(f"encrypted file ends after chunk {index} without its final chunk") from None
            raise DecryptionError(f"final chunk {index} failed authentication (tampered or truncated)") from None
        if sig:
            last, signature = last[:-sig], last[-sig:]
            transcript.update(last)
            assert self.sender is not None
            try:
                self.sender.verify(_SIG_LABEL + self._hh + transcript.digest(), signature)
            except SignatureError:
                raise DecryptionError("the sender's signature over the file does not verify") from None
        self.size += len(last)
        yield last

    def info(self) -> FileInfo:
        return FileInfo(self.kind, self.sender, self.size)


def _authentic(aead: ChaCha20Poly1305, index: int, block: bytes, hh: bytes) -> bool:
    try:
        aead.decrypt(_nonce(index, False), block, hh)
    except InvalidTag:
        return False
    return True


def _open_slot(slot: bytes, identity: Identity, file_id: bytes) -> tuple[bytes, PublicIdentity] | None:
    try:
        inner = _nacl.crypto_box_seal_open(slot, identity.box_public, identity.box_secret)
    except Exception:  # nacl CryptoError: not for us
        return None
    sender_box, nonce, boxed = inner[:32], inner[32:56], inner[56:]
    try:
        plain = _nacl.crypto_box_open(boxed, nonce, sender_box, identity.box_secret)
    except Exception:
        raise DecryptionError("our recipient entry is not authenticated by its sender key") from None
    file_key, fid, sender_sign = plain[:32], plain[32:48], plain[48:]
    if fid != file_id:
        raise DecryptionError("our recipient entry belongs to another file")
    return file_key, PublicIdentity(sender_sign, sender_box)


def decrypt_file(src: BinaryIO, dst: BinaryIO, **kw: object) -> FileInfo:
    """Stream-decrypt ``src`` into ``dst``.  On error ``dst`` holds unauthenticated partial output
    that the caller must discard; prefer `decrypt_to_path`."""
    dec = Decryptor(src, **kw)  # type: ignore[arg-type]
    for plain in dec:
        dst.write(plain)
    return dec.info()


def decrypt_to_path(src: BinaryIO | str | os.PathLike[str], path: str | os.PathLike[str], **kw: object) -> FileInfo:
    """Decrypt into a temporary file next to ``path`` and rename it to ``path`` only on success;
    on any error the temporary file is removed and ``path`` is left as it was."""
    target = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".crdt-mls-", suffix=".part", dir=os.path.dirname(os.path.abspath(target)))
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(src, (str, os.PathLike)):
                with open(src, "rb") as inp:
                    info = decrypt_file(inp, out, **kw)
            else:
                info = decrypt_file(src, out, **kw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return info


def decrypt_bytes(data: bytes, **kw: object) -> tuple[bytes, FileInfo]:
    """Decrypt an in-memory file -> (plaintext, info); nothing is returned unless all of it verifies."""
    dec = Decryptor(bytes(data), **kw)  # type: ignore[arg-type]
    plain = b"".join(dec)
    return plain, dec.info()
