"""Causal delivery and member logs over a faulty broadcast (docs/causal.md sections 1-2).

Nodes are broadcast (as by pubsub) over a seeded NetSim with loss, duplication and
reordering; a receiver fetches what ``missing()`` names from the origin store (as from IPFS).
Every receiver must deliver every node once, in a causal order, agree on the logs and tails,
and detect an equivocating author with the same evidence regardless of arrival order.  The
receiver is saved and restored at random points.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mls.causal import CausalReceiver, Equivocation, Refused, dependencies
from tests.properties.netsim import Message, NetSim
from tests.properties.toy import ToyAuthor, ToyNode, encode_toy


def random_history(rnd: random.Random, authors: int, count: int) -> list[ToyNode]:
    writers = [ToyAuthor(bytes([65 + i])) for i in range(authors)]
    nodes: list[ToyNode] = []
    for _ in range(count):
        w = writers[rnd.randrange(authors)]
        parents = tuple(n.cid for n in rnd.sample(nodes[-6:], rnd.randint(0, min(2, len(nodes)))))
        nodes.append(w.write(parents=parents, epoch=rnd.randrange(5)))
    return nodes


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    authors=st.integers(1, 5),
    count=st.integers(1, 60),
    drop=st.sampled_from([0.0, 0.2, 0.5]),
    persist=st.booleans(),
)
def test_receivers_agree_under_a_faulty_broadcast(
    seed: int, authors: int, count: int, drop: float, persist: bool
) -> None:
    rnd = random.Random(seed)
    nodes = random_history(rnd, authors, count)
    origin = {n.cid: n for n in nodes}
    net = NetSim(seed=seed, drop=drop, duplicate=0.2, max_delay=5)
    names = ["r0", "r1", "r2"]
    for n in nodes:
        for r in names:
            net.send("origin", r, n.cid)
    receivers: dict[str, CausalReceiver[ToyNode]] = {r: CausalReceiver() for r in names}
    delivered: dict[str, list[bytes]] = {r: [] for r in names}

    def feed(r: str, node: ToyNode) -> None:
        delivered[r].extend(n.cid for n in receivers[r].receive(node).delivered)

    def handle(m: Message) -> None:
        r = str(m.dst)
        feed(r, origin[m.payload])
        if persist and rnd.random() < 0.1:
            receivers[r] = CausalReceiver.from_bytes(receivers[r].to_bytes(encode_toy), ToyNode.from_block)

    net.run(handle)
    for r in names:
        # what the broadcast lost: fetch the missing parents, and the nodes nobody depends on
        while receivers[r].missing():
            for cid in sorted(receivers[r].missing()):
                feed(r, origin[cid])
        for n in nodes:
            if not receivers[r].buffer.knows(n.cid):
                feed(r, n)
        assert sorted(delivered[r]) == sorted(origin)
        pos = {c: i for i, c in enumerate(delivered[r])}
        for n in nodes:
            assert all(pos[d] < pos[n.cid] for d in dependencies(n))
    logs = [{a: rx.logs.log(a) for a in rx.logs.authors()} for rx in receivers.values()]
    assert logs[0] == logs[1] == logs[2]
    oldest = {rx.logs.oldest_tail_epoch(lambda n: n.epoch, lambda e: e) for rx in receivers.values()}
    assert len(oldest) == 1


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), before=st.integers(0, 4), after=st.integers(0, 4))
def test_equivocation_is_detected_in_any_order(seed: int, before: int, after: int) -> None:
    rnd = random.Random(seed)
    a, b = ToyAuthor(b"a"), ToyAuthor(b"b")
    history = [a.write() for _ in range(before + 1)]
    fork_point = history[-1]
    branch1 = [ToyNode(b"a", fork_point.seq + 1, fork_point.cid, (), payload=b"one")]
    branch2 = [ToyNode(b"a", fork_point.seq + 1, fork_point.cid, (), payload=b"two")]
    for branch in (branch1, branch2):
        for _ in range(after):
            last = branch[-1]
            branch.append(ToyNode(b"a", last.seq + 1, last.cid, ()))
    honest = b.write(parents=(branch2[-1].cid,))
    nodes = history + branch1 + branch2 + [honest]
    order = nodes[:]
    rnd.shuffle(order)
    rx: CausalReceiver[ToyNode] = CausalReceiver()
    events: list[Equivocation | Refused] = []
    delivered: list[ToyNode] = []
    for n in order:
        res = rx.receive(n)
        events.extend(res.events)
        delivered.extend(res.delivered)
    evidence = [e for e in events if isinstance(e, Equivocation)]
    assert len(evidence) == 1
    ev = evidence[0]
    assert ev.author == b"a" and ev.seq == fork_point.seq + 1 and ev.reason == "fork"
    assert {ev.first, ev.second} == {branch1[0].cid, branch2[0].cid}
    # the first branch to arrive is kept up to the fork, nothing of the other; every later
    # node of the equivocator is refused, the honest node is delivered
    kept = [n for n in delivered if n.author == b"a"]
    assert kept[: before + 1] == history and len(kept) <= before + 1 + after + 1
    assert honest in delivered
    refused = {e.cid for e in events if isinstance(e, Refused)}
    assert branch1[0].cid in refused or branch2[0].cid in refused
    assert refused.isdisjoint(n.cid for n in delivered)
    assert len(refused) + len(delivered) == len(nodes)
