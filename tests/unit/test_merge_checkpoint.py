"""GroupDag checkpoints (merge log truncation, docs/api.md): a DAG truncated at its
`truncation_cut` and restored answers like the full DAG, for everything delivered after."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mls.errors import DecodeError, InvalidState
from crdt_mls.merge import GroupDag, MutualRemoval, OpRecord
from tests.unit.test_merge_rules import Log, histories, upd


def active_histories(mode: MutualRemoval = MutualRemoval.BOTH) -> st.SearchStrategy[list[OpRecord]]:
    """`test_merge_rules.histories` with two founders, longer, and authors that mostly build on
    recent operations: every author acts, so cuts past the genesis appear."""
    return histories(mode, founders="AB", length=(6, 30), recent=6, app_weight=2, remove_odds=5)


def _feed(dag: GroupDag, records: list[OpRecord]) -> None:
    for r in records:
        dag.add(r)


@settings(max_examples=int(__import__("os").environ.get("MERGE_EXAMPLES", "200")), deadline=None)
@given(
    st.sampled_from(list(MutualRemoval)).flatmap(
        lambda m: st.tuples(st.just(m), st.one_of(histories(m), active_histories(m)))
    ),
    st.integers(1, 30),
)
def test_truncated_dag_answers_like_the_full_one(case: tuple[MutualRemoval, list[OpRecord]], at: int) -> None:
    mode, records = case
    k = min(at, len(records))
    full = GroupDag(records[0], mutual_removal=mode)
    _feed(full, records[1:])
    part = GroupDag(records[0], mutual_removal=mode)
    _feed(part, records[1:k])
    cut = part.truncation_cut()
    if cut is None:
        return
    restored = GroupDag.from_checkpoint(part.checkpoint(cut))
    assert restored.node_count() <= part.node_count()
    assert restored.heads() == part.heads() and restored.frontier() == part.frontier()
    assert restored.readable_frontier() == part.readable_frontier()
    # every later operation is accepted (its author had passed the cut), with the same outcome
    _feed(restored, records[k:])
    assert restored.heads() == full.heads()
    assert restored.state() == full.state()
    for c in restored.commits():
        assert restored.state({c}) == full.state({c})
    assert restored.merge_order() == full.merge_order()
    # and a checkpoint of the restored DAG restores again
    again = GroupDag.from_checkpoint(restored.checkpoint(cut))
    assert again.state() == full.state()


def test_checkpoint_rejects_a_cut_that_is_not_comparable_and_bad_bytes() -> None:

    log = Log("AB")
    dag = GroupDag(log.g)
    a = log.op("a", "A", ["g"], ["g"], [upd("A", "1")])
    b = log.op("b", "B", ["g"], ["g"], [upd("B", "1")])
    _feed(dag, [a, b])
    with pytest.raises(InvalidState):
        dag.checkpoint(a.cid)  # concurrent with b
    assert dag.truncation_cut() == log.g.cid
    data = dag.checkpoint(log.g.cid)
    with pytest.raises(DecodeError):
        GroupDag.from_checkpoint(data[:-1])
    with pytest.raises(DecodeError):
        GroupDag.from_checkpoint(b"\x09" + data[1:])
    rnd = random.Random(1)
    for _ in range(50):
        bad = bytearray(data)
        bad[rnd.randrange(len(bad))] ^= 1 << rnd.randrange(8)
        with contextlib.suppress(DecodeError):
            GroupDag.from_checkpoint(bytes(bad))
