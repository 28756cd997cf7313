"""Private content: password identities, file encryption, Cryptree trees, sharing (docs/content.md).

Sits beside the facade: imports `crdt_mls.mls` (suites, group exporter), `crdt_mls.dag`
(CIDs) and `crdt_mls.stores`; nothing below imports it.
"""

from __future__ import annotations

from crdt_mls.content.cryptree import Cryptree, DirEntry, PointerRecord, ReadCap, WriteCap, decode_cap
from crdt_mls.content.fileenc import (
    Decryptor,
    FileInfo,
    decrypt_bytes,
    decrypt_file,
    decrypt_to_path,
    encrypt_bytes,
    encrypt_chunks,
    encrypt_file,
)
from crdt_mls.content.identity import (
    DEFAULT_PARAMS,
    Identity,
    IdentityRecord,
    KeyRotation,
    PublicIdentity,
    ScryptParams,
)
from crdt_mls.content.sharing import (
    OpenedShare,
    ShareKeyring,
    open_share,
    reshare,
    share_to,
    share_with_group,
)

__all__ = [
    "DEFAULT_PARAMS",
    "Cryptree",
    "Decryptor",
    "DirEntry",
    "FileInfo",
    "Identity",
    "IdentityRecord",
    "KeyRotation",
    "OpenedShare",
    "PointerRecord",
    "PublicIdentity",
    "ReadCap",
    "ScryptParams",
    "ShareKeyring",
    "WriteCap",
    "decode_cap",
    "decrypt_bytes",
    "decrypt_file",
    "decrypt_to_path",
    "encrypt_bytes",
    "encrypt_chunks",
    "encrypt_file",
    "open_share",
    "reshare",
    "share_to",
    "share_with_group",
]
