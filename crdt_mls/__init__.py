"""crdt-mls: decentralized MLS (RFC 9420) as a CRDT over IPFS (docs/design.md, docs/api.md).

The public entry point is `Replica` (one member's replica of one group) and its typed
events; they are imported lazily so that ``import crdt_mls.mls.codec`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_REPLICA_NAMES = (
    "EpochChanged",
    "Event",
    "Joined",
    "MemberAdded",
    "MemberRemoved",
    "MergeMade",
    "MergeNeeded",
    "MessageReceived",
    "OperationRefused",
    "OperationUnreadable",
    "OperationWaiting",
    "Removed",
    "Replica",
)

__all__ = [
    "EpochChanged",
    "Event",
    "Group",
    "Joined",
    "MemberAdded",
    "MemberRemoved",
    "MergeMade",
    "MergeNeeded",
    "MessageReceived",
    "OperationRefused",
    "OperationUnreadable",
    "OperationWaiting",
    "Removed",
    "Replica",
    "__version__",
]

if TYPE_CHECKING:
    from crdt_mls.mls.group import Group
    from crdt_mls.replica import (
        EpochChanged,
        Event,
        Joined,
        MemberAdded,
        MemberRemoved,
        MergeMade,
        MergeNeeded,
        MessageReceived,
        OperationRefused,
        OperationUnreadable,
        OperationWaiting,
        Removed,
        Replica,
    )


def __getattr__(name: str) -> Any:
    if name in _REPLICA_NAMES:
        from crdt_mls import replica

        return getattr(replica, name)
    if name == "Group":
        from crdt_mls.mls.group import Group

        return Group
    raise AttributeError(f"module 'crdt_mls' has no attribute {name!r}")
