"""The merged-tree rule of docs/merge.md section 5 with real MLS groups: nodes changed by one
branch relative to the merge's base are kept, and each case the rule must get right.

Besides `World.check_epoch` (everyone in the epoch holds the same secrets, the private keys of
every non-blank, non-unmerged node on their path, and can talk), every merge here is checked
against the strongest adversary the harness has: the union of every private key anybody ever
held in any state.  For every non-blank node of the merged epoch's tree, exactly the members
below it that are not unmerged hold its private key, and nobody else ever did
(`assert_knowledge`).  World.merge itself checks that the merged tree passes a joiner's RFC 9420
checks (parent hashes, unmerged leaves, key uniqueness).
"""

from __future__ import annotations

import pytest

from crdt_mls.errors import DecodeError, InvalidArgument, MissingBaseError
from crdt_mls.merge.mlsmerge import (
    BaseEpoch,
    MergeCommit,
    _merge_tree,
    _open,
    create_merge_commit,
    merged_base_tree,
    process_merge_commit,
)
from crdt_mls.mls import codec, treemath
from crdt_mls.mls.ratchet_tree import RatchetTree
from crdt_mls.mls.suites import get_cipher_suite
from tests.scenarios.harness import World

SUITE = get_cipher_suite(1)
NAMES = ["alice", "bob", "carol", "dave", "frank", "gina"]


def held_keys(w: World) -> dict[bytes, set[str]]:
    """Public key -> people who ever held its private key (in any state of the world)."""
    out: dict[bytes, set[str]] = {}
    for (name, _e), g in w.states.items():
        for x in g.private_keys:
            v = g.tree.node(x) if x < g.tree.width else None
            if v is not None:
                out.setdefault(v.encryption_key, set()).add(name)
    return out


def assert_knowledge(w: World, epoch: bytes) -> None:
    """Key knowledge with equality (design sketch 6.2) against every key anybody ever held."""
    tree = w.trees[epoch]
    held = held_keys(w)
    leaf_of = {w.name_of(lf.signature_key): i for i, lf in tree.members()}
    for x in range(1, tree.width, 2):
        node = tree.parent_node(x)
        if node is None:
            continue
        lo, hi = treemath.subtree_leaves(x)[0], treemath.subtree_leaves(x)[-1]
        expected = {n for n, i in leaf_of.items() if lo <= i <= hi and i not in node.unmerged_leaves}
        assert held.get(node.encryption_key, set()) == expected, (x, held.get(node.encryption_key), expected)


def merged(w: World, m: bytes) -> tuple[RatchetTree, object]:
    """The merged base tree of merge ``m`` (before its UpdatePath) and what the rule did."""
    rec = w.dag.record(m)
    parents = w.parent_epochs(w.name_of(rec.author), tuple(sorted(rec.epochs)))
    st = w.dag.state(rec.parents)
    return _merge_tree(SUITE, parents, st.membership, w.bases[m])


def written(w: World, epoch: bytes, since: bytes) -> dict[int, bytes]:
    """Parent nodes whose key ``epoch``'s tree holds and ``since``'s does not: node -> key."""
    t, b = w.trees[epoch], w.trees[since]
    out = {}
    for x in range(1, t.width, 2):
        v = t.parent_node(x)
        old = b.parent_node(x) if x < b.width else None
        if v is not None and (old is None or old.encryption_key != v.encryption_key):
            out[x] = v.encryption_key
    return out


def ciphertexts(w: World, m: bytes) -> int:
    name = next(n for (n, e) in w.states if e == m)
    holder = [(e, g) for (n, e), g in w.states.items() if n == name]
    commit = _open(w.merge_messages[m], holder)
    return sum(len(node.encrypted_path_secret) for node in commit.content.path.nodes)


def test_nodes_changed_by_one_branch_are_kept_and_conflicts_blanked() -> None:
    w = World(list(NAMES))  # leaves 0..5 of an 8-leaf tree: bob at 1, frank at 4
    g = w.genesis
    b1 = w.commit("bob", g)
    f1 = w.commit("frank", g)
    m = w.merge("carol")
    assert w.bases[m] is not None and w.bases[m].epoch_id == g
    tree, report = merged(w, m)
    wb, wf = written(w, b1, g), written(w, f1, g)
    assert set(wb) == {1, 3, 7} and set(wf) == {9, 7}  # frank's node 11 is filtered (leaves 6, 7 blank)
    for x, key in (*wb.items(), *wf.items()):
        node = tree.parent_node(x)
        if x == 7:
            assert node is None and report.conflicts == {7}  # both wrote the root
        else:
            assert node is not None and node.encryption_key == key, x
    # carol (leaf 2) encrypts to leaf 3, node 1 (bob's) and node 9 (frank's, the resolution of
    # 11): 3 ciphertexts; keeping only nodes identical in every parent blanked 1, 3 and 9: 5
    assert ciphertexts(w, m) == 3
    w.check_epoch(m)
    assert_knowledge(w, m)


def test_a_value_all_changers_agree_on_is_kept_in_a_merge_of_merges() -> None:
    w = World(list(NAMES))
    g = w.genesis
    b1 = w.commit("bob", g)
    w.commit("frank", g)
    m1 = w.merge("carol")
    m2 = w.merge("dave", tuple(sorted(w.dag.record(m1).epochs)))  # a racing merge of the same heads
    assert w.dag.heads() == {m1, m2}
    m3 = w.merge("alice")
    assert w.bases[m3] is not None and w.bases[m3].epoch_id == g
    tree, _ = merged(w, m3)
    # bob's node 1 was kept by both merges: every parent changed it the same way
    node = tree.parent_node(1)
    assert node is not None and node.encryption_key == w.trees[b1].parent_node(1).encryption_key  # type: ignore[union-attr]
    w.check_epoch(m3)
    assert_knowledge(w, m3)


def test_nodes_of_a_voided_commit_are_never_kept_even_when_its_author_is_readded() -> None:
    w = World(list(NAMES))
    g = w.genesis
    a1 = w.commit("alice", g, remove=("frank",))
    f1 = w.commit("frank", g)  # void (strong remove): frank wrote his path
    stolen = [
        k
        for (n, _e), s in list(w.states.items())
        if n == "frank"
        for x in s.private_keys
        if (k := s.private_keys.get(x))
    ]
    a2 = w.commit("alice", a1, add=("frank",), same_key=True)  # frank re-added: a new instance
    st = w.dag.state()
    assert f1 in st.void and st.membership.get(w.key("frank")).added_in == a2  # type: ignore[union-attr]
    m = w.merge("bob")
    tree, report = merged(w, m)
    keys = set(written(w, f1, g).values())
    for x in range(1, tree.width, 2):
        node = tree.parent_node(x)
        assert node is None or node.encryption_key not in keys, x
    assert 9 in report.reblanked  # only frank's branch changed node 9, but the old instance knew it
    w.check_epoch(m)
    assert_knowledge(w, m)
    assert w.adversary_opens(stolen, m) == 0  # the old instance's keys open nothing


def stolen_before(w: World, name: str, commit: bytes) -> list[bytes]:
    """Every private key ``name`` held in an epoch that does not have ``commit`` in its past
    (an attacker who compromised ``name`` before ``commit`` and follows the other branches)."""
    return [
        k
        for (n, e), s in w.states.items()
        if n == name and e != commit and not w.dag.in_past(commit, e)
        for x in s.private_keys
        if (k := s.private_keys.get(x))
    ]


def test_update_proposal_concurrent_with_a_commit_writing_the_updaters_path() -> None:
    w = World(list(NAMES))
    g = w.genesis
    upd = w.propose("gina", g, update=True)  # gina (leaf 5): RFC 9420 blanks her path
    c1 = w.commit("carol", g, proposals=(upd,))  # carol's path: 5, 3, 7 (9 stays blank)
    f1 = w.commit("frank", g)  # frank (leaf 4) writes 9 and 7, to gina's *old* leaf key
    assert w.dag.state().membership.get(w.key("gina")).updated_in == c1  # type: ignore[union-attr]
    m = w.merge("alice")  # alice's copath: 1, 5, 11 -> 11's resolution is node 9
    tree, report = merged(w, m)
    # only frank's branch changed node 9, but gina learned it with her pre-update key: blank
    assert tree.parent_node(9) is None and 9 in report.reblanked
    for x, key in written(w, f1, g).items():
        node = tree.parent_node(x)
        assert node is None or node.encryption_key != key, x
    w.check_epoch(m)
    assert_knowledge(w, m)
    # an attacker holding everything gina held before the update (incl. what she learned on
    # frank's branch with her old key) opens nothing in the merge: post-compromise security
    assert w.adversary_opens(stolen_before(w, "gina", c1), m) == 0


def test_a_removal_below_a_blank_node_reblanks_what_the_other_branch_wrote_there() -> None:
    w = World(list(NAMES))
    g = w.genesis
    assert w.trees[g].parent_node(9) is None
    a1 = w.commit("alice", g, remove=("frank",))  # node 9 (above frank) was blank: it stays blank
    g1 = w.commit("gina", g)  # gina (leaf 5) writes 9 (to frank's leaf) and 7
    assert 9 not in written(w, a1, g) and 9 in written(w, g1, g)
    stolen = w.stolen_keys("frank")
    m = w.merge("bob")  # bob's copath: leaf 0, node 5, node 11 (resolution: node 9)
    tree, report = merged(w, m)
    assert tree.parent_node(9) is None and 9 in report.reblanked  # rule 4: frank knew it
    w.check_epoch(m)
    assert_knowledge(w, m)
    assert not w.knows("frank", m) and w.adversary_opens(stolen, m) == 0


def test_a_joiner_of_another_branch_is_unmerged_under_kept_nodes() -> None:
    w = World([*NAMES, "hank"])  # frank at 4, gina 5, hank 6; leaf 7 free
    g = w.genesis
    w.commit("carol", g, add=("eve",))  # eve at leaf 7; carol writes 5, 3, 7
    f1 = w.commit("frank", g)  # frank writes 9, 11, 7
    m = w.merge("bob")
    tree, _ = merged(w, m)
    wf = written(w, f1, g)
    assert set(wf) == {9, 11, 7}
    node = tree.parent_node(11)  # frank's node above eve is kept; eve never learned it
    assert node is not None and node.encryption_key == wf[11] and 7 in node.unmerged_leaves
    w.check_epoch(m)  # eve joins from the merge Welcome
    assert_knowledge(w, m)


def test_a_moved_joiner_keeps_no_node_of_its_old_position() -> None:
    w = World(list(NAMES))  # leaves 0..5 taken; 6 and 7 free
    g = w.genesis
    g1 = w.commit("gina", g, add=("hank",))  # hank at leaf 6 learns node 11 (LCA of 5 and 6)
    a1 = w.commit("alice", g, add=("ivy",))  # ivy at leaf 6 too; alice writes 1, 3, 7
    st = w.dag.state()
    (mover,) = st.moved
    m = w.merge("bob")
    tree, report = merged(w, m)
    if mover == w.key("hank"):
        # hank (moved to 7) knew gina's node 11 from his old seat: rule 4 blanks it
        assert tree.parent_node(11) is None and 11 in report.reblanked
    else:
        node = tree.parent_node(11)  # ivy moved, hank stays: gina's node 11 is kept
        assert node is not None and node.encryption_key == w.trees[g1].parent_node(11).encryption_key  # type: ignore[union-attr]
        assert 7 in node.unmerged_leaves and 6 not in node.unmerged_leaves
    assert a1 in w.dag.record(m).epochs
    w.check_epoch(m)
    assert_knowledge(w, m)


def test_a_member_whose_eviction_is_voided_is_unmerged_under_the_evicting_branch() -> None:
    w = World(list(NAMES))
    g = w.genesis
    a1 = w.commit("alice", g, evict=("bob",))  # blanks bob's path, writes alice's (1, 3, 7)
    w.commit("bob", g)  # bob was active: the eviction is void
    assert w.key("bob") in w.dag.state().membership
    w.commit_after("frank", a1, ())  # a later commit on alice's branch writes 9, 11, 7
    m = w.merge("carol")
    w.check_epoch(m)  # bob is back through the merge Welcome
    assert_knowledge(w, m)


def test_foreign_parents_partition_heal() -> None:
    w = World(["alice", "bob", "carol", "dave"])
    g = w.genesis
    a1 = w.commit("alice", g, evict=("carol", "dave"))
    c1 = w.commit("carol", g, evict=("alice", "bob"))
    w.activity("bob", a1)
    w.activity("dave", c1)
    m = w.merge("alice")  # c1 is foreign to alice: not included
    w.check_epoch(m)
    assert_knowledge(w, m)
    n = w.commit("dave", m)
    w.check_epoch(n)
    assert_knowledge(w, n)


def test_merge_without_a_base_keeps_only_nodes_every_parent_holds() -> None:
    w = World(list(NAMES))
    g = w.genesis
    b1 = w.commit("bob", g)
    f1 = w.commit("frank", g)
    st = w.dag.state()
    parents = w.parent_epochs("carol", tuple(sorted((b1, f1))))
    strict = merged_base_tree(SUITE, parents, st.membership)
    based = merged_base_tree(SUITE, parents, st.membership, BaseEpoch(g, w.trees[g], w.dag.state({g}).membership))
    for x in (1, 3, 9, 11, 7):
        assert strict.parent_node(x) is None
    assert based.parent_node(1) is not None and based.parent_node(9) is not None
    # a merge commit built without a base needs none to be processed
    msg, made = create_merge_commit(parents, st.membership, rng=w.r)
    got = process_merge_commit(w.parent_epochs("dave", tuple(sorted((b1, f1)))), st.membership, msg)
    assert got.epoch_authenticator == made.epoch_authenticator


def test_base_epoch_on_the_wire_and_missing_bases() -> None:
    w = World(list(NAMES))
    g = w.genesis
    b1 = w.commit("bob", g)
    f1 = w.commit("frank", g)
    m = w.merge("carol")
    receiver = w.parent_epochs("dave", tuple(sorted((b1, f1))))
    membership = w.dag.state(w.dag.record(m).parents).membership
    msg = w.merge_messages[m]
    commit = _open(msg, [(p.epoch_id, p.group) for p in receiver if p.group is not None])
    assert commit.content.base_epoch == g and commit.content.version == 2
    with pytest.raises(MissingBaseError):
        process_merge_commit(receiver, membership, msg)  # no base given
    with pytest.raises(MissingBaseError):
        process_merge_commit(receiver, membership, msg, base=lambda _e: None)  # not kept
    with pytest.raises(MissingBaseError):
        process_merge_commit(receiver, membership, msg, base=BaseEpoch(b1, w.trees[b1]))  # another epoch
    with pytest.raises(InvalidArgument):
        process_merge_commit(receiver, membership, msg, base=lambda _e: BaseEpoch(b1, w.trees[b1]))
    # the base's membership only makes it faster: without it the result is the same
    got = process_merge_commit(receiver, membership, msg, base=BaseEpoch(g, w.trees[g]))
    assert got.epoch_authenticator == w.states[("carol", m)].epoch_authenticator
    # version 1 (no base) is refused with a clear error; a base equal to a parent is malformed
    raw = codec.encode(commit)
    with pytest.raises(DecodeError, match="version 1"):
        codec.decode(MergeCommit, b"\x01" + raw[1:])
    bad = type(commit.content)(
        commit.content.group_id,
        commit.content.epoch,
        commit.content.parents,
        commit.content.committer,
        commit.content.base_tree_hash,
        commit.content.path,
        commit.content.parents[0].epoch_id,
    )
    with pytest.raises(DecodeError):
        codec.decode(MergeCommit, codec.encode(MergeCommit(bad, commit.signature, commit.confirmation_tag)))


def test_a_base_membership_that_does_not_match_its_tree_is_refused() -> None:
    w = World(list(NAMES))
    g = w.genesis
    b1 = w.commit("bob", g, remove=("gina",))
    f1 = w.commit("frank", g)
    st = w.dag.state()
    parents = w.parent_epochs("carol", tuple(sorted((b1, f1))))
    wrong = BaseEpoch(g, w.trees[b1], w.dag.state({g}).membership)  # another epoch's tree
    with pytest.raises(InvalidArgument, match="base membership"):
        merged_base_tree(SUITE, parents, st.membership, wrong)


def test_update_proposal_committed_concurrently_with_the_proposers_own_commit_keeps_pcs() -> None:
    """Rule 3.7 orders a member's UPDATEs by its own log (proofs/findings.md F12): the Update
    proposal gina made before her own commit does not bring back its leaf key, although the
    commit carrying it comes later in the order."""
    w = World(list(NAMES), seed=2)  # a seed where carol's commit comes after gina's in the order
    g = w.genesis
    p = w.propose("gina", g, update=True)  # gina's Update proposal...
    u = w.commit("gina", g)  # ...then her own commit: a fresh leaf and path (PCS for gina)
    c1 = w.commit("carol", g, proposals=(p,))  # carol commits the proposal, concurrently with u
    assert w.dag.rank(c1) > w.dag.rank(u)  # carol's commit comes later in the order...
    assert w.dag.state().membership.get(w.key("gina")).updated_in == u  # type: ignore[union-attr]
    m = w.merge("alice")
    w.check_epoch(m)
    assert_knowledge(w, m)  # key knowledge holds: the tree is consistent with S
    # but an attacker who held everything gina had before u opens the merge's path secrets
    assert w.adversary_opens(stolen_before(w, "gina", u), m) == 0
