"""messages.json: every wire struct decodes and re-encodes byte-exact (RFC 9420 sections 6-12)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crdt_mls.mls import codec
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.mls.messages import (
    Add,
    Commit,
    ExternalInit,
    GroupContextExtensions,
    GroupInfo,
    GroupSecrets,
    KeyPackage,
    LeafNode,
    MLSMessage,
    ParentNode,
    PreSharedKey,
    PrivateMessage,
    PublicMessage,
    ReInit,
    Remove,
    Update,
    Welcome,
    WireFormat,
    decode_ratchet_tree,
    encode_ratchet_tree,
)
from tests.vectors.loader import h, load

ENTRIES = load("messages")
IDS = [str(i) for i in range(len(ENTRIES))]


def _roundtrip(cls: Any, data: bytes) -> Any:
    value = codec.decode(cls, data)
    assert codec.encode(value) == data
    return value


def _mls(body_cls: type, wire_format: WireFormat) -> Callable[[bytes], Any]:
    def check(data: bytes) -> Any:
        msg = _roundtrip(MLSMessage, data)
        assert isinstance(msg.body, body_cls)
        assert msg.wire_format == wire_format
        return msg

    return check


def _tree(data: bytes) -> Any:
    nodes = decode_ratchet_tree(data)
    assert encode_ratchet_tree(nodes) == data
    assert all(n is None or isinstance(n, LeafNode | ParentNode) for n in nodes)
    return nodes


FIELDS: dict[str, Callable[[bytes], Any]] = {
    "mls_welcome": _mls(Welcome, WireFormat.MLS_WELCOME),
    "mls_group_info": _mls(GroupInfo, WireFormat.MLS_GROUP_INFO),
    "mls_key_package": _mls(KeyPackage, WireFormat.MLS_KEY_PACKAGE),
    "ratchet_tree": _tree,
    "group_secrets": lambda d: _roundtrip(GroupSecrets, d),
    "add_proposal": lambda d: _roundtrip(Add, d),
    "update_proposal": lambda d: _roundtrip(Update, d),
    "remove_proposal": lambda d: _roundtrip(Remove, d),
    "pre_shared_key_proposal": lambda d: _roundtrip(PreSharedKey, d),
    "re_init_proposal": lambda d: _roundtrip(ReInit, d),
    "external_init_proposal": lambda d: _roundtrip(ExternalInit, d),
    "group_context_extensions_proposal": lambda d: _roundtrip(GroupContextExtensions, d),
    "commit": lambda d: _roundtrip(Commit, d),
    "public_message_application": _mls(PublicMessage, WireFormat.MLS_PUBLIC_MESSAGE),
    "public_message_proposal": _mls(PublicMessage, WireFormat.MLS_PUBLIC_MESSAGE),
    "public_message_commit": _mls(PublicMessage, WireFormat.MLS_PUBLIC_MESSAGE),
    "private_message": _mls(PrivateMessage, WireFormat.MLS_PRIVATE_MESSAGE),
}


def test_every_field_is_covered() -> None:
    for entry in ENTRIES:
        assert set(entry) == set(FIELDS)


@pytest.mark.parametrize("name", list(FIELDS))
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_roundtrip(entry: dict[str, str], name: str) -> None:
    FIELDS[name](h(entry[name]))


@pytest.mark.parametrize("entry", ENTRIES[:20], ids=IDS[:20])
def test_extended_encoding_is_rejected(entry: dict[str, str]) -> None:
    """A byte appended to any vector is a trailing-bytes DecodeError."""
    from crdt_mls.errors import DecodeError

    data = h(entry["mls_key_package"]) + b"\x00"
    with pytest.raises(DecodeError):
        codec.decode(MLSMessage, data)


def test_public_message_content_types() -> None:
    entry = ENTRIES[0]
    kinds = []
    for name in ("public_message_application", "public_message_proposal", "public_message_commit"):
        msg = MLSMessage.from_bytes(h(entry[name]))
        assert isinstance(msg.body, PublicMessage)
        kinds.append(int(msg.body.content.content_type))
        # the decoded value is reachable through a Reader too
        r = Reader(h(entry[name]))
        assert MLSMessage.decode(r) == msg
        r.finish()
        w = Writer()
        msg.encode(w)
        assert w.getvalue() == h(entry[name])
    assert kinds == [1, 2, 3]
