"""Proposals: references, validation and application (RFC 9420 sections 12.1-12.3).

`validate_proposal_list` implements the checks of section 12.2 for regular and external
commits (and the per-proposal checks of section 12.1.x); `apply_proposal_list` applies a
validated list to a copy of the ratchet tree and the GroupContext extensions in the order of
section 12.3.  Both are pure: the input tree is never modified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from crdt_mls.errors import DecodeError, ProposalError, SignatureError
from crdt_mls.mls import codec
from crdt_mls.mls.messages import (
    MLS10,
    Add,
    AuthenticatedContent,
    Extension,
    ExtensionType,
    ExternalInit,
    GroupContext,
    GroupContextExtensions,
    LeafNode,
    LeafNodeSource,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalType,
    PSKType,
    ReInit,
    Remove,
    RequiredCapabilities,
    ResumptionPSKUsage,
    Sender,
    SenderType,
    UnknownProposal,
    Update,
    find_extension,
)
from crdt_mls.mls.ratchet_tree import RatchetTree, validate_leaf_node
from crdt_mls.mls.suites import CipherSuite
from crdt_mls.mls.welcome import verify_key_package

__all__ = [
    "AppliedProposals",
    "CachedProposal",
    "ProposalEntry",
    "apply_proposal_list",
    "check_leaf_capabilities",
    "required_capabilities_of",
    "proposal_ref",
    "validate_proposal_list",
]

#: Proposal types every client supports (RFC 9420 section 17.4, "Recommended"/default ones).
DEFAULT_PROPOSAL_TYPES = frozenset(int(t) for t in ProposalType)
#: Extension types every client supports (RFC 9420 section 17.3).
DEFAULT_EXTENSION_TYPES = frozenset(int(t) for t in ExtensionType)


def proposal_ref(suite: CipherSuite, content: AuthenticatedContent) -> bytes:
    """``MakeProposalRef`` = RefHash("MLS 1.0 Proposal Reference", AuthenticatedContent) (RFC 9420 section 5.2)."""
    return suite.ref_hash("Proposal Reference", codec.encode(content))


@dataclass(frozen=True, slots=True)
class CachedProposal:
    """A proposal received (or sent) in the current epoch, kept for commits by reference
    (RFC 9420 section 12.4)."""

    ref: bytes
    proposal: Proposal
    sender: Sender


@dataclass(frozen=True, slots=True)
class ProposalEntry:
    """One proposal of a commit with its sender; ``ref`` is None for proposals by value."""

    proposal: Proposal
    sender: Sender
    ref: bytes | None = None


@dataclass(frozen=True, slots=True)
class AppliedProposals:
    """Result of `apply_proposal_list` (RFC 9420 section 12.3)."""

    tree: RatchetTree = field(repr=False)
    extensions: tuple[Extension, ...]
    added: tuple[int, ...]
    removed: tuple[int, ...]
    updated: tuple[int, ...]
    psks: tuple[PreSharedKeyID, ...]
    external_init: ExternalInit | None
    reinit: ReInit | None

    @property
    def needs_path(self) -> bool:
        """Whether the commit must carry a path (RFC 9420 section 12.4)."""
        return bool(self.removed or self.updated) or self.external_init is not None


def required_capabilities_of(extensions: Iterable[Extension]) -> RequiredCapabilities | None:
    ext = find_extension(extensions, ExtensionType.REQUIRED_CAPABILITIES)
    if ext is None:
        return None
    try:
        return ext.as_required_capabilities()
    except DecodeError as e:
        raise ProposalError(f"malformed required_capabilities extension: {e}") from None


def check_leaf_capabilities(leaf: LeafNode, extensions: Iterable[Extension], what: str) -> None:
    """A leaf supports the group's required capabilities and lists its own non-default
    extensions (RFC 9420 sections 7.3 and 11.1); `ProposalError` otherwise."""
    caps = leaf.capabilities
    if MLS10 not in caps.versions:
        raise ProposalError(f"{what} does not support protocol version mls10")
    req = required_capabilities_of(extensions)
    if req is not None:
        for t in req.extension_types:
            if t not in caps.extensions and t not in DEFAULT_EXTENSION_TYPES:
                raise ProposalError(f"{what} lacks required extension type {t}")
        for t in req.proposal_types:
            if t not in caps.proposals and t not in DEFAULT_PROPOSAL_TYPES:
                raise ProposalError(f"{what} lacks required proposal type {t}")
        for t in req.credential_types:
            if t not in caps.credentials:
                raise ProposalError(f"{what} lacks required credential type {t}")
    for ext in leaf.extensions:
        if ext.extension_type not in caps.extensions and ext.extension_type not in DEFAULT_EXTENSION_TYPES:
            raise ProposalError(f"{what} carries extension {ext.extension_type} it does not list as supported")


def _check_group_extensions_supported(tree: RatchetTree, extensions: Sequence[Extension], skip: set[int]) -> None:
    """Every member supports the new GroupContext extensions (RFC 9420 section 12.1.7)."""
    for i, leaf in tree.members():
        if i in skip:
            continue
        for ext in extensions:
            t = ext.extension_type
            if t not in DEFAULT_EXTENSION_TYPES and t not in leaf.capabilities.extensions:
                raise ProposalError(f"member {i} does not support group context extension {t}")
        check_leaf_capabilities(leaf, extensions, f"member {i}")


def _check_psk(suite: CipherSuite, psk: PreSharedKeyID) -> None:
    """PreSharedKey proposal checks (RFC 9420 section 12.1.4)."""
    if psk.psktype == PSKType.RESUMPTION and psk.usage != ResumptionPSKUsage.APPLICATION:
        raise ProposalError("a PreSharedKey proposal must not use a resumption PSK of usage reinit or branch")
    if len(psk.psk_nonce) != suite.hash_length:
        raise ProposalError(f"psk_nonce has {len(psk.psk_nonce)} bytes, expected {suite.hash_length}")


def validate_proposal_list(
    suite: CipherSuite,
    tree: RatchetTree,
    context: GroupContext,
    entries: Sequence[ProposalEntry],
    committer: Sender,
    *,
    now: int | None = None,
    list_checks: bool = True,
) -> None:
    """Proposal list validation (RFC 9420 section 12.2) and the per-proposal checks of 12.1.

    With ``list_checks=False`` only the checks of individual proposals run (on receipt of a
    proposal, before any commit covers it; ``committer`` is then ignored).

    ``committer`` is the commit's sender (member or new_member_commit).  ``now`` (seconds)
    enables key-package lifetime checks; None skips them.  Raises `ProposalError` or
    `SignatureError`.
    """
    external = list_checks and committer.sender_type == SenderType.NEW_MEMBER_COMMIT
    if external:
        inits = sum(1 for e in entries if isinstance(e.proposal, ExternalInit))
        removes = sum(1 for e in entries if isinstance(e.proposal, Remove))
        if inits != 1:
            raise ProposalError(f"an external commit needs exactly one ExternalInit, has {inits}")
        if removes > 1:
            raise ProposalError("an external commit may contain at most one Remove")
        for e in entries:
            if e.ref is not None:
                raise ProposalError("an external commit must not include proposals by reference")
            if not isinstance(e.proposal, ExternalInit | Remove | PreSharedKey):
                raise ProposalError(f"proposal type {e.proposal.proposal_type} is not allowed in an external commit")
    committer_leaf = committer.index if list_checks and committer.sender_type == SenderType.MEMBER else None

    extensions = context.extensions
    gce = [e for e in entries if isinstance(e.proposal, GroupContextExtensions)]
    if len(gce) > 1:
        raise ProposalError("multiple GroupContextExtensions proposals")
    touched: set[int] = set()
    removed: set[int] = set()
    psk_ids: set[bytes] = set()
    new_sig_keys: set[bytes] = set()
    n_leaves = tree.n_leaves

    for e in entries:
        if isinstance(e.proposal, Remove):
            r = e.proposal.removed
            if not 0 <= r < n_leaves or tree.leaf(r) is None:
                raise ProposalError(f"Remove of blank or unknown leaf {r}")
            if r == committer_leaf:
                raise ProposalError("a commit must not remove the committer")
            if r in touched:
                raise ProposalError(f"multiple Update/Remove proposals for leaf {r}")
            touched.add(r)
            removed.add(r)
    if gce:
        prop = gce[0].proposal
        assert isinstance(prop, GroupContextExtensions)
        extensions = prop.extensions
        _check_group_extensions_supported(tree, extensions, removed)

    cred_cache: list[tuple[set[int], set[int]]] = []
    new_enc_keys: set[bytes] = set()

    def credential_support() -> tuple[set[int], set[int]]:
        # (credential types in use, credential types every remaining member supports),
        # from the tree's leaf summary: O(|removed|), not O(n)
        if not cred_cache:
            cred_cache.append(tree.credential_support(removed))
        return cred_cache[0]

    for e in entries:
        p = e.proposal
        if isinstance(p, Add):
            kp = p.key_package
            if kp.cipher_suite != context.cipher_suite:
                raise ProposalError(f"Add of a KeyPackage for cipher suite {kp.cipher_suite}")
            if kp.version != context.version:
                raise ProposalError(f"Add of a KeyPackage for version {kp.version}")
            verify_key_package(kp, now)
            check_leaf_capabilities(kp.leaf_node, extensions, "added KeyPackage")
            in_use, supported = credential_support()
            ctype = kp.leaf_node.credential.credential_type
            caps_creds = kp.leaf_node.capabilities.credentials
            if ctype not in caps_creds or ctype not in supported or not in_use <= set(caps_creds):
                raise ProposalError(f"credential type {ctype} of the added member is not supported group-wide (7.3)")
            key = kp.leaf_node.signature_key
            if key in new_sig_keys:
                raise ProposalError("two Add proposals for the same client")
            new_sig_keys.add(key)
            ek = kp.leaf_node.encryption_key
            if ek in new_enc_keys or tree.has_encryption_key(ek):
                raise ProposalError("an added leaf's encryption key already appears in the tree (7.3)")
            new_enc_keys.add(ek)
        elif isinstance(p, Update):
            if e.sender.sender_type != SenderType.MEMBER or e.sender.index is None:
                raise ProposalError("an Update must come from a member")
            s = e.sender.index
            if s == committer_leaf:
                raise ProposalError("a commit must not contain an Update from the committer")
            if not 0 <= s < n_leaves or tree.leaf(s) is None:
                raise ProposalError(f"Update from blank or unknown leaf {s}")
            if s in touched:
                raise ProposalError(f"multiple Update/Remove proposals for leaf {s}")
            touched.add(s)
            leaf = p.leaf_node
            if leaf.leaf_node_source != LeafNodeSource.UPDATE:
                raise ProposalError("the LeafNode of an Update must have leaf_node_source update")
            current = tree.leaf(s)
            assert current is not None
            if leaf.encryption_key == current.encryption_key:
                raise ProposalError("an Update must change the encryption key")
            try:
                validate_leaf_node(
                    tree,
                    leaf,
                    source=LeafNodeSource.UPDATE,
                    group_id=context.group_id,
                    leaf_index=s,
                    required_capabilities=required_capabilities_of(extensions),
                )
            except DecodeError:
                raise SignatureError(f"LeafNode signature of leaf {s} does not verify") from None
            check_leaf_capabilities(leaf, extensions, f"Update of leaf {s}")
        elif isinstance(p, PreSharedKey):
            _check_psk(suite, p.psk)
            key_bytes = codec.encode(p.psk)
            if key_bytes in psk_ids:
                raise ProposalError("two PreSharedKey proposals with the same PreSharedKeyID")
            psk_ids.add(key_bytes)
        elif isinstance(p, ReInit):
            if list_checks and len(entries) != 1:
                raise ProposalError("a ReInit proposal must be the only proposal of a commit")
            if p.version < context.version:
                raise ProposalError("a ReInit must not lower the protocol version")
        elif isinstance(p, ExternalInit):
            if list_checks and not external:
                raise ProposalError("an ExternalInit proposal is only allowed in an external commit")
        elif isinstance(p, UnknownProposal):
            for i, leaf in tree.members():
                if i not in removed and p.proposal_type not in leaf.capabilities.proposals:
                    raise ProposalError(f"member {i} does not support proposal type {p.proposal_type}")

    # Add of a client already in the group, unless that member is removed by this commit:
    # O(adds + removes) from the tree's leaf summary, no scan of the members
    if new_sig_keys and list_checks:
        for key in new_sig_keys:
            holders = tree.signature_key_count(key)
            if not holders:
                continue
            leaving = sum(1 for r in removed if (lf := tree.leaf(r)) is not None and lf.signature_key == key)
            if holders > leaving:
                i = next(i for i, leaf in tree.members() if i not in removed and leaf.signature_key == key)
                raise ProposalError(f"Add of a client that is already member {i}")


def apply_proposal_list(tree: RatchetTree, context: GroupContext, entries: Sequence[ProposalEntry]) -> AppliedProposals:
    """Apply a validated proposal list to a copy of ``tree`` (RFC 9420 section 12.3):
    GroupContextExtensions, then Updates, Removes, Adds (in list order), then note PSKs,
    ExternalInit and ReInit."""
    new = tree.copy()
    extensions = context.extensions
    for e in entries:
        if isinstance(e.proposal, GroupContextExtensions):
            extensions = e.proposal.extensions
    updated: list[int] = []
    for e in entries:
        if isinstance(e.proposal, Update):
            assert e.sender.index is not None
            new.update_leaf(e.sender.index, e.proposal.leaf_node)
            updated.append(e.sender.index)
    removed: list[int] = []
    for e in entries:
        if isinstance(e.proposal, Remove):
            new.remove_leaf(e.proposal.removed)
            removed.append(e.proposal.removed)
    # Adds in list order, the caches of their paths invalidated once
    added = new.add_leaves([e.proposal.key_package.leaf_node for e in entries if isinstance(e.proposal, Add)])
    psks = tuple(e.proposal.psk for e in entries if isinstance(e.proposal, PreSharedKey))
    external_init = next((e.proposal for e in entries if isinstance(e.proposal, ExternalInit)), None)
    reinit = next((e.proposal for e in entries if isinstance(e.proposal, ReInit)), None)
    return AppliedProposals(
        new, tuple(extensions), tuple(added), tuple(removed), tuple(updated), psks, external_init, reinit
    )


def resolve_entries(
    proposals: Iterable[Proposal | bytes],
    cache: Mapping[bytes, CachedProposal],
    committer: Sender,
) -> list[ProposalEntry]:
    """Turn a commit's ProposalOrRef list (references given as ``bytes``) into entries;
    `ProposalError` for an unknown reference."""
    out: list[ProposalEntry] = []
    for p in proposals:
        if isinstance(p, bytes):
            cached = cache.get(p)
            if cached is None:
                raise ProposalError("commit references an unknown proposal")
            out.append(ProposalEntry(cached.proposal, cached.sender, p))
        else:
            out.append(ProposalEntry(p, committer, None))
    return out
