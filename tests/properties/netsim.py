"""A deterministic in-memory network simulator for sans-I/O protocols.

Endpoints are any hashable names.  :meth:`NetSim.send` queues a payload; every
:meth:`NetSim.step` advances time by one tick and returns the messages that arrive now.
Seeded faults: loss (``drop``), duplication (``duplicate``), delay (``max_delay`` ticks,
which also reorders) and partitions (messages that would cross a partition when they arrive
are lost).  The same seed and the same calls give the same run.

Example::

    net = NetSim(seed=1, drop=0.1, duplicate=0.1, max_delay=3)
    net.send("a", "b", b"hello")
    while not net.idle():
        for msg in net.step():
            ...  # msg.src, msg.dst, msg.payload
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Message:
    src: Hashable
    dst: Hashable
    payload: bytes


@dataclass(slots=True)
class Stats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    partitioned: int = 0
    bytes_delivered: int = 0


@dataclass(slots=True)
class NetSim:
    seed: int
    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: int = 0
    now: int = 0
    stats: Stats = field(default_factory=Stats)
    _rng: random.Random = field(init=False, repr=False)
    _queue: list[tuple[int, float, int, Message]] = field(default_factory=list, repr=False)
    _order: int = 0
    _side: dict[Hashable, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    # -- faults ----------------------------------------------------------------------------
    def set_faults(
        self, *, drop: float | None = None, duplicate: float | None = None, max_delay: int | None = None
    ) -> None:
        if drop is not None:
            self.drop = drop
        if duplicate is not None:
            self.duplicate = duplicate
        if max_delay is not None:
            self.max_delay = max_delay

    def partition(self, groups: Iterable[Iterable[Hashable]]) -> None:
        """Split the network: only endpoints of one group reach each other."""
        self._side = {}
        for i, group in enumerate(groups):
            for ep in group:
                self._side[ep] = i

    def heal(self) -> None:
        self._side = {}

    def connected(self, a: Hashable, b: Hashable) -> bool:
        return self._side.get(a, -1) == self._side.get(b, -1)

    # -- traffic ---------------------------------------------------------------------------
    def send(self, src: Hashable, dst: Hashable, payload: bytes) -> None:
        self.stats.sent += 1
        if self.drop and self._rng.random() < self.drop:
            self.stats.dropped += 1
            return
        copies = 1
        if self.duplicate and self._rng.random() < self.duplicate:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            delay = self._rng.randint(0, self.max_delay) if self.max_delay else 0
            self._order += 1
            # ties at one tick are shuffled too when reordering is on
            tiebreak = self._rng.random() if self.max_delay else 0.0
            heapq.heappush(self._queue, (self.now + 1 + delay, tiebreak, self._order, Message(src, dst, payload)))

    def step(self) -> list[Message]:
        """Advance one tick; return the messages arriving now (partitioned ones are lost)."""
        self.now += 1
        out: list[Message] = []
        while self._queue and self._queue[0][0] <= self.now:
            *_, msg = heapq.heappop(self._queue)
            if not self.connected(msg.src, msg.dst):
                self.stats.partitioned += 1
                continue
            self.stats.delivered += 1
            self.stats.bytes_delivered += len(msg.payload)
            out.append(msg)
        return out

    def idle(self) -> bool:
        return not self._queue

    def in_flight(self) -> int:
        return len(self._queue)

    def run(self, handler: Callable[[Message], None], *, max_ticks: int = 100_000) -> int:
        """Step until nothing is in flight, passing each arrival to ``handler`` (which may
        send more).  Returns the ticks used; raises ``AssertionError`` after ``max_ticks``."""
        for tick in range(max_ticks):
            if self.idle():
                return tick
            for msg in self.step():
                handler(msg)
        raise AssertionError(f"network still busy after {max_ticks} ticks")
