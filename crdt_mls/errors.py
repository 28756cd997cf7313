"""The exception hierarchy of crdt-mls.

Two families, as in h2: errors made by the *caller* of the API (a bug or misuse in the
embedding program) and errors in *remote input* (bytes that came from the network or a
store and must be treated as hostile).  Every remote-input error leaves all stored state
exactly as it was before the call.

Messages never contain secret material: only sizes, indices, epochs, CIDs and names of
fields.
"""

from __future__ import annotations


class CrdtMlsError(Exception):
    """Base class of every exception raised by crdt-mls."""


# --------------------------------------------------------------------------- caller errors


class UsageError(CrdtMlsError):
    """The calling program used the API wrongly (wrong argument, wrong order of calls)."""


class InvalidArgument(UsageError, ValueError):
    """An argument has a value the API does not accept."""


class InvalidState(UsageError):
    """The call is not allowed in the object's current state (e.g. sending after removal)."""


class UnsupportedError(UsageError):
    """A cipher suite, extension, proposal type or feature that this library does not support."""


# ---------------------------------------------------------------------- remote-input errors


class RemoteInputError(CrdtMlsError):
    """Bytes from another party or from a store were rejected.  State is unchanged."""


class DecodeError(RemoteInputError, ValueError):
    """Malformed encoding: truncated, trailing bytes, non-minimal varint, bad enum value."""


class OversizeError(DecodeError):
    """An input or a field is larger than the configured limit."""


class CryptoError(RemoteInputError):
    """A cryptographic check failed."""


class SignatureError(CryptoError):
    """A signature did not verify."""


class DecryptionError(CryptoError):
    """An AEAD or HPKE ciphertext did not decrypt (wrong key or tampered)."""


class MembershipTagError(CryptoError):
    """A PublicMessage membership tag did not verify (RFC 9420 section 6.2)."""


class ConfirmationTagError(CryptoError):
    """A confirmation tag did not verify (RFC 9420 section 8.1)."""


class ProtocolError(RemoteInputError):
    """Well-formed input that violates an RFC 9420 rule (validation of proposals, commits...)."""


class WrongGroupError(ProtocolError):
    """The message belongs to another group."""


class WrongEpochError(ProtocolError):
    """The message belongs to another epoch than the one it was given to."""


class ReplayError(ProtocolError):
    """A message (generation, sequence number, nonce) was seen before."""


class TreeError(ProtocolError):
    """The ratchet tree is invalid (parent hash, tree hash, leaf validation, resolution)."""


class ProposalError(ProtocolError):
    """A proposal or the proposal list of a commit is invalid (RFC 9420 section 12.2)."""


class WelcomeError(ProtocolError):
    """A Welcome or GroupInfo could not be used to join."""


class IntegrityError(RemoteInputError):
    """Stored or fetched data does not match its identifier (CID mismatch)."""


class UnknownParentError(RemoteInputError):
    """An operation names a causal parent that is not known (yet)."""


class EquivocationError(RemoteInputError):
    """An author published two different operations with one sequence number."""


# ------------------------------------------------------------------------- environment errors


class StorageError(CrdtMlsError):
    """The storage backend failed (I/O, locked database, unreachable IPFS node)."""


class TransportError(CrdtMlsError):
    """A transport (IPFS RPC, pubsub) failed or timed out."""


# ------------------------------------------------------------- private content (crdt_mls.content)


class WrongPasswordError(DecryptionError):
    """A password did not unlock an identity or a password-encrypted file."""


class NotRecipientError(DecryptionError):
    """None of the (padded) recipient entries of an encrypted file or share opens with our key."""


class TruncatedError(DecryptionError):
    """An encrypted stream ended before its authenticated final chunk."""


class RevokedError(DecryptionError):
    """A Cryptree capability was revoked (its subtree was re-keyed)."""


class StateKeyError(DecryptionError):
    """Sealed replica or CLI state at rest did not open: wrong state key, or the stored value was tampered with."""


class MissingBaseError(RemoteInputError):
    """A merge commit names a base epoch whose public tree this replica does not keep
    (docs/merge.md 6.4): it cannot recompute the merged tree.  State is unchanged."""
