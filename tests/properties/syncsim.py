"""Drive :class:`~crdt_mls.causal.sync.SyncSession` pairs over a :class:`~tests.properties.netsim.NetSim`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crdt_mls.causal.dagview import DagView
from crdt_mls.causal.sync import SyncSession
from tests.properties.netsim import NetSim


def counter_rng(seed: int) -> Callable[[int], bytes]:
    """A deterministic ``rng`` for session ids."""
    state = [seed]

    def rng(n: int) -> bytes:
        state[0] += 1
        return state[0].to_bytes(n, "big")

    return rng


@dataclass
class SimReplica:
    name: str
    view: DagView
    sessions: dict[str, SyncSession] = field(default_factory=dict)
    added: list[bytes] = field(default_factory=list)


def connect(replicas: Sequence[SimReplica], rng: Callable[[int], bytes], **limits: Any) -> None:
    """Give every replica one session per other replica (a full mesh)."""
    for a in replicas:
        for b in replicas:
            if a is not b:
                a.sessions[b.name] = SyncSession(a.view, rng=rng, **limits)


def pump(replicas: Sequence[SimReplica], net: NetSim, *, max_ticks: int = 10_000) -> int:
    """Exchange messages until nobody has anything to send and nothing is in flight.

    Returns the number of ticks used; raises AssertionError if ``max_ticks`` is exceeded.
    """
    by_name = {r.name: r for r in replicas}
    for tick in range(max_ticks):
        sent = False
        for r in replicas:
            for peer, session in sorted(r.sessions.items()):
                msg = session.generate_message()
                r.added.extend(session.take_flushed())
                if msg is not None:
                    net.send(r.name, peer, msg)
                    sent = True
        if not sent and net.idle():
            return tick
        for m in net.step():
            dst = by_name[str(m.dst)]
            dst.added.extend(dst.sessions[str(m.src)].receive_message(m.payload))
    raise AssertionError(f"sync did not quiesce within {max_ticks} ticks")


def timeout_all(replicas: Sequence[SimReplica]) -> None:
    for r in replicas:
        for s in r.sessions.values():
            s.on_timeout()


def converged(replicas: Sequence[SimReplica]) -> bool:
    heads = {r.view.heads() for r in replicas}
    return len(heads) == 1


def all_in_sync(replicas: Sequence[SimReplica]) -> bool:
    return all(s.in_sync() for r in replicas for s in r.sessions.values())


def sync_to_quiescence(replicas: Sequence[SimReplica], net: NetSim, *, max_timeouts: int = 50) -> int:
    """Pump; while some session is not in sync, fire its retransmission timer and pump again
    (what a replica's timer does).  Returns the number of timer rounds needed."""
    for rounds in range(max_timeouts + 1):
        pump(replicas, net)
        if all_in_sync(replicas):
            assert converged(replicas)
            return rounds
        for r in replicas:
            for s in r.sessions.values():
                if not s.in_sync():
                    s.on_timeout()
    raise AssertionError("replicas did not converge")
