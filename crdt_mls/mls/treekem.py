"""TreeKEM: creating and processing UpdatePaths (RFC 9420 sections 7.4-7.6, 12.4.1, 12.4.2).

Neither function mutates its input tree: both work on a `RatchetTree.copy()` and return the
new tree with the other results, so a rejected UpdatePath leaves the caller's state as it was.

The group context used as HPKE context is the *provisional* GroupContext: the caller passes
it with any ``tree_hash`` and we substitute the tree hash of the tree after the path is merged
(RFC 9420 section 12.4.1/12.4.2).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from crdt_mls.errors import DecryptionError, InvalidArgument, TreeError
from crdt_mls.mls import treemath
from crdt_mls.mls.messages import (
    GroupContext,
    HPKECiphertext,
    LeafNode,
    LeafNodeSource,
    ParentNode,
    UpdatePath,
    UpdatePathNode,
    new_hpke_ciphertext,
)
from crdt_mls.mls.ratchet_tree import RatchetTree, direct_path, verify_leaf_signature

if TYPE_CHECKING:
    from crdt_mls.mls.suites import CipherSuite

__all__ = [
    "CreatedUpdatePath",
    "ProcessedUpdatePath",
    "Rng",
    "TreePrivateKeys",
    "create_update_path",
    "derive_node_key_pair",
    "next_path_secret",
    "process_update_path",
]

Rng = Callable[[int], bytes]

_PATH_LABEL = "UpdatePathNode"


def next_path_secret(suite: CipherSuite, path_secret: bytes) -> bytes:
    """``path_secret[n+1] = DeriveSecret(path_secret[n], "path")`` (RFC 9420 section 7.4)."""
    return suite.derive_secret(path_secret, "path")


def derive_node_key_pair(suite: CipherSuite, path_secret: bytes) -> tuple[bytes, bytes]:
    """``DeriveKeyPair(DeriveSecret(path_secret, "node"))`` -> (private, public) (section 7.4)."""
    return suite.derive_key_pair(suite.derive_secret(path_secret, "node"))


@dataclass(frozen=True, slots=True, repr=False)
class TreePrivateKeys:
    """The HPKE private keys one member holds, by node index (RFC 9420 section 4.2).

    ``repr`` shows only the node indices.
    """

    leaf_index: int
    keys: Mapping[int, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"TreePrivateKeys(leaf_index={self.leaf_index}, nodes={sorted(self.keys)})"

    def get(self, node: int) -> bytes | None:
        return self.keys.get(node)

    def __contains__(self, node: object) -> bool:
        return node in self.keys

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.keys))

    def with_keys(self, updates: Mapping[int, bytes], drop: Iterable[int] = ()) -> TreePrivateKeys:
        """A copy with the ``drop`` nodes removed and then ``updates`` set."""
        keys = dict(self.keys)
        for x in drop:
            keys.pop(x, None)
        keys.update(updates)
        return TreePrivateKeys(self.leaf_index, keys)

    def pruned(self, tree: RatchetTree) -> TreePrivateKeys:
        """Drop keys of nodes that are blank or outside ``tree`` (after removes/truncation)."""
        w = tree.width
        keys = {x: k for x, k in self.keys.items() if x < w and tree.node(x) is not None}
        return TreePrivateKeys(self.leaf_index, keys)

    @classmethod
    def for_leaf(cls, leaf_index: int, leaf_private_key: bytes) -> TreePrivateKeys:
        return cls(leaf_index, {2 * leaf_index: leaf_private_key})

    def with_path_secret(
        self, suite: CipherSuite, tree: RatchetTree, start_node: int, path_secret: bytes
    ) -> TreePrivateKeys:
        """Install keys from ``path_secret`` at ``start_node`` and every non-blank node above it
        (a joiner's path secret from a Welcome, RFC 9420 section 12.4.3.1).

        Raises `TreeError` if a derived public key differs from the one in the tree.
        """
        keys = _derive_up(suite, tree, start_node, path_secret)
        return self.with_keys(keys)

    def with_node_secret(self, suite: CipherSuite, tree: RatchetTree, node: int, path_secret: bytes) -> TreePrivateKeys:
        """Install the key derived from ``path_secret`` at ``node`` only; `TreeError` if it does
        not match the tree (RFC 9420 section 7.4)."""
        v = tree.node(node)
        if v is None:
            raise TreeError(f"path secret given for blank node {node}")
        priv, pub = derive_node_key_pair(suite, path_secret)
        if pub != v.encryption_key:
            raise TreeError(f"public key derived for node {node} does not match the tree")
        return self.with_keys({node: priv})

    def verify(self, suite: CipherSuite, tree: RatchetTree) -> None:
        """Every held key matches the public key in the tree, else `TreeError`."""
        for x, priv in self.keys.items():
            v = tree.node(x) if x < tree.width else None
            if v is None:
                raise TreeError(f"a private key is held for blank node {x}")
            if suite.hpke_public_key(priv) != v.encryption_key:
                raise TreeError(f"the private key for node {x} does not match the tree")


def _derive_up(suite: CipherSuite, tree: RatchetTree, start_node: int, path_secret: bytes) -> dict[int, bytes]:
    """Keys for ``start_node`` and the non-blank nodes above it, from ``path_secret``."""
    n = tree.n_leaves
    out: dict[int, bytes] = {}
    secret = path_secret
    chain = (start_node, *direct_path(start_node, n))
    first = True
    for x in chain:
        v = tree.node(x)
        if v is None:
            if first:
                raise TreeError(f"path secret given for blank node {x}")
            continue
        if not first:
            secret = next_path_secret(suite, secret)
        first = False
        priv, pub = derive_node_key_pair(suite, secret)
        if pub != v.encryption_key:
            raise TreeError(f"public key derived for node {x} does not match the tree")
        out[x] = priv
    return out


@dataclass(frozen=True, slots=True, repr=False)
class CreatedUpdatePath:
    """Result of `create_update_path` (RFC 9420 section 7.5, 12.4.1)."""

    update_path: UpdatePath
    tree: RatchetTree
    private_keys: TreePrivateKeys
    group_context: GroupContext
    commit_secret: bytes
    path_secrets: Mapping[int, bytes]

    def __repr__(self) -> str:
        return f"CreatedUpdatePath(nodes={len(self.update_path.nodes)}, tree={self.tree!r})"

    def path_secret_for(self, joiner_leaf: int) -> bytes | None:
        """Path secret at the lowest common ancestor of the committer and ``joiner_leaf``
        (for the joiner's GroupSecrets, RFC 9420 section 12.4.3.1); None if there is none."""
        lca = treemath.common_ancestor(2 * self.private_keys.leaf_index, 2 * joiner_leaf)
        return self.path_secrets.get(lca)


@dataclass(frozen=True, slots=True, repr=False)
class ProcessedUpdatePath:
    """Result of `process_update_path` (RFC 9420 section 7.5, 12.4.2)."""

    tree: RatchetTree
    private_keys: TreePrivateKeys | None
    group_context: GroupContext
    commit_secret: bytes | None
    path_secret: bytes | None
    path_secret_node: int | None

    def __repr__(self) -> str:
        return f"ProcessedUpdatePath(tree={self.tree!r}, path_secret_node={self.path_secret_node})"


def _path_nodes(
    tree: RatchetTree, fdp: list[tuple[int, int]], public_keys: list[bytes]
) -> tuple[list[tuple[int, ParentNode]], bytes]:
    """The new filtered direct path nodes with their parent hashes (top down) and the parent
    hash of the leaf (RFC 9420 sections 7.5 and 7.9).

    A copath subtree does not contain the path, so its tree hash (and, with no unmerged
    leaves in the new nodes, its original sibling tree hash) is the same in ``tree`` and in
    the tree after the merge: the path is computed before the tree is changed.
    """
    ph = b""
    path: list[tuple[int, ParentNode]] = []
    for (p, s), pub in zip(reversed(fdp), reversed(public_keys), strict=True):
        path.append((p, ParentNode(pub, ph, ())))
        ph = tree.parent_hash_from(pub, ph, tree.tree_hash(s))
    return path, ph


def create_update_path(
    tree: RatchetTree,
    leaf_index: int,
    group_context: GroupContext,
    signature_private_key: bytes,
    *,
    excluded_leaves: Iterable[int] = (),
    leaf_node: LeafNode | None = None,
    rng: Rng = os.urandom,
) -> CreatedUpdatePath:
    """Update the committer's direct path and encrypt the path secrets (RFC 9420 section 7.4-7.6).

    ``tree`` is the tree after the commit's proposals; ``group_context`` the provisional one
    (its ``tree_hash`` is replaced).  ``leaf_node`` is a template for the new leaf (default:
    the current leaf); its encryption key, source, parent hash and signature are replaced.
    ``excluded_leaves`` are the members added by this commit.
    """
    suite = tree.suite
    current = tree.leaf(leaf_index)
    template = leaf_node if leaf_node is not None else current
    if template is None:
        raise InvalidArgument(f"leaf {leaf_index} is blank and no leaf node template was given")
    if suite.signature_public_key(signature_private_key) != template.signature_key:
        raise InvalidArgument("the signature private key does not match the leaf node's signature key")
    excluded = frozenset(excluded_leaves)
    if leaf_index in excluded:
        raise InvalidArgument("the committer cannot be an excluded leaf")
    nh = suite.hash_length

    # the copath subtrees (resolutions, tree hashes) do not contain the direct path: computed on
    # ``tree``, they are those of the tree with the path blanked and of the merged tree
    fdp = tree.filtered_direct_path_with_copath(leaf_index)

    # path secrets (section 7.4): leaf_secret, then one per filtered direct path node
    leaf_secret = rng(nh)
    secrets: list[bytes] = []
    secret = leaf_secret
    for _ in fdp:
        secret = next_path_secret(suite, secret)
        secrets.append(secret)
    commit_secret = next_path_secret(suite, secret)
    path_secrets = {p: x for (p, _s), x in zip(fdp, secrets, strict=True)}
    privs = [suite.derive_hpke_private_key(suite.derive_secret(x, "node")) for x in (leaf_secret, *secrets)]

    # every (recipient key, path secret) of the whole path, node by node in resolution order
    # (the serial loop's order, so rng is drawn in that order)
    recipients: list[bytes] = []
    plaintexts: list[bytes] = []
    counts: list[int] = []
    nodes_ = tree.nodes()
    ex_nodes = {2 * i for i in excluded}
    for (_p, s), path_secret in zip(fdp, secrets, strict=True):
        res = tree.resolution(s)
        if ex_nodes:
            res = tuple(r for r in res if r not in ex_nodes)
        for r in res:
            v = nodes_[r]
            assert v is not None
            recipients.append(v.encryption_key)
        plaintexts += [path_secret] * len(res)
        counts.append(len(res))
    # the ephemeral keys, every Diffie-Hellman and the path's public keys in one batch
    batch = suite.start_encrypt_with_label(recipients, rng, derive_public=privs)
    leaf_pub, *pubs = batch.derived_public_keys
    leaf_priv = privs[0]
    node_keys: dict[int, bytes] = {2 * leaf_index: leaf_priv}
    node_keys.update((p, priv) for (p, _s), priv in zip(fdp, privs[1:], strict=True))

    path, leaf_ph = _path_nodes(tree, fdp, pubs)
    unsigned = replace(
        template,
        encryption_key=leaf_pub,
        leaf_node_source=LeafNodeSource.COMMIT,
        lifetime=None,
        parent_hash=leaf_ph,
        signature=b"",
    )
    sig = suite.sign_with_label(signature_private_key, "LeafNodeTBS", unsigned.tbs(group_context.group_id, leaf_index))
    new_leaf = unsigned.with_signature(sig)
    new = tree.copy()
    new.set_direct_path(leaf_index, new_leaf, path)

    gc = replace(group_context, tree_hash=new.tree_hash())
    cts = batch.encrypt(plaintexts, _PATH_LABEL, gc.to_bytes(), _ciphertext)
    nodes: list[UpdatePathNode] = []
    start = 0
    for pub, count in zip(pubs, counts, strict=True):
        nodes.append(UpdatePathNode(pub, tuple(cts[start : start + count])))
        start += count

    keys = TreePrivateKeys(leaf_index, node_keys)
    return CreatedUpdatePath(
        update_path=UpdatePath(new_leaf, tuple(nodes)),
        tree=new,
        private_keys=keys,
        group_context=gc,
        commit_secret=commit_secret,
        path_secrets=path_secrets,
    )


def _ciphertext(_i: int, kem_output: bytes, ciphertext: bytes) -> HPKECiphertext:
    return new_hpke_ciphertext(kem_output, ciphertext)


def apply_update_path(
    tree: RatchetTree, sender: int, update_path: UpdatePath, group_id: bytes
) -> tuple[RatchetTree, list[tuple[int, int]]]:
    """Validate an UpdatePath against ``tree`` and merge it into a copy (RFC 9420 section 7.5).

    Returns the merged tree and the sender's filtered direct path as (parent, copath child).
    Raises `TreeError`, `SignatureError` or `DecodeError` (malformed public key); ``tree`` is
    never modified.
    """
    if not 0 <= sender < tree.n_leaves or tree.leaf(sender) is None:
        raise TreeError(f"UpdatePath sender leaf {sender} is blank or outside the tree")
    current = tree.leaf(sender)
    assert current is not None
    leaf = update_path.leaf_node
    if leaf.leaf_node_source != LeafNodeSource.COMMIT or leaf.parent_hash is None:
        raise TreeError("the LeafNode of an UpdatePath must have leaf_node_source commit")
    if leaf.encryption_key == current.encryption_key:
        raise TreeError("the UpdatePath leaf reuses the committer's current encryption key")
    verify_leaf_signature(tree.suite, leaf, group_id, sender)

    fdp = tree.filtered_direct_path_with_copath(sender)
    if len(update_path.nodes) != len(fdp):
        raise TreeError(
            f"UpdatePath has {len(update_path.nodes)} nodes but the sender's filtered direct path has {len(fdp)}"
        )
    new_keys = [leaf.encryption_key, *(u.encryption_key for u in update_path.nodes)]
    for k in new_keys:
        tree.suite.check_hpke_public_key(k)  # DecodeError for a malformed key
    if len(set(new_keys)) != len(new_keys):
        raise TreeError("the UpdatePath repeats an encryption key")
    if any(tree.has_encryption_key(k) for k in new_keys):
        raise TreeError("an UpdatePath encryption key already appears in the tree")

    path, ph = _path_nodes(tree, fdp, [u.encryption_key for u in update_path.nodes])
    if ph != leaf.parent_hash:
        raise TreeError("the parent hash of the UpdatePath leaf does not match the merged path")
    new = tree.copy()
    new.set_direct_path(sender, leaf, path)
    return new, fdp


def process_update_path(
    tree: RatchetTree,
    sender: int,
    update_path: UpdatePath,
    group_context: GroupContext,
    private_keys: TreePrivateKeys | None,
    *,
    excluded_leaves: Iterable[int] = (),
) -> ProcessedUpdatePath:
    """Merge a received UpdatePath and decrypt the path secret (RFC 9420 sections 7.5, 12.4.2).

    ``tree`` is the tree after the commit's proposals; ``group_context`` the provisional one
    (its ``tree_hash`` is replaced by the merged tree's).  ``private_keys`` are the receiver's
    (None for a party that only tracks the public tree).  Returns the merged tree, the
    receiver's new keys, the commit secret and the decrypted path secret.
    """
    suite = tree.suite
    new, fdp = apply_update_path(tree, sender, update_path, group_context.group_id)
    gc = replace(group_context, tree_hash=new.tree_hash())
    excluded = frozenset(excluded_leaves)

    resolutions = [new.resolution_excluding(s, excluded) for _p, s in fdp]
    for (p, _s), res, node in zip(fdp, resolutions, update_path.nodes, strict=True):
        if len(node.encrypted_path_secret) != len(res):
            raise TreeError(
                f"UpdatePath node {p} has {len(node.encrypted_path_secret)} ciphertexts for a resolution of {len(res)}"
            )

    if private_keys is None or private_keys.leaf_index in excluded:
        return ProcessedUpdatePath(new, private_keys, gc, None, None, None)
    own = private_keys.leaf_index
    if own == sender:
        raise InvalidArgument("a member does not process its own UpdatePath")
    if not 0 <= own < new.n_leaves or new.leaf(own) is None:
        raise InvalidArgument(f"receiver leaf {own} is not in the tree")

    lca = treemath.common_ancestor(2 * own, 2 * sender)
    pos = next((i for i, (p, _s) in enumerate(fdp) if p == lca), None)
    if pos is None:  # pragma: no cover - the receiver's own leaf keeps the copath resolution non-empty
        raise TreeError(f"common ancestor {lca} is not on the sender's filtered direct path")
    res = resolutions[pos]
    idx = next((i for i, r in enumerate(res) if r in private_keys), None)
    if idx is None:
        raise TreeError(f"no private key held for the resolution of the copath of node {lca}")
    priv = private_keys.get(res[idx])
    assert priv is not None
    ct = update_path.nodes[pos].encrypted_path_secret[idx]
    try:
        path_secret = suite.decrypt_with_label(priv, _PATH_LABEL, gc.to_bytes(), ct.kem_output, ct.ciphertext)
    except DecryptionError:
        raise DecryptionError(f"cannot decrypt the path secret for node {lca}") from None

    secret = path_secret
    derived: dict[int, bytes] = {}
    last = secret
    for i in range(pos, len(fdp)):
        p = fdp[i][0]
        if i > pos:
            secret = next_path_secret(suite, secret)
        dpriv, dpub = derive_node_key_pair(suite, secret)
        if dpub != update_path.nodes[i].encryption_key:
            raise TreeError(f"public key derived for node {p} does not match the UpdatePath")
        derived[p] = dpriv
        last = secret
    commit_secret = next_path_secret(suite, last)

    drop = direct_path(2 * sender, new.n_leaves)
    keys = private_keys.with_keys(derived, drop=drop)
    return ProcessedUpdatePath(new, keys, gc, commit_secret, path_secret, lca)
