"""Signed DAG-CBOR operation nodes and their content identifiers (sans-I/O).

See ``docs/schema.md`` for the node schema, its exact encoding and what a block reveals.
"""

from __future__ import annotations

from crdt_mls.dag.cbor import Link
from crdt_mls.dag.cid import (
    check_cid,
    cid_for_block,
    cid_for_raw,
    cid_from_str,
    cid_matches,
    cid_to_str,
    parse_cid,
    verify_block,
)
from crdt_mls.dag.node import (
    DEFAULT_MAX_NODE_SIZE,
    DEFAULT_MAX_PARENTS,
    GROUP_TAG_LEN,
    NODE_VERSION,
    SIGNATURE_LABEL,
    NodeFields,
    NodeKind,
    OpNode,
    decode_node,
    derive_group_tag,
    encode_node,
    node_cid,
    sign_node,
    signature_input,
    verify_node,
)
from crdt_mls.dag.verify import verify_and_put, verify_blocks

__all__ = [
    "DEFAULT_MAX_NODE_SIZE",
    "DEFAULT_MAX_PARENTS",
    "GROUP_TAG_LEN",
    "NODE_VERSION",
    "SIGNATURE_LABEL",
    "Link",
    "NodeFields",
    "NodeKind",
    "OpNode",
    "check_cid",
    "cid_for_block",
    "cid_for_raw",
    "cid_from_str",
    "cid_matches",
    "cid_to_str",
    "decode_node",
    "derive_group_tag",
    "encode_node",
    "node_cid",
    "parse_cid",
    "sign_node",
    "signature_input",
    "verify_and_put",
    "verify_block",
    "verify_blocks",
    "verify_node",
]
