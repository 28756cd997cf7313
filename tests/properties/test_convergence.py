"""Convergence of sync and causal delivery under a faulty network (docs/causal.md section 4).

Hypothesis draws a schedule (writes on random replicas, network ticks, partitions) and the
fault rates of a seeded :class:`~tests.properties.netsim.NetSim`; afterwards the partition
heals, sync runs to quiescence (firing retransmission timers while replicas differ), and
every replica must hold the same blocks and heads, deliver the same nodes in a causal order
and agree on every member's log.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_mls.causal import CausalReceiver, DagView, MemoryDag, StoreDag, dependencies
from crdt_mls.stores import MemoryStore
from crdt_mls.stores.sqlite import SqliteStore
from tests.properties.netsim import NetSim
from tests.properties.syncsim import SimReplica, connect, converged, counter_rng, pump, sync_to_quiescence, timeout_all
from tests.properties.toy import ToyAuthor, ToyNode, toy_check, toy_links

Op = tuple[str, int, int]

ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 4), st.integers(1, 4)),
        st.tuples(st.just("tick"), st.integers(1, 8), st.just(0)),
        st.tuples(st.just("partition"), st.integers(1, 30), st.just(0)),
        st.tuples(st.just("heal"), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=40,
)

faults = st.fixed_dictionaries(
    {
        "drop": st.sampled_from([0.0, 0.1, 0.3]),
        "duplicate": st.sampled_from([0.0, 0.2]),
        "max_delay": st.integers(0, 4),
    }
)


def run_schedule(replicas: Sequence[SimReplica], net: NetSim, ops: Sequence[Op], seed: int) -> list[ToyNode]:
    """Apply ``ops``; return every node written."""
    rnd = random.Random(seed)
    authors = [ToyAuthor(r.name.encode()) for r in replicas]
    by_name = {r.name: r for r in replicas}
    written: list[ToyNode] = []
    for kind, x, y in ops:
        if kind == "write":
            i = x % len(replicas)
            view = replicas[i].view
            for _ in range(y):
                node = authors[i].write(parents=tuple(view.heads()), epoch=rnd.randrange(4))
                view.add([(node.cid, node.block, toy_links(node))])
                written.append(node)
        elif kind == "tick":
            for _ in range(x):
                for r in replicas:
                    for peer, session in sorted(r.sessions.items()):
                        msg = session.generate_message()
                        r.added.extend(session.take_flushed())
                        if msg is not None:
                            net.send(r.name, peer, msg)
                for m in net.step():
                    dst = by_name[str(m.dst)]
                    dst.added.extend(dst.sessions[str(m.src)].receive_message(m.payload))
                if rnd.random() < 0.2:
                    timeout_all(replicas)  # a retransmission timer fires somewhere
        elif kind == "partition":
            names = [r.name for r in replicas]
            side = [names[j] for j in range(len(names)) if x >> j & 1]
            net.partition([side, [n for n in names if n not in side]])
        else:
            net.heal()
    return written


def check_converged(replicas: Sequence[SimReplica], written: Sequence[ToyNode]) -> None:
    all_cids = {n.cid for n in written}
    heads = {r.view.heads() for r in replicas}
    assert len(heads) == 1, "replicas disagree on heads"
    for r in replicas:
        assert {c for c in all_cids if r.view.has(c)} == all_cids
        if isinstance(r.view, MemoryDag):
            assert r.view.cids() == all_cids
    # every replica delivers every node once, in a causal order, and agrees on the logs
    logs = []
    for r in replicas:
        rx: CausalReceiver[ToyNode] = CausalReceiver()
        order: list[bytes] = []
        local = [n for n in written if n.author == r.name.encode()]
        assert len(r.added) == len(set(r.added)), "a block was reported as added twice"
        received = {c: ToyNode.from_block(r.view.get(c) or b"") for c in r.added}
        for node in [*local, *received.values()]:
            result = rx.receive(node)
            assert result.events == ()
            order.extend(n.cid for n in result.delivered)
        assert sorted(order) == sorted(all_cids)
        pos = {c: i for i, c in enumerate(order)}
        for n in written:
            assert all(pos[d] < pos[n.cid] for d in dependencies(n))
        logs.append({a: rx.logs.log(a) for a in rx.logs.authors()})
    assert all(lg == logs[0] for lg in logs)


def make_replicas(count: int, seed: int, views: Sequence[DagView] | None = None) -> list[SimReplica]:
    replicas = [SimReplica(f"r{i}", views[i] if views is not None else MemoryDag(toy_check)) for i in range(count)]
    connect(replicas, counter_rng(seed * 100))
    return replicas


def heal_and_sync(replicas: Sequence[SimReplica], net: NetSim, *, lossy: bool) -> None:
    net.heal()
    if not lossy:
        net.set_faults(drop=0.0, duplicate=0.0)
    sync_to_quiescence(replicas, net, max_timeouts=200)
    assert converged(replicas)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), ops=ops_strategy, fault=faults)
def test_two_replicas_converge(seed: int, ops: list[Op], fault: dict[str, float]) -> None:
    replicas = make_replicas(2, seed)
    net = NetSim(seed=seed, drop=fault["drop"], duplicate=fault["duplicate"], max_delay=int(fault["max_delay"]))
    written = run_schedule(replicas, net, ops, seed)
    heal_and_sync(replicas, net, lossy=False)
    check_converged(replicas, written)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), ops=ops_strategy, fault=faults)
def test_five_replicas_converge_after_partitions(seed: int, ops: list[Op], fault: dict[str, float]) -> None:
    replicas = make_replicas(5, seed)
    net = NetSim(seed=seed, drop=fault["drop"], duplicate=fault["duplicate"], max_delay=int(fault["max_delay"]))
    written = run_schedule(replicas, net, ops, seed)
    heal_and_sync(replicas, net, lossy=False)
    check_converged(replicas, written)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), ops=ops_strategy)
def test_five_replicas_converge_while_losing_messages(seed: int, ops: list[Op]) -> None:
    """The network stays lossy to the end: retransmission timers alone bring convergence."""
    replicas = make_replicas(5, seed)
    net = NetSim(seed=seed, drop=0.3, duplicate=0.2, max_delay=3)
    written = run_schedule(replicas, net, ops, seed)
    heal_and_sync(replicas, net, lossy=True)
    check_converged(replicas, written)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32), count=st.integers(1, 80))
def test_lossless_sync_needs_no_timer(seed: int, count: int) -> None:
    """Without losses, fresh sessions converge with no retransmission at all."""
    rnd = random.Random(seed)
    replicas = make_replicas(5, seed)
    authors = [ToyAuthor(r.name.encode()) for r in replicas]
    written = []
    for _ in range(count):
        i = rnd.randrange(5)
        node = authors[i].write(parents=tuple(replicas[i].view.heads()))
        replicas[i].view.add([(node.cid, node.block, toy_links(node))])
        written.append(node)
    net = NetSim(seed=seed, duplicate=0.3, max_delay=4)
    pump(replicas, net)
    assert converged(replicas)
    check_converged(replicas, written)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), ops=ops_strategy, fault=faults)
def test_five_replicas_converge_many(seed: int, ops: list[Op], fault: dict[str, float]) -> None:
    replicas = make_replicas(5, seed)
    net = NetSim(seed=seed, drop=fault["drop"], duplicate=fault["duplicate"], max_delay=int(fault["max_delay"]))
    written = run_schedule(replicas, net, ops, seed)
    heal_and_sync(replicas, net, lossy=True)
    check_converged(replicas, written)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), ops=ops_strategy, fault=faults)
def test_memory_store_replicas_converge(seed: int, ops: list[Op], fault: dict[str, float]) -> None:
    views = [StoreDag(MemoryStore(), toy_check) for _ in range(3)]
    replicas = make_replicas(3, seed, views)
    net = NetSim(seed=seed, drop=fault["drop"], duplicate=fault["duplicate"], max_delay=int(fault["max_delay"]))
    written = run_schedule(replicas, net, ops, seed)
    heal_and_sync(replicas, net, lossy=False)
    check_converged(replicas, written)
    blocks = [set(v.store.iter_cids()) for v in views]  # type: ignore[attr-defined]
    assert blocks[0] == blocks[1] == blocks[2] == {n.cid for n in written}


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), ops=ops_strategy, fault=faults)
def test_sqlite_store_replicas_converge(seed: int, ops: list[Op], fault: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stores = [SqliteStore(Path(tmp) / f"r{i}.db", synchronous="NORMAL") for i in range(2)]
        try:
            views = [StoreDag(st_, toy_check) for st_ in stores] + [StoreDag(MemoryStore(), toy_check)]
            replicas = make_replicas(3, seed, views)
            net = NetSim(seed=seed, drop=fault["drop"], duplicate=fault["duplicate"], max_delay=int(fault["max_delay"]))
            written = run_schedule(replicas, net, ops, seed)
            heal_and_sync(replicas, net, lossy=False)
            check_converged(replicas, written)
            assert set(stores[0].iter_cids()) == set(stores[1].iter_cids()) == {n.cid for n in written}
        finally:
            for st_ in stores:
                st_.close()
