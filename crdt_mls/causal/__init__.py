"""Causal delivery, per-member logs and block sync (docs/causal.md).

Sans-I/O: nodes and bytes in, delivered nodes, events and bytes out.
"""

from __future__ import annotations

from crdt_mls.causal.bloom import BloomFilter
from crdt_mls.causal.dagview import BlockChecker, BlockStore, DagView, MemoryDag, StoreDag, dag_difference
from crdt_mls.causal.delivery import BufferFullError, CausalBuffer, CausalNode, dependencies
from crdt_mls.causal.logs import (
    CausalReceiver,
    Delivery,
    Equivocation,
    EquivocationDetected,
    Gap,
    LogError,
    LogGapError,
    MemberLogs,
    Refused,
)
from crdt_mls.causal.nodes import NodeRef, decode_ref, encode_ref, opnode_checker, opnode_links
from crdt_mls.causal.sync import SyncMessage, SyncSession

__all__ = [
    "BlockChecker",
    "BlockStore",
    "BloomFilter",
    "BufferFullError",
    "CausalBuffer",
    "CausalNode",
    "CausalReceiver",
    "DagView",
    "Delivery",
    "Equivocation",
    "EquivocationDetected",
    "Gap",
    "LogError",
    "LogGapError",
    "MemberLogs",
    "MemoryDag",
    "NodeRef",
    "Refused",
    "StoreDag",
    "SyncMessage",
    "SyncSession",
    "dag_difference",
    "decode_ref",
    "dependencies",
    "encode_ref",
    "opnode_checker",
    "opnode_links",
]
