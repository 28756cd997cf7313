"""The specialised parsers and encoders of `crdt_mls.mls.messages` against the generic ones.

The parsers that keep the received bytes (LeafNode, KeyPackage) or skip per-field calls
(UpdatePathNode ciphertexts, Welcome secrets) must accept exactly what the generic field
decoders accept, produce equal values, and keep as cached encoding exactly the bytes a
fresh encoding produces.  Mutated and random inputs are compared both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_mls.errors import DecodeError, OversizeError
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Reader, Writer, decode_with
from crdt_mls.mls.messages import (
    Add,
    CiphertextVector,
    Commit,
    ContentType,
    EncryptedGroupSecrets,
    FramedContentAuthData,
    HPKECiphertext,
    KeyPackage,
    LeafNode,
    MLSMessage,
    PrivateMessage,
    PrivateMessageContent,
    ProposalRef,
    Remove,
    UpdatePathNode,
    Welcome,
    decode_ratchet_tree,
    encode_proposal_or_ref,
    welcome_for_member,
    write_ratchet_tree,
    write_ratchet_tree_slow,
)
from tests.unit.test_fuzz_decoders import fresh, mutate_bytes
from tests.vectors.loader import h, load

Decoder = Callable[[Reader], Any]

#: name -> (specialised decoder, generic reference decoder)
PAIRS: dict[str, tuple[Decoder, Decoder]] = {
    "leaf_node": (LeafNode.decode, LeafNode.decode_slow),
    "key_package": (KeyPackage.decode, KeyPackage.decode_slow),
    "update_path_node": (UpdatePathNode.decode, UpdatePathNode.decode_slow),
    "welcome": (Welcome.decode, Welcome.decode_slow),
}


def _corpus() -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for e in load("messages")[:60]:
        out.append(("key_package", h(e["mls_key_package"])[4:]))  # MLSMessage header: version, wire_format
        out.append(("welcome", h(e["mls_welcome"])[4:]))
        for node in decode_ratchet_tree(h(e["ratchet_tree"])):
            if isinstance(node, LeafNode):
                out.append(("leaf_node", node.to_bytes()))
        commit = codec.decode(Commit, h(e["commit"]))
        assert commit.path is not None
        out.append(("leaf_node", commit.path.leaf_node.to_bytes()))
        out.extend(("update_path_node", codec.encode(n)) for n in commit.path.nodes)
    # the vectors' path nodes carry few ciphertexts: add nodes and Welcomes with many, of
    # lengths around the one-byte / two-byte varint boundary
    for k, sizes in enumerate(((32, 48), (0, 1), (63, 64), (64, 63), (32, 200), (1, 0))):
        cts = tuple(HPKECiphertext(bytes([k + i]) * sizes[0], bytes([i]) * sizes[1]) for i in range(1 + 2 * k))
        out.append(("update_path_node", codec.encode(UpdatePathNode(b"\x07" * 32, cts))))
        secrets = tuple(EncryptedGroupSecrets(bytes([i]) * (32 if k % 2 else 70), ct) for i, ct in enumerate(cts))
        out.append(("welcome", codec.encode(Welcome(1, secrets, b"\x09" * (k * 30)))))
    return out


CORPUS = _corpus()


def _outcome(dec: Decoder, data: bytes, max_vector: int = codec.DEFAULT_MAX_VECTOR) -> tuple[str, Any]:
    try:
        return "ok", decode_with(dec, data, max_vector)
    except OversizeError:
        return "oversize", None
    except DecodeError:
        return "error", None


def _compare(name: str, data: bytes, max_vector: int = codec.DEFAULT_MAX_VECTOR) -> None:
    fast, slow = PAIRS[name]
    got, want = _outcome(fast, data, max_vector), _outcome(slow, data, max_vector)
    assert got[0] == want[0], f"{name}: specialised decoder {got[0]}, generic decoder {want[0]}"
    if got[0] == "ok":
        assert got[1] == want[1]
        assert codec.encode(got[1]) == data
        assert codec.encode(fresh(got[1])) == data  # the cache holds what a fresh encoding gives


def test_corpus_covers_every_parser() -> None:
    assert {n for n, _ in CORPUS} == set(PAIRS)
    for name, data in CORPUS:
        _compare(name, data)


def test_cached_encodings_are_the_fresh_encodings() -> None:
    for name, data in CORPUS:
        value = decode_with(PAIRS[name][0], data)
        if isinstance(value, LeafNode | KeyPackage):
            assert value._raw == data
            rebuilt = fresh(value)
            assert rebuilt._raw is None
            assert rebuilt.to_bytes() == data
            if isinstance(value, LeafNode):
                assert rebuilt.tbs(b"group", 7) == value.tbs(b"group", 7)
            else:
                assert rebuilt.tbs() == value.tbs()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name, data = draw(st.sampled_from(CORPUS))
    return name, mutate_bytes(draw, data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_inputs_same_verdict_as_generic_decoder(case: tuple[str, bytes]) -> None:
    _compare(*case)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(PAIRS)), st.binary(max_size=120))
def test_random_inputs_same_verdict_as_generic_decoder(name: str, data: bytes) -> None:
    _compare(name, data)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_single_byte_overwrites_same_verdict(name: str) -> None:
    samples = [d for n, d in CORPUS if n == name]
    for data in (samples[0], samples[-1], samples[-2]):
        for pos in range(min(len(data), 300)):
            for value in (0x00, 0x01, 0x3F, 0x40, 0x80, 0xC0, 0xFF):
                buf = bytearray(data)
                buf[pos] = value
                _compare(name, bytes(buf))


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_vector_limit_applies_to_specialised_parsers(name: str) -> None:
    for _, data in (c for c in CORPUS if c[0] == name):
        for limit in (0, 1, 16, 31, 32, 33, 64, 100):
            _compare(name, data, max_vector=limit)
        break


def test_non_minimal_varint_rejected_by_every_parser() -> None:
    kp = decode_with(KeyPackage.decode, next(d for n, d in CORPUS if n == "key_package"))
    raw = kp.to_bytes()
    # init_key length 32 as a two-byte varint (0x40 0x20) instead of 0x20
    bad = raw[:4] + b"\x40" + raw[4:]
    for dec in PAIRS["key_package"]:
        with pytest.raises(DecodeError, match="minimal"):
            decode_with(dec, bad)
    node = next(
        v
        for n, d in CORPUS
        if n == "update_path_node" and (v := decode_with(UpdatePathNode.decode, d)).encrypted_path_secret
    )
    ct = node.encrypted_path_secret[0]
    body = b"\x40" + bytes([len(ct.kem_output)]) + ct.kem_output + bytes([len(ct.ciphertext)]) + ct.ciphertext
    w = Writer()
    w.opaque(node.encryption_key)
    w.opaque(body)
    for dec in PAIRS["update_path_node"]:
        with pytest.raises(DecodeError, match="minimal"):
            decode_with(dec, w.getvalue())


def test_fast_encoders_match_generic_encoders() -> None:
    for e in load("messages")[:40]:
        nodes = decode_ratchet_tree(h(e["ratchet_tree"]))
        fast, slow = Writer(), Writer()
        write_ratchet_tree(fast, nodes)
        write_ratchet_tree_slow(slow, nodes)
        assert fast.getvalue() == slow.getvalue() == h(e["ratchet_tree"])
        welcome = MLSMessage.from_bytes(h(e["mls_welcome"])).body
        assert isinstance(welcome, Welcome)
        generic = Writer()
        generic.u16(welcome.cipher_suite)
        generic.vector(welcome.secrets, lambda w, s: s.encode(w))
        generic.opaque(welcome.encrypted_group_info)
        assert codec.encode(welcome) == generic.getvalue()
        commit = codec.decode(Commit, h(e["commit"]))
        assert commit.path is not None
        for n in commit.path.nodes:
            g = Writer()
            g.opaque(n.encryption_key)
            g.vector(n.encrypted_path_secret, lambda w, c: c.encode(w))
            assert codec.encode(n) == g.getvalue()


def test_commit_proposal_encoding_with_adds_matches_generic() -> None:
    kp = decode_with(KeyPackage.decode, next(d for n, d in CORPUS if n == "key_package"))
    commit = Commit((Add(kp), ProposalRef(b"r" * 32), Remove(3), Add(fresh(kp))))
    w = Writer()
    w.vector(commit.proposals, encode_proposal_or_ref)
    w.u8(0)  # no path
    assert codec.encode(commit) == w.getvalue()
    assert codec.decode(Commit, codec.encode(commit)) == commit


def test_long_fields_use_multi_byte_varints() -> None:
    cts = (HPKECiphertext(b"k" * 70, b"c" * 20000), HPKECiphertext(b"", b"x"))
    node = UpdatePathNode(b"e" * 32, cts)
    data = codec.encode(node)
    assert decode_with(UpdatePathNode.decode, data) == decode_with(UpdatePathNode.decode_slow, data) == node
    secrets = (EncryptedGroupSecrets(b"r" * 100, cts[0]), EncryptedGroupSecrets(b"", cts[1]))
    welcome = Welcome(1, secrets, b"g" * 5)
    data = codec.encode(welcome)
    assert decode_with(Welcome.decode, data) == decode_with(Welcome.decode_slow, data) == welcome


def test_tbs_of_rebuilt_leaf_equals_cached_tbs() -> None:
    leaf = decode_with(LeafNode.decode, next(d for n, d in CORPUS if n == "leaf_node"))
    changed = replace(leaf, signature=leaf.signature + b"x")
    assert changed._raw is None
    assert changed.tbs(b"g", 1) == leaf.tbs(b"g", 1)
    assert changed.to_bytes() != leaf.to_bytes()


def _from_bytes_outcome(fn: Callable[[bytes], Any], data: bytes) -> tuple[str, Any]:
    try:
        return "ok", fn(data)
    except OversizeError:
        return "oversize", None
    except DecodeError:
        return "error", None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_key_package_message_fast_path_same_verdict(case: tuple[str, bytes]) -> None:
    """`MLSMessage.from_bytes` parses KeyPackage messages without a Reader: same verdicts and
    values as the generic MLSMessage decoder."""
    name, body = case
    if name != "key_package":
        return
    data = b"\x00\x01\x00\x05" + body
    got = _from_bytes_outcome(MLSMessage.from_bytes, data)
    want = _from_bytes_outcome(lambda d: decode_with(MLSMessage.decode, d), data)
    assert got[0] == want[0]
    if got[0] == "ok":
        assert got[1] == want[1]
        assert got[1].to_bytes() == data
        assert codec.encode(fresh(got[1])) == data


def test_key_package_message_fast_path_rejects_trailing_bytes() -> None:
    body = next(d for n, d in CORPUS if n == "key_package")
    data = b"\x00\x01\x00\x05" + body
    assert isinstance(MLSMessage.from_bytes(data).body, KeyPackage)
    for extra in (b"\x00", b"\x01\x02"):
        with pytest.raises(DecodeError, match="trailing"):
            MLSMessage.from_bytes(data + extra)
    with pytest.raises(DecodeError):
        MLSMessage.from_bytes(data[:-1])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_welcome_for_member_same_verdict_as_full_decode(case: tuple[str, bytes]) -> None:
    """A joiner decodes the Welcome keeping only its own entry: the same inputs are rejected
    (same error class) and the entry kept is the one the full decode holds."""
    name, body = case
    if name != "welcome":
        return
    data = b"\x00\x01\x00\x03" + body
    full = _from_bytes_outcome(MLSMessage.from_bytes, data)
    for ref in _refs_of(full[1]):
        got = _from_bytes_outcome(lambda d, ref=ref: welcome_for_member(d, ref), data)
        assert got[0] == full[0]
        if got[0] == "ok":
            w = full[1].body
            assert got[1] == Welcome(
                w.cipher_suite, tuple(e for e in w.secrets if e.new_member == ref), w.encrypted_group_info
            )


def _refs_of(msg: Any) -> list[bytes]:
    if msg is None or not isinstance(msg.body, Welcome) or not msg.body.secrets:
        return [b"no such ref"]
    return [msg.body.secrets[0].new_member, msg.body.secrets[-1].new_member, b"no such ref"]


def test_welcome_for_member_only_handles_welcome_messages() -> None:
    body = next(d for n, d in CORPUS if n == "welcome")
    assert welcome_for_member(b"\x00\x01\x00\x05" + body, b"r") is None  # a KeyPackage header
    assert welcome_for_member(b"\x00\x02\x00\x03" + body, b"r") is None  # another version
    assert welcome_for_member(bytearray(b"\x00\x01\x00\x03" + body), b"r") is None  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="trailing"):
        welcome_for_member(b"\x00\x01\x00\x03" + body + b"\x00", b"r")


def _uniform_node(count: int, kem_len: int = 32, ct_len: int = 48) -> tuple[UpdatePathNode, bytes]:
    cts = tuple(HPKECiphertext(bytes([i % 251]) * kem_len, bytes([(i * 7) % 253]) * ct_len) for i in range(count))
    node = UpdatePathNode(b"e" * 32, cts)
    return node, codec.encode(node)


@pytest.mark.parametrize(("count", "kem_len", "ct_len"), [(1, 32, 48), (3, 0, 1), (500, 32, 48), (7, 63, 63)])
def test_uniform_ciphertext_vector_is_lazy_and_equal_to_the_tuple(count: int, kem_len: int, ct_len: int) -> None:
    node, data = _uniform_node(count, kem_len, ct_len)
    fast = decode_with(UpdatePathNode.decode, data)
    slow = decode_with(UpdatePathNode.decode_slow, data)
    vec = fast.encrypted_path_secret
    assert isinstance(vec, CiphertextVector)
    assert fast == slow == node and slow == fast and hash(fast) == hash(node)
    assert len(vec) == count and list(vec) == list(node.encrypted_path_secret)
    assert vec[-1] == node.encrypted_path_secret[-1] and vec[1:3] == node.encrypted_path_secret[1:3]
    with pytest.raises(IndexError):
        vec[count]
    assert codec.encode(fast) == data  # re-encoding returns the received body
    assert vec != tuple(reversed(node.encrypted_path_secret)) or count == 1
    assert repr(vec) == f"CiphertextVector({count} items)"


def test_non_uniform_or_damaged_ciphertext_vectors_use_the_item_parser() -> None:
    # different field lengths: parsed item by item, still equal to the generic decoder
    node = UpdatePathNode(b"e" * 32, (HPKECiphertext(b"k" * 32, b"c" * 48), HPKECiphertext(b"k" * 31, b"c" * 48)))
    data = codec.encode(node)
    fast = decode_with(UpdatePathNode.decode, data)
    assert not isinstance(fast.encrypted_path_secret, CiphertextVector)
    assert fast == decode_with(UpdatePathNode.decode_slow, data) == node
    # a header in the middle of a uniform vector damaged: both parsers reject it alike
    good, raw = _uniform_node(5)
    body_start = 1 + 32 + 2  # encryption_key opaque, then the vector's two-byte length header
    for offset in (0, 82 * 2, 82 * 3 + 33, 82 * 4 + 1):
        bad = bytearray(raw)
        bad[body_start + offset] ^= 0x01
        results = []
        for dec in PAIRS["update_path_node"]:
            try:
                results.append(decode_with(dec, bytes(bad)))
            except DecodeError as exc:
                results.append(type(exc))
        assert results[0] == results[1]
        assert results[0] != good


@given(st.lists(st.tuples(st.binary(max_size=70), st.binary(max_size=70)), max_size=12))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_ciphertext_vectors_of_any_shape_decode_like_the_generic_decoder(items: list[tuple[bytes, bytes]]) -> None:
    node = UpdatePathNode(b"e" * 32, tuple(HPKECiphertext(k, c) for k, c in items))
    data = codec.encode(node)
    assert decode_with(UpdatePathNode.decode, data) == decode_with(UpdatePathNode.decode_slow, data) == node


def _decode_both(fast: Callable[[], Any], slow: Callable[[], Any]) -> tuple[Any, Any]:
    out = []
    for f in (fast, slow):
        try:
            out.append(f())
        except DecodeError as exc:  # OversizeError is a DecodeError
            out.append(type(exc))
    return out[0], out[1]


@given(st.binary(max_size=120), st.integers(0, 119), st.integers(0, 255))
@settings(max_examples=400)
def test_application_plaintext_parser_matches_the_generic_decoder(data: bytes, at: int, byte: int) -> None:
    good = codec.encode(PrivateMessageContent(data, FramedContentAuthData(b"s" * 64), 3))
    for plain in (good, data, good[: at % (len(good) + 1)], good[:at] + bytes([byte]) + good[at + 1 :]):

        def slow(p: bytes = plain) -> PrivateMessageContent:
            r = Reader(p)
            v = PrivateMessageContent.decode(r, ContentType.APPLICATION)
            r.finish()
            return v

        fast, ref = _decode_both(lambda p=plain: PrivateMessageContent.decode_application(p), slow)
        assert fast == ref


@given(st.binary(max_size=80), st.integers(0, 79), st.integers(0, 255))
@settings(max_examples=400)
def test_private_message_fast_parse_matches_the_generic_decoder(ct: bytes, at: int, byte: int) -> None:
    good = MLSMessage(PrivateMessage(b"g" * 16, 7, ContentType.APPLICATION, b"ad", b"e" * 28, ct)).to_bytes()
    for raw in (good, good[: at % (len(good) + 1)], good[:at] + bytes([byte]) + good[at + 1 :], good + b"\x00"):
        fast, ref = _decode_both(
            lambda r=raw: MLSMessage.from_bytes(r), lambda r=raw: decode_with(MLSMessage.decode, r)
        )
        assert fast == ref
