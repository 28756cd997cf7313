"""message-protection.json (RFC 9420 section 6): unprotect the given Public/PrivateMessages and
protect + unprotect round trips.  Sender: leaf 1 of a two-member group."""

from __future__ import annotations

from typing import Any

import pytest

from crdt_mls.mls import codec
from crdt_mls.mls.codec import Writer
from crdt_mls.mls.framing import (
    authenticate,
    protect_private,
    protect_public,
    unprotect_private,
    unprotect_public,
)
from crdt_mls.mls.messages import (
    AuthenticatedContent,
    Commit,
    Content,
    FramedContent,
    GroupContext,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    WireFormat,
    encode_proposal,
)
from crdt_mls.mls.secret_tree import SecretTree
from crdt_mls.mls.suites import CipherSuite, get_cipher_suite
from tests.vectors.loader import h, ids, load

ENTRIES = load("message-protection")
SENDER = 1
N_LEAVES = 2
KINDS = ("proposal", "commit", "application")


def _raw(content: Content) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, Commit):
        return codec.encode(content)
    w = Writer()
    encode_proposal(w, content)
    return w.getvalue()


def _context(entry: dict[str, Any]) -> GroupContext:
    return GroupContext(
        version=1,
        cipher_suite=entry["cipher_suite"],
        group_id=h(entry["group_id"]),
        epoch=entry["epoch"],
        tree_hash=h(entry["tree_hash"]),
        confirmed_transcript_hash=h(entry["confirmed_transcript_hash"]),
        extensions=(),
    )


def _tree(suite: CipherSuite, entry: dict[str, Any]) -> SecretTree:
    return SecretTree(suite, h(entry["encryption_secret"]), N_LEAVES)


def _unprotect(suite: CipherSuite, entry: dict[str, Any], data: bytes, tree: SecretTree) -> AuthenticatedContent:
    msg = MLSMessage.from_bytes(data)
    ctx = _context(entry)
    pub = h(entry["signature_pub"])
    if isinstance(msg.body, PublicMessage):
        return unprotect_public(suite, msg.body, ctx, h(entry["membership_key"]), pub)
    assert isinstance(msg.body, PrivateMessage)
    return unprotect_private(suite, msg.body, ctx, tree, h(entry["sender_data_secret"]), pub)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_unprotect(entry: dict[str, Any], kind: str) -> None:
    suite = get_cipher_suite(entry["cipher_suite"])
    raw = h(entry[kind])
    formats = ["priv"] if kind == "application" else ["pub", "priv"]
    for fmt in formats:
        ac = _unprotect(suite, entry, h(entry[f"{kind}_{fmt}"]), _tree(suite, entry))
        assert ac.content.sender == Sender.member(SENDER)
        assert ac.content.group_id == h(entry["group_id"])
        assert ac.content.epoch == entry["epoch"]
        assert _raw(ac.content.content) == raw
        want = WireFormat.MLS_PUBLIC_MESSAGE if fmt == "pub" else WireFormat.MLS_PRIVATE_MESSAGE
        assert ac.wire_format == want


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_protect_round_trip(entry: dict[str, Any], kind: str) -> None:
    suite = get_cipher_suite(entry["cipher_suite"])
    ctx = _context(entry)
    # Take the content (and confirmation tag, for commits) from the vector's private message.
    given = _unprotect(suite, entry, h(entry[f"{kind}_priv"]), _tree(suite, entry))
    content = FramedContent(ctx.group_id, ctx.epoch, Sender.member(SENDER), b"authenticated", given.content.content)
    # The vectors encode P-521 scalars minimally (65 bytes here); left-pad to the suite's fixed length.
    priv_key = h(entry["signature_priv"]).rjust(suite.signature_private_key_length, b"\0")
    tag = given.auth.confirmation_tag
    formats = [WireFormat.MLS_PRIVATE_MESSAGE]
    if kind != "application":
        formats.append(WireFormat.MLS_PUBLIC_MESSAGE)
    for wf in formats:
        ac = authenticate(suite, priv_key, wf, content, ctx, tag)
        if wf == WireFormat.MLS_PUBLIC_MESSAGE:
            msg = MLSMessage(protect_public(suite, ac, ctx, h(entry["membership_key"])))
        else:
            sender_tree = _tree(suite, entry)
            msg = MLSMessage(
                protect_private(
                    suite, ac, sender_tree, h(entry["sender_data_secret"]), padding=7, rng=lambda n: b"\x5a" * n
                )
            )
        got = _unprotect(suite, entry, msg.to_bytes(), _tree(suite, entry))
        assert got == ac
        assert _raw(got.content.content) == h(entry[kind])
