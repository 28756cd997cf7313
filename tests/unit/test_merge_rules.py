"""Unit tests of the membership CRDT (crdt_mls.merge.rules) and the epoch DAG
(crdt_mls.merge.dag) on abstract records: rules, validation, typed errors with unchanged
state, bounded cache, and order-independence on random DAGs (Hypothesis)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mls.errors import InvalidArgument, ProtocolError, UnknownParentError
from crdt_mls.merge import (
    Change,
    ChangeKind,
    GroupDag,
    Membership,
    MutualRemoval,
    OpRecord,
)
from crdt_mls.merge.dag import EpochAdded, HeadsChanged, OperationVoided


def _cid(s: str) -> bytes:
    return hashlib.sha256(s.encode()).digest()


class Log:
    """Builds records with per-author seq/prev bookkeeping."""

    def __init__(self, founders: str = "ABC") -> None:
        self.seq: dict[bytes, int] = {}
        self.last: dict[bytes, bytes] = {}
        self.g = self.op("g", founders[0], [], [], [add(f, i) for i, f in enumerate(founders)])

    def op(
        self, name: str, author: str, parents: list[str], epochs: list[str], changes: list[Change] | None = None
    ) -> OpRecord:
        a = author.encode()
        s = self.seq.get(a, -1) + 1
        rec = OpRecord(
            _cid(name),
            a,
            s,
            self.last.get(a),
            tuple(_cid(p) for p in parents),
            tuple(_cid(e) for e in epochs),
            None if changes is None else tuple(changes),
        )
        self.seq[a] = s
        self.last[a] = rec.cid
        return rec


def add(who: str, leaf: int) -> Change:
    return Change(ChangeKind.ADD, who.encode(), leaf, b"leaf-" + who.encode())


def rm(who: str) -> Change:
    return Change(ChangeKind.REMOVE, who.encode())


def ev(who: str) -> Change:
    return Change(ChangeKind.EVICT, who.encode())


def upd(who: str, v: str) -> Change:
    return Change(ChangeKind.UPDATE, who.encode(), 0, v.encode())


def names(m: Membership) -> str:
    return "".join(sorted(k.decode() for k in m.keys()))  # noqa: SIM118


def test_change_and_membership_validation() -> None:
    with pytest.raises(InvalidArgument):
        Change(ChangeKind.ADD, b"x", 0)
    with pytest.raises(InvalidArgument):
        Change(ChangeKind.REMOVE, b"")
    with pytest.raises(InvalidArgument):
        Change(ChangeKind.REMOVE, b"x", -1)
    with pytest.raises(InvalidArgument):
        Change(7, b"x")  # type: ignore[arg-type]
    log = Log()
    dag = GroupDag(log.g)
    assert names(dag.members()) == "ABC"
    with pytest.raises(InvalidArgument):
        GroupDag(log.op("x", "A", ["g"], ["g"], []))
    with pytest.raises(InvalidArgument):
        GroupDag(log.g, max_states=1)


def test_linear_extension_and_events() -> None:
    log = Log()
    dag = GroupDag(log.g)
    ev1 = dag.add(log.op("a1", "A", ["g"], ["g"], [add("D", 3), upd("A", "a1")]))
    assert isinstance(ev1[0], EpochAdded) and isinstance(ev1[1], HeadsChanged)
    assert names(dag.members()) == "ABCD"
    assert dag.members().get(b"A") is not None and dag.members().get(b"A").data == b"a1"  # type: ignore[union-attr]
    assert dag.add(log.op("x", "B", ["a1"], ["a1"])) == []  # application node: no event
    assert dag.heads() == {_cid("a1")}


def test_bad_records_raise_typed_errors_and_leave_the_dag_unchanged() -> None:
    log = Log()
    dag = GroupDag(log.g)
    dag.add(log.op("a1", "A", ["g"], ["g"], [rm("C")]))
    before = (dag.heads(), dag.frontier(), dag.commits(), dag.members())
    bad = [
        (UnknownParentError, OpRecord(_cid("u"), b"B", 0, None, (_cid("nope"),), (_cid("g"),), ())),
        (ProtocolError, OpRecord(_cid("v"), b"B", 0, None, (_cid("a1"),), (_cid("g"),), ())),  # epochs != seen
        (ProtocolError, OpRecord(_cid("w"), b"C", 0, None, (_cid("a1"),), (_cid("a1"),), ())),  # C removed
        (ProtocolError, OpRecord(_cid("x"), b"B", 0, None, (_cid("a1"),), (_cid("a1"),), (add("A", 5),))),
        (ProtocolError, OpRecord(_cid("y"), b"B", 0, None, (_cid("a1"),), (_cid("a1"),), (rm("C"),))),
        (ProtocolError, OpRecord(_cid("z"), b"B", 3, None, (_cid("a1"),), (_cid("a1"),), ())),  # seq without prev
        (ProtocolError, OpRecord(_cid("q"), b"B", 0, None, (_cid("a1"),), (), ())),  # no epoch
        (ProtocolError, OpRecord(_cid("e"), b"A", 1, _cid("g"), (_cid("a1"),), (_cid("a1"),), ())),  # equivocation
    ]
    for exc, rec in bad:
        with pytest.raises(exc):
            dag.add(rec)
        assert (dag.heads(), dag.frontier(), dag.commits(), dag.members()) == before


def test_merge_commit_only_updates_its_committer() -> None:
    log = Log()
    dag = GroupDag(log.g)
    dag.add(log.op("a1", "A", ["g"], ["g"], []))
    dag.add(log.op("b1", "B", ["g"], ["g"], []))
    with pytest.raises(ProtocolError):
        dag.add(log.op("m", "C", ["a1", "b1"], ["a1", "b1"], [add("D", 3)]))
    log2 = Log()
    dag2 = GroupDag(log2.g)
    dag2.add(log2.op("a1", "A", ["g"], ["g"], []))
    dag2.add(log2.op("b1", "B", ["g"], ["g"], []))
    evs = dag2.add(log2.op("m", "C", ["a1", "b1"], ["a1", "b1"], [upd("C", "c-merged")]))
    assert isinstance(evs[0], EpochAdded) and dag2.heads() == {_cid("m")}


def test_strong_remove_voids_transitively() -> None:
    log = Log("ABCD")
    dag = GroupDag(log.g)
    dag.add(log.op("a1", "A", ["g"], ["g"], [rm("C")]))
    dag.add(log.op("c1", "C", ["g"], ["g"], [add("Z", 4)]))
    dag.add(log.op("z1", "Z", ["c1"], ["c1"], [rm("B")]))  # Z, added by the void commit, removes B
    evs = dag.add(log.op("c2", "C", ["z1"], ["z1"], [rm("D")]))
    st = dag.state()
    assert names(st.membership) == "ABD"
    assert st.void == {_cid("c1"), _cid("z1"), _cid("c2")}
    assert any(isinstance(e, OperationVoided) for e in evs)


def test_concurrent_readd_does_not_undo_a_removal_whatever_the_heights() -> None:
    """proofs/findings.md F1: the outcome must not depend on how many commits the re-adder made."""
    for extra in (0, 2):
        log = Log("ABCD")
        dag = GroupDag(log.g)
        dag.add(log.op("c1", "A", ["g"], ["g"], [add("E", 4)]))
        dag.add(log.op("c2", "A", ["c1"], ["c1"], [rm("E")]))
        prev = "g"
        for i in range(extra):  # B's unrelated commits raise the height of its add
            dag.add(log.op(f"u{i}", "B", [prev], [prev], [upd("B", f"b{i}")]))
            prev = f"u{i}"
        dag.add(log.op("c5", "B", [prev], [prev], [add("E", 5)]))
        assert b"E" not in dag.members(), extra
    # a re-add that has the removal in its past is a real re-add
    log = Log("ABCD")
    dag = GroupDag(log.g)
    dag.add(log.op("c1", "A", ["g"], ["g"], [add("E", 4)]))
    dag.add(log.op("c2", "A", ["c1"], ["c1"], [rm("E")]))
    dag.add(log.op("c3", "B", ["c2"], ["c2"], [add("E", 4)]))
    dag.add(log.op("c4", "C", ["g"], ["g"], []))
    assert b"E" in dag.members()


def test_long_removal_chain_reaches_the_fixpoint() -> None:
    """proofs/findings.md F3: A removes B, B removes C, C removes D, D removes E, concurrently."""
    log = Log("ABCDEF")
    dag = GroupDag(log.g)
    for a, t in zip("ABCD", "BCDE", strict=True):
        dag.add(log.op(a, a, ["g"], ["g"], [rm(t)]))
    st = dag.state()
    assert names(st.membership) == "ACEF"  # B's and D's removals are void: their authors were removed
    assert st.void == {_cid("B"), _cid("D")}


def test_mutual_removal_modes() -> None:
    for mode, expected in ((MutualRemoval.BOTH, "CD"), (MutualRemoval.SENIORITY, "ACD")):
        log = Log("ABCD")
        dag = GroupDag(log.g, mutual_removal=mode)
        dag.add(log.op("a1", "A", ["g"], ["g"], [add("E", 4)]))
        dag.add(log.op("x", "A", ["a1"], ["a1"], [rm("E")]))
        dag.add(log.op("y", "E", ["a1"], ["a1"], [rm("A")]))
        # A is senior to E (E was added after A); B stays out of it
        st = dag.state()
        assert names(st.membership) == expected.replace("C", "BC"), mode


def test_removal_cycle_is_resolved_greedily_in_order() -> None:
    log = Log("ABCD")
    dag = GroupDag(log.g)
    recs = {
        "a": log.op("a", "A", ["g"], ["g"], [rm("B")]),
        "b": log.op("b", "B", ["g"], ["g"], [rm("C")]),
        "c": log.op("c", "C", ["g"], ["g"], [rm("A")]),
    }
    for r in recs.values():
        dag.add(r)
    # no fixpoint exists; take removals in (height, CID) order, skipping one whose author an
    # earlier taken concurrent removal already removed
    # (all three are concurrent), then apply: a commit whose author a selected removal removes
    # is void, and a void commit's removal does not apply (docs/merge.md section 3.4)
    order = sorted(recs, key=lambda k: recs[k].cid)
    targets = {"a": "B", "b": "C", "c": "A"}
    selected: list[str] = []
    for k in order:
        if not any(targets[j] == k.upper() for j in selected):
            selected.append(k)
    void = {k for k in recs if any(targets[j] == k.upper() for j in selected)}
    removed = {targets[k] for k in selected if k not in void}
    m = names(dag.members())
    assert m == "".join(sorted(set("ABCD") - removed))
    assert dag.state().void == {recs[k].cid for k in void}
    assert 1 <= len(removed) <= 2  # never the empty group a "remove everyone" rule would give


def test_weak_eviction() -> None:
    log = Log("ABCD")
    dag = GroupDag(log.g)
    dag.add(log.op("a1", "A", ["g"], ["g"], [ev("D")]))
    dag.add(log.op("b1", "B", ["g"], ["g"], []))
    assert names(dag.members()) == "ABC"  # D idle: evicted
    dag.add(log.op("d0", "D", ["g"], ["g"]))  # D active concurrently (an application message)
    assert names(dag.members()) == "ABCD"
    # a strong remove is not weakened by activity
    log2 = Log("ABCD")
    dag2 = GroupDag(log2.g)
    dag2.add(log2.op("a1", "A", ["g"], ["g"], [rm("D")]))
    dag2.add(log2.op("b1", "B", ["g"], ["g"], []))
    dag2.add(log2.op("d0", "D", ["g"], ["g"]))
    assert names(dag2.members()) == "ABC"


def test_leaf_collision_and_double_add() -> None:
    log = Log()
    dag = GroupDag(log.g)
    dag.add(log.op("a1", "A", ["g"], ["g"], [add("D", 3), add("E", 4)]))
    dag.add(log.op("b1", "B", ["g"], ["g"], [add("F", 3), add("D", 4)]))
    st = dag.state()
    m = st.membership
    assert names(m) == "ABCDEF"
    leaves = {k.decode(): v.leaf for k, v in m.by_key().items()}
    assert len(set(leaves.values())) == 6
    first = min(_cid("a1"), _cid("b1"))  # equal heights: CID order
    d = m.get(b"D")
    assert d is not None and d.added_in == first


def test_eviction_marker_round_trip() -> None:
    from crdt_mls.errors import DecodeError
    from crdt_mls.merge.records import EVICT_AAD_PREFIX, evicted_from_aad, eviction_aad

    keys = {b"k" * 32, b"j" * 32}
    assert evicted_from_aad(eviction_aad(keys)) == keys
    assert evicted_from_aad(b"") == frozenset()
    assert evicted_from_aad(b"some application data") == frozenset()
    for bad in (EVICT_AAD_PREFIX + b"\x05ab", EVICT_AAD_PREFIX + b"\x00"):
        with pytest.raises(DecodeError):
            evicted_from_aad(bad)


def test_merge_rank_is_a_permutation_of_the_merged_members() -> None:
    log = Log("ABCD")
    dag = GroupDag(log.g)
    dag.add(log.op("a1", "A", ["g"], ["g"], [rm("D")]))
    dag.add(log.op("b1", "B", ["g"], ["g"], [add("E", 4)]))
    ranks = {k: dag.merge_rank(k.encode()) for k in "ABCE"}
    assert sorted(r for r in ranks.values() if r is not None) == [0, 1, 2, 3]
    assert dag.merge_rank(b"D") is None  # removed: never merges
    assert dag.merge_rank(b"A", {_cid("a1")}) is not None


def test_cache_is_bounded_and_recomputes() -> None:
    log = Log()
    dag = GroupDag(log.g, max_states=3)
    prev = "g"
    for i in range(30):
        dag.add(log.op(f"c{i}", "A", [prev], [prev], [upd("A", f"v{i}")]))
        prev = f"c{i}"
    assert len(dag._states) <= 3
    m = dag.state({_cid("c5")}).membership.get(b"A")
    assert m is not None and m.data == b"v5"
    assert len(dag._states) <= 3


# ----------------------------------------------------------------------- random DAGs

KEYS = "ABCDEFGH"


@st.composite
def histories(
    draw: st.DrawFn,
    mode: MutualRemoval = MutualRemoval.BOTH,
    *,
    founders: str = "ABCD",
    length: tuple[int, int] = (2, 14),
    recent: int | None = None,
    app_weight: int = 1,
    remove_odds: int = 2,
) -> list[OpRecord]:
    """Random valid histories (under ``mode``): members commit having seen a random part of the
    past (only the ``recent`` latest operations, if given), concurrency and merges included.
    ``app_weight``: application messages per commit drawn; a commit removes someone with
    probability 1/``remove_odds``."""
    log = Log(founders)
    dag = GroupDag(log.g, mutual_removal=mode)
    recs: list[OpRecord] = []
    for i in range(draw(st.integers(*length))):
        # each op has seen a random part of the history: concurrency, and merges when it saw several heads
        pool = sorted([log.g.cid, *(r.cid for r in recs)][-(recent or 0) :])
        seen = dag._maximal(draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)))
        epochs = dag._maximal(c for h in seen for c in dag._nodes[h].frontier)
        base = dag.state(seen if len(epochs) > 1 else epochs).membership
        members = sorted(base.keys())
        if not members:
            break
        a = draw(st.sampled_from(members))
        author = a.decode()
        s, prev = log.seq.get(a, -1) + 1, log.last.get(a)
        if prev is not None and not any(prev == p or dag.in_past(prev, p) for p in seen):
            seen = dag._maximal([*seen, prev])
            epochs = dag._maximal(c for h in seen for c in dag._nodes[h].frontier)
            base = dag.state(seen if len(epochs) > 1 else epochs).membership
            if a not in base:
                continue
        kind = draw(st.sampled_from(["commit", *["app"] * app_weight] if len(epochs) == 1 else ["merge", "app"]))
        changes: list[Change] | None = None
        if kind == "merge":
            changes = [upd(author, f"m{i}")]
        elif kind == "commit":
            changes = []
            others = [k for k in members if k != a]
            if others and draw(st.integers(0, remove_odds - 1)) == 0:
                changes.append(
                    Change(draw(st.sampled_from([ChangeKind.REMOVE, ChangeKind.EVICT])), draw(st.sampled_from(others)))
                )
            outside = [k for k in KEYS.encode() if bytes([k]) not in base]
            if outside and draw(st.booleans()):
                k = draw(st.sampled_from(outside))
                changes.append(Change(ChangeKind.ADD, bytes([k]), draw(st.integers(0, 6)), b"l" + bytes([k])))
            changes.append(upd(author, f"u{i}"))
        else:
            epochs = frozenset({max(epochs, key=dag.rank)})
        rec = OpRecord(
            _cid(f"h{i}"),
            a,
            s,
            prev,
            tuple(sorted(seen)),
            tuple(sorted(epochs)),
            None if changes is None else tuple(changes),
        )
        try:
            dag.add(rec)
        except ProtocolError:
            continue
        log.seq[a], log.last[a] = s, rec.cid
        recs.append(rec)
    return [log.g, *recs]


def _replay(records: list[OpRecord], order: list[int], mode: MutualRemoval) -> GroupDag:
    dag = GroupDag(records[0], mutual_removal=mode, max_states=2)
    done = {records[0].cid}
    pending = [records[i] for i in order]
    while pending:
        for r in pending:
            if all(p in done for p in r.parents) and (r.prev is None or r.prev in done):
                dag.add(r)
                done.add(r.cid)
                pending.remove(r)
                break
    return dag


@settings(max_examples=int(__import__("os").environ.get("MERGE_EXAMPLES", "60")), deadline=None)
@given(
    st.sampled_from(list(MutualRemoval)).flatmap(lambda m: st.tuples(st.just(m), histories(m))),
    st.randoms(use_true_random=False),
)
def test_same_operations_same_state_in_any_order(case: tuple[MutualRemoval, list[OpRecord]], rnd: object) -> None:
    mode, records = case
    import random

    assert isinstance(rnd, random.Random)
    ref = _replay(records, list(range(1, len(records))), mode)
    order = list(range(1, len(records)))
    rnd.shuffle(order)
    other = _replay(records, order, mode)
    assert other.heads() == ref.heads()
    assert other.state() == ref.state()
    for c in ref.commits():
        assert other.state({c}) == ref.state({c})
    # S(heads) never keeps a member whose removal is effective, never two members on one leaf
    m = ref.state().membership
    assert len({x.leaf for x in m.members}) == len(m.members)


@pytest.mark.parametrize("tag", ["x", "y", "z", "w"])
def test_update_of_a_member_follows_its_own_log_not_the_carrying_commit(tag: str) -> None:
    """Rule 3.7 (proofs/findings.md F12): A's Update proposal (a node of A's log) committed by B,
    concurrently with A's own later commit, never wins over that commit, whichever comes last in
    the (height, CID) order; causally later updates still win."""
    log = Log("ABC")
    dag = GroupDag(log.g)
    p = log.op(f"p-{tag}", "A", ["g"], ["g"])  # A's Update proposal (a non-commit node)
    dag.add(p)
    u = log.op(f"u-{tag}", "A", ["g"], ["g"], [upd("A", "own")])  # then A's own commit
    c = log.op(f"c-{tag}", "B", ["g", f"p-{tag}"], ["g"], [upd("A", "proposed")])  # B commits the proposal
    dag.add(u)
    dag.add(c)
    a = dag.state().membership.get(b"A")
    assert a is not None and a.data == b"own" and a.updated_in == u.cid
    # a later proposal of A, committed after the merge of both, wins as before
    m = log.op(f"m-{tag}", "C", [f"u-{tag}", f"c-{tag}"], [f"u-{tag}", f"c-{tag}"], [upd("C", "c-merged")])
    dag.add(m)
    p2 = log.op(f"p2-{tag}", "A", [f"m-{tag}"], [f"m-{tag}"])
    dag.add(p2)
    c2 = log.op(f"c2-{tag}", "B", [f"m-{tag}", f"p2-{tag}"], [f"m-{tag}"], [upd("A", "later")])
    dag.add(c2)
    a = dag.state().membership.get(b"A")
    assert a is not None and a.data == b"later"
