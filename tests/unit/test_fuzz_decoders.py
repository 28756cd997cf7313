"""Mutation fuzzing of every wire decoder (RFC 9420 wire structs, crdt_mls.mls.messages).

Each valid encoding from messages.json is mutated (bit flips, byte overwrites, insertions,
deletions, truncation).  Decoding must either raise a `CrdtMlsError` (never IndexError,
ValueError, UnicodeError, struct.error, ...) or yield a value that re-encodes to exactly the
mutated bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_mls.errors import CrdtMlsError
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Reader, decode_with
from crdt_mls.mls.messages import (
    Add,
    AuthenticatedContent,
    Commit,
    ContentType,
    ExternalInit,
    FramedContentAuthData,
    GroupContextExtensions,
    GroupSecrets,
    MLSMessage,
    PreSharedKey,
    PrivateMessageContent,
    PublicMessage,
    ReInit,
    Remove,
    Update,
    decode_ratchet_tree,
    encode_ratchet_tree,
    read_ratchet_tree_slow,
)
from tests.vectors.loader import h, load

Codec = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]


def _struct(cls: Any) -> Codec:
    return (lambda d: codec.decode(cls, d), codec.encode)


def _with_content_type(cls: Any, content_type: ContentType) -> Codec:
    def dec(d: bytes) -> Any:
        return decode_with(lambda r: cls.decode(r, content_type), d)

    return (dec, lambda v: v.to_bytes())


CODECS: dict[str, Codec] = {
    "mls_welcome": _struct(MLSMessage),
    "mls_group_info": _struct(MLSMessage),
    "mls_key_package": _struct(MLSMessage),
    "ratchet_tree": (decode_ratchet_tree, encode_ratchet_tree),
    "ratchet_tree_slow": (lambda d: decode_with(read_ratchet_tree_slow, d), encode_ratchet_tree),
    "group_secrets": _struct(GroupSecrets),
    "add_proposal": _struct(Add),
    "update_proposal": _struct(Update),
    "remove_proposal": _struct(Remove),
    "pre_shared_key_proposal": _struct(PreSharedKey),
    "re_init_proposal": _struct(ReInit),
    "external_init_proposal": _struct(ExternalInit),
    "group_context_extensions_proposal": _struct(GroupContextExtensions),
    "commit": _struct(Commit),
    "public_message_application": _struct(MLSMessage),
    "public_message_proposal": _struct(MLSMessage),
    "public_message_commit": _struct(MLSMessage),
    "private_message": _struct(MLSMessage),
    "authenticated_content": _struct(AuthenticatedContent),
    "pmc_application": _with_content_type(PrivateMessageContent, ContentType.APPLICATION),
    "pmc_proposal": _with_content_type(PrivateMessageContent, ContentType.PROPOSAL),
    "pmc_commit": _with_content_type(PrivateMessageContent, ContentType.COMMIT),
    "auth_commit": _with_content_type(FramedContentAuthData, ContentType.COMMIT),
}


def _corpus() -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for e in load("messages"):
        for name, value in e.items():
            out.append((name, h(value)))
        out.append(("ratchet_tree_slow", h(e["ratchet_tree"])))
        for name, ct in (
            ("public_message_application", "pmc_application"),
            ("public_message_proposal", "pmc_proposal"),
            ("public_message_commit", "pmc_commit"),
        ):
            pm = MLSMessage.from_bytes(h(e[name])).body
            assert isinstance(pm, PublicMessage)
            out.append((ct, PrivateMessageContent(pm.content.content, pm.auth, padding=3).to_bytes()))
            out.append(("authenticated_content", codec.encode(pm.authenticated_content())))
            if pm.auth.confirmation_tag is not None:
                out.append(("auth_commit", pm.auth.to_bytes()))
    return out


CORPUS = _corpus()


def test_corpus_is_valid() -> None:
    assert len(CORPUS) > 5000
    for name, data in CORPUS[:200]:
        dec, enc = CODECS[name]
        assert enc(dec(data)) == data


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name, data = draw(st.sampled_from(CORPUS))
    return name, mutate_bytes(draw, data)


def mutate_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """One to four flips, byte settings (varint-header values), insertions, deletions or a
    truncation of ``data`` (shared by the decoder fuzz tests)."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x3F, 0x40, 0x7F, 0x80, 0xBF, 0xC0, 0xFF]))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and buf:
            del buf[pos : pos + draw(st.integers(1, 8))]
        else:
            del buf[pos:]
    return bytes(buf)


def fresh(value: Any) -> Any:
    """A deep copy of a decoded value without cached encodings (``_raw`` fields are
    ``init=False``), so that encoding it runs the field encoders: a decoder that keeps the
    received bytes must still only accept what re-encodes to exactly those bytes."""
    if is_dataclass(value) and not isinstance(value, type):
        return type(value)(**{f.name: fresh(getattr(value, f.name)) for f in fields(value) if f.init})
    if isinstance(value, tuple):
        return tuple(fresh(v) for v in value)
    if isinstance(value, list):
        return [fresh(v) for v in value]
    return value


def _check(name: str, data: bytes) -> None:
    dec, enc = CODECS[name]
    try:
        value = dec(data)
    except CrdtMlsError:
        return
    assert enc(value) == data, f"{name}: decoded value does not re-encode to the input"
    assert enc(fresh(value)) == data, f"{name}: decoded value re-encodes to the input only through its cache"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_encodings_fail_cleanly_or_roundtrip(case: tuple[str, bytes]) -> None:
    _check(*case)


@pytest.mark.slow
@settings(max_examples=20000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_encodings_long_run(case: tuple[str, bytes]) -> None:
    _check(*case)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sorted(CODECS)), st.binary(max_size=200))
def test_random_bytes_fail_cleanly_or_roundtrip(name: str, data: bytes) -> None:
    _check(name, data)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_every_single_byte_overwrite_of_one_sample(name: str) -> None:
    """Exhaustive over positions (a few values each) for one sample per decoder."""
    data = next(d for n, d in CORPUS if n == name)
    for pos in range(min(len(data), 400)):
        for value in (0x00, 0x01, 0x40, 0xFF):
            buf = bytearray(data)
            buf[pos] = value
            _check(name, bytes(buf))


def test_reader_never_leaks_foreign_exceptions_on_empty_input() -> None:
    for name in CODECS:
        _check(name, b"")
    r = Reader(b"")
    assert r.at_end()
