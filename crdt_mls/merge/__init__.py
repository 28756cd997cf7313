"""The CRDT merge engine (issue 4; design doc section 5; docs/merge.md).

* :mod:`crdt_mls.merge.rules` -- membership as a CRDT: `OpRecord`, `Change`, `replay` with the
  conflict rules (strong remove, mutual removal, weak eviction, joiners, updates).
* :mod:`crdt_mls.merge.dag` -- `GroupDag`: the epoch DAG, S(heads) computed incrementally with a
  bounded per-epoch cache; sans-I/O, takes delivered records, returns events.
* :mod:`crdt_mls.merge.mlsmerge` -- the cryptographic merge: merged ratchet tree (blank on
  conflict), merge key schedule, `MergeCommit` wire format, merge Welcome.
"""

from __future__ import annotations

from crdt_mls.merge.dag import EpochAdded, GroupDag, HeadsChanged, MergeState, OperationVoided
from crdt_mls.merge.rules import (
    Change,
    ChangeKind,
    Member,
    Membership,
    MutualRemoval,
    OpRecord,
    ReplayResult,
    apply_commit,
    replay,
)

__all__ = [
    "Change",
    "ChangeKind",
    "EpochAdded",
    "GroupDag",
    "HeadsChanged",
    "Member",
    "Membership",
    "MergeState",
    "MutualRemoval",
    "OpRecord",
    "OperationVoided",
    "ReplayResult",
    "apply_commit",
    "replay",
]
