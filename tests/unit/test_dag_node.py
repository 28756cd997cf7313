"""Operation nodes: byte-identity with dag_cbor, signatures, and every rejection."""

from __future__ import annotations

import contextlib
from typing import Any

import dag_cbor
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiformats import CID

from crdt_mls.dag import (
    DEFAULT_MAX_PARENTS,
    SIGNATURE_LABEL,
    NodeFields,
    NodeKind,
    OpNode,
    cid_for_block,
    cid_for_raw,
    decode_node,
    derive_group_tag,
    encode_node,
    node_cid,
    sign_node,
    signature_input,
    verify_and_put,
    verify_node,
)
from crdt_mls.dag.cbor import Link, encode
from crdt_mls.dag.node import _parse_fast, _parse_generic
from crdt_mls.errors import (
    DecodeError,
    IntegrityError,
    InvalidArgument,
    OversizeError,
    SignatureError,
    WrongGroupError,
)
from crdt_mls.stores import MemoryStore

KEY = nacl.signing.SigningKey(bytes(range(32)))
OTHER_KEY = nacl.signing.SigningKey(bytes(range(1, 33)))
GROUP = bytes(32)
node_cids = st.binary(max_size=16).map(cid_for_block)
chunk_cids = st.binary(max_size=16).map(cid_for_raw)


@st.composite
def fields_strategy(draw: st.DrawFn) -> NodeFields:
    kind = draw(st.sampled_from(list(NodeKind)))
    seq: int
    prev: bytes | None
    parents: tuple[bytes, ...]
    if kind is NodeKind.GENESIS:
        seq, prev, parents = 0, None, ()
    else:
        seq = draw(st.one_of(st.integers(0, 30), st.integers(0, 2**63 - 1)))
        prev = None if seq == 0 else draw(node_cids)
        parents = tuple(draw(st.lists(node_cids, max_size=8)))
    return NodeFields(
        kind=kind,
        group=draw(st.binary(min_size=32, max_size=32)),
        seq=seq,
        prev=prev,
        parents=parents,
        epoch=draw(st.binary(max_size=64)),
        payload=draw(st.binary(max_size=3000)),
        chunks=tuple(draw(st.lists(chunk_cids, max_size=5))),
    )


def ref_dict(node: OpNode, with_sig: bool = True) -> dict[str, Any]:
    """The node as the reference dag_cbor package models it."""
    d: dict[str, Any] = {
        "v": 2 if node.chunks else 1,
        "k": node.kind.value,
        "g": node.group,
        "a": node.author,
        "s": node.seq,
        "p": None if node.prev is None else CID.decode(node.prev),
        "ps": [CID.decode(p) for p in node.parents],
        "e": node.epoch,
        "d": node.payload,
    }
    if node.chunks:
        d["c"] = [CID.decode(c) for c in node.chunks]
    if with_sig:
        d["sig"] = node.sig
    return d


def make(kind: NodeKind = NodeKind.APPLICATION, seq: int = 1, payload: bytes = b"\x01" * 40, **kw: Any) -> OpNode:
    prev = kw.pop("prev", cid_for_block(b"prev") if seq else None)
    f = NodeFields(
        kind=kind,
        group=kw.pop("group", GROUP),
        seq=seq,
        prev=prev,
        parents=kw.pop("parents", (cid_for_block(b"x"), cid_for_block(b"y"))),
        epoch=kw.pop("epoch", b"\x07" * 36),
        payload=payload,
        chunks=kw.pop("chunks", ()),
    )
    return sign_node(f, kw.pop("key", KEY), **kw)


@given(fields_strategy())
@settings(deadline=None, max_examples=150)
def test_node_encoding_is_dag_cbor(fields: NodeFields) -> None:
    node = sign_node(fields, KEY)
    cid, block = encode_node(node)
    assert block == dag_cbor.encode(ref_dict(node))
    assert cid == cid_for_block(block) == node_cid(node)
    # signature input is the label plus the reference encoding of the unsigned map
    unsigned = dag_cbor.encode(ref_dict(node, with_sig=False))
    assert signature_input(node) == SIGNATURE_LABEL + unsigned
    nacl.signing.VerifyKey(node.author).verify(SIGNATURE_LABEL + unsigned, node.sig)
    assert decode_node(block, cid, group=fields.group) == node
    assert node.parents == tuple(sorted(set(fields.parents)))
    # the generic fast encoder agrees as well
    generic = {k: (Link(bytes(v)) if isinstance(v, CID) else v) for k, v in ref_dict(node).items()}
    generic["ps"] = [Link(p) for p in node.parents]
    if node.chunks:
        generic["c"] = [Link(c) for c in node.chunks]
    assert encode(generic) == block
    assert node.version == (2 if node.chunks else 1)


def test_deterministic_and_author() -> None:
    a, b = make(), make()
    assert a == b and encode_node(a) == encode_node(b)
    assert a.author == bytes(KEY.verify_key)
    assert make(key=bytes(range(32))) == a  # seed form
    verify_node(a)
    r = repr(a)
    assert "payload=<40 bytes>" in r and a.payload.hex() not in r and a.sig.hex() not in r


def test_all_kinds_roundtrip() -> None:
    for kind in NodeKind:
        node = make(kind=kind, seq=0, parents=()) if kind is NodeKind.GENESIS else make(kind=kind)
        cid, block = encode_node(node)
        assert decode_node(block, cid).kind is kind


# ----------------------------------------------------------------------------- rejections


def ingest(store: MemoryStore, block: bytes, cid: bytes, **kw: Any) -> None:
    """What a replica does with a fetched block: verify fully, then store."""
    decode_node(block, cid, **kw)
    verify_and_put(store, [(cid, block)])


def rejected(block: bytes, exc: type[Exception], match: str | None = None, **kw: Any) -> None:
    store = MemoryStore()
    cid = kw.pop("cid", cid_for_block(block))
    with pytest.raises(exc, match=match):
        ingest(store, block, cid, **kw)
    assert list(store.iter_cids()) == []


def reencode(node: OpNode, **changes: Any) -> bytes:
    d = ref_dict(node)
    for k, v in changes.items():
        if v is ...:
            del d[k]
        else:
            d[k] = v
    return bytes(dag_cbor.encode(d))


def test_forged_signatures() -> None:
    node = make()
    sig = bytearray(node.sig)
    sig[5] ^= 1
    rejected(reencode(node, sig=bytes(sig)), SignatureError)
    rejected(reencode(node, d=b"\x02" * 40), SignatureError)  # payload changed
    rejected(reencode(node, s=2), SignatureError)  # seq changed
    rejected(reencode(node, ps=[]), SignatureError)  # parents dropped
    rejected(reencode(node, a=bytes(OTHER_KEY.verify_key)), SignatureError)  # other author
    rejected(reencode(node, a=b"\xff" * 32), SignatureError)  # not a curve point
    # a signature over the unlabelled encoding is not accepted
    bare = KEY.sign(dag_cbor.encode(ref_dict(node, with_sig=False))).signature
    rejected(reencode(node, sig=bytes(bare)), SignatureError)
    bad = OpNode(node.kind, node.group, node.author, node.seq, node.prev, node.parents, node.epoch, b"", node.sig)
    with pytest.raises(SignatureError):
        verify_node(bad)


def test_cid_mismatch() -> None:
    node = make()
    cid, block = encode_node(node)
    other_cid, _ = encode_node(make(seq=2))
    rejected(block, IntegrityError, cid=other_cid)
    rejected(block, IntegrityError, cid=cid[:-1])
    rejected(block, IntegrityError, cid=cid_for_raw(block))  # right hash, wrong codec
    store = MemoryStore()
    with pytest.raises(IntegrityError):
        verify_and_put(store, [(cid, block), (other_cid, block)])
    assert list(store.iter_cids()) == []
    verify_and_put(store, [(cid, block)])
    assert store.get_block(cid) == block


def _swap_first_two_entries(block: bytes) -> bytes:
    # block = a9/aa, "a": bytes(32), "d": ...  -> move the "d" entry before "a"
    assert block[1:3] == b"\x61a"
    a_entry = block[1 : 1 + 2 + 2 + 32]
    rest = block[1 + len(a_entry) :]
    assert rest[:2] == b"\x61d"
    # "d" entry: key, head, payload (40 bytes -> head 0x58 0x28)
    d_entry = rest[: 2 + 2 + 40]
    return block[:1] + d_entry + a_entry + rest[len(d_entry) :]


def test_non_canonical_encodings() -> None:
    node = make()
    _, block = encode_node(node)
    rejected(_swap_first_two_entries(block), DecodeError, "canonical order")
    rejected(block + b"\x00", DecodeError, "trailing")
    # indefinite-length map of the same entries
    rejected(b"\xbf" + block[1:] + b"\xff", DecodeError, "indefinite")
    # non-minimal length of the author byte string
    rejected(block[:3] + b"\x59\x00\x20" + block[5:], DecodeError, "non-minimal")
    # duplicate key: replace "d" key by "a"
    rejected(block[:37] + b"\x61a" + block[39:], DecodeError, "canonical order|duplicate")


def test_floats_wrong_tags_and_types() -> None:
    node = make()
    rejected(reencode(node, s=1.0), DecodeError, "float")
    rejected(reencode(node, v=1.0), DecodeError, "float")
    _, block = encode_node(node)
    i = block.index(b"\x61p\xd8\x2a") + 2
    assert block[i : i + 2] == b"\xd8\x2a"
    rejected(block[:i] + b"\xd8\x2b" + block[i + 2 :], DecodeError, "tag 43")
    rejected(block[:i] + b"\xc2" + block[i + 2 :], DecodeError, "tag 2")
    rejected(reencode(node, p=node.prev), DecodeError, "prev must be a link")
    rejected(reencode(node, ps=[node.parents[0]]), DecodeError, "parent must be a link")
    rejected(reencode(node, ps=CID.decode(node.parents[0])), DecodeError, "parents must be a list")
    rejected(reencode(node, s=b"\x01"), DecodeError, "seq")
    rejected(reencode(node, s=-1), DecodeError, "seq")
    rejected(reencode(node, s=2**63), DecodeError, "seq")
    rejected(reencode(node, k="merge"), DecodeError, "kind")
    rejected(reencode(node, k=1), DecodeError, "kind")
    rejected(reencode(node, v=2), DecodeError, "version")
    rejected(reencode(node, v="1"), DecodeError, "version")
    rejected(reencode(node, v=...), DecodeError, "keys")
    rejected(reencode(node, x=1), DecodeError, "keys")
    rejected(reencode(node, g=b"\x00" * 31), DecodeError, "group")
    rejected(reencode(node, g="group"), DecodeError, "group")
    rejected(reencode(node, a=b"\x00" * 33), DecodeError, "author")
    rejected(reencode(node, sig=b"\x00" * 63), DecodeError, "sig")
    rejected(reencode(node, e=b"\x00" * 65), DecodeError, "epoch")
    rejected(reencode(node, e=5), DecodeError, "epoch")
    rejected(reencode(node, d="text"), DecodeError, "payload")
    rejected(bytes(dag_cbor.encode([1, 2])), DecodeError, "not a map")


def test_structure_rules() -> None:
    node = make()
    raw_parent = CID.decode(cid_for_raw(b"x"))
    rejected(reencode(node, p=None), DecodeError, "prev is required")
    rejected(reencode(node, s=0), DecodeError, "prev must be None")
    rejected(reencode(node, p=CID.decode(cid_for_raw(b"x"))), DecodeError, "prev")
    rejected(reencode(node, ps=[raw_parent]), DecodeError, "parent")
    p = [CID.decode(c) for c in sorted(node.parents)]
    rejected(reencode(node, ps=[p[1], p[0]]), DecodeError, "ascending")
    rejected(reencode(node, ps=[p[0], p[0]]), DecodeError, "ascending")
    genesis = make(kind=NodeKind.GENESIS, seq=0, parents=())
    rejected(reencode(genesis, ps=p), DecodeError, "genesis")
    many = [CID.decode(c) for c in sorted(cid_for_block(i.to_bytes(2, "big")) for i in range(DEFAULT_MAX_PARENTS + 1))]
    rejected(reencode(node, ps=many), OversizeError, "parents")
    few = reencode(node, ps=p)
    rejected(few, OversizeError, "parents", max_parents=1)


def test_chunk_links_schema_v2() -> None:
    chunks = (cid_for_raw(b"c1"), cid_for_raw(b"c0"), cid_for_raw(b"c1"))  # order kept, repeats allowed
    node = make(chunks=chunks)
    cid, block = encode_node(node)
    assert node.version == 2 and block[0] == 0xAB
    assert decode_node(block, cid, group=GROUP) == node
    assert decode_node(block, cid).chunks == chunks
    # a chunk list needs version 2 and version 2 needs a non-empty chunk list
    rejected(reencode(node, v=1), DecodeError, "keys")
    rejected(reencode(node, c=[]), DecodeError, "non-empty")
    rejected(reencode(make(), v=2), DecodeError, "keys")
    rejected(reencode(node, v=3), DecodeError, "version")
    # chunks are raw blocks: a dag-cbor link, a non-link or a wrong type is refused
    rejected(reencode(node, c=[CID.decode(cid_for_block(b"n"))]), DecodeError, "chunk")
    rejected(reencode(node, c=[b"\x00" * 36]), DecodeError, "chunk")
    rejected(reencode(node, c=CID.decode(chunks[0])), DecodeError, "chunk")
    # the chunk list is signed
    rejected(reencode(node, c=[CID.decode(c) for c in chunks[:2]]), SignatureError)
    many = tuple(cid_for_raw(i.to_bytes(2, "big")) for i in range(5))
    _, big = encode_node(make(chunks=many))
    rejected(big, OversizeError, "chunk", max_chunks=4)
    with pytest.raises(InvalidArgument, match="chunk"):
        make(chunks=(cid_for_block(b"n"),))
    with pytest.raises(InvalidArgument, match="chunk"):
        make(chunks=[cid_for_raw(b"x")])  # type: ignore[arg-type]


def test_oversize() -> None:
    node = make(payload=b"\x00" * 5000)
    cid, block = encode_node(node)
    rejected(block, OversizeError, max_size=4096)
    assert decode_node(block, cid, max_size=len(block)) == node
    with pytest.raises(InvalidArgument, match="limit"):
        make(payload=b"\x00" * 5000, max_size=4096)
    with pytest.raises(InvalidArgument, match="limit"):
        make(payload=b"\x00" * (1 << 20))


def test_unknown_group() -> None:
    node = make()
    _, block = encode_node(node)
    rejected(block, WrongGroupError, group=b"\x01" * 32)
    store = MemoryStore()
    ingest(store, block, cid_for_block(block), group=GROUP)
    assert store.has_block(cid_for_block(block))


def test_construction_errors() -> None:
    good = make()
    for bad in (
        {"group": b"short"},
        {"group": "x" * 32},
        {"seq": -1},
        {"seq": 1, "prev": None},
        {"seq": 0, "prev": cid_for_block(b"p")},
        {"prev": b"\x00" * 36},
        {"parents": (b"junk",)},
        {"epoch": b"\x00" * 65},
        {"payload": "text"},
    ):
        kw: dict[str, Any] = {
            "kind": good.kind,
            "group": good.group,
            "seq": good.seq,
            "prev": good.prev,
            "parents": good.parents,
            "epoch": good.epoch,
            "payload": good.payload,
        }
        kw.update(bad)
        with pytest.raises(InvalidArgument):
            sign_node(NodeFields(**kw), KEY)
    with pytest.raises(InvalidArgument):
        sign_node(NodeFields(NodeKind.GENESIS, GROUP, 0, None, (cid_for_block(b"x"),), b"", b""), KEY)
    with pytest.raises(InvalidArgument):
        sign_node(NodeFields(NodeKind.ACK, GROUP, 0, None, (), b"", b""), b"short")
    with pytest.raises(InvalidArgument):
        OpNode(good.kind, good.group, good.author[:31], good.seq, good.prev, good.parents, good.epoch, b"", good.sig)
    with pytest.raises(InvalidArgument):
        OpNode(good.kind, good.group, good.author, good.seq, good.prev, list(good.parents), good.epoch, b"", good.sig)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        decode_node("not bytes")  # type: ignore[arg-type]


@given(st.binary(max_size=400))
@settings(deadline=None, max_examples=300)
def test_random_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(DecodeError, SignatureError):
        decode_node(data)


@given(st.data())
@settings(deadline=None, max_examples=300)
def test_mutated_blocks_rejected(data: st.DataObject) -> None:
    node = make()
    cid, block = encode_node(node)
    i = data.draw(st.integers(0, len(block) - 1))
    bit = data.draw(st.integers(0, 7))
    mutated = bytearray(block)
    mutated[i] ^= 1 << bit
    with pytest.raises((DecodeError, SignatureError)):
        decode_node(bytes(mutated))
    with pytest.raises(IntegrityError):
        decode_node(bytes(mutated), cid)


def test_derive_group_tag() -> None:
    import hashlib
    import hmac

    key = b"k" * 32
    tag = derive_group_tag(key, b"readable group id")
    assert tag == hmac.new(key, b"crdt-mls group tag v1\x00readable group id", hashlib.sha256).digest()
    assert len(tag) == 32 and b"readable" not in tag
    assert derive_group_tag(b"j" * 32, b"readable group id") != tag
    make(group=tag)
    with pytest.raises(InvalidArgument):
        derive_group_tag(b"short", b"g")
    with pytest.raises(InvalidArgument):
        derive_group_tag(key, "g")  # type: ignore[arg-type]


# ------------------------------------------------------------ fast node parser == generic


def _generic_or_error(block: bytes, max_parents: int = DEFAULT_MAX_PARENTS) -> OpNode | Exception:
    try:
        return _parse_generic(block, max_parents)
    except (DecodeError, InvalidArgument) as exc:
        return exc


@given(fields_strategy())
@settings(deadline=None, max_examples=150)
def test_fast_parser_matches_generic_on_valid_nodes(fields: NodeFields) -> None:
    node = sign_node(fields, KEY)
    _, block = encode_node(node)
    assert _parse_fast(block, DEFAULT_MAX_PARENTS) == node == _parse_generic(block, DEFAULT_MAX_PARENTS)
    if node.parents:
        assert _parse_fast(block, len(node.parents) - 1) is None


@given(fields_strategy(), st.data())
@settings(deadline=None, max_examples=600)
def test_fast_parser_never_accepts_more(fields: NodeFields, data: st.DataObject) -> None:
    _, block = encode_node(sign_node(fields, KEY))
    mutated = bytearray(block)
    op = data.draw(st.sampled_from(["flip", "set", "truncate", "append", "insert", "delete"]))
    i = data.draw(st.integers(0, len(mutated) - 1))
    if op == "flip":
        mutated[i] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "set":
        mutated[i] = data.draw(st.integers(0, 255))
    elif op == "truncate":
        del mutated[i:]
    elif op == "append":
        mutated += data.draw(st.binary(min_size=1, max_size=3))
    elif op == "insert":
        mutated[i:i] = data.draw(st.binary(min_size=1, max_size=3))
    else:
        del mutated[i]
    fast = _parse_fast(bytes(mutated), DEFAULT_MAX_PARENTS)
    if fast is not None:
        assert _generic_or_error(bytes(mutated)) == fast
