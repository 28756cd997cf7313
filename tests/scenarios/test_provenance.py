"""Seniority for members who join later (docs/merge.md 3.5, `crdt_mls.merge.provenance`).

With `MutualRemoval.SENIORITY` the senior of a mutual removal is the one added earlier.  A
joiner cannot read who was added when before its join; the committer of the epoch it joins
seals the provenance of every member, and the joiner's S(heads) then agrees with the older
members'.  Each test also runs the joiner without the provenance (every pre-join member added
"at the root", ranked by key: the old behaviour) and shows that it diverges, so the check can fail.
"""

from __future__ import annotations

import pytest

from crdt_mls.errors import DecodeError, DecryptionError, ProtocolError, SignatureError
from crdt_mls.merge.dag import GroupDag
from crdt_mls.merge.provenance import open_provenance, seal_provenance
from crdt_mls.merge.records import membership_from_tree
from crdt_mls.merge.rules import Member, Membership, MutualRemoval
from tests.scenarios.harness import World


def _summary(dag: GroupDag, heads: frozenset[bytes] | None = None) -> set[tuple[bytes, int, bytes, bytes]]:
    """Who is in S(heads), where, with which LeafNode, added by which commit."""
    return {(m.key, m.leaf, m.data, m.added_in) for m in dag.state(heads).membership.members}


def _names(w: World, dag: GroupDag) -> set[str]:
    return {w.name_of(m.key) for m in dag.state().membership.members}


def _world_where_key_order_is_wrong(names: list[str], junior: str, senior: str, build: object) -> World:
    """The first seed whose keys rank ``junior`` before ``senior`` (so ranking by key is wrong)."""
    for seed in range(1, 64):
        w = World(list(names), seed=seed, mode=MutualRemoval.SENIORITY)
        build(w)  # type: ignore[operator]
        if w.key(junior) < w.key(senior):
            return w
    raise AssertionError("no seed orders the keys the wrong way")


def _mutual_removal_after_an_add() -> World:
    def build(w: World) -> None:
        g = w.genesis
        c1 = w.commit("alice", g, add=("carol",))
        c2 = w.commit("carol", c1, add=("dave",))  # dave is junior to carol
        c3 = w.commit("dave", c2, add=("eve",))  # eve joins here: carol and dave predate her
        w.commit("carol", c3, remove=("dave",))
        w.commit("dave", c3, remove=("carol",))

    return _world_where_key_order_is_wrong(["alice", "bob"], "dave", "carol", build)


def test_joiner_and_old_member_agree_on_seniority() -> None:
    w = _mutual_removal_after_an_add()
    old = w.view("alice")
    joiner = w.view("eve")
    assert joiner.heads() == old.heads() == w.dag.heads() and len(w.dag.heads()) == 2
    # the senior (carol) stays, the junior's removal of her is dropped and its commit is void
    members = _names(w, w.dag)
    assert members == {"alice", "bob", "carol", "eve"}
    assert _summary(joiner) == _summary(old) == _summary(w.dag)
    # without the provenance the joiner ranks carol and dave by key: it keeps dave instead
    blind = w.view("eve", provenance=False)
    assert _names(w, blind) == {"alice", "bob", "dave", "eve"}
    # the merge everyone (the joiner included) processes
    m = w.merge("alice")
    w.check_epoch(m)
    assert w.members(m) == members


def test_member_who_joined_a_merge_from_its_welcome_agrees_on_seniority() -> None:
    """Eve is added on one branch, so she joins the merge from the merge Welcome: that epoch is a
    pinned root for her, whose provenance the merge committer seals."""

    def build(w: World) -> None:
        g = w.genesis
        c1 = w.commit("alice", g, add=("carol",))
        c2 = w.commit("carol", c1, add=("dave",))
        w.commit("alice", c2, add=("eve",))
        w.commit("bob", c2)  # eve never reads this branch
        m = w.merge("alice")
        w.commit("carol", m, remove=("dave",))
        w.commit("dave", m, remove=("carol",))

    w = _world_where_key_order_is_wrong(["alice", "bob"], "dave", "carol", build)
    joiner = w.view("eve")
    merge_cid = next(c for c in w.dag.commits() if w.dag.record(c).is_merge)
    assert joiner.state({merge_cid}).membership.keys() == w.dag.state({merge_cid}).membership.keys()
    assert _summary(joiner) == _summary(w.view("bob")) == _summary(w.dag)
    assert "dave" not in _names(w, joiner)
    # the merge's history carries the cut state with provenance; without it, the sealed
    # provenance of the merge root does the same; without either, the joiner diverges
    assert _summary(w.view("eve", history=False)) == _summary(w.dag)
    blind = w.view("eve", provenance=False, history=False)
    assert "carol" not in _names(w, blind)


# ------------------------------------------------------------------ hostile provenance


def _joined() -> tuple[World, bytes]:
    w = World(["alice", "bob"], seed=5, mode=MutualRemoval.SENIORITY)
    c1 = w.commit("alice", w.genesis, add=("carol",))
    c2 = w.commit("carol", c1, add=("dave",))
    return w, c2


def test_provenance_names_each_member_with_its_adding_commit() -> None:
    w, c2 = _joined()
    ms = open_provenance(w.states[("dave", c2)], w.provenance[c2], c2, w.key("carol"))
    added = {w.name_of(m.key): m.added_in for m in ms.members}
    c1 = w.dag.record(c2).epochs[0]
    assert added == {"alice": w.genesis, "bob": w.genesis, "carol": c1, "dave": c2}
    assert ms.keys() == w.dag.state({c2}).membership.keys()


def test_provenance_rejects_a_wrong_signer_epoch_or_bytes() -> None:
    w, c2 = _joined()
    dave = w.states[("dave", c2)]
    sealed = w.provenance[c2]
    with pytest.raises(SignatureError):
        open_provenance(dave, sealed, c2, w.key("alice"))  # not the committer
    c1 = w.dag.record(c2).epochs[0]
    with pytest.raises(DecryptionError):
        open_provenance(dave, w.provenance[c1], c2, w.key("carol"))  # sealed in another epoch
    for bad in (sealed[:10], sealed[:-1], sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:]):
        with pytest.raises((DecodeError, DecryptionError)):
            open_provenance(dave, bad, c2, w.key("carol"))


def test_provenance_must_cover_exactly_the_tree() -> None:
    w, c2 = _joined()
    carol = w.states[("carol", c2)]
    dave = w.states[("dave", c2)]
    before = w.dag.state({w.dag.record(c2).epochs[0]}).membership
    # a committer sealing a membership that lacks the tree's members still names every leaf
    ms = open_provenance(dave, seal_provenance(carol, Membership(), rng=w.r), c2, w.key("carol"))
    assert {m.added_in for m in ms.members} == {c2}
    # ... and one naming extra people names only the tree's members
    extra = Membership([*before.members, Member(b"x" * 32, 9, b"leaf", b"c" * 36, b"c" * 36)])
    ms = open_provenance(dave, seal_provenance(carol, extra, rng=w.r), c2, w.key("carol"))
    assert ms.keys() == w.dag.state({c2}).membership.keys()


def _craft(w: World, c2: bytes, added: list[tuple[bytes, list[int]]]) -> bytes:
    """A provenance blob with the given entries, correctly signed by the committer and sealed."""
    from crdt_mls.merge import provenance as p
    from crdt_mls.mls.codec import Writer

    carol = w.states[("carol", c2)]
    wr = Writer()
    p._encode_added(wr, added)
    wr.opaque(carol.suite.sign_with_label(carol.signature_priv, p._LABEL, p._tbs(carol, added)))
    salt = bytes(32)
    key, nonce = p._key_nonce(carol, salt)
    return salt + carol.suite.aead_seal(key, nonce, p._AAD, wr.getvalue())


def test_signed_provenance_that_misstates_the_tree_is_rejected() -> None:
    w, c2 = _joined()
    dave = w.states[("dave", c2)]
    leaves = sorted(i for i, _ in w.trees[c2].members())
    g = w.genesis
    assert open_provenance(dave, _craft(w, c2, [(b"", leaves)]), c2, w.key("carol")).keys()  # well formed
    for added in (
        [(b"", leaves[:-1])],  # a member left out
        [(b"", leaves), (g, leaves[:1])],  # a leaf named twice
        [(b"", [*leaves, 7])],  # a leaf without a member
        [(g, leaves[1:]), (b"", leaves[:1])],  # entries not ascending
        [(b"", leaves[::-1])],  # leaves not ascending
        [(b"", leaves), (g, [])],  # an empty entry
    ):
        with pytest.raises(ProtocolError):
            open_provenance(dave, _craft(w, c2, added), c2, w.key("carol"))


def _with_added_in(ms: Membership, key: bytes, cid: bytes) -> Membership:
    return Membership([Member(m.key, m.leaf, m.data, cid, m.updated_in) if m.key == key else m for m in ms.members])


def test_add_root_rejects_provenance_outside_the_roots_past() -> None:
    w, c2 = _joined()
    other = w.commit("bob", w.genesis)  # a commit concurrent with dave's join
    app = w.activity("alice", w.genesis)  # not a commit
    dag = GroupDag.for_joiner(mutual_removal=MutualRemoval.SENIORITY)
    for r in w.records:
        if r.cid != c2:
            dag.add_opaque(r.cid, r.author, r.seq, r.prev, r.parents, commit=r.is_commit)
    rec = w.dag.record(c2)
    good = membership_from_tree(w.trees[c2], c2)
    for cid in (b"\x01" * 36, other, app):
        with pytest.raises(ProtocolError):
            dag.add_root(rec, _with_added_in(good, w.key("bob"), cid))
        assert c2 not in dag  # nothing changed
    dag.add_root(rec, _with_added_in(good, w.key("bob"), w.genesis))
    assert c2 in dag and dag.state({c2}).membership.get(w.key("bob")).added_in == w.genesis  # type: ignore[union-attr]


# ------------------------------------------------------------------ merge history (docs/merge.md 4.2)


def _history_world() -> tuple[World, bytes]:
    """j1 (added on one branch) joins m1's merge of both branches from its Welcome."""
    w = World(["m0", "m1", "m2", "m3"], seed=1)
    g = w.genesis
    a = w.commit("m0", g, add=("j1",))
    b = w.commit("m3", g, add=("j2",))
    m = w.merge("m1", tuple(sorted((a, b))))
    return w, m


def _fingerprint(dag: GroupDag) -> tuple[object, ...]:
    return (dag.heads(), dag.commits(), dag.frontier(), dag.readable_frontier())


def test_history_opens_only_in_the_merged_epoch_and_from_the_committer() -> None:
    from crdt_mls.merge.provenance import open_history

    w, m = _history_world()
    j1 = w.states[("j1", m)]
    hist = open_history(j1, w.history[m], w.key("m1"))
    assert hist.cut == w.genesis and {r.cid for r in hist.records} == set(w.dag.record(m).epochs)
    with pytest.raises(SignatureError):
        open_history(j1, w.history[m], w.key("m0"))
    a = w.dag.record(m).epochs[0]
    if ("j1", a) in w.states:
        with pytest.raises(DecryptionError):
            open_history(w.states[("j1", a)], w.history[m], w.key("m1"))
    for bad in (w.history[m][:20], w.history[m][:-1]):
        with pytest.raises((DecodeError, DecryptionError)):
            open_history(j1, bad, w.key("m1"))


def test_add_joined_merge_rejects_a_history_that_is_not_exactly_the_merges() -> None:
    from dataclasses import replace

    from crdt_mls.merge.dag import MergeHistory
    from crdt_mls.merge.provenance import open_history

    w, m = _history_world()
    rec = w.dag.record(m)
    expected = membership_from_tree(w.trees[m], m)
    hist = open_history(w.states[("j1", m)], w.history[m], w.key("m1"))
    b = next(r for r in hist.records if r.author == w.key("m3"))
    others = tuple(r for r in hist.records if r is not b)
    assert b.changes
    hostile = [
        replace(hist, records=others),  # a record the region needs is missing
        replace(hist, records=tuple(r if r is not b else replace(b, changes=()) for r in hist.records)),  # altered
        replace(hist, records=tuple(r if r is not b else replace(b, seq=b.seq + 1) for r in hist.records)),
        replace(hist, records=hist.records[::-1]),  # not in the deterministic order
        replace(hist, cut=rec.epochs[0]),  # a cut that is not the merge's
        MergeHistory(hist.cut, Membership(list(hist.base.members)[1:]), hist.records),  # another cut state
    ]
    for h in hostile:
        dag = w.view("j1", until=m)
        before = _fingerprint(dag)
        with pytest.raises(ProtocolError):
            dag.add_joined_merge(rec, h, expected)
        assert _fingerprint(dag) == before and m not in dag  # nothing changed
        dag.add_joined_merge(rec, hist, expected)  # the true history still goes in
        assert dag.heads() == {m}
    # a history that is fine but does not give the Welcome's tree
    dag = w.view("j1", until=m)
    wrong = Membership([mm for mm in expected.members if mm.key != w.key("j2")])
    with pytest.raises(ProtocolError):
        dag.add_joined_merge(rec, hist, wrong)
    assert m not in dag
