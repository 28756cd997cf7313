"""One member's view of a linearly ordered MLS group (RFC 9420 sections 8, 11 and 12).

`Group` is an immutable value: every operation (`process`, `commit`, `propose_*`,
`protect_application`, ...) returns a new `Group` and leaves the old one untouched, so a
message that fails any check leaves the caller's state exactly as it was.  It is sans-I/O:
messages go in and out as RFC 9420 ``MLSMessage`` bytes, randomness comes from ``rng``.

Entry points:

* `Group.create` (section 11), `make_key_package` (section 10),
* `Group.join_from_welcome` (section 12.4.3.1), `Group.join_external` (section 12.4.3.2),
* `Group.process` for proposals, commits and application messages (sections 6, 12.1-12.4.2),
* `Group.propose_add` / `propose_remove` / `propose_update` / `propose`, `Group.commit`,
* `Group.protect_application`, `Group.export_secret`, `Group.epoch_authenticator`,
* `Group.group_info` (for external joins), `Group.to_bytes` / `Group.from_bytes`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

from crdt_mls.errors import (
    DecodeError,
    IntegrityError,
    InvalidArgument,
    InvalidState,
    ProposalError,
    ProtocolError,
    ReplayError,
    SignatureError,
    TreeError,
    UnsupportedError,
    WelcomeError,
    WrongEpochError,
    WrongGroupError,
)
from crdt_mls.mls import codec, treemath
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.mls.framing import (
    authenticate,
    encode_content,
    private_message_bytes,
    protect_private,
    protect_public,
    public_message_bytes,
    sign_framed_content,
    unprotect_private,
    unprotect_public,
)
from crdt_mls.mls.key_schedule import EpochSecrets, derive_epoch_secrets, epoch_secrets_from_joiner
from crdt_mls.mls.messages import (
    MLS10,
    Add,
    AuthenticatedContent,
    Capabilities,
    Commit,
    ContentType,
    Credential,
    Extension,
    ExtensionType,
    ExternalInit,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    GroupContextExtensions,
    GroupInfo,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    PrivateMessage,
    Proposal,
    ProposalOrRef,
    ProposalRef,
    PSKType,
    PublicMessage,
    ReInit,
    Remove,
    ResumptionPSKUsage,
    Sender,
    SenderType,
    Update,
    UpdatePath,
    Welcome,
    WireFormat,
    decode_proposal,
    encode_proposal,
    find_extension,
    welcome_for_member,
)
from crdt_mls.mls.proposals import (
    DEFAULT_EXTENSION_TYPES,
    AppliedProposals,
    CachedProposal,
    ProposalEntry,
    apply_proposal_list,
    check_leaf_capabilities,
    proposal_ref,
    required_capabilities_of,
    resolve_entries,
    validate_proposal_list,
)
from crdt_mls.mls.psk import compute_psk_secret, resolve_psks
from crdt_mls.mls.ratchet_tree import RatchetTree, validate_leaf_node
from crdt_mls.mls.secret_tree import SecretTree
from crdt_mls.mls.suites import CipherSuite, get_cipher_suite
from crdt_mls.mls.transcript import (
    confirmation_tag,
    confirmed_transcript_hash,
    confirmed_transcript_hash_input,
    interim_transcript_hash,
    verify_confirmation_tag,
)
from crdt_mls.mls.treekem import TreePrivateKeys, create_update_path, process_update_path
from crdt_mls.mls.welcome import (
    ALL_SUITES,
    KeyPackagePrivate,
    build_welcome_message,
    check_key_packages,
    decrypt_group_info,
    open_group_secrets,
    sign_group_info,
    verify_group_info,
    verify_key_package_signatures,
)
from crdt_mls.mls.welcome import make_key_package as _make_key_package

__all__ = [
    "ApplicationMessage",
    "CommitApplied",
    "Event",
    "Group",
    "GroupState",
    "KeyPackagePrivate",
    "ProposalReceived",
    "external_proposal",
    "make_key_package",
    "new_member_proposal",
]

Rng = Callable[[int], bytes]

#: How many past epochs' resumption PSKs are kept (RFC 9420 section 8.6 asks for a bound).
MAX_RESUMPTION_PSKS = 32
_STATE_VERSION = 1
_EXTERNAL_INIT_LABEL = b"MLS 1.0 external init secret"


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ApplicationMessage:
    """Application data from member ``sender`` (RFC 9420 section 6.3)."""

    sender: int
    data: bytes = field(repr=False)
    authenticated_data: bytes = b""


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    """A proposal was validated and cached for the current epoch (RFC 9420 section 12.1)."""

    ref: bytes
    proposal: Proposal
    sender: Sender


@dataclass(frozen=True, slots=True)
class CommitApplied:
    """A commit moved the group to ``epoch`` (RFC 9420 section 12.4.2)."""

    epoch: int
    sender: Sender
    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    updated: tuple[int, ...] = ()
    reinit: ReInit | None = None
    self_removed: bool = False


Event = ApplicationMessage | ProposalReceived | CommitApplied


# ---------------------------------------------------------------------- HPKE exporter


def _hpke_export(suite: CipherSuite, shared_secret: bytes, exporter_context: bytes, length: int) -> bytes:
    """HPKE base-mode ``Context.Export`` with empty info (RFC 9180 sections 5.1, 5.3).

    `crdt_mls.mls.suites` offers seal/open only; the exporter is composed here from the
    suite's HPKE KDF (LabeledExtract/LabeledExpand), no new primitive.
    """
    hpke = suite._hpke
    kdf, sid = hpke.kdf, hpke.suite_id
    psk_id_hash = kdf.labeled_extract(sid, b"", b"psk_id_hash", b"")
    info_hash = kdf.labeled_extract(sid, b"", b"info_hash", b"")
    context = b"\x00" + psk_id_hash + info_hash
    secret = kdf.labeled_extract(sid, shared_secret, b"secret", b"")
    exporter_secret = kdf.labeled_expand(sid, secret, b"exp", context, kdf.nh)
    return kdf.labeled_expand(sid, exporter_secret, b"sec", exporter_context, length)


def external_init_send(suite: CipherSuite, external_pub: bytes, rng: Rng = os.urandom) -> tuple[bytes, bytes]:
    """``SetupBaseS(external_pub, "")`` and export the init secret (RFC 9420 section 8.3)
    -> (kem_output, init_secret)."""
    shared, enc = suite._hpke.kem.encap(external_pub, rng)
    return enc, _hpke_export(suite, shared, _EXTERNAL_INIT_LABEL, suite.hash_length)


def external_init_receive(suite: CipherSuite, external_priv: bytes, kem_output: bytes) -> bytes:
    """``SetupBaseR(kem_output, external_priv, "")`` and export the init secret (RFC 9420 section 8.3)."""
    shared = suite._hpke.kem.decap(kem_output, external_priv)
    return _hpke_export(suite, shared, _EXTERNAL_INIT_LABEL, suite.hash_length)


# ------------------------------------------------------------------------ key packages


def make_key_package(
    cipher_suite: int,
    credential: Credential | bytes,
    *,
    signature_priv: bytes | None = None,
    rng: Rng = os.urandom,
) -> tuple[bytes, KeyPackagePrivate]:
    """A fresh KeyPackage (RFC 9420 section 10) -> (public KeyPackage MLSMessage bytes,
    private bundle for `Group.join_from_welcome`).  More options: `crdt_mls.mls.welcome.make_key_package`."""
    kp = _make_key_package(cipher_suite, credential, signature_priv=signature_priv, rng=rng)
    return kp.public_message(), kp


def external_proposal(
    cipher_suite: int,
    group_id: bytes,
    epoch: int,
    proposal: Proposal,
    sender_index: int,
    signature_priv: bytes,
    *,
    authenticated_data: bytes = b"",
) -> bytes:
    """A proposal from an external sender listed in the group's external_senders extension
    (RFC 9420 section 12.1.8) as PublicMessage bytes."""
    suite = get_cipher_suite(cipher_suite)
    if isinstance(proposal, Update | ExternalInit):
        raise InvalidArgument("external senders cannot propose Update or ExternalInit")
    content = FramedContent(group_id, epoch, Sender.external(sender_index), authenticated_data, proposal)
    ac = authenticate(suite, signature_priv, WireFormat.MLS_PUBLIC_MESSAGE, content, None)
    return MLSMessage(PublicMessage(ac.content, ac.auth)).to_bytes()


def new_member_proposal(group_id: bytes, epoch: int, key_package: KeyPackagePrivate) -> bytes:
    """A non-member's request to be added: an Add of its own KeyPackage with sender
    new_member_proposal (RFC 9420 section 12.1.8) as PublicMessage bytes."""
    suite = key_package.suite
    content = FramedContent(group_id, epoch, Sender.new_member_proposal(), b"", Add(key_package.key_package))
    ac = authenticate(suite, key_package.signature_priv, WireFormat.MLS_PUBLIC_MESSAGE, content, None)
    return MLSMessage(PublicMessage(ac.content, ac.auth)).to_bytes()


# ------------------------------------------------------------------------ helpers


def _parse(message: bytes | MLSMessage) -> MLSMessage:
    if isinstance(message, MLSMessage):
        return message
    if not isinstance(message, bytes | bytearray | memoryview):
        raise InvalidArgument("message must be MLSMessage bytes")
    return MLSMessage.from_bytes(bytes(message))


def _key_package(kp: bytes | KeyPackage | KeyPackagePrivate) -> KeyPackage:
    if isinstance(kp, KeyPackagePrivate):
        return kp.key_package
    if isinstance(kp, KeyPackage):
        return kp
    body = _parse(kp).body
    if not isinstance(body, KeyPackage):
        raise ProtocolError("message is not a KeyPackage")
    return body


def _tree_from(
    suite: CipherSuite, ratchet_tree: bytes | RatchetTree | None, extensions: Sequence[Extension]
) -> RatchetTree:
    if isinstance(ratchet_tree, RatchetTree):
        return ratchet_tree.copy()
    if ratchet_tree is not None:
        return RatchetTree.decode(suite, bytes(ratchet_tree))
    ext = find_extension(extensions, ExtensionType.RATCHET_TREE)
    if ext is None:
        raise WelcomeError("no ratchet tree: none given and the GroupInfo has no ratchet_tree extension")
    return RatchetTree.from_wire(suite, ext.as_ratchet_tree())


def _verify_joined_tree(suite: CipherSuite, tree: RatchetTree, gi: GroupInfo) -> None:
    """Tree checks of a joiner (RFC 9420 section 12.4.3.1) and the GroupInfo signature."""
    gc = gi.group_context
    if not 0 <= gi.signer < tree.n_leaves:
        raise WelcomeError(f"GroupInfo signer {gi.signer} is outside the tree")
    signer = tree.leaf(gi.signer)
    if signer is None:
        raise WelcomeError(f"GroupInfo signer {gi.signer} is a blank leaf")
    verify_group_info(suite, gi, signer.signature_key)
    tree.verify_integrity(gc.group_id, gc.tree_hash)


def _check_linked_group(psk: PreSharedKeyID, previous: Group, gc: GroupContext, tree: RatchetTree) -> None:
    """Checks of a group joined with a reinit or branch PSK (RFC 9420 sections 11.2, 11.3, 12.4.3.1);
    members are matched by credential."""
    if psk.psk_group_id != previous.group_id:
        raise WelcomeError("the resumption PSK names another group than the previous one")
    old_creds = {codec.encode(leaf.credential) for _, leaf in previous.tree.members()}
    new_creds = {codec.encode(leaf.credential) for _, leaf in tree.members()}
    if psk.usage == ResumptionPSKUsage.REINIT:
        ri = previous.reinit
        if ri is None or psk.psk_epoch != previous.epoch:
            raise WelcomeError("the previous group's last commit was not a ReInit")
        if (ri.group_id, ri.version, ri.cipher_suite, tuple(ri.extensions)) != (
            gc.group_id,
            gc.version,
            gc.cipher_suite,
            tuple(gc.extensions),
        ):
            raise WelcomeError("the new group does not match the ReInit proposal")
        if not old_creds <= new_creds:
            raise WelcomeError("a member of the reinitialized group is missing from the new group")
    else:
        if (gc.version, gc.cipher_suite) != (previous.group_context.version, previous.cipher_suite):
            raise WelcomeError("a branch must keep the version and cipher suite")
        if not new_creds <= old_creds:
            raise WelcomeError("a branch contains a member that is not in the original group")


def _w_bytes_pair(w: Writer, item: tuple[bytes, bytes]) -> None:
    w.opaque(item[0])
    w.opaque(item[1])


def _r_bytes_pair(r: Reader) -> tuple[bytes, bytes]:
    return r.opaque(), r.opaque()


# --------------------------------------------------------------------------- group


@dataclass(frozen=True, slots=True)
class Group:
    """The state of one member in one epoch (RFC 9420 sections 8 and 12); immutable.

    ``proposals`` are the proposals cached in this epoch (by reference), ``update_keys``
    the leaf private keys of our own pending Update proposals, ``resumption_psks`` the
    resumption PSKs of past epochs ``(group_id, epoch, psk)``.
    """

    group_context: GroupContext
    tree: RatchetTree = field(repr=False, compare=False)
    own_leaf: int
    private_keys: TreePrivateKeys = field(repr=False)
    signature_priv: bytes = field(repr=False)
    epoch_secrets: EpochSecrets = field(repr=False)
    interim_transcript_hash: bytes = field(repr=False)
    confirmation_tag: bytes = field(repr=False)
    secret_tree: SecretTree = field(repr=False, compare=False)
    proposals: tuple[CachedProposal, ...] = field(default=(), repr=False)
    update_keys: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)
    external_psks: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)
    resumption_psks: tuple[tuple[bytes, int, bytes], ...] = field(default=(), repr=False)
    reinit: ReInit | None = None
    active: bool = True

    # ------------------------------------------------------------------ accessors

    @property
    def suite(self) -> CipherSuite:
        return get_cipher_suite(self.group_context.cipher_suite)

    @property
    def cipher_suite(self) -> int:
        return self.group_context.cipher_suite

    @property
    def group_id(self) -> bytes:
        return self.group_context.group_id

    @property
    def epoch(self) -> int:
        return self.group_context.epoch

    @property
    def epoch_authenticator(self) -> bytes:
        """The epoch authenticator of the current epoch (RFC 9420 section 8.7)."""
        return self.epoch_secrets.epoch_authenticator

    @property
    def leaf_node(self) -> LeafNode:
        leaf = self.tree.leaf(self.own_leaf) if self.own_leaf < self.tree.n_leaves else None
        if leaf is None:
            raise InvalidState("this member is no longer in the group")
        return leaf

    def members(self) -> list[tuple[int, LeafNode]]:
        """``(leaf_index, LeafNode)`` of every member."""
        return list(self.tree.members())

    def export_secret(self, label: bytes | str, context: bytes, length: int) -> bytes:
        """MLS-Exporter (RFC 9420 section 8.5)."""
        return self.epoch_secrets.exporter(label, context, length)

    def resumption_psk(self, epoch: int | None = None) -> bytes:
        """The resumption PSK of ``epoch`` (default: the current one) (RFC 9420 section 8.6)."""
        psk = self._resumption_psk(self.group_id, self.epoch if epoch is None else epoch)
        if psk is None:
            raise InvalidArgument(f"no resumption PSK kept for epoch {epoch}")
        return psk

    def resumption_psk_map(self) -> dict[tuple[bytes, int], bytes]:
        """Every kept resumption PSK by ``(group_id, epoch)`` (for joining a reinit/branch group)."""
        out = {(g, e): p for g, e, p in self.resumption_psks}
        out[(self.group_id, self.epoch)] = self.epoch_secrets.resumption_psk
        return out

    def with_external_psk(self, psk_id: bytes, psk: bytes) -> Group:
        """A copy that knows the external PSK ``psk_id`` (RFC 9420 section 8.4)."""
        kept = tuple((i, p) for i, p in self.external_psks if i != psk_id)
        return replace(self, external_psks=(*kept, (bytes(psk_id), bytes(psk))))

    def _resumption_psk(self, group_id: bytes, epoch: int) -> bytes | None:
        if group_id == self.group_id and epoch == self.epoch:
            return self.epoch_secrets.resumption_psk
        for g, e, p in self.resumption_psks:
            if g == group_id and e == epoch:
                return p
        return None

    def _psk_secret(self, psks: Sequence[PreSharedKeyID]) -> bytes:
        """Look up every PSK (RFC 9420 section 8.4); `ProposalError` if one is not available."""
        pairs = resolve_psks(self.suite, psks, dict(self.external_psks), self._resumption_psk)
        return compute_psk_secret(self.suite, pairs)

    def _with_secret_tree(self, secret_tree: SecretTree) -> Group:
        """``replace(self, secret_tree=secret_tree)`` without `dataclasses.replace`'s per-call
        field processing (this runs for every application message)."""
        new = object.__new__(Group)
        for name in _GROUP_FIELDS:
            _setattr(new, name, getattr(self, name))
        _setattr(new, "secret_tree", secret_tree)
        return new

    def _require_active(self) -> None:
        if not self.active:
            raise InvalidState("this member was removed from the group")
        if self.reinit is not None:
            raise InvalidState("the group was reinitialized; join the new group")

    # ------------------------------------------------------------------ creation

    @classmethod
    def create(
        cls,
        cipher_suite: int,
        credential: Credential | bytes | KeyPackagePrivate,
        *,
        group_id: bytes | None = None,
        signature_priv: bytes | None = None,
        extensions: Sequence[Extension] = (),
        rng: Rng = os.urandom,
    ) -> Group:
        """A new one-member group at epoch 0 (RFC 9420 section 11).

        ``credential`` is a Credential, a basic identity, or a KeyPackagePrivate whose leaf
        (and keys) the creator uses.
        """
        suite = get_cipher_suite(cipher_suite)
        if isinstance(credential, KeyPackagePrivate):
            kp = credential
            if kp.key_package.cipher_suite != cipher_suite:
                raise InvalidArgument("the KeyPackage is for another cipher suite")
        else:
            kp = _make_key_package(cipher_suite, credential, signature_priv=signature_priv, rng=rng)
        nh = suite.hash_length
        gid = group_id if group_id is not None else rng(16)
        check_leaf_capabilities(kp.key_package.leaf_node, extensions, "the creator's leaf")
        tree = RatchetTree.create(suite, kp.key_package.leaf_node)
        gc = GroupContext(MLS10, cipher_suite, gid, 0, tree.tree_hash(), b"", tuple(extensions))
        es = derive_epoch_secrets(suite, rng(nh), None, gc, None)
        tag = confirmation_tag(suite, es.confirmation_key, b"")
        return cls(
            group_context=gc,
            tree=tree,
            own_leaf=0,
            private_keys=TreePrivateKeys.for_leaf(0, kp.encryption_priv),
            signature_priv=kp.signature_priv,
            epoch_secrets=es,
            interim_transcript_hash=interim_transcript_hash(suite, b"", tag),
            confirmation_tag=tag,
            secret_tree=SecretTree(suite, es.encryption_secret, tree.n_leaves),
        )

    @classmethod
    def join_from_welcome(
        cls,
        welcome: bytes | MLSMessage | Welcome,
        key_package: KeyPackagePrivate,
        *,
        ratchet_tree: bytes | RatchetTree | None = None,
        external_psks: Mapping[bytes, bytes] | None = None,
        resumption_psks: Mapping[tuple[bytes, int], bytes] | None = None,
        previous: Group | None = None,
    ) -> Group:
        """Join from a Welcome (RFC 9420 section 12.4.3.1).

        ``ratchet_tree`` is the encoded tree when the GroupInfo does not carry it;
        ``external_psks`` maps psk_id to PSK; ``resumption_psks`` maps (group_id, epoch) to
        the resumption PSK (from `resumption_psk_map` of the old group, for reinit/branch).
        ``previous`` is the old group of a reinit/branch: its PSKs are used and the new
        group is checked against it (RFC 9420 sections 11.2, 11.3, 12.4.3.1).
        """
        if isinstance(welcome, Welcome):
            w = welcome
        elif (ours := welcome_for_member(welcome, key_package.ref) if isinstance(welcome, bytes) else None) is not None:
            w = ours  # only our EncryptedGroupSecrets kept (the whole message is checked)
        else:
            body = _parse(welcome).body
            if not isinstance(body, Welcome):
                raise WelcomeError("message is not a Welcome")
            w = body
        suite = key_package.suite
        secrets = open_group_secrets(w, key_package)
        ext_psks = dict(external_psks or {})
        res_psks = dict(previous.resumption_psk_map() if previous is not None else {})
        res_psks.update(resumption_psks or {})
        pairs: list[tuple[PreSharedKeyID, bytes]] = []
        special: list[PreSharedKeyID] = []
        for psk_id in secrets.psks:
            value: bytes | None
            if psk_id.psktype == PSKType.EXTERNAL:
                assert psk_id.psk_id is not None
                value = ext_psks.get(psk_id.psk_id)
            else:
                assert psk_id.psk_group_id is not None and psk_id.psk_epoch is not None
                value = res_psks.get((psk_id.psk_group_id, psk_id.psk_epoch))
                if psk_id.usage in (ResumptionPSKUsage.REINIT, ResumptionPSKUsage.BRANCH):
                    special.append(psk_id)
            if value is None:
                raise WelcomeError(f"the Welcome needs a {psk_id.psktype.name.lower()} PSK that is not available")
            pairs.append((psk_id, value))
        if len(special) > 1:
            raise WelcomeError("more than one resumption PSK of usage reinit or branch")
        psk_secret = compute_psk_secret(suite, pairs)
        gi = decrypt_group_info(suite, w, secrets.joiner_secret, psk_secret)
        gc = gi.group_context
        if gc.cipher_suite != key_package.key_package.cipher_suite:
            raise WelcomeError("GroupInfo cipher suite differs from the KeyPackage's")
        if gc.version != MLS10:
            raise WelcomeError(f"unsupported group version {gc.version}")
        if special and gc.epoch != 1:
            raise WelcomeError("a group joined with a reinit/branch PSK must be at epoch 1")
        tree = _tree_from(suite, ratchet_tree, gi.extensions)
        _verify_joined_tree(suite, tree, gi)
        mine = key_package.key_package.leaf_node
        my_leaf = next(
            (i for i, leaf in tree.members() if leaf.encryption_key == mine.encryption_key and leaf == mine), None
        )
        if my_leaf is None:
            raise WelcomeError("our KeyPackage's leaf is not in the ratchet tree")
        own_caps = key_package.key_package.leaf_node.capabilities
        for ext in gc.extensions:
            if ext.extension_type not in DEFAULT_EXTENSION_TYPES and ext.extension_type not in own_caps.extensions:
                raise WelcomeError(f"the group uses extension {ext.extension_type} which we do not support")
        if special and previous is not None:
            _check_linked_group(special[0], previous, gc, tree)
        keys = TreePrivateKeys.for_leaf(my_leaf, key_package.encryption_priv)
        if secrets.path_secret is not None:
            lca = treemath.common_ancestor(2 * my_leaf, 2 * gi.signer)
            keys = keys.with_path_secret(suite, tree, lca, secrets.path_secret)
        keys.verify(suite, tree)
        es = epoch_secrets_from_joiner(suite, secrets.joiner_secret, gc, psk_secret)
        verify_confirmation_tag(suite, es.confirmation_key, gc.confirmed_transcript_hash, gi.confirmation_tag)
        return cls(
            group_context=gc,
            tree=tree,
            own_leaf=my_leaf,
            private_keys=keys,
            signature_priv=key_package.signature_priv,
            epoch_secrets=es,
            interim_transcript_hash=interim_transcript_hash(suite, gc.confirmed_transcript_hash, gi.confirmation_tag),
            confirmation_tag=gi.confirmation_tag,
            secret_tree=SecretTree(suite, es.encryption_secret, tree.n_leaves),
            external_psks=tuple(ext_psks.items()),
        )

    @classmethod
    def join_external(
        cls,
        group_info: bytes | MLSMessage | GroupInfo,
        credential: Credential | bytes,
        *,
        signature_priv: bytes | None = None,
        ratchet_tree: bytes | RatchetTree | None = None,
        remove_leaf: int | None = None,
        external_psks: Mapping[bytes, bytes] | None = None,
        psk_ids: Sequence[PreSharedKeyID] = (),
        authenticated_data: bytes = b"",
        rng: Rng = os.urandom,
    ) -> tuple[bytes, Group]:
        """Join by external commit (RFC 9420 section 12.4.3.2) -> (commit MLSMessage bytes, group).

        ``remove_leaf`` makes it a resync commit removing our old appearance.
        """
        if isinstance(group_info, GroupInfo):
            gi = group_info
        else:
            body = _parse(group_info).body
            if not isinstance(body, GroupInfo):
                raise WelcomeError("message is not a GroupInfo")
            gi = body
        gc = gi.group_context
        try:
            suite = get_cipher_suite(gc.cipher_suite)
        except UnsupportedError:
            raise WelcomeError(f"the GroupInfo uses unsupported cipher suite {gc.cipher_suite}") from None
        tree = _tree_from(suite, ratchet_tree, gi.extensions)
        _verify_joined_tree(suite, tree, gi)
        ext = find_extension(gi.extensions, ExtensionType.EXTERNAL_PUB)
        if ext is None:
            raise WelcomeError("the GroupInfo has no external_pub extension")
        kem_output, init_secret = external_init_send(suite, ext.as_external_pub(), rng)

        if signature_priv is None:
            signature_priv, sig_pub = suite.generate_signature_key_pair(rng)
        else:
            sig_pub = suite.signature_public_key(signature_priv)
        cred = credential if isinstance(credential, Credential) else Credential.basic(bytes(credential))
        template = LeafNode(
            encryption_key=b"",
            signature_key=sig_pub,
            credential=cred,
            capabilities=Capabilities(cipher_suites=ALL_SUITES, credentials=(1, 2)),
            leaf_node_source=LeafNodeSource.COMMIT,
            parent_hash=b"",
        )
        proposals: list[Proposal] = [ExternalInit(kem_output)]
        if remove_leaf is not None:
            proposals.append(Remove(remove_leaf))
        proposals.extend(PreSharedKey(p) for p in psk_ids)
        sender = Sender.new_member_commit()
        entries = [ProposalEntry(p, sender) for p in proposals]
        validate_proposal_list(suite, tree, gc, entries, sender)
        applied = apply_proposal_list(tree, gc, entries)
        work = applied.tree.copy()
        idx = work.add_leaf(template)
        provisional = replace(gc, epoch=gc.epoch + 1, extensions=applied.extensions)
        created = create_update_path(work, idx, provisional, signature_priv, leaf_node=template, rng=rng)

        me = cls(
            group_context=gc,
            tree=tree,
            own_leaf=idx,
            private_keys=created.private_keys,
            signature_priv=signature_priv,
            epoch_secrets=EpochSecrets(suite.suite_id, *([bytes(suite.hash_length)] * 12)),
            interim_transcript_hash=interim_transcript_hash(suite, gc.confirmed_transcript_hash, gi.confirmation_tag),
            confirmation_tag=gi.confirmation_tag,
            secret_tree=SecretTree(suite, bytes(suite.hash_length), 1),
            external_psks=tuple((external_psks or {}).items()),
        )
        psk_secret = me._psk_secret(applied.psks)
        commit = Commit(tuple(proposals), created.update_path)
        content = FramedContent(gc.group_id, gc.epoch, sender, authenticated_data, commit)
        wf = WireFormat.MLS_PUBLIC_MESSAGE
        signature = sign_framed_content(suite, signature_priv, wf, content, gc)
        confirmed = suite.hash(me.interim_transcript_hash + confirmed_transcript_hash_input(wf, content, signature))
        new_gc = GroupContext(
            gc.version,
            gc.cipher_suite,
            gc.group_id,
            gc.epoch + 1,
            created.tree.tree_hash(),
            confirmed,
            applied.extensions,
        )
        es = derive_epoch_secrets(suite, init_secret, created.commit_secret, new_gc, psk_secret)
        tag = confirmation_tag(suite, es.confirmation_key, confirmed)
        ac = AuthenticatedContent(wf, content, FramedContentAuthData(signature, tag))
        msg = protect_public(suite, ac, gc, None)
        group = replace(
            me,
            group_context=new_gc,
            tree=created.tree,
            epoch_secrets=es,
            interim_transcript_hash=interim_transcript_hash(suite, confirmed, tag),
            confirmation_tag=tag,
            secret_tree=SecretTree(suite, es.encryption_secret, created.tree.n_leaves),
        )
        return MLSMessage(msg).to_bytes(), group

    # ------------------------------------------------------------------ receiving

    def _member_signature_key(self, sender: Sender) -> bytes:
        if sender.sender_type != SenderType.MEMBER or sender.index is None:
            raise ProtocolError(f"unexpected sender type {sender.sender_type.name.lower()}")
        i = sender.index
        leaf = self.tree.leaf(i) if 0 <= i < self.tree.n_leaves else None
        if leaf is None:
            raise ProtocolError(f"sender leaf {i} is blank or outside the tree")
        return leaf.signature_key

    def _public_signature_key(self, content: FramedContent) -> bytes:
        sender = content.sender
        t = sender.sender_type
        if t == SenderType.MEMBER:
            return self._member_signature_key(sender)
        if t == SenderType.EXTERNAL:
            ext = find_extension(self.group_context.extensions, ExtensionType.EXTERNAL_SENDERS)
            if ext is None:
                raise ProtocolError("external sender but the group has no external_senders extension")
            try:
                senders = ext.as_external_senders()
            except DecodeError as e:
                raise ProtocolError(f"malformed external_senders extension: {e}") from None
            assert sender.index is not None
            if not 0 <= sender.index < len(senders):
                raise ProtocolError(f"unknown external sender {sender.index}")
            return senders[sender.index].signature_key
        if t == SenderType.NEW_MEMBER_PROPOSAL:
            if not isinstance(content.content, Add):
                raise ProtocolError("a new_member_proposal sender may only propose Add")
            return content.content.key_package.leaf_node.signature_key
        # new_member_commit
        if not isinstance(content.content, Commit) or content.content.path is None:
            raise ProtocolError("a new_member_commit sender must send a commit with a path")
        return content.content.path.leaf_node.signature_key

    def process(self, message: bytes | MLSMessage, *, now: int | None = None) -> tuple[Group, Event]:
        """Process a PublicMessage or PrivateMessage (RFC 9420 sections 6, 12.1, 12.4.2).

        Returns the new state and what happened; on any error raises a typed
        `RemoteInputError` and this state stays valid and unchanged.  ``now`` (seconds since
        the epoch) enables KeyPackage lifetime checks of committed Adds (off by default: the
        interop vectors predate eternal lifetimes).
        """
        self._require_active()
        msg = _parse(message)
        body = msg.body
        suite = self.suite
        gc = self.group_context
        secret_tree = self.secret_tree
        content_bytes: bytes | None = None
        if isinstance(body, PublicMessage):
            if body.content.group_id != gc.group_id:
                raise WrongGroupError("message is for another group")
            if body.content.epoch != gc.epoch:
                raise WrongEpochError(f"message is for epoch {body.content.epoch}, the group is at epoch {gc.epoch}")
            key = self._public_signature_key(body.content)
            # encoded once for the membership tag, the signature and the transcript hash
            content_bytes = encode_content(body.content)
            ac = unprotect_public(suite, body, gc, self.epoch_secrets.membership_key, key, content_bytes=content_bytes)
            if ac.content.content_type == ContentType.APPLICATION:
                raise ProtocolError("application data must be sent as a PrivateMessage")
        elif isinstance(body, PrivateMessage):
            secret_tree = self.secret_tree.copy()
            ac = unprotect_private(
                suite, body, gc, secret_tree, self.epoch_secrets.sender_data_secret, self._member_signature_key
            )
        else:
            raise ProtocolError(f"a {msg.wire_format.name.lower()} message cannot be processed by a group member")
        content = ac.content
        if content.sender.sender_type == SenderType.MEMBER and content.sender.index == self.own_leaf:
            raise ProtocolError("message claims to come from this member")
        if isinstance(content.content, bytes):
            assert content.sender.index is not None
            event = ApplicationMessage(content.sender.index, content.content, content.authenticated_data)
            return self._with_secret_tree(secret_tree), event
        if isinstance(content.content, Commit):
            return self._process_commit(ac, now, content_bytes)
        return self._process_proposal(ac, secret_tree)

    def unprotect(self, message: bytes | MLSMessage) -> tuple[bytes, Group]:
        """Decrypt an application message -> (data, new state) (RFC 9420 section 6.3)."""
        group, event = self.process(message)
        if not isinstance(event, ApplicationMessage):
            raise ProtocolError("message is not an application message")
        return event.data, group

    def _process_proposal(self, ac: AuthenticatedContent, secret_tree: SecretTree) -> tuple[Group, Event]:
        """Validate and cache a proposal (RFC 9420 section 12.1)."""
        proposal = ac.content.content
        assert not isinstance(proposal, bytes | Commit)
        sender = ac.content.sender
        t = sender.sender_type
        if isinstance(proposal, ExternalInit):
            raise ProposalError("ExternalInit proposals are only sent inside external commits")
        if t == SenderType.EXTERNAL and isinstance(proposal, Update):
            raise ProposalError("an external sender cannot propose an Update")
        if t == SenderType.NEW_MEMBER_PROPOSAL and (
            not isinstance(proposal, Add) or ac.wire_format != WireFormat.MLS_PUBLIC_MESSAGE
        ):
            raise ProposalError("a new_member_proposal must be an Add in a PublicMessage")
        if t == SenderType.NEW_MEMBER_COMMIT:
            raise ProposalError("a new_member_commit sender cannot send a proposal")
        ref = proposal_ref(self.suite, ac)
        if any(c.ref == ref for c in self.proposals):
            raise ReplayError("this proposal was already received in this epoch")
        validate_proposal_list(
            self.suite, self.tree, self.group_context, [ProposalEntry(proposal, sender, ref)], sender, list_checks=False
        )
        cached = CachedProposal(ref, proposal, sender)
        group = replace(self, proposals=(*self.proposals, cached), secret_tree=secret_tree)
        return group, ProposalReceived(ref, proposal, sender)

    def _process_commit(
        self, ac: AuthenticatedContent, now: int | None, content_bytes: bytes | None = None
    ) -> tuple[Group, Event]:
        """Process a commit of another member or an external joiner (RFC 9420 section 12.4.2).

        ``content_bytes`` is the encoding of ``ac.content`` if the caller has it."""
        suite = self.suite
        gc = self.group_context
        content = ac.content
        commit = content.content
        assert isinstance(commit, Commit)
        sender = content.sender
        external = sender.sender_type == SenderType.NEW_MEMBER_COMMIT
        if not external and sender.sender_type != SenderType.MEMBER:
            raise ProtocolError(f"a commit cannot come from a {sender.sender_type.name.lower()} sender")
        cache = {c.ref: c for c in self.proposals}
        raw = [p.reference if isinstance(p, ProposalRef) else p for p in commit.proposals]
        if external and any(isinstance(p, bytes) for p in raw):
            raise ProposalError("an external commit must not include proposals by reference")
        entries = resolve_entries(raw, cache, sender)
        # the KeyPackage signatures of every Add checked in one parallel batch (an add-all
        # commit carries one per new member); validate_proposal_list then skips them
        verify_key_package_signatures([e.proposal.key_package for e in entries if isinstance(e.proposal, Add)])
        validate_proposal_list(suite, self.tree, gc, entries, sender, now=now)
        applied = apply_proposal_list(self.tree, gc, entries)
        if commit.path is None and (applied.needs_path or not entries or external):
            raise ProtocolError("this commit must carry a path")
        psk_secret = self._psk_secret(applied.psks)

        tree = applied.tree
        self_removed = self.own_leaf in applied.removed
        keys = self.private_keys
        if self.own_leaf in applied.updated:
            ref = next(e.ref for e in entries if isinstance(e.proposal, Update) and e.sender.index == self.own_leaf)
            new_priv = dict(self.update_keys).get(ref or b"")
            if new_priv is None:
                raise ProtocolError("our own Update was committed but its private key is unknown")
            keys = keys.with_keys({2 * self.own_leaf: new_priv})
        keys = keys.pruned(tree)

        if external:
            committer = tree.free_leaf()
            assert commit.path is not None
            placeholder = replace(commit.path.leaf_node, encryption_key=b"")
            tree = tree.copy()
            if committer != tree.add_leaf(placeholder):  # pragma: no cover - add_leaf uses free_leaf
                raise TreeError("external joiner leaf placement mismatch")
        else:
            assert sender.index is not None
            committer = sender.index

        provisional = replace(gc, epoch=gc.epoch + 1, extensions=applied.extensions)
        commit_secret: bytes | None = None
        if commit.path is not None:
            check_leaf_capabilities(commit.path.leaf_node, applied.extensions, f"committer leaf {committer}")
            result = process_update_path(
                tree,
                committer,
                commit.path,
                provisional,
                None if self_removed else keys,
                excluded_leaves=applied.added,
            )
            tree = result.tree
            try:
                validate_leaf_node(
                    tree,
                    commit.path.leaf_node,
                    source=LeafNodeSource.COMMIT,
                    group_id=gc.group_id,
                    leaf_index=committer,
                    required_capabilities=required_capabilities_of(applied.extensions),
                    signature_verified=True,  # by process_update_path (apply_update_path)
                )
            except DecodeError:
                raise SignatureError(f"LeafNode signature of committer leaf {committer} does not verify") from None
            if not self_removed:
                assert result.private_keys is not None
                keys = result.private_keys
                commit_secret = result.commit_secret

        if external:
            assert applied.external_init is not None
            ext_priv, _ = self.epoch_secrets.external_key_pair()
            init_secret = external_init_receive(suite, ext_priv, applied.external_init.kem_output)
        else:
            init_secret = self.epoch_secrets.init_secret
        confirmed = confirmed_transcript_hash(suite, self.interim_transcript_hash, ac, content_bytes)
        new_gc = GroupContext(
            gc.version, gc.cipher_suite, gc.group_id, gc.epoch + 1, tree.tree_hash(), confirmed, applied.extensions
        )
        tag = ac.auth.confirmation_tag
        assert tag is not None
        event = CommitApplied(
            new_gc.epoch, sender, applied.added, applied.removed, applied.updated, applied.reinit, self_removed
        )
        if self_removed:
            # the public state after the commit (tree, GroupContext: authenticated by the
            # committer's signature; the confirmation tag needs secrets we do not get), so a
            # removed member can still name this epoch as a foreign parent of a merge
            # (docs/merge.md 4.1, 6.2); secrets stay those of the epoch we were removed from
            return (
                replace(
                    self,
                    group_context=new_gc,
                    tree=tree,
                    confirmation_tag=tag,
                    active=False,
                    proposals=(),
                    update_keys=(),
                ),
                event,
            )
        es = derive_epoch_secrets(suite, init_secret, commit_secret, new_gc, psk_secret)
        verify_confirmation_tag(suite, es.confirmation_key, confirmed, tag)
        return self._next_epoch(new_gc, tree, keys, es, confirmed, tag, applied), event

    def _next_epoch(
        self,
        new_gc: GroupContext,
        tree: RatchetTree,
        keys: TreePrivateKeys,
        es: EpochSecrets,
        confirmed: bytes,
        tag: bytes,
        applied: AppliedProposals,
    ) -> Group:
        suite = self.suite
        kept = (*self.resumption_psks, (self.group_id, self.epoch, self.epoch_secrets.resumption_psk))
        return replace(
            self,
            group_context=new_gc,
            tree=tree,
            private_keys=keys,
            epoch_secrets=es,
            interim_transcript_hash=interim_transcript_hash(suite, confirmed, tag),
            confirmation_tag=tag,
            secret_tree=SecretTree(suite, es.encryption_secret, tree.n_leaves),
            proposals=(),
            update_keys=(),
            resumption_psks=kept[-MAX_RESUMPTION_PSKS:],
            reinit=applied.reinit,
        )

    # ------------------------------------------------------------------ sending

    def _frame(
        self,
        body: bytes | Proposal,
        private: bool,
        authenticated_data: bytes,
        padding: int,
        rng: Rng,
    ) -> tuple[bytes, AuthenticatedContent, SecretTree]:
        suite = self.suite
        gc = self.group_context
        wf = WireFormat.MLS_PRIVATE_MESSAGE if private else WireFormat.MLS_PUBLIC_MESSAGE
        content = FramedContent(gc.group_id, gc.epoch, Sender.member(self.own_leaf), authenticated_data, body)
        ac = authenticate(suite, self.signature_priv, wf, content, gc)
        if private:
            st = self.secret_tree.copy()
            pm = protect_private(suite, ac, st, self.epoch_secrets.sender_data_secret, padding=padding, rng=rng)
            return private_message_bytes(pm), ac, st
        pub = protect_public(suite, ac, gc, self.epoch_secrets.membership_key)
        return MLSMessage(pub).to_bytes(), ac, self.secret_tree

    def protect_application(
        self, data: bytes, *, authenticated_data: bytes = b"", padding: int = 0, rng: Rng = os.urandom
    ) -> tuple[bytes, Group]:
        """Encrypt application data as a PrivateMessage (RFC 9420 section 6.3) -> (bytes, new state)."""
        self._require_active()
        raw, _, st = self._frame(bytes(data), True, authenticated_data, padding, rng)
        return raw, self._with_secret_tree(st)

    def propose(
        self,
        proposal: Proposal,
        *,
        private: bool = False,
        authenticated_data: bytes = b"",
        rng: Rng = os.urandom,
    ) -> tuple[bytes, Group]:
        """Send a proposal (RFC 9420 section 12.1) -> (MLSMessage bytes, new state caching it)."""
        self._require_active()
        if isinstance(proposal, ExternalInit):
            raise InvalidArgument("ExternalInit is only used in external commits")
        raw, ac, st = self._frame(proposal, private, authenticated_data, 0, rng)
        ref = proposal_ref(self.suite, ac)
        cached = CachedProposal(ref, proposal, Sender.member(self.own_leaf))
        return raw, replace(self, proposals=(*self.proposals, cached), secret_tree=st)

    def propose_add(self, key_package: bytes | KeyPackage, **kw: bool | bytes | Rng) -> tuple[bytes, Group]:
        """Propose adding the member of ``key_package`` (RFC 9420 section 12.1.1)."""
        return self.propose(Add(_key_package(key_package)), **kw)  # type: ignore[arg-type]

    def propose_remove(self, leaf_index: int, **kw: bool | bytes | Rng) -> tuple[bytes, Group]:
        """Propose removing the member at ``leaf_index`` (RFC 9420 section 12.1.3)."""
        return self.propose(Remove(leaf_index), **kw)  # type: ignore[arg-type]

    def propose_update(
        self, *, private: bool = False, authenticated_data: bytes = b"", rng: Rng = os.urandom
    ) -> tuple[bytes, Group]:
        """Propose a fresh leaf encryption key for ourselves (RFC 9420 section 12.1.2)."""
        self._require_active()
        suite = self.suite
        priv, pub = suite.generate_hpke_key_pair(rng)
        current = self.leaf_node
        leaf = replace(
            current,
            encryption_key=pub,
            leaf_node_source=LeafNodeSource.UPDATE,
            lifetime=None,
            parent_hash=None,
            signature=b"",
        )
        leaf = leaf.with_signature(
            suite.sign_with_label(self.signature_priv, "LeafNodeTBS", leaf.tbs(self.group_id, self.own_leaf))
        )
        raw, group = self.propose(Update(leaf), private=private, authenticated_data=authenticated_data, rng=rng)
        ref = group.proposals[-1].ref
        return raw, replace(group, update_keys=(*group.update_keys, (ref, priv)))

    def commit(
        self,
        proposals: Sequence[Proposal] = (),
        *,
        add: Sequence[bytes | KeyPackage] = (),
        remove: Sequence[int] = (),
        include_pending: bool = True,
        private: bool = False,
        ratchet_tree_in_welcome: bool = True,
        authenticated_data: bytes = b"",
        force_path: bool = True,
        now: int | None = None,
        rng: Rng = os.urandom,
    ) -> tuple[bytes, bytes | None, Group]:
        """Commit pending proposals (by reference) and new ones (by value) (RFC 9420 section 12.4.1)
        -> (commit MLSMessage bytes, Welcome bytes or None, new state).

        The commit carries a fresh UpdatePath unless ``force_path=False`` and the proposals
        do not require one (only Adds, PSKs, GroupContextExtensions).
        """
        self._require_active()
        return self._commit(
            proposals,
            add=add,
            remove=remove,
            include_pending=include_pending,
            private=private,
            ratchet_tree_in_welcome=ratchet_tree_in_welcome,
            authenticated_data=authenticated_data,
            force_path=force_path,
            now=now,
            rng=rng,
        )

    def _commit(
        self,
        proposals: Sequence[Proposal] = (),
        *,
        add: Sequence[bytes | KeyPackage] = (),
        remove: Sequence[int] = (),
        include_pending: bool = True,
        private: bool = False,
        ratchet_tree_in_welcome: bool = True,
        authenticated_data: bytes = b"",
        resumption_psk: PreSharedKeyID | None = None,
        force_path: bool = True,
        now: int | None = None,
        rng: Rng = os.urandom,
    ) -> tuple[bytes, bytes | None, Group]:
        suite = self.suite
        gc = self.group_context
        me = Sender.member(self.own_leaf)
        by_value: list[Proposal] = [*proposals]
        # KeyPackages parsed and their signatures checked in one parallel batch
        by_value.extend(Add(kp) for kp in check_key_packages(add, _key_package))
        by_value.extend(Remove(i) for i in remove)
        refs = self._pending_for_commit(by_value) if include_pending else []
        entries = [ProposalEntry(c.proposal, c.sender, c.ref) for c in refs]
        entries.extend(ProposalEntry(p, me) for p in by_value)
        # the signatures of Adds by reference too (those by value are marked already)
        verify_key_package_signatures([c.proposal.key_package for c in refs if isinstance(c.proposal, Add)])
        validate_proposal_list(suite, self.tree, gc, entries, me, now=now)
        if resumption_psk is not None:
            # the reinit/branch PSK of a new group's first commit (RFC 9420 sections 11.2, 11.3);
            # 12.1.4 forbids it in proposals others validate, and nobody but us processes this commit
            by_value.append(PreSharedKey(resumption_psk))
            entries.append(ProposalEntry(by_value[-1], me))
        applied = apply_proposal_list(self.tree, gc, entries)
        psk_secret = self._psk_secret(applied.psks)
        provisional = replace(gc, epoch=gc.epoch + 1, extensions=applied.extensions)
        with_path = force_path or applied.needs_path or not entries
        if with_path:
            created = create_update_path(
                applied.tree, self.own_leaf, provisional, self.signature_priv, excluded_leaves=applied.added, rng=rng
            )
            tree, keys, commit_secret = created.tree, created.private_keys, created.commit_secret
            update_path: UpdatePath | None = created.update_path
            path_secret_for: Callable[[int], bytes | None] = created.path_secret_for
        else:
            tree, keys, commit_secret, update_path = applied.tree, self.private_keys, None, None

            def path_secret_for(_leaf: int) -> bytes | None:
                return None

        por: list[ProposalOrRef] = [ProposalRef(c.ref) for c in refs]
        por.extend(by_value)
        content = FramedContent(gc.group_id, gc.epoch, me, authenticated_data, Commit(tuple(por), update_path))
        wf = WireFormat.MLS_PRIVATE_MESSAGE if private else WireFormat.MLS_PUBLIC_MESSAGE
        # the (large) commit content is encoded once: signature, transcript, membership tag, message
        content_bytes = encode_content(content)
        signature = sign_framed_content(suite, self.signature_priv, wf, content, gc, content_bytes=content_bytes)
        confirmed = suite.hash(
            self.interim_transcript_hash + confirmed_transcript_hash_input(wf, content_bytes, signature)
        )
        new_gc = GroupContext(
            gc.version, gc.cipher_suite, gc.group_id, gc.epoch + 1, tree.tree_hash(), confirmed, applied.extensions
        )
        es = derive_epoch_secrets(suite, self.epoch_secrets.init_secret, commit_secret, new_gc, psk_secret)
        tag = confirmation_tag(suite, es.confirmation_key, confirmed)
        ac = AuthenticatedContent(wf, content, FramedContentAuthData(signature, tag))
        st = self.secret_tree
        if private:
            st = st.copy()
            pm = protect_private(suite, ac, st, self.epoch_secrets.sender_data_secret, rng=rng)
            msg_bytes = private_message_bytes(pm)
        else:
            pub = protect_public(suite, ac, gc, self.epoch_secrets.membership_key, content_bytes=content_bytes)
            msg_bytes = public_message_bytes(pub, content_bytes)
        group = self._next_epoch(new_gc, tree, keys, es, confirmed, tag, applied)

        welcome: bytes | None = None
        if applied.added:
            adds = [e.proposal for e in entries if isinstance(e.proposal, Add)]
            recipients = [(a.key_package, path_secret_for(i)) for a, i in zip(adds, applied.added, strict=True)]
            gi = group._signed_group_info(ratchet_tree_in_welcome, external_pub=True)
            welcome = build_welcome_message(suite, gi, es.joiner_secret, psk_secret, applied.psks, recipients, rng)
        return msg_bytes, welcome, group

    def _new_linked_group(
        self,
        usage: ResumptionPSKUsage,
        cipher_suite: int,
        group_id: bytes,
        extensions: Sequence[Extension],
        key_packages: Sequence[bytes | KeyPackage],
        creator: KeyPackagePrivate | None,
        rng: Rng,
    ) -> tuple[bytes, Group]:
        suite = get_cipher_suite(cipher_suite)
        if creator is None:
            creator = _make_key_package(
                cipher_suite,
                self.leaf_node.credential,
                signature_priv=self.signature_priv if cipher_suite == self.cipher_suite else None,
                rng=rng,
            )
        new = Group.create(cipher_suite, creator, group_id=group_id, extensions=extensions, rng=rng)
        new = replace(new, resumption_psks=((self.group_id, self.epoch, self.epoch_secrets.resumption_psk),))
        psk = PreSharedKeyID.resumption(usage, self.group_id, self.epoch, rng(suite.hash_length))
        _, welcome, new = new._commit(add=key_packages, resumption_psk=psk, rng=rng)
        if welcome is None:
            raise InvalidArgument("a reinitialized or branched group needs at least one other member")
        return welcome, new

    def reinit_group(
        self,
        key_packages: Sequence[bytes | KeyPackage],
        *,
        creator: KeyPackagePrivate | None = None,
        rng: Rng = os.urandom,
    ) -> tuple[bytes, Group]:
        """After a ReInit commit: create the new group it describes and welcome the members'
        new KeyPackages with a ``reinit`` resumption PSK (RFC 9420 section 11.2)
        -> (Welcome bytes, new group at epoch 1)."""
        ri = self.reinit
        if ri is None:
            raise InvalidState("no ReInit was committed in this group")
        return self._new_linked_group(
            ResumptionPSKUsage.REINIT, ri.cipher_suite, ri.group_id, ri.extensions, key_packages, creator, rng
        )

    def branch(
        self,
        key_packages: Sequence[bytes | KeyPackage],
        *,
        group_id: bytes | None = None,
        extensions: Sequence[Extension] | None = None,
        creator: KeyPackagePrivate | None = None,
        rng: Rng = os.urandom,
    ) -> tuple[bytes, Group]:
        """Branch a subgroup with a ``branch`` resumption PSK (RFC 9420 section 11.3)
        -> (Welcome bytes, new group at epoch 1)."""
        self._require_active()
        gid = group_id if group_id is not None else rng(16)
        exts = self.group_context.extensions if extensions is None else tuple(extensions)
        return self._new_linked_group(
            ResumptionPSKUsage.BRANCH, self.cipher_suite, gid, exts, key_packages, creator, rng
        )

    def _pending_for_commit(self, by_value: Sequence[Proposal]) -> list[CachedProposal]:
        """The cached proposals a commit of ours covers (RFC 9420 section 12.2 committer rules):
        not our own Updates, not a Remove of ourselves, a Remove wins over Updates of the same
        leaf, the most recent Update of a leaf wins, duplicate Removes/Adds/PSKs are dropped,
        and a ReInit is committed only if nothing else is pending (it must be alone)."""
        me = self.own_leaf
        removed = {p.removed for p in by_value if isinstance(p, Remove)}
        for c in self.proposals:
            if isinstance(c.proposal, Remove) and c.proposal.removed != me:
                removed.add(c.proposal.removed)
        last_update: dict[int, bytes] = {}
        for c in self.proposals:
            if isinstance(c.proposal, Update) and c.sender.index is not None:
                last_update[c.sender.index] = c.ref
        seen_removes: set[int] = {p.removed for p in by_value if isinstance(p, Remove)}
        seen_keys: set[bytes] = {p.key_package.leaf_node.signature_key for p in by_value if isinstance(p, Add)}
        seen_psks: set[bytes] = {codec.encode(p.psk) for p in by_value if isinstance(p, PreSharedKey)}
        has_gce = any(isinstance(p, GroupContextExtensions) for p in by_value)
        out: list[CachedProposal] = []
        for c in self.proposals:
            p = c.proposal
            if isinstance(p, Update):
                i = c.sender.index
                if i is None or i == me or i in removed or last_update.get(i) != c.ref:
                    continue
            elif isinstance(p, Remove):
                if p.removed == me or p.removed in seen_removes:
                    continue
                seen_removes.add(p.removed)
            elif isinstance(p, Add):
                key = p.key_package.leaf_node.signature_key
                if key in seen_keys:
                    continue
                seen_keys.add(key)
            elif isinstance(p, PreSharedKey):
                psk = codec.encode(p.psk)
                if psk in seen_psks:
                    continue
                seen_psks.add(psk)
            elif isinstance(p, GroupContextExtensions):
                if has_gce:
                    continue
                has_gce = True
            elif isinstance(p, ReInit):
                continue  # committed only when alone (below)
            out.append(c)
        if not out and not by_value:
            reinit = next((c for c in self.proposals if isinstance(c.proposal, ReInit)), None)
            if reinit is not None:
                out.append(reinit)
        return out

    def _signed_group_info(self, with_tree: bool, external_pub: bool) -> GroupInfo:
        """GroupInfo of the current epoch, signed by us (RFC 9420 section 12.4.3)."""
        exts: list[Extension] = []
        if with_tree:
            exts.append(Extension.ratchet_tree(self.tree.to_wire()))
        if external_pub:
            exts.append(Extension.external_pub(self.epoch_secrets.external_pub()))
        gi = GroupInfo(self.group_context, tuple(exts), self.confirmation_tag, self.own_leaf)
        return sign_group_info(self.suite, gi, self.signature_priv)

    def group_info(self, *, with_tree: bool = True, external_pub: bool = True) -> bytes:
        """A signed GroupInfo MLSMessage for external joiners (RFC 9420 section 12.4.3.2)."""
        self._require_active()
        return MLSMessage(self._signed_group_info(with_tree, external_pub)).to_bytes()

    # ------------------------------------------------------------------ snapshots

    def encode(self, w: Writer) -> None:
        """Private snapshot encoding (not a wire format; contains secrets)."""
        w.u8(_STATE_VERSION)
        self.group_context.encode(w)
        w.opaque(self.tree.encode())
        w.u32(self.own_leaf)

        def key(ww: Writer, item: tuple[int, bytes]) -> None:
            ww.u32(item[0])
            ww.opaque(item[1])

        w.vector(sorted(self.private_keys.keys.items()), key)
        w.opaque(self.signature_priv)
        self.epoch_secrets.encode(w)
        w.opaque(self.interim_transcript_hash)
        w.opaque(self.confirmation_tag)
        self.secret_tree.encode(w)

        def cached(ww: Writer, c: CachedProposal) -> None:
            ww.opaque(c.ref)
            encode_proposal(ww, c.proposal)
            c.sender.encode(ww)

        w.vector(self.proposals, cached)
        w.vector(self.update_keys, _w_bytes_pair)
        w.vector(self.external_psks, _w_bytes_pair)

        def res(ww: Writer, item: tuple[bytes, int, bytes]) -> None:
            ww.opaque(item[0])
            ww.u64(item[1])
            ww.opaque(item[2])

        w.vector(self.resumption_psks, res)
        w.optional(self.reinit, lambda ww, v: v.encode(ww))
        w.boolean(self.active)

    @classmethod
    def decode(cls, r: Reader) -> Group:
        version = r.u8()
        if version != _STATE_VERSION:
            raise DecodeError(f"unknown group state version {version}")
        gc = GroupContext.decode(r)
        suite = get_cipher_suite(gc.cipher_suite)
        tree = RatchetTree.decode(suite, r.opaque())
        own_leaf = r.u32()
        keys = dict(r.vector(lambda rr: (rr.u32(), rr.opaque())))
        signature_priv = r.opaque()
        es = EpochSecrets.decode(r)
        interim = r.opaque()
        tag = r.opaque()
        st = SecretTree.decode(r)

        def cached(rr: Reader) -> CachedProposal:
            ref = rr.opaque()
            proposal = decode_proposal(rr)
            return CachedProposal(ref, proposal, Sender.decode(rr))

        proposals = tuple(r.vector(cached))
        update_keys = tuple(r.vector(_r_bytes_pair))
        external_psks = tuple(r.vector(_r_bytes_pair))
        resumption = tuple(r.vector(lambda rr: (rr.opaque(), rr.u64(), rr.opaque())))
        reinit = r.optional(ReInit.decode)
        active = r.boolean()
        return cls(
            gc,
            tree,
            own_leaf,
            TreePrivateKeys(own_leaf, keys),
            signature_priv,
            es,
            interim,
            tag,
            st,
            proposals,
            update_keys,
            external_psks,
            resumption,
            reinit,
            active,
        )

    def to_bytes(self) -> bytes:
        """Serialize the whole state (contains secrets: store it encrypted), followed by a
        SHA-256 checksum that detects corruption (not tampering: that needs the store's MAC)."""
        body = codec.encode(self)
        return body + hashlib.sha256(body).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> Group:
        """Restore a state serialized by `to_bytes`; `IntegrityError` if the checksum fails."""
        raw = bytes(data)
        body, digest = raw[:-32], raw[-32:]
        if len(raw) < 33 or not hmac.compare_digest(hashlib.sha256(body).digest(), digest):
            raise IntegrityError("group state snapshot is corrupted (checksum mismatch)")
        try:
            return codec.decode(cls, body)
        except UnsupportedError as e:
            raise DecodeError(f"group state snapshot: {e}") from None

    def __repr__(self) -> str:
        return (
            f"Group(epoch={self.epoch}, own_leaf={self.own_leaf}, members={sum(1 for _ in self.tree.members())}, "
            f"suite={self.cipher_suite}, active={self.active})"
        )


#: The group state value (the brief's name): `Group` is itself the frozen state.
GroupState = Group

_GROUP_FIELDS = tuple(f.name for f in fields(Group))
_setattr = object.__setattr__
