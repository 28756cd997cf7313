"""The deterministic network simulator itself."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.properties.netsim import Message, NetSim


def trace(seed: int, drop: float, duplicate: float, max_delay: int) -> list[tuple[int, Message]]:
    net = NetSim(seed=seed, drop=drop, duplicate=duplicate, max_delay=max_delay)
    for i in range(50):
        net.send("a", "b", bytes([i]))
    out: list[tuple[int, Message]] = []
    net.run(lambda m: out.append((net.now, m)))
    return out


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    drop=st.sampled_from([0.0, 0.3]),
    duplicate=st.sampled_from([0.0, 0.3]),
    max_delay=st.integers(0, 5),
)
def test_same_seed_same_run(seed: int, drop: float, duplicate: float, max_delay: int) -> None:
    assert trace(seed, drop, duplicate, max_delay) == trace(seed, drop, duplicate, max_delay)


def test_perfect_network_is_fifo() -> None:
    got = [m.payload[0] for _, m in trace(1, 0.0, 0.0, 0)]
    assert got == list(range(50))


def test_faults_happen() -> None:
    net = NetSim(seed=3, drop=0.3, duplicate=0.3, max_delay=4)
    got: list[int] = []
    for i in range(200):
        net.send("a", "b", bytes([i]))
    net.run(lambda m: got.append(m.payload[0]))
    assert net.stats.dropped > 0 and net.stats.duplicated > 0
    assert len(got) == 200 - net.stats.dropped + net.stats.duplicated
    assert got != sorted(got)  # reordered


def test_partition_drops_crossing_messages_until_healed() -> None:
    net = NetSim(seed=0)
    net.partition([["a", "b"], ["c"]])
    assert net.connected("a", "b") and not net.connected("a", "c")
    net.send("a", "c", b"lost")
    net.send("a", "b", b"kept")
    got: list[bytes] = []
    net.run(lambda m: got.append(m.payload))
    assert got == [b"kept"] and net.stats.partitioned == 1
    net.heal()
    net.send("a", "c", b"now")
    net.run(lambda m: got.append(m.payload))
    assert got == [b"kept", b"now"]
