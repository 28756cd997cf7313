"""Unit tests of crdt_mls.mls.framing (RFC 9420 section 6): round trips and every rejection path.

A rejected PrivateMessage must leave the receiver's secret tree unchanged."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mls.errors import (
    DecodeError,
    DecryptionError,
    InvalidArgument,
    MembershipTagError,
    ProtocolError,
    RemoteInputError,
    ReplayError,
    SignatureError,
    WrongEpochError,
    WrongGroupError,
)
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Writer
from crdt_mls.mls.framing import (
    SignatureKey,
    authenticate,
    encode_content,
    group_context_bytes,
    membership_tag,
    private_message_bytes,
    protect_private,
    protect_public,
    public_message_bytes,
    ratchet_type_for,
    sender_data_key_nonce,
    sign_framed_content,
    unprotect_private,
    unprotect_public,
    verify_framed_content,
)
from crdt_mls.mls.messages import (
    AuthenticatedContent,
    Commit,
    Content,
    ContentType,
    FramedContent,
    GroupContext,
    MLSMessage,
    PrivateContentAAD,
    PrivateMessage,
    PrivateMessageContent,
    PublicMessage,
    Remove,
    Sender,
    SenderData,
    SenderDataAAD,
    WireFormat,
    authenticated_content_tbm,
    framed_content_tbs,
)
from crdt_mls.mls.secret_tree import SecretTree
from crdt_mls.mls.suites import get_cipher_suite

SUITE = get_cipher_suite(1)
NH = SUITE.hash_length
SIG_PRIV, SIG_PUB = SUITE.generate_signature_key_pair(lambda n: b"\x09" * n)
OTHER_PRIV, OTHER_PUB = SUITE.generate_signature_key_pair(lambda n: b"\x0a" * n)
CTX = GroupContext(1, 1, b"group-id", 7, b"\x01" * NH, b"\x02" * NH, ())
ENC = b"\x03" * NH
SDS = b"\x04" * NH
MEMB = b"\x05" * NH
LEAF = 2
N = 4
PUB = WireFormat.MLS_PUBLIC_MESSAGE
PRIV = WireFormat.MLS_PRIVATE_MESSAGE


def framed(content: Content, sender: Sender | None = None, aad: bytes = b"aad") -> FramedContent:
    return FramedContent(CTX.group_id, CTX.epoch, sender or Sender.member(LEAF), aad, content)


def signed(content: Content, wf: WireFormat, sender: Sender | None = None) -> AuthenticatedContent:
    tag = b"\x06" * NH if isinstance(content, Commit) else None
    return authenticate(SUITE, SIG_PRIV, wf, framed(content, sender), CTX, tag)


def tree() -> SecretTree:
    return SecretTree(SUITE, ENC, N)


def wire(msg: PublicMessage | PrivateMessage) -> PublicMessage | PrivateMessage:
    """Encode and decode through MLSMessage, as a receiver would."""
    body = MLSMessage.from_bytes(MLSMessage(msg).to_bytes()).body
    assert isinstance(body, PublicMessage | PrivateMessage)
    return body


@pytest.fixture
def rx() -> Iterator[SecretTree]:
    yield tree()


# ----------------------------------------------------------------------------- public


@pytest.mark.parametrize("content", [Remove(1), Commit()], ids=["proposal", "commit"])
def test_public_round_trip(content: Content) -> None:
    ac = signed(content, PUB)
    msg = wire(protect_public(SUITE, ac, CTX, MEMB))
    assert isinstance(msg, PublicMessage)
    assert unprotect_public(SUITE, msg, CTX, MEMB, SIG_PUB) == ac
    # Lookup by sender works as well.
    seen: list[Sender] = []

    def lookup(sender: Sender) -> bytes:
        seen.append(sender)
        return SIG_PUB

    assert unprotect_public(SUITE, msg, CTX, MEMB, lookup) == ac
    assert seen == [Sender.member(LEAF)]


@pytest.mark.parametrize(
    "sender", [Sender.member(LEAF), Sender.external(0), Sender.new_member_commit()], ids=["member", "external", "nmc"]
)
def test_pre_encoded_content_gives_the_same_bytes(sender: Sender) -> None:
    """The encode-once paths (content_bytes) produce exactly the reference encodings."""
    content: Content = Commit() if sender.sender_type != Sender.external(0).sender_type else Remove(1)
    ac = signed(content, PUB, sender)
    cb = encode_content(ac.content)
    assert cb == codec.encode(ac.content)
    sig = sign_framed_content(SUITE, SIG_PRIV, PUB, ac.content, CTX, content_bytes=cb)
    assert sig == SUITE.sign_with_label(SIG_PRIV, "FramedContentTBS", framed_content_tbs(PUB, ac.content, CTX))
    verify_framed_content(SUITE, SIG_PUB, ac, CTX, content_bytes=cb)
    with pytest.raises(SignatureError):  # the bytes given are what is verified
        verify_framed_content(SUITE, SIG_PUB, ac, CTX, content_bytes=cb + b"x")
    if sender == Sender.member(LEAF):
        tag = membership_tag(SUITE, MEMB, ac, CTX, content_bytes=cb)
        assert tag == SUITE.mac(MEMB, authenticated_content_tbm(ac, CTX))
    pub = protect_public(SUITE, ac, CTX, MEMB if sender == Sender.member(LEAF) else None, content_bytes=cb)
    assert public_message_bytes(pub, cb) == public_message_bytes(pub) == MLSMessage(pub).to_bytes()
    assert unprotect_public(SUITE, pub, CTX, pub.membership_tag and MEMB, SIG_PUB, content_bytes=cb) == ac


def test_group_context_bytes_memo_follows_the_object() -> None:
    a = dataclasses.replace(CTX)
    b = dataclasses.replace(CTX, epoch=8)
    assert group_context_bytes(a) == codec.encode(a)
    assert group_context_bytes(b) == codec.encode(b) != group_context_bytes(a)
    for i in range(200):  # the memo is bounded and never returns another object's encoding
        c = dataclasses.replace(CTX, epoch=i)
        assert group_context_bytes(c) == codec.encode(c)


def test_public_rejections() -> None:
    ac = signed(Remove(1), PUB)
    msg = protect_public(SUITE, ac, CTX, MEMB)
    with pytest.raises(WrongGroupError):
        unprotect_public(SUITE, msg, dataclasses.replace(CTX, group_id=b"other"), MEMB, SIG_PUB)
    with pytest.raises(WrongEpochError):
        unprotect_public(SUITE, msg, dataclasses.replace(CTX, epoch=8), MEMB, SIG_PUB)
    with pytest.raises(MembershipTagError):
        unprotect_public(SUITE, msg, CTX, b"\x00" * NH, SIG_PUB)
    with pytest.raises(MembershipTagError):
        unprotect_public(SUITE, dataclasses.replace(msg, membership_tag=b""), CTX, MEMB, SIG_PUB)
    with pytest.raises(SignatureError):
        unprotect_public(SUITE, msg, CTX, MEMB, OTHER_PUB)
    with pytest.raises(SignatureError):
        unprotect_public(SUITE, msg, CTX, MEMB, b"not a key")
    # Signature over another GroupContext (e.g. other tree hash) fails.
    other_ctx = dataclasses.replace(CTX, tree_hash=b"\x07" * NH)
    forged = protect_public(SUITE, ac, other_ctx, MEMB)
    with pytest.raises((MembershipTagError, SignatureError)):
        unprotect_public(SUITE, forged, CTX, MEMB, SIG_PUB)
    # Content changed after signing: the membership tag (recomputed) passes, the signature does not.
    changed = framed(Remove(0))
    tampered = PublicMessage(
        changed,
        ac.auth,
        membership_tag(SUITE, MEMB, AuthenticatedContent(PUB, changed, ac.auth), CTX),
    )
    with pytest.raises(SignatureError):
        unprotect_public(SUITE, tampered, CTX, MEMB, SIG_PUB)


def test_public_application_data_refused() -> None:
    ac = signed(b"hello", PUB)
    with pytest.raises(InvalidArgument):
        protect_public(SUITE, ac, CTX, MEMB)
    msg = PublicMessage(ac.content, ac.auth, membership_tag(SUITE, MEMB, ac, CTX))
    with pytest.raises(ProtocolError):
        unprotect_public(SUITE, msg, CTX, MEMB, SIG_PUB)


def test_external_sender_rules() -> None:
    ext = signed(Remove(1), PUB, Sender.external(0))
    msg = protect_public(SUITE, ext, CTX, None)
    assert msg.membership_tag is None
    assert unprotect_public(SUITE, msg, CTX, None, SIG_PUB) == ext
    with pytest.raises(MembershipTagError):
        unprotect_public(SUITE, dataclasses.replace(msg, membership_tag=b"x"), CTX, None, SIG_PUB)
    bad = signed(Commit(), PUB, Sender.external(0))
    with pytest.raises(ProtocolError):
        unprotect_public(SUITE, PublicMessage(bad.content, bad.auth), CTX, None, SIG_PUB)
    nmp = signed(Remove(1), PUB, Sender.new_member_proposal())
    with pytest.raises(ProtocolError):
        unprotect_public(SUITE, PublicMessage(nmp.content, nmp.auth), CTX, None, SIG_PUB)
    nmc = signed(Remove(1), PUB, Sender.new_member_commit())
    with pytest.raises(ProtocolError):
        unprotect_public(SUITE, PublicMessage(nmc.content, nmc.auth), CTX, None, SIG_PUB)


def test_wire_format_mismatch() -> None:
    with pytest.raises(InvalidArgument):
        protect_public(SUITE, signed(Remove(1), PRIV), CTX, MEMB)
    with pytest.raises(InvalidArgument):
        protect_private(SUITE, signed(Remove(1), PUB), tree(), SDS)
    with pytest.raises(InvalidArgument):
        protect_private(SUITE, signed(Remove(1), PRIV, Sender.external(0)), tree(), SDS)


# ---------------------------------------------------------------------------- private


@pytest.mark.parametrize("content", [b"hello", Remove(1), Commit()], ids=["application", "proposal", "commit"])
def test_private_round_trip(content: Content, rx: SecretTree) -> None:
    tx = tree()
    ac = signed(content, PRIV)
    for padding in (0, 1, 100):
        msg = wire(protect_private(SUITE, ac, tx, SDS, padding=padding))
        assert isinstance(msg, PrivateMessage)
        assert unprotect_private(SUITE, msg, CTX, rx, SDS, SIG_PUB) == ac
    assert rx.next_generation(LEAF, ratchet_type_for(ac.content.content_type)) == 3


def test_private_reuse_guard_changes_ciphertext() -> None:
    ac = signed(b"hello", PRIV)
    a = protect_private(SUITE, ac, tree(), SDS, rng=lambda n: b"\x00" * n)
    b = protect_private(SUITE, ac, tree(), SDS, rng=lambda n: b"\x01" * n)
    assert a.ciphertext != b.ciphertext
    assert unprotect_private(SUITE, b, CTX, tree(), SDS, SIG_PUB) == ac


def test_private_out_of_order_and_replay(rx: SecretTree) -> None:
    tx = tree()
    ac = signed(b"x", PRIV)
    msgs = [protect_private(SUITE, ac, tx, SDS) for _ in range(4)]
    for i in (3, 0, 2, 1):
        assert unprotect_private(SUITE, msgs[i], CTX, rx, SDS, SIG_PUB) == ac
    with pytest.raises(ReplayError):
        unprotect_private(SUITE, msgs[2], CTX, rx, SDS, SIG_PUB)


def _unchanged_after(rx: SecretTree, msg: PrivateMessage, exc: type[Exception], key: SignatureKey = SIG_PUB) -> None:
    before = rx.to_bytes()
    with pytest.raises(exc):
        unprotect_private(SUITE, msg, CTX, rx, SDS, key)
    assert rx.to_bytes() == before


def test_private_rejections_leave_tree_unchanged(rx: SecretTree) -> None:
    ac = signed(b"secret data", PRIV)
    msg = protect_private(SUITE, ac, tree(), SDS)
    flip = bytes([msg.ciphertext[0] ^ 1]) + msg.ciphertext[1:]
    _unchanged_after(rx, dataclasses.replace(msg, ciphertext=flip), DecryptionError)
    flip_tail = msg.ciphertext[:-1] + bytes([msg.ciphertext[-1] ^ 1])
    _unchanged_after(rx, dataclasses.replace(msg, ciphertext=flip_tail), DecryptionError)
    bad_sd = bytes([msg.encrypted_sender_data[0] ^ 1]) + msg.encrypted_sender_data[1:]
    _unchanged_after(rx, dataclasses.replace(msg, encrypted_sender_data=bad_sd), DecryptionError)
    _unchanged_after(rx, dataclasses.replace(msg, authenticated_data=b"other"), DecryptionError)
    _unchanged_after(rx, dataclasses.replace(msg, content_type=ContentType.PROPOSAL), DecryptionError)
    _unchanged_after(rx, msg, SignatureError, OTHER_PUB)
    with pytest.raises(WrongGroupError):
        unprotect_private(SUITE, msg, dataclasses.replace(CTX, group_id=b"x"), rx, SDS, SIG_PUB)
    with pytest.raises(WrongEpochError):
        unprotect_private(SUITE, msg, dataclasses.replace(CTX, epoch=6), rx, SDS, SIG_PUB)
    # After all the failures the genuine message still decrypts, exactly once.
    assert unprotect_private(SUITE, msg, CTX, rx, SDS, SIG_PUB) == ac
    _unchanged_after(rx, msg, ReplayError)


def _encrypt_raw(plaintext: bytes, leaf: int, generation: int, content_type: ContentType) -> PrivateMessage:
    """Encrypt an arbitrary plaintext as sender ``leaf`` (to test the receiver's checks)."""
    # A larger tree for leaves outside the receiver's tree (the key is irrelevant then).
    src = SecretTree(SUITE, ENC, N if leaf < N else 16, max_forward=1 << 20)
    key = src.key_for(leaf, ratchet_type_for(content_type), generation)
    guard = b"\x00\x00\x00\x00"
    aad = codec.encode(PrivateContentAAD(CTX.group_id, CTX.epoch, content_type, b""))
    ct = SUITE.aead_seal(key.key, key.nonce, aad, plaintext)
    sk, sn = sender_data_key_nonce(SUITE, SDS, ct)
    sd = SUITE.aead_seal(
        sk,
        sn,
        codec.encode(SenderDataAAD(CTX.group_id, CTX.epoch, content_type)),
        codec.encode(SenderData(leaf, generation, guard)),
    )
    return PrivateMessage(CTX.group_id, CTX.epoch, content_type, b"", sd, ct)


def _plaintext(content: Content, padding: bytes) -> bytes:
    ac = authenticate(SUITE, SIG_PRIV, PRIV, framed(content, aad=b""), CTX)
    w = Writer()
    PrivateMessageContent(ac.content.content, ac.auth).encode(w)
    return w.getvalue() + padding


def test_private_padding_checked(rx: SecretTree) -> None:
    ok = _encrypt_raw(_plaintext(b"hi", b"\x00" * 5), LEAF, 0, ContentType.APPLICATION)
    assert unprotect_private(SUITE, ok, CTX, rx, SDS, SIG_PUB).content.content == b"hi"
    bad = _encrypt_raw(_plaintext(b"hi", b"\x00\x00\x01"), LEAF, 1, ContentType.APPLICATION)
    _unchanged_after(rx, bad, DecodeError)
    garbage = _encrypt_raw(b"\xff\xff", LEAF, 1, ContentType.APPLICATION)
    _unchanged_after(rx, garbage, DecodeError)


def test_private_hostile_sender_data(rx: SecretTree) -> None:
    pt = _plaintext(b"hi", b"")
    _unchanged_after(rx, _encrypt_raw(pt, 9, 0, ContentType.APPLICATION), ProtocolError)  # leaf outside tree
    far = SecretTree(SUITE, ENC, N, max_forward=1 << 20)
    msg = _encrypt_raw(pt, LEAF, 5000, ContentType.APPLICATION)
    _unchanged_after(rx, msg, ProtocolError)  # beyond the default forward window
    assert unprotect_private(SUITE, msg, CTX, far, SDS, SIG_PUB).content.content == b"hi"


def test_signature_key_lookup_errors_propagate(rx: SecretTree) -> None:
    msg = protect_private(SUITE, signed(b"x", PRIV), tree(), SDS)

    def blank(sender: Sender) -> bytes:
        raise ProtocolError(f"leaf {sender.index} is blank")

    _unchanged_after(rx, msg, ProtocolError, blank)


# ------------------------------------------------------------------------- properties

_PRIV_MSG = MLSMessage(protect_private(SUITE, signed(Commit(), PRIV), tree(), SDS, padding=3)).to_bytes()
_PUB_MSG = MLSMessage(protect_public(SUITE, signed(Commit(), PUB), CTX, MEMB)).to_bytes()


def _process(data: bytes, rx: SecretTree) -> AuthenticatedContent:
    body = MLSMessage.from_bytes(data).body
    if isinstance(body, PublicMessage):
        return unprotect_public(SUITE, body, CTX, MEMB, SIG_PUB)
    assert isinstance(body, PrivateMessage)
    return unprotect_private(SUITE, body, CTX, rx, SDS, SIG_PUB)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["priv", "pub"]), st.data())
def test_any_single_byte_change_is_rejected(which: str, data: st.DataObject) -> None:
    """Flipping any bits of any byte of a protected message gives a typed remote-input error
    and leaves the receiver's secret tree unchanged."""
    raw = _PRIV_MSG if which == "priv" else _PUB_MSG
    i = data.draw(st.integers(0, len(raw) - 1))
    mask = data.draw(st.integers(1, 255))
    tampered = raw[:i] + bytes([raw[i] ^ mask]) + raw[i + 1 :]
    rx = tree()
    before = rx.to_bytes()
    with pytest.raises(RemoteInputError):
        _process(tampered, rx)
    assert rx.to_bytes() == before
    _process(raw, rx)  # the genuine message still works


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 64), st.binary(max_size=16))
def test_private_round_trip_property(payload: bytes, padding: int, aad: bytes) -> None:
    fc = framed(payload, aad=aad)
    ac = authenticate(SUITE, SIG_PRIV, PRIV, fc, CTX)
    msg = wire(protect_private(SUITE, ac, tree(), SDS, padding=padding))
    assert isinstance(msg, PrivateMessage)
    assert unprotect_private(SUITE, msg, CTX, tree(), SDS, SIG_PUB) == ac


@given(
    group_id=st.binary(max_size=300),
    epoch=st.integers(0, 2**64 - 1),
    aad=st.binary(max_size=70),
    leaf=st.integers(0, 2**32 - 1),
    generation=st.integers(0, 2**32 - 1),
    guard=st.binary(min_size=4, max_size=4),
)
@settings(max_examples=50)
def test_direct_encodings_of_the_small_private_message_structs(
    group_id: bytes, epoch: int, aad: bytes, leaf: int, generation: int, guard: bytes
) -> None:
    """The per-message fast encoders equal the codec encodings of the RFC structs (6.3.1, 6.3.2)."""
    from crdt_mls.mls import framing

    for ct in ContentType:
        assert framing._sender_data_aad(group_id, epoch, ct) == codec.encode(SenderDataAAD(group_id, epoch, ct))
        assert framing._content_aad(group_id, epoch, ct, aad) == codec.encode(
            PrivateContentAAD(group_id, epoch, ct, aad)
        )
    sd = framing._sender_data(leaf, generation, guard)
    assert sd == codec.encode(SenderData(leaf, generation, guard))
    assert framing._read_sender_data(sd) == SenderData(leaf, generation, guard)
    with pytest.raises(DecodeError):
        framing._read_sender_data(sd + b"\x00")
    with pytest.raises(DecodeError):
        framing._read_sender_data(sd[:-1])


@given(
    group_id=st.binary(max_size=300),
    epoch=st.integers(0, 2**64 - 1),
    aad=st.binary(max_size=70),
    leaf=st.integers(0, 2**32 - 1),
    data=st.binary(max_size=20_000),
    esd=st.binary(max_size=40),
)
@settings(max_examples=50)
def test_direct_encodings_of_application_content_and_private_messages(
    group_id: bytes, epoch: int, aad: bytes, leaf: int, data: bytes, esd: bytes
) -> None:
    """`encode_content` (application data fast path) and `private_message_bytes` equal the
    codec encodings (RFC 9420 sections 6, 6.3)."""
    fc = FramedContent(group_id, epoch, Sender.member(leaf), aad, data)
    assert encode_content(fc) == codec.encode(fc)
    for ct in ContentType:
        pm = PrivateMessage(group_id, epoch, ct, aad, esd, data)
        assert private_message_bytes(pm) == MLSMessage(pm).to_bytes()
