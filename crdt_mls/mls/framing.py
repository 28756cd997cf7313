"""Message framing: signing, PublicMessage and PrivateMessage protection (RFC 9420 section 6).

* `authenticate` signs a FramedContent into an AuthenticatedContent (section 6.1).
* `protect_public` / `unprotect_public` add and check the membership tag (section 6.2).
* `protect_private` / `unprotect_private` encrypt and decrypt with the secret tree and the
  sender-data key (section 6.3), applying the reuse guard and padding.

Large contents (commits with an UpdatePath) are encoded once: every function that needs the
FramedContent encoding (signature TBS, membership-tag TBM, the PublicMessage bytes, the
transcript hash) accepts it pre-encoded as ``content_bytes`` (see `encode_content`).

Every ``unprotect_*`` returns the verified AuthenticatedContent or raises a typed
`crdt_mls.errors.RemoteInputError`; on any failure the secret tree is left unchanged
(keys are consumed only after the content decrypted, decoded and verified).
Confirmation tags of commits are checked by the group (they need the next epoch's key,
see `crdt_mls.mls.transcript.verify_confirmation_tag`).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from crdt_mls.errors import (
    DecodeError,
    InvalidArgument,
    MembershipTagError,
    ProtocolError,
    SignatureError,
    WrongEpochError,
    WrongGroupError,
)
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Reader, Writer, encode_varint
from crdt_mls.mls.messages import (
    MLS10,
    AuthenticatedContent,
    ContentType,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    PrivateMessage,
    PrivateMessageContent,
    ProposalType,
    PublicMessage,
    Sender,
    SenderData,
    SenderType,
    WireFormat,
)
from crdt_mls.mls.secret_tree import RatchetType, SecretTree
from crdt_mls.mls.suites import CipherSuite

__all__ = [
    "SignatureKey",
    "authenticate",
    "check_sender_content",
    "encode_content",
    "group_context_bytes",
    "membership_tag",
    "protect_private",
    "private_message_bytes",
    "protect_public",
    "public_message_bytes",
    "ratchet_type_for",
    "sender_data_key_nonce",
    "sign_framed_content",
    "unprotect_private",
    "unprotect_public",
    "verify_framed_content",
]

_TBS_LABEL = "FramedContentTBS"

#: The signature public key of a message's sender: the key itself, or a lookup from the
#: Sender (which should raise a `ProtocolError` for a blank or unknown leaf).
SignatureKey = bytes | Callable[[Sender], bytes]

Rng = Callable[[int], bytes]


_MLS10 = MLS10.to_bytes(2, "big")
_WIRE = {int(wf): int(wf).to_bytes(2, "big") for wf in WireFormat}
#: the last few GroupContexts encoded, by identity (a group encodes its context for every
#: message it signs or verifies in an epoch)
_GC_CACHE: dict[int, tuple[GroupContext, bytes]] = {}


def group_context_bytes(context: GroupContext) -> bytes:
    """The encoding of a GroupContext (RFC 9420 section 8.1), memoized for recently used objects."""
    hit = _GC_CACHE.get(id(context))
    if hit is not None and hit[0] is context:
        return hit[1]
    data = context.to_bytes()
    if len(_GC_CACHE) >= 64:
        _GC_CACHE.clear()
    _GC_CACHE[id(context)] = (context, data)
    return data


def encode_content(content: FramedContent) -> bytes:
    """The encoding of a FramedContent (RFC 9420 section 6), to pass as ``content_bytes``."""
    body = content.content
    sender = content.sender
    if isinstance(body, bytes) and sender.sender_type == SenderType.MEMBER and sender.index is not None:
        # application data of a member (every message): assembled directly, same bytes
        gid, aad = content.group_id, content.authenticated_data
        return b"".join(
            (
                encode_varint(len(gid)),
                gid,
                content.epoch.to_bytes(8, "big"),
                b"\x01",
                sender.index.to_bytes(4, "big"),
                encode_varint(len(aad)),
                aad,
                b"\x01",
                encode_varint(len(body)),
                body,
            )
        )
    return codec.encode(content)


def _tbs(wire_format: int, content: FramedContent, context: GroupContext | None, content_bytes: bytes | None) -> bytes:
    """FramedContentTBS (RFC 9420 section 6.1): version, wire_format, the content and, for member
    and new_member_commit senders, the GroupContext."""
    body = encode_content(content) if content_bytes is None else content_bytes
    head = _MLS10 + _WIRE.get(wire_format, int(wire_format).to_bytes(2, "big"))
    if content.sender.sender_type in (SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT):
        if context is None:
            raise InvalidArgument("FramedContentTBS of a member/new_member_commit sender needs the GroupContext")
        return head + body + group_context_bytes(context)
    return head + body


def sign_framed_content(
    suite: CipherSuite,
    signature_priv: bytes,
    wire_format: WireFormat,
    content: FramedContent,
    context: GroupContext | None,
    *,
    content_bytes: bytes | None = None,
) -> bytes:
    """``SignWithLabel(., "FramedContentTBS", FramedContentTBS)`` (RFC 9420 section 6.1)."""
    return suite.sign_with_label(signature_priv, _TBS_LABEL, _tbs(wire_format, content, context, content_bytes))


def authenticate(
    suite: CipherSuite,
    signature_priv: bytes,
    wire_format: WireFormat,
    content: FramedContent,
    context: GroupContext | None,
    confirmation_tag: bytes | None = None,
) -> AuthenticatedContent:
    """Sign ``content`` into an AuthenticatedContent (RFC 9420 section 6.1).

    Commits need the ``confirmation_tag``; a committer who must first know the signature
    (to compute the confirmed transcript hash) calls `sign_framed_content` and builds the
    AuthenticatedContent itself.
    """
    if wire_format not in (WireFormat.MLS_PUBLIC_MESSAGE, WireFormat.MLS_PRIVATE_MESSAGE):
        raise InvalidArgument(f"wire_format {wire_format!r} cannot carry framed content")
    auth = FramedContentAuthData(
        sign_framed_content(suite, signature_priv, wire_format, content, context), confirmation_tag
    )
    auth.check(content.content_type)
    return AuthenticatedContent(wire_format, content, auth)


def _resolve_key(signature_key: SignatureKey, sender: Sender) -> bytes:
    if isinstance(signature_key, bytes | bytearray):
        return bytes(signature_key)
    return signature_key(sender)


def verify_framed_content(
    suite: CipherSuite,
    signature_pub: bytes,
    auth_content: AuthenticatedContent,
    context: GroupContext | None,
    *,
    content_bytes: bytes | None = None,
) -> None:
    """Verify the FramedContentTBS signature (RFC 9420 section 6.1); `SignatureError` if invalid."""
    content = auth_content.content
    tbs = _tbs(auth_content.wire_format, content, context, content_bytes)
    try:
        suite.verify_with_label(signature_pub, _TBS_LABEL, tbs, auth_content.auth.signature)
    except SignatureError:
        raise
    except (ValueError, DecodeError) as exc:  # malformed public key or signature encoding
        raise SignatureError(f"signature of {content.content_type.name.lower()} content is invalid") from exc


def membership_tag(
    suite: CipherSuite,
    membership_key: bytes,
    auth_content: AuthenticatedContent,
    context: GroupContext,
    *,
    content_bytes: bytes | None = None,
) -> bytes:
    """``MAC(membership_key, AuthenticatedContentTBM)`` (RFC 9420 section 6.2); the TBM is the
    FramedContentTBS followed by the FramedContentAuthData."""
    auth_content.auth.check(auth_content.content.content_type)
    tbs = _tbs(auth_content.wire_format, auth_content.content, context, content_bytes)
    return suite.mac(membership_key, tbs + auth_content.auth.to_bytes())


def check_sender_content(content: FramedContent, wire_format: WireFormat) -> None:
    """Sender type / content type / wire format rules (RFC 9420 sections 6, 6.1, 6.3.2).

    External and new-member-proposal senders may only send proposals (the latter only Add),
    new-member-commit senders only commits, application data only as PrivateMessage and
    PrivateMessages only from members.  Raises `ProtocolError`.
    """
    st = content.sender.sender_type
    ct = content.content_type
    if st in (SenderType.EXTERNAL, SenderType.NEW_MEMBER_PROPOSAL) and ct != ContentType.PROPOSAL:
        raise ProtocolError(f"{st.name.lower()} sender can only send proposals, not {ct.name.lower()}")
    if st == SenderType.NEW_MEMBER_PROPOSAL and getattr(content.content, "proposal_type", None) != ProposalType.ADD:
        raise ProtocolError("new_member_proposal sender can only propose Add")
    if st == SenderType.NEW_MEMBER_COMMIT and ct != ContentType.COMMIT:
        raise ProtocolError(f"new_member_commit sender can only send commits, not {ct.name.lower()}")
    if wire_format == WireFormat.MLS_PUBLIC_MESSAGE and ct == ContentType.APPLICATION:
        raise ProtocolError("application data must be sent as PrivateMessage")
    if wire_format == WireFormat.MLS_PRIVATE_MESSAGE and st != SenderType.MEMBER:
        raise ProtocolError("only members can send PrivateMessages")


def _check_group(group_id: bytes, epoch: int, context: GroupContext) -> None:
    if group_id != context.group_id:
        raise WrongGroupError("message is for another group")
    if epoch != context.epoch:
        raise WrongEpochError(f"message is for epoch {epoch}, expected {context.epoch}")


# -------------------------------------------------------------------------- PublicMessage


def protect_public(
    suite: CipherSuite,
    auth_content: AuthenticatedContent,
    context: GroupContext,
    membership_key: bytes | None,
    *,
    content_bytes: bytes | None = None,
) -> PublicMessage:
    """PublicMessage from an AuthenticatedContent (RFC 9420 section 6.2).

    Member senders need the ``membership_key``; other sender types carry no tag.
    """
    if auth_content.wire_format != WireFormat.MLS_PUBLIC_MESSAGE:
        raise InvalidArgument("content was signed for another wire format than PublicMessage")
    auth_content.auth.check(auth_content.content.content_type)
    try:
        check_sender_content(auth_content.content, WireFormat.MLS_PUBLIC_MESSAGE)
    except ProtocolError as exc:
        raise InvalidArgument(str(exc)) from None
    tag: bytes | None = None
    if auth_content.content.sender.sender_type == SenderType.MEMBER:
        if membership_key is None:
            raise InvalidArgument("a member's PublicMessage needs the membership_key")
        tag = membership_tag(suite, membership_key, auth_content, context, content_bytes=content_bytes)
    return PublicMessage(auth_content.content, auth_content.auth, tag)


def public_message_bytes(message: PublicMessage, content_bytes: bytes | None = None) -> bytes:
    """The MLSMessage encoding of a PublicMessage (RFC 9420 section 6), from the pre-encoded
    FramedContent if given (the same bytes as ``MLSMessage(message).to_bytes()``)."""
    if content_bytes is None:
        content_bytes = encode_content(message.content)
    message.auth.check(message.content.content_type)
    is_member = message.content.sender.sender_type == SenderType.MEMBER
    if is_member != (message.membership_tag is not None):
        raise InvalidArgument("membership_tag must be present exactly for member senders")
    out = _MLS10 + _WIRE[WireFormat.MLS_PUBLIC_MESSAGE] + content_bytes + message.auth.to_bytes()
    if message.membership_tag is not None:
        out += encode_varint(len(message.membership_tag)) + message.membership_tag
    return out


def unprotect_public(
    suite: CipherSuite,
    message: PublicMessage,
    context: GroupContext,
    membership_key: bytes | None,
    signature_key: SignatureKey,
    *,
    content_bytes: bytes | None = None,
) -> AuthenticatedContent:
    """Verify a PublicMessage (RFC 9420 section 6.2): group, epoch, membership tag, signature.

    ``content_bytes`` is the encoding of ``message.content`` if the caller has it (it is then
    not encoded again).  Raises `WrongGroupError`, `WrongEpochError`, `MembershipTagError`,
    `SignatureError`.
    """
    content = message.content
    _check_group(content.group_id, content.epoch, context)
    check_sender_content(content, WireFormat.MLS_PUBLIC_MESSAGE)
    if content_bytes is None:
        content_bytes = encode_content(content)
    auth_content = AuthenticatedContent(WireFormat.MLS_PUBLIC_MESSAGE, content, message.auth)
    if content.sender.sender_type == SenderType.MEMBER:
        if membership_key is None:
            raise InvalidArgument("verifying a member's PublicMessage needs the membership_key")
        if message.membership_tag is None:
            raise MembershipTagError("member PublicMessage without membership tag")
        expected = membership_tag(suite, membership_key, auth_content, context, content_bytes=content_bytes)
        if not hmac.compare_digest(expected, message.membership_tag):
            raise MembershipTagError("membership tag does not verify")
    elif message.membership_tag is not None:
        raise MembershipTagError("non-member PublicMessage carries a membership tag")
    verify_framed_content(
        suite, _resolve_key(signature_key, content.sender), auth_content, context, content_bytes=content_bytes
    )
    return auth_content


# ------------------------------------------------------------------------- PrivateMessage


def sender_data_key_nonce(suite: CipherSuite, sender_data_secret: bytes, ciphertext: bytes) -> tuple[bytes, bytes]:
    """``sender_data_key``/``sender_data_nonce`` from the first ``KDF.Nh`` bytes of the
    ciphertext (RFC 9420 section 6.3.2)."""
    sample = ciphertext[: suite.hash_length]
    key = suite.expand_with_label(sender_data_secret, "key", sample, suite.aead_key_length)
    nonce = suite.expand_with_label(sender_data_secret, "nonce", sample, suite.aead_nonce_length)
    return key, nonce


def ratchet_type_for(content_type: ContentType) -> RatchetType:
    """Application data uses the application ratchet, proposals and commits the handshake one (section 9)."""
    return RatchetType.APPLICATION if content_type == ContentType.APPLICATION else RatchetType.HANDSHAKE


def _guarded(nonce: bytes, reuse_guard: bytes) -> bytes:
    """XOR the reuse guard into the first four bytes of the nonce (RFC 9420 section 6.3.1)."""
    head = (int.from_bytes(nonce[:4], "big") ^ int.from_bytes(reuse_guard, "big")).to_bytes(4, "big")
    return head + nonce[4:]


# The three small fixed structs of a PrivateMessage, encoded directly (same bytes as their
# `crdt_mls.mls.messages` classes; a PrivateMessage is protected and opened per message).


def _sender_data_aad(group_id: bytes, epoch: int, content_type: int) -> bytes:
    """SenderDataAAD (RFC 9420 section 6.3.2)."""
    return encode_varint(len(group_id)) + group_id + epoch.to_bytes(8, "big") + content_type.to_bytes(1, "big")


def _content_aad(group_id: bytes, epoch: int, content_type: int, authenticated_data: bytes) -> bytes:
    """PrivateContentAAD (RFC 9420 section 6.3.1)."""
    return _sender_data_aad(group_id, epoch, content_type) + encode_varint(len(authenticated_data)) + authenticated_data


def _sender_data(leaf_index: int, generation: int, reuse_guard: bytes) -> bytes:
    """SenderData (RFC 9420 section 6.3.2)."""
    return leaf_index.to_bytes(4, "big") + generation.to_bytes(4, "big") + reuse_guard


def private_message_bytes(message: PrivateMessage) -> bytes:
    """The MLSMessage encoding of a PrivateMessage (RFC 9420 section 6.3), assembled directly
    (the same bytes as ``MLSMessage(message).to_bytes()``)."""
    gid, aad = message.group_id, message.authenticated_data
    esd, ct = message.encrypted_sender_data, message.ciphertext
    return b"".join(
        (
            _MLS10,
            _WIRE[WireFormat.MLS_PRIVATE_MESSAGE],
            encode_varint(len(gid)),
            gid,
            message.epoch.to_bytes(8, "big"),
            message.content_type.to_bytes(1, "big"),
            encode_varint(len(aad)),
            aad,
            encode_varint(len(esd)),
            esd,
            encode_varint(len(ct)),
            ct,
        )
    )


def _read_sender_data(data: bytes) -> SenderData:
    if len(data) != 12:
        raise DecodeError(f"SenderData has {len(data)} bytes, expected 12")
    return SenderData(int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big"), data[8:])


def protect_private(
    suite: CipherSuite,
    auth_content: AuthenticatedContent,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    *,
    padding: int = 0,
    rng: Rng = os.urandom,
) -> PrivateMessage:
    """Encrypt an AuthenticatedContent into a PrivateMessage (RFC 9420 section 6.3).

    Consumes the next key of the sender's ratchet in ``secret_tree``; ``padding`` zero
    bytes are appended to the plaintext; the 4-byte reuse guard comes from ``rng``.
    """
    content = auth_content.content
    if auth_content.wire_format != WireFormat.MLS_PRIVATE_MESSAGE:
        raise InvalidArgument("content was signed for another wire format than PrivateMessage")
    if content.sender.sender_type != SenderType.MEMBER or content.sender.index is None:
        raise InvalidArgument("only members can send PrivateMessages")
    if padding < 0:
        raise InvalidArgument("padding must be non-negative")
    content_type = content.content_type
    body = content.content
    if isinstance(body, bytes):  # application data: opaque<V>, signature<V>, padding
        auth_content.auth.check(content_type)
        sig = auth_content.auth.signature
        plaintext = encode_varint(len(body)) + body + encode_varint(len(sig)) + sig + bytes(padding)
    else:
        w = Writer()
        PrivateMessageContent(body, auth_content.auth, padding).encode(w)
        plaintext = w.getvalue()
    reuse_guard = rng(4)
    if len(reuse_guard) != 4:
        raise InvalidArgument("rng returned the wrong number of bytes")
    leaf = content.sender.index
    rkey = secret_tree.next_key(leaf, ratchet_type_for(content_type))
    aad = _content_aad(content.group_id, content.epoch, content_type, content.authenticated_data)
    ciphertext = suite.aead_seal(rkey.key, _guarded(rkey.nonce, reuse_guard), aad, plaintext)
    sd_key, sd_nonce = sender_data_key_nonce(suite, sender_data_secret, ciphertext)
    sd_aad = _sender_data_aad(content.group_id, content.epoch, content_type)
    encrypted_sender_data = suite.aead_seal(sd_key, sd_nonce, sd_aad, _sender_data(leaf, rkey.generation, reuse_guard))
    return PrivateMessage(
        content.group_id, content.epoch, content_type, content.authenticated_data, encrypted_sender_data, ciphertext
    )


def unprotect_private(
    suite: CipherSuite,
    message: PrivateMessage,
    context: GroupContext,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    signature_key: SignatureKey,
) -> AuthenticatedContent:
    """Decrypt and verify a PrivateMessage (RFC 9420 section 6.3).

    Raises `WrongGroupError`, `WrongEpochError`, `DecryptionError` (sender data or content),
    `DecodeError` (malformed plaintext, non-zero padding), `ProtocolError` (leaf outside the
    tree, generation too far ahead), `ReplayError` (generation already consumed),
    `SignatureError`, and whatever the ``signature_key`` lookup raises for the sender's
    leaf (it is called right after the sender data is decrypted and should reject blank
    leaves).  The secret tree changes only on success.
    """
    _check_group(message.group_id, message.epoch, context)
    content_type = message.content_type
    sd_key, sd_nonce = sender_data_key_nonce(suite, sender_data_secret, message.ciphertext)
    sd_aad = _sender_data_aad(message.group_id, message.epoch, content_type)
    sender_data = _read_sender_data(suite.aead_open(sd_key, sd_nonce, sd_aad, message.encrypted_sender_data))
    sender = Sender.member(sender_data.leaf_index)
    # Resolve the sender's key first: the lookup rejects blank leaves (RFC 9420 section 6.3.2)
    # before any ratchet work is done for them.
    signature_pub = _resolve_key(signature_key, sender)
    pending = secret_tree.prepare_key(sender_data.leaf_index, ratchet_type_for(content_type), sender_data.generation)
    aad = _content_aad(message.group_id, message.epoch, content_type, message.authenticated_data)
    plaintext = suite.aead_open(pending.key, _guarded(pending.nonce, sender_data.reuse_guard), aad, message.ciphertext)
    if content_type == ContentType.APPLICATION:
        pmc = PrivateMessageContent.decode_application(plaintext)
    else:
        r = Reader(plaintext)
        pmc = PrivateMessageContent.decode(r, content_type)
        r.finish()
    content = FramedContent(message.group_id, message.epoch, sender, message.authenticated_data, pmc.content)
    if content.content_type != content_type:  # pragma: no cover - decode is driven by content_type
        raise ProtocolError("decrypted content type does not match the PrivateMessage header")
    auth_content = AuthenticatedContent(WireFormat.MLS_PRIVATE_MESSAGE, content, pmc.auth)
    verify_framed_content(suite, signature_pub, auth_content, context)
    secret_tree.commit(pending)
    return auth_content
