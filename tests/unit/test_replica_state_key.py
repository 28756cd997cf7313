"""Replica state sealed at rest with a state key (issue 6): round trip, wrong key, tampering."""

from __future__ import annotations

import os

import pytest

from crdt_mls.errors import InvalidArgument, StateKeyError
from crdt_mls.replica import MessageReceived, Replica, is_sealed, open_meta, seal_meta
from crdt_mls.stores import MemoryStore

KEY = bytes(range(32))


def meta_of(store: MemoryStore) -> dict[str, bytes]:
    out = {}
    for k in store.iter_meta_keys():
        v = store.get_meta(k)
        assert v is not None
        out[k] = v
    return out


def sealed_pair() -> tuple[Replica, Replica]:
    """alice (sealed store) invites bobby (sealed, other key) and they exchange messages."""
    alice = Replica.create("alice", MemoryStore(), state_key=KEY)
    bobby = Replica.new_member("bobby", MemoryStore(), state_key=os.urandom(32))
    kp = bobby.key_package()
    alice.add([kp])
    bobby.receive(alice.take_outgoing())
    assert bobby.in_group
    alice.send("sealed at rest")
    events = bobby.receive(alice.take_outgoing())
    assert [e.data for e in events if isinstance(e, MessageReceived)] == [b"sealed at rest"]
    return alice, bobby


def test_seal_meta_round_trip_and_binding() -> None:
    sealed = seal_meta(KEY, "ns/state", b"secret value")
    assert is_sealed(sealed) and b"secret value" not in sealed
    assert open_meta(KEY, "ns/state", sealed) == b"secret value"
    assert seal_meta(KEY, "ns/state", b"secret value") != sealed  # random nonce
    with pytest.raises(StateKeyError, match="wrong state key"):
        open_meta(bytes(32), "ns/state", sealed)
    with pytest.raises(StateKeyError):  # moved to another meta key
        open_meta(KEY, "ns/other", sealed)
    with pytest.raises(StateKeyError, match="not sealed"):
        open_meta(KEY, "ns/state", b"plain")
    with pytest.raises(StateKeyError, match="unknown version"):
        open_meta(KEY, "ns/state", sealed[:6] + b"\x09" + sealed[7:])
    with pytest.raises(InvalidArgument):
        seal_meta(b"short", "ns/state", b"x")
    with pytest.raises(InvalidArgument):
        Replica.new_member("x", MemoryStore(), state_key=b"\x00" * 31)


def test_sealed_replica_round_trips() -> None:
    alice, bobby = sealed_pair()
    meta = meta_of(alice.store)  # type: ignore[arg-type]
    assert any(k.startswith("replica/epoch/") for k in meta) and any(k.startswith("replica/dag/") for k in meta)
    assert all(is_sealed(v) for v in meta.values())
    priv = alice._signature_priv  # the key that must never be on disk in the clear
    assert all(priv not in v for v in meta.values())
    again = Replica.load(alice.store, state_key=KEY)
    assert again.epoch_id == alice.epoch_id and again.signature_key == alice.signature_key
    assert again.export_secret("t") == alice.export_secret("t") == bobby.export_secret("t")
    # the reloaded replica keeps working and keeps sealing
    again.send("after reload")
    events = bobby.receive(again.take_outgoing())
    assert [e.data for e in events if isinstance(e, MessageReceived)] == [b"after reload"]
    assert all(is_sealed(v) for v in meta_of(alice.store).values())  # type: ignore[arg-type]


def test_signature_key_given_is_used() -> None:
    seed = bytes(range(100, 132))
    r = Replica.create("carol", MemoryStore(), signature_priv=seed, state_key=KEY)
    import nacl.signing

    assert r.signature_key == bytes(nacl.signing.SigningKey(seed).verify_key)
    assert Replica.load(r.store, state_key=KEY).signature_key == r.signature_key


def test_wrong_or_missing_key_is_refused_and_store_unchanged() -> None:
    alice, _ = sealed_pair()
    store = alice.store
    assert isinstance(store, MemoryStore)
    before = meta_of(store)
    with pytest.raises(StateKeyError, match="wrong state key"):
        Replica.load(store, state_key=bytes(32))
    with pytest.raises(StateKeyError, match="a state key is needed"):
        Replica.load(store)
    assert meta_of(store) == before


@pytest.mark.parametrize("which", ["replica/state", "replica/epoch/", "replica/dag/"])
def test_tampered_meta_is_refused_and_store_unchanged(which: str) -> None:
    alice, _ = sealed_pair()
    store = alice.store
    assert isinstance(store, MemoryStore)
    key = next(k for k in sorted(meta_of(store)) if k.startswith(which))
    value = bytearray(meta_of(store)[key])
    value[-1] ^= 1
    store.write_batch([], {key: bytes(value)})
    before = meta_of(store)
    with pytest.raises(StateKeyError, match=key.replace("/", ".")):
        Replica.load(store, state_key=KEY)
    assert meta_of(store) == before


def test_swapped_values_are_refused() -> None:
    alice, _ = sealed_pair()
    store = alice.store
    assert isinstance(store, MemoryStore)
    dags = sorted(k for k in meta_of(store) if k.startswith("replica/dag/"))
    assert len(dags) >= 2
    m = meta_of(store)
    store.write_batch([], {dags[0]: m[dags[1]], dags[1]: m[dags[0]]})
    with pytest.raises(StateKeyError):
        Replica.load(store, state_key=KEY)


def test_unsealed_replica_unchanged_and_not_opened_with_a_key() -> None:
    plain = Replica.create("dave", MemoryStore())
    store = plain.store
    assert isinstance(store, MemoryStore)
    assert not any(is_sealed(v) for v in meta_of(store).values())
    assert Replica.load(store).epoch_id == plain.epoch_id
    with pytest.raises(StateKeyError, match="not sealed"):
        Replica.load(store, state_key=KEY)
