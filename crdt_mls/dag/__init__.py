"""Signed DAG-CBOR operation nodes and their content identifiers (sans-I/O)."""

from __future__ import annotations

from crdt_mls.dag.cid import cid_for_block, cid_from_str, cid_to_str, parse_cid, verify_block

__all__ = ["cid_for_block", "cid_from_str", "cid_to_str", "parse_cid", "verify_block"]
