"""Unit tests of crdt_mls.mls.messages (RFC 9420 wire structs): strictness, round-trips,
the fast ratchet-tree parser, TBS encodings."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_mls.errors import CrdtMlsError, DecodeError, InvalidArgument, InvalidState, OversizeError
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Reader, Writer, decode_with
from crdt_mls.mls.messages import (
    MLS10,
    Add,
    AuthenticatedContent,
    Capabilities,
    Commit,
    ContentType,
    Credential,
    EncryptedGroupSecrets,
    Extension,
    ExtensionType,
    ExternalInit,
    ExternalSender,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    GroupContextExtensions,
    GroupInfo,
    GroupSecrets,
    HPKECiphertext,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    MLSMessage,
    Node,
    ParentNode,
    PreSharedKey,
    PreSharedKeyID,
    PrivateContentAAD,
    PrivateMessage,
    PrivateMessageContent,
    Proposal,
    ProposalOrRef,
    ProposalRef,
    PSKType,
    PublicMessage,
    ReInit,
    Remove,
    RequiredCapabilities,
    ResumptionPSKUsage,
    Sender,
    SenderData,
    SenderDataAAD,
    SenderType,
    UnknownProposal,
    Update,
    UpdatePath,
    UpdatePathNode,
    Welcome,
    WireFormat,
    authenticated_content_tbm,
    confirmed_transcript_hash_input,
    decode_node,
    decode_proposal,
    decode_proposal_or_ref,
    decode_ratchet_tree,
    encode_node,
    encode_proposal,
    encode_proposal_or_ref,
    encode_ratchet_tree,
    find_extension,
    framed_content_tbs,
    interim_transcript_hash_input,
    read_ratchet_tree,
    read_ratchet_tree_slow,
)
from tests.vectors.loader import h, load

MESSAGES = load("messages")

# ------------------------------------------------------------------ corpus of valid encodings

Decoder = Callable[[bytes], object]


def _dec(cls: Any) -> Decoder:
    return lambda data: codec.decode(cls, data)


def _enc_any(value: object) -> bytes:
    if isinstance(value, list):
        return encode_ratchet_tree(value)
    return codec.encode(value)  # type: ignore[arg-type]


#: (name, decoder) for each field of messages.json
FIELD_DECODERS: dict[str, Decoder] = {
    "mls_welcome": _dec(MLSMessage),
    "mls_group_info": _dec(MLSMessage),
    "mls_key_package": _dec(MLSMessage),
    "ratchet_tree": decode_ratchet_tree,
    "group_secrets": _dec(GroupSecrets),
    "add_proposal": _dec(Add),
    "update_proposal": _dec(Update),
    "remove_proposal": _dec(Remove),
    "pre_shared_key_proposal": _dec(PreSharedKey),
    "re_init_proposal": _dec(ReInit),
    "external_init_proposal": _dec(ExternalInit),
    "group_context_extensions_proposal": _dec(GroupContextExtensions),
    "commit": _dec(Commit),
    "public_message_application": _dec(MLSMessage),
    "public_message_proposal": _dec(MLSMessage),
    "public_message_commit": _dec(MLSMessage),
    "private_message": _dec(MLSMessage),
}

SAMPLE = MESSAGES[0]


def _ratchet_trees() -> list[bytes]:
    out = [h(e["ratchet_tree"]) for e in MESSAGES[:30]]
    out += [h(e["ratchet_tree"]) for e in load("treekem")]
    out += [h(e["tree"]) for e in load("tree-validation")]
    for e in load("tree-operations"):
        out += [h(e["tree_before"]), h(e["tree_after"])]
    return out


def _mls_messages() -> list[bytes]:
    out: list[bytes] = []
    for e in load("welcome"):
        out += [h(e["welcome"]), h(e["key_package"])]
    for name in ("passive-client-welcome", "passive-client-handling-commit", "passive-client-random"):
        for e in load(name):
            out += [h(e["welcome"]), h(e["key_package"])]
            for ep in e["epochs"]:
                out += [h(p) for p in ep["proposals"]] + [h(ep["commit"])]
    for name in ("interop-passive/commit", "interop-passive/branch", "interop-passive/application"):
        for e in load(name)[:40]:
            out += [h(e["welcome"]), h(e["key_package"])]
            for ep in e["epochs"]:
                out += [h(p) for p in ep["proposals"]] + [h(ep["commit"])]
    return out


RATCHET_TREES = _ratchet_trees()
OTHER_MLS_MESSAGES = _mls_messages()


@pytest.mark.parametrize("index", range(len(RATCHET_TREES)))
def test_ratchet_trees_of_other_vector_files_roundtrip(index: int) -> None:
    data = RATCHET_TREES[index]
    nodes = decode_ratchet_tree(data)
    assert encode_ratchet_tree(nodes) == data
    assert decode_with(read_ratchet_tree_slow, data) == nodes


def test_mls_messages_of_other_vector_files_roundtrip() -> None:
    assert len(OTHER_MLS_MESSAGES) > 500
    for data in OTHER_MLS_MESSAGES:
        msg = MLSMessage.from_bytes(data)
        assert msg.to_bytes() == data
        if isinstance(msg.body, GroupInfo):
            for ext in msg.body.extensions:
                if ext.extension_type == ExtensionType.RATCHET_TREE:
                    assert encode_ratchet_tree(ext.as_ratchet_tree()) == ext.extension_data


def test_transcript_hash_vectors_authenticated_content() -> None:
    for e in load("transcript-hashes"):
        data = h(e["authenticated_content"])
        ac = codec.decode(AuthenticatedContent, data)
        assert codec.encode(ac) == data
        assert isinstance(ac.content.content, Commit)
        assert ac.auth.confirmation_tag is not None
        # RFC 9420 section 8.2, with the suite's hash taken straight from hashlib
        hash_name = {1: "sha256", 2: "sha256", 3: "sha256", 4: "sha512", 5: "sha512", 6: "sha512", 7: "sha384"}
        hash_fn = getattr(hashlib, hash_name[e["cipher_suite"]])
        confirmed = hash_fn(h(e["interim_transcript_hash_before"]) + confirmed_transcript_hash_input(ac)).digest()
        assert confirmed == h(e["confirmed_transcript_hash_after"])
        interim = hash_fn(confirmed + interim_transcript_hash_input(ac.auth.confirmation_tag)).digest()
        assert interim == h(e["interim_transcript_hash_after"])


def test_message_protection_vectors_bodies() -> None:
    for e in load("message-protection"):
        p = decode_with(decode_proposal, h(e["proposal"]))
        w = Writer()
        encode_proposal(w, p)
        assert w.getvalue() == h(e["proposal"])
        assert codec.encode(codec.decode(Commit, h(e["commit"]))) == h(e["commit"])
        for name in ("proposal_pub", "commit_pub"):
            msg = MLSMessage.from_bytes(h(e[name]))
            assert isinstance(msg.body, PublicMessage) and msg.to_bytes() == h(e[name])
        for name in ("proposal_priv", "commit_priv", "application_priv"):
            msg = MLSMessage.from_bytes(h(e[name]))
            assert isinstance(msg.body, PrivateMessage) and msg.to_bytes() == h(e[name])


# ---------------------------------------------------------------------- TBS vs. real signatures


def _sign_content(label: str, content: bytes) -> bytes:
    """SignContent (RFC 9420 section 5.1.2), written out here independently of suites.py."""
    w = Writer()
    w.opaque(b"MLS 1.0 " + label.encode())
    w.opaque(content)
    return w.getvalue()


def _ed25519_ok(pub: bytes, sig: bytes, msg: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    except Exception:
        return False
    return True


def test_leaf_node_tbs_verifies_in_tree_validation_vectors() -> None:
    checked = 0
    for e in load("tree-validation"):
        if e["cipher_suite"] != 1:
            continue
        group_id = h(e["group_id"])
        for i, node in enumerate(decode_ratchet_tree(h(e["tree"]))):
            if isinstance(node, LeafNode):
                tbs = node.tbs(group_id, i // 2)
                assert _ed25519_ok(node.signature_key, node.signature, _sign_content("LeafNodeTBS", tbs))
                assert not _ed25519_ok(node.signature_key, node.signature, _sign_content("LeafNodeTBS", tbs + b"\0"))
                checked += 1
    assert checked > 50


def test_key_package_tbs_verifies_in_welcome_vectors() -> None:
    checked = 0
    for e in load("welcome"):
        if e["cipher_suite"] != 1:
            continue
        kp = MLSMessage.from_bytes(h(e["key_package"])).body
        assert isinstance(kp, KeyPackage)
        key = kp.leaf_node.signature_key
        assert _ed25519_ok(key, kp.signature, _sign_content("KeyPackageTBS", kp.tbs()))
        assert kp.leaf_node.leaf_node_source == LeafNodeSource.KEY_PACKAGE
        assert _ed25519_ok(key, kp.leaf_node.signature, _sign_content("LeafNodeTBS", kp.leaf_node.tbs()))
        checked += 1
    assert checked >= 1


def test_framed_content_tbs_verifies_in_message_protection_vectors() -> None:
    checked = 0
    for e in load("message-protection"):
        if e["cipher_suite"] != 1:
            continue
        ctx = GroupContext(MLS10, 1, h(e["group_id"]), e["epoch"], h(e["tree_hash"]), h(e["confirmed_transcript_hash"]))
        for name in ("proposal_pub", "commit_pub"):
            pm = MLSMessage.from_bytes(h(e[name])).body
            assert isinstance(pm, PublicMessage)
            tbs = framed_content_tbs(WireFormat.MLS_PUBLIC_MESSAGE, pm.content, ctx)
            assert tbs == pm.authenticated_content().tbs(ctx)
            assert _ed25519_ok(h(e["signature_pub"]), pm.auth.signature, _sign_content("FramedContentTBS", tbs))
            tbm = authenticated_content_tbm(pm.authenticated_content(), ctx)
            assert tbm == tbs + pm.auth.to_bytes()
            checked += 1
    assert checked == 2


def test_group_info_tbs_excludes_signature() -> None:
    gi = MLSMessage.from_bytes(h(SAMPLE["mls_group_info"])).body
    assert isinstance(gi, GroupInfo)
    w = Writer()
    w.opaque(gi.signature)
    assert codec.encode(gi) == gi.tbs() + w.getvalue()


def test_leaf_tbs_needs_group_id_for_update_and_commit_sources() -> None:
    leaf = _leaf(LeafNodeSource.UPDATE)
    with pytest.raises(InvalidArgument):
        leaf.tbs()
    tbs = leaf.tbs(b"g", 7)
    assert tbs.endswith(b"\x01g\x00\x00\x00\x07")
    kp_leaf = _leaf(LeafNodeSource.KEY_PACKAGE)
    assert kp_leaf.tbs() == kp_leaf.tbs(b"ignored", 3)


# ---------------------------------------------------------------------- strictness


def _leaf(src: LeafNodeSource) -> LeafNode:
    return LeafNode(
        b"E" * 32,
        b"S" * 32,
        Credential.basic(b"alice"),
        Capabilities(cipher_suites=(1,)),
        src,
        Lifetime(0, 2**64 - 1) if src == LeafNodeSource.KEY_PACKAGE else None,
        b"P" * 32 if src == LeafNodeSource.COMMIT else None,
        (Extension(0xAAAA, b"grease"),),
        b"sig",
    )


@pytest.mark.parametrize("name", list(FIELD_DECODERS))
def test_every_truncation_is_a_decode_error(name: str) -> None:
    data = h(SAMPLE[name])
    decode = FIELD_DECODERS[name]
    for n in range(len(data)):
        try:
            value = decode(data[:n])
        except DecodeError:
            continue
        pytest.fail(f"prefix of {n}/{len(data)} bytes decoded to {value!r}")


@pytest.mark.parametrize("name", list(FIELD_DECODERS))
@pytest.mark.parametrize("tail", [b"\x00", b"\x01", b"\xff\xff"])
def test_every_extension_is_a_decode_error(name: str, tail: bytes) -> None:
    with pytest.raises(DecodeError):
        FIELD_DECODERS[name](h(SAMPLE[name]) + tail)


def test_private_message_content_padding_must_be_zero() -> None:
    pmc = PrivateMessageContent(b"hello", FramedContentAuthData(b"sig"), padding=5)
    data = pmc.to_bytes()
    assert data.endswith(bytes(5))
    assert decode_with(lambda r: PrivateMessageContent.decode(r, ContentType.APPLICATION), data) == pmc
    bad = data[:-2] + b"\x01\x00"
    with pytest.raises(DecodeError, match="padding"):
        decode_with(lambda r: PrivateMessageContent.decode(r, ContentType.APPLICATION), bad)
    commit = PrivateMessageContent(Commit(), FramedContentAuthData(b"s", b"tag"))
    data = commit.to_bytes()
    assert decode_with(lambda r: PrivateMessageContent.decode(r, ContentType.COMMIT), data) == commit
    with pytest.raises(InvalidArgument):
        PrivateMessageContent(Commit(), FramedContentAuthData(b"s")).to_bytes()


def test_optional_presence_byte_must_be_0_or_1() -> None:
    data = bytearray(codec.encode(Commit((), None)))
    assert data[-1] == 0
    data[-1] = 2
    with pytest.raises(DecodeError):
        codec.decode(Commit, bytes(data))
    tree = bytearray(encode_ratchet_tree([ParentNode(b"k"), None]))
    tree[1] = 2
    with pytest.raises(DecodeError):
        decode_ratchet_tree(bytes(tree))
    with pytest.raises(DecodeError):
        decode_with(read_ratchet_tree_slow, bytes(tree))


@pytest.mark.parametrize(
    ("data", "decoder"),
    [
        (b"\x00\x01\x00\x00", _dec(MLSMessage)),  # wire_format 0
        (b"\x00\x01\x00\x06", _dec(MLSMessage)),  # wire_format 6
        (b"\x00\x02\x00\x01", _dec(MLSMessage)),  # version 2
        (b"\x00", lambda d: decode_with(decode_node, d)),  # node_type 0
        (b"\x03", lambda d: decode_with(decode_node, d)),  # node_type 3
        (b"\x00\x00", lambda d: decode_with(decode_proposal, d)),  # proposal_type 0
        (b"\x00\x08", lambda d: decode_with(decode_proposal, d)),  # unknown proposal type
        (b"\x03", lambda d: decode_with(decode_proposal_or_ref, d)),  # ProposalOrRefType 3
        (b"\x00", _dec(Sender)),
        (b"\x05\x00\x00\x00\x00", _dec(Sender)),
        (b"\x00\x00", _dec(PreSharedKeyID)),  # psktype 0
        (b"\x02\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", _dec(PreSharedKeyID)),  # usage 4
        (b"\x00\x00\x01a", _dec(Credential)),  # credential_type 0
        (b"\x00\x02\x02\x05a", _dec(Credential)),  # x509 chain with a truncated certificate
        (b"\x00\x03", _dec(SenderDataAAD)),  # content_type 0
    ],
)
def test_invalid_enum_values(data: bytes, decoder: Decoder) -> None:
    with pytest.raises(DecodeError):
        decoder(data)


def test_leaf_node_source_zero_is_rejected_by_both_tree_parsers() -> None:
    leaf = _leaf(LeafNodeSource.UPDATE)
    data = bytearray(encode_ratchet_tree([leaf]))
    w = Writer()
    w.opaque(leaf.encryption_key)
    w.opaque(leaf.signature_key)
    leaf.credential.encode(w)
    leaf.capabilities.encode(w)
    src_at = data.index(leaf.to_bytes()) + len(w)  # the source byte follows the capabilities
    assert data[src_at] == 2
    data[src_at] = 0
    for decoder in (decode_ratchet_tree, lambda d: decode_with(read_ratchet_tree_slow, d)):
        with pytest.raises(DecodeError, match="leaf_node_source"):
            decoder(bytes(data))


def test_non_minimal_length_is_rejected() -> None:
    with pytest.raises(DecodeError):
        codec.decode(ExternalInit, b"\x40\x01a")
    with pytest.raises(DecodeError):
        decode_ratchet_tree(b"\x40\x01\x00")


def test_oversize_vectors() -> None:
    data = codec.encode(ExternalInit(b"x" * 100))
    with pytest.raises(OversizeError):
        codec.decode(ExternalInit, data, max_vector=50)
    tree = encode_ratchet_tree([ParentNode(b"k" * 100)])
    with pytest.raises(OversizeError):
        decode_ratchet_tree(tree, max_vector=60)
    with pytest.raises(OversizeError):
        decode_with(read_ratchet_tree_slow, tree, max_vector=60)
    assert decode_ratchet_tree(tree, max_vector=200) == [ParentNode(b"k" * 100)]


def test_unmerged_leaves_must_be_whole_uint32s() -> None:
    data = bytearray(encode_ratchet_tree([ParentNode(b"k", b"", (1,))]))
    # shorten the unmerged_leaves vector to 3 bytes and drop one byte
    assert data[-5] == 4
    data[-5] = 3
    data[0] -= 1
    del data[-1]
    for decoder in (decode_ratchet_tree, lambda d: decode_with(read_ratchet_tree_slow, d)):
        with pytest.raises(DecodeError):
            decoder(bytes(data))


def test_inconsistent_values_are_caller_errors() -> None:
    with pytest.raises(InvalidArgument):
        codec.encode(dataclasses.replace(_leaf(LeafNodeSource.UPDATE), lifetime=Lifetime(0, 1)))
    with pytest.raises(InvalidArgument):
        codec.encode(dataclasses.replace(_leaf(LeafNodeSource.COMMIT), parent_hash=None))
    fc = FramedContent(b"g", 1, Sender.member(0), b"", b"app")
    with pytest.raises(InvalidArgument):
        codec.encode(PublicMessage(fc, FramedContentAuthData(b"s")))  # member needs a membership tag
    with pytest.raises(InvalidArgument):
        codec.encode(PublicMessage(fc, FramedContentAuthData(b"s", b"tag"), b"m"))  # tag only for commits
    with pytest.raises(InvalidArgument):
        codec.encode(Sender(SenderType.MEMBER))
    with pytest.raises(InvalidArgument):
        codec.encode(Sender(SenderType.NEW_MEMBER_COMMIT, 3))
    with pytest.raises(InvalidArgument):
        codec.encode(SenderData(0, 0, b"123"))
    with pytest.raises(InvalidArgument):
        framed_content_tbs(WireFormat.MLS_PUBLIC_MESSAGE, fc, None)
    with pytest.raises(InvalidArgument):
        codec.encode(PreSharedKeyID(PSKType.EXTERNAL, b"n"))
    ext = FramedContent(b"g", 1, Sender.external(2), b"", Remove(1))
    assert framed_content_tbs(WireFormat.MLS_PUBLIC_MESSAGE, ext, None).startswith(b"\x00\x01\x00\x01")


def test_secrets_not_in_repr() -> None:
    gs = GroupSecrets(b"JOINER-SECRET", b"PATH-SECRET", ())
    assert "JOINER" not in repr(gs) and "PATH-SECRET" not in repr(gs)
    assert gs == codec.decode(GroupSecrets, codec.encode(gs))


def test_credentials() -> None:
    basic = Credential.basic(b"bob")
    assert basic.identity == b"bob"
    with pytest.raises(InvalidState):
        _ = basic.certificates
    x509 = Credential.x509([b"cert1", b"c2"])
    assert x509.certificates == (b"cert1", b"c2")
    with pytest.raises(InvalidState):
        _ = x509.identity
    assert codec.decode(Credential, codec.encode(x509)) == x509
    unknown = Credential(0xBABA, b"\x01\x02\x03")
    assert codec.decode(Credential, codec.encode(unknown)) == unknown


def test_typed_extensions() -> None:
    tree: list[Node | None] = [_leaf(LeafNodeSource.KEY_PACKAGE), None, _leaf(LeafNodeSource.COMMIT)]
    senders = [ExternalSender(b"k", Credential.basic(b"ds"))]
    rc = RequiredCapabilities((5,), (7, 0x0A0A), (1,))
    exts = (
        Extension.application_id(b"app"),
        Extension.ratchet_tree(tree),
        Extension.required_capabilities(rc),
        Extension.external_pub(b"pub"),
        Extension.external_senders(senders),
    )
    assert exts[0].as_application_id() == b"app"
    assert exts[1].as_ratchet_tree() == tree
    assert exts[2].as_required_capabilities() == rc
    assert exts[3].as_external_pub() == b"pub"
    assert exts[4].as_external_senders() == senders
    assert find_extension(exts, ExtensionType.EXTERNAL_PUB) is exts[3]
    assert find_extension(exts, 0x1234) is None
    with pytest.raises(InvalidArgument):
        exts[0].as_external_pub()
    with pytest.raises(DecodeError):
        Extension(ExtensionType.EXTERNAL_PUB, b"\x05ab").as_external_pub()


def test_group_context_extensions_from_vectors_are_typed() -> None:
    seen: set[int] = set()
    for e in MESSAGES:
        gi = MLSMessage.from_bytes(h(e["mls_group_info"])).body
        assert isinstance(gi, GroupInfo)
        for ext in gi.extensions + gi.group_context.extensions:
            seen.add(ext.extension_type)
            if ext.extension_type == ExtensionType.RATCHET_TREE:
                ext.as_ratchet_tree()
    assert seen  # the random vectors carry some extensions


def test_unknown_proposal_encodes_but_cannot_be_decoded() -> None:
    w = Writer()
    encode_proposal(w, UnknownProposal(0x0A0A, b"\x01\x02"))
    assert w.getvalue() == b"\x0a\x0a\x01\x02"
    with pytest.raises(DecodeError, match="proposal_type"):
        decode_with(decode_proposal, w.getvalue())


def test_leaf_cache_does_not_affect_equality_or_replace() -> None:
    a = _leaf(LeafNodeSource.UPDATE)
    raw = a.to_bytes()
    b = codec.decode(LeafNode, raw)
    assert a == b and hash(a) == hash(b)
    c = dataclasses.replace(b, signature=b"other")
    assert c != b and codec.encode(c) != raw and codec.decode(LeafNode, codec.encode(c)) == c


def test_reader_api_helpers() -> None:
    data = encode_ratchet_tree([ParentNode(b"k")])
    r = Reader(data + b"rest")
    assert read_ratchet_tree(r) == [ParentNode(b"k")]
    assert r.fixed(4) == b"rest"


# ---------------------------------------------------------------------- Hypothesis round-trips

small = st.binary(max_size=40)
u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
u16s = st.lists(u16, max_size=5).map(tuple)

extensions = st.lists(st.builds(Extension, u16, small), max_size=3).map(tuple)
credentials = st.one_of(
    st.builds(Credential.basic, small),
    st.builds(Credential.x509, st.lists(small, max_size=3)),
    st.builds(Credential, st.integers(3, 0xFFFF), small),
)
capabilities = st.builds(Capabilities, u16s, u16s, u16s, u16s, u16s)


@st.composite
def leaf_nodes(draw: st.DrawFn) -> LeafNode:
    src = draw(st.sampled_from(list(LeafNodeSource)))
    return LeafNode(
        draw(small),
        draw(small),
        draw(credentials),
        draw(capabilities),
        src,
        Lifetime(draw(u64), draw(u64)) if src == LeafNodeSource.KEY_PACKAGE else None,
        draw(small) if src == LeafNodeSource.COMMIT else None,
        draw(extensions),
        draw(small),
    )


parent_nodes = st.builds(ParentNode, small, small, st.lists(u32, max_size=4).map(tuple))
nodes: st.SearchStrategy[Node | None] = st.one_of(st.none(), leaf_nodes(), parent_nodes)
hpke_ciphertexts = st.builds(HPKECiphertext, small, small)
update_paths = st.builds(
    UpdatePath,
    leaf_nodes(),
    st.lists(st.builds(UpdatePathNode, small, st.lists(hpke_ciphertexts, max_size=3).map(tuple)), max_size=3).map(
        tuple
    ),
)
key_packages = st.builds(KeyPackage, u16, u16, small, leaf_nodes(), extensions, small)
psk_ids = st.one_of(
    st.builds(PreSharedKeyID.external, small, small),
    st.builds(PreSharedKeyID.resumption, st.sampled_from(list(ResumptionPSKUsage)), small, u64, small),
)
proposals: st.SearchStrategy[Proposal] = st.one_of(
    st.builds(Add, key_packages),
    st.builds(Update, leaf_nodes()),
    st.builds(Remove, u32),
    st.builds(PreSharedKey, psk_ids),
    st.builds(ReInit, small, u16, u16, extensions),
    st.builds(ExternalInit, small),
    st.builds(GroupContextExtensions, extensions),
)
proposal_or_refs: st.SearchStrategy[ProposalOrRef] = st.one_of(proposals, st.builds(ProposalRef, small))
commits = st.builds(Commit, st.lists(proposal_or_refs, max_size=3).map(tuple), st.none() | update_paths)
senders = st.one_of(
    st.builds(Sender.member, u32),
    st.builds(Sender.external, u32),
    st.just(Sender.new_member_proposal()),
    st.just(Sender.new_member_commit()),
)
contents: st.SearchStrategy[bytes | Proposal | Commit] = st.one_of(small, proposals, commits)
group_contexts = st.builds(GroupContext, u16, u16, small, u64, small, small, extensions)


@st.composite
def public_messages(draw: st.DrawFn) -> PublicMessage:
    content = FramedContent(draw(small), draw(u64), draw(senders), draw(small), draw(contents))
    tag = draw(small) if content.content_type == ContentType.COMMIT else None
    member = content.sender.sender_type == SenderType.MEMBER
    return PublicMessage(content, FramedContentAuthData(draw(small), tag), draw(small) if member else None)


private_messages = st.builds(PrivateMessage, small, u64, st.sampled_from(list(ContentType)), small, small, small)
group_infos = st.builds(GroupInfo, group_contexts, extensions, small, u32, small)
welcomes = st.builds(
    Welcome, u16, st.lists(st.builds(EncryptedGroupSecrets, small, hpke_ciphertexts), max_size=3).map(tuple), small
)
mls_messages = st.builds(
    MLSMessage, st.one_of(public_messages(), private_messages, group_infos, welcomes, key_packages)
)
group_secrets = st.builds(GroupSecrets, small, st.none() | small, st.lists(psk_ids, max_size=3).map(tuple))

ROUNDTRIP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ROUNDTRIP
@given(st.lists(nodes, max_size=12))
def test_ratchet_tree_roundtrip(tree: list[Node | None]) -> None:
    data = encode_ratchet_tree(tree)
    assert decode_ratchet_tree(data) == tree
    assert decode_with(read_ratchet_tree_slow, data) == tree


@ROUNDTRIP
@given(mls_messages)
def test_mls_message_roundtrip(msg: MLSMessage) -> None:
    data = msg.to_bytes()
    assert MLSMessage.from_bytes(data) == msg
    assert MLSMessage.from_bytes(data).to_bytes() == data


@ROUNDTRIP
@given(st.one_of(commits, group_secrets, update_paths, group_contexts, psk_ids))
def test_struct_roundtrip(value: Any) -> None:
    data = codec.encode(value)
    assert codec.decode(type(value), data) == value


@ROUNDTRIP
@given(proposal_or_refs)
def test_proposal_or_ref_roundtrip(p: ProposalOrRef) -> None:
    w = Writer()
    encode_proposal_or_ref(w, p)
    assert decode_with(decode_proposal_or_ref, w.getvalue()) == p


@ROUNDTRIP
@given(nodes.filter(lambda n: n is not None))
def test_node_roundtrip(node: Node) -> None:
    w = Writer()
    encode_node(w, node)
    assert decode_with(decode_node, w.getvalue()) == node


@ROUNDTRIP
@given(contents, st.integers(0, 40), small)
def test_private_message_content_roundtrip(content: bytes | Proposal | Commit, padding: int, sig: bytes) -> None:
    is_commit = isinstance(content, Commit)
    pmc = PrivateMessageContent(content, FramedContentAuthData(sig, b"t" if is_commit else None), padding)
    data = pmc.to_bytes()
    assert decode_with(lambda r: PrivateMessageContent.decode(r, pmc.content_type), data) == pmc


@ROUNDTRIP
@given(public_messages(), st.sampled_from([WireFormat.MLS_PUBLIC_MESSAGE, WireFormat.MLS_PRIVATE_MESSAGE]))
def test_authenticated_content_roundtrip(pm: PublicMessage, wf: WireFormat) -> None:
    ac = AuthenticatedContent(wf, pm.content, pm.auth)
    assert codec.decode(AuthenticatedContent, codec.encode(ac)) == ac


@ROUNDTRIP
@given(
    st.builds(SenderData, u32, u32, st.binary(min_size=4, max_size=4)), small, u64, st.sampled_from(list(ContentType))
)
def test_aad_and_sender_data_roundtrip(sd: SenderData, gid: bytes, epoch: int, ct: ContentType) -> None:
    for value in (sd, SenderDataAAD(gid, epoch, ct), PrivateContentAAD(gid, epoch, ct, gid)):
        assert codec.decode(type(value), codec.encode(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.lists(nodes, min_size=1, max_size=6), st.data())
def test_fast_and_slow_tree_parsers_agree_on_mutations(tree: list[Node | None], data: st.DataObject) -> None:
    raw = bytearray(encode_ratchet_tree(tree))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(u8)
    cut = data.draw(st.integers(0, len(raw)))
    mutated = bytes(raw[:cut])

    def run(fn: Callable[[bytes], list[Node | None]]) -> object:
        try:
            return fn(mutated)
        except CrdtMlsError as e:
            return type(e)

    fast = run(decode_ratchet_tree)
    slow = run(lambda d: decode_with(read_ratchet_tree_slow, d))
    assert fast == slow


def test_mls_message_body_must_be_a_message_struct() -> None:
    bogus: Any = Remove(1)
    with pytest.raises(InvalidArgument):
        _ = MLSMessage(bogus).wire_format
    w = Writer()
    with pytest.raises(InvalidArgument):
        encode_node(w, bogus)
