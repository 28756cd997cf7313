"""Hostile input to `Group.process`: every corruption of a valid commit, proposal or
application message (bit flips, truncation, garbage) raises a typed `RemoteInputError` and
leaves the state byte-for-byte unchanged (RFC 9420 sections 6 and 12; DEVELOPING.md "Errors")."""

from __future__ import annotations

from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_mls.errors import RemoteInputError
from crdt_mls.mls.group import Group
from tests.unit.test_group import Harness


@cache
def _scenario() -> dict[str, tuple[bytes, bytes]]:
    """For each kind of message: a receiver's snapshot and a valid message for it."""
    h = Harness(seed="fuzz")
    h.add("m0", 3)
    g0 = h.members["m0"]
    app, g0 = g0.protect_application(b"application data")
    prop_pub, g0 = g0.propose_update(rng=h.rng)
    prop_priv, g0 = g0.propose_remove(2, private=True)
    commit_pub, _, _ = g0.commit(rng=h.rng)
    commit_priv, welcome, _ = g0.commit(private=True, add=[h.new_kp("x").public_message()], rng=h.rng)
    assert welcome is not None
    s0 = h.members["m1"]
    s1 = s0
    for m in (app, prop_pub, prop_priv):
        s1, _ = s1.process(m)
    return {
        "app": (s0.to_bytes(), app),
        "prop_pub": (s0.to_bytes(), prop_pub),
        "prop_priv": (s0.to_bytes(), prop_priv),
        "commit_pub": (s1.to_bytes(), commit_pub),
        "commit_priv": (s1.to_bytes(), commit_priv),
    }


NAMES = ["app", "prop_pub", "prop_priv", "commit_pub", "commit_priv"]


def test_valid_messages_are_accepted() -> None:
    for name in NAMES:
        state, msg = _scenario()[name]
        g = Group.from_bytes(state)
        g.process(msg)
        assert g.to_bytes() == state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), data=st.data())
def test_bit_flips_are_rejected(name: str, data: st.DataObject) -> None:
    state, raw = _scenario()[name]
    msg = bytearray(raw)
    pos = data.draw(st.integers(0, len(msg) - 1))
    bit = data.draw(st.integers(0, 7))
    msg[pos] ^= 1 << bit
    g = Group.from_bytes(state)
    try:
        g.process(bytes(msg))
    except RemoteInputError:
        pass
    else:  # pragma: no cover - a flip that is accepted would be a forgery
        raise AssertionError(f"bit {bit} of byte {pos} of {name} flipped and still accepted")
    assert g.to_bytes() == state


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), data=st.data())
def test_truncation_and_garbage_are_rejected(name: str, data: st.DataObject) -> None:
    state, msg = _scenario()[name]
    cut = data.draw(st.integers(0, len(msg) - 1))
    tail = data.draw(st.binary(max_size=16))
    g = Group.from_bytes(state)
    candidate = msg[:cut] + tail
    if candidate == msg:
        return
    try:
        g.process(candidate)
    except RemoteInputError:
        pass
    else:  # pragma: no cover
        raise AssertionError(f"{name} cut at {cut} with {len(tail)} garbage bytes was accepted")
    assert g.to_bytes() == state


@cache
def _join_material() -> tuple[bytes, bytes, bytes]:
    h = Harness(seed="fuzz-join")
    h.add("m0", 2)
    kp = h.new_kp("joiner")
    _, welcome, g = h.members["m0"].commit(add=[kp.public_message()], rng=h.rng)
    assert welcome is not None
    return welcome, g.group_info(), kp.to_bytes()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.booleans(), data=st.data())
def test_corrupted_welcome_and_group_info_are_rejected(which: bool, data: st.DataObject) -> None:
    from crdt_mls.mls.welcome import KeyPackagePrivate

    welcome, group_info, kp_raw = _join_material()
    msg = bytearray(welcome if which else group_info)
    pos = data.draw(st.integers(0, len(msg) - 1))
    msg[pos] ^= 1 << data.draw(st.integers(0, 7))
    kp = KeyPackagePrivate.from_bytes(kp_raw)
    try:
        if which:
            Group.join_from_welcome(bytes(msg), kp)
        else:
            Group.join_external(bytes(msg), b"outsider")
    except RemoteInputError:
        return
    raise AssertionError(f"corrupted {'Welcome' if which else 'GroupInfo'} (byte {pos}) was accepted")
