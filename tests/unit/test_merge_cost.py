"""The merge commit of the benchmark situation (`benchmarks.merge_bench`) encrypts to O(log n)
nodes: the merged tree keeps what one branch changed (docs/merge.md 5), so the merger's copath
stays filled.  Blanking every node a branch changed (the rule without a base) makes the same
merge encrypt to the children of every committer's path.  Structure only, no timing."""

from __future__ import annotations

import pytest

from benchmarks.harness import Progress
from benchmarks.impl_ours import OursImpl
from benchmarks.merge_bench import ciphertexts, situation
from benchmarks.scenarios import steady_committers
from crdt_mls.merge.mlsmerge import process_merge_commit

N = 256


@pytest.fixture(scope="module")
def steady() -> tuple[OursImpl, list[int]]:
    """A group of N members after the benchmark's create_add_all, joins and 8 steady commits."""
    impl = OursImpl(N, extra=0)
    impl.prepare(Progress("setup", 1))
    impl.add_all()
    committers = steady_committers(N)
    for leaf in (N - 1, *committers):
        impl.join(leaf)
    for c in committers:
        msg = impl.commit(c)
        for leaf in list(impl.state):
            if leaf != c:
                impl.process(leaf, msg)
    return impl, committers


@pytest.mark.parametrize("k", [2, 8])
def test_merge_commit_encrypts_to_log_n_nodes(steady: tuple[OursImpl, list[int]], k: int) -> None:
    impl, committers = steady
    sit = situation(impl.state, committers[:k], N - 1)
    _dag, st, base = sit.engine()
    parents, msg, merged = sit.merge(st.membership, base)
    mine = [(p.epoch_id, p.group) for p in parents if p.group is not None]
    depth = (N - 1).bit_length()  # 8 levels above the leaves
    count = ciphertexts(msg, mine)
    assert count <= depth
    got = process_merge_commit(sit.receiver_parents, st.membership, msg, base=base)
    assert got.epoch_authenticator == merged.epoch_authenticator
    # control: without a base every node a branch changed is blank, and the merger's copath
    # resolves into the children of the committers' paths
    _p, strict, _g = sit.merge(st.membership, None)
    assert ciphertexts(strict, mine) >= 2 * count + k
