"""Batched libsodium calls (through PyNaCl) for the worker threads of `crdt_mls.mls.parallel`.

The calls go straight to PyNaCl's cffi library (``nacl._sodium.lib``, the functions behind
``nacl.bindings``) with one output buffer per batch range, so that between two libsodium
calls a thread holds the GIL for well under a microsecond.  cffi releases the GIL for the
duration of every call, which is what lets two threads compute in parallel; a thread that
holds the GIL longer between calls (building messages, AES-GCM, HMAC) makes the others wait
for it and the batch stops scaling, so callers prepare the inputs before the batch and
finish the results after it, in their own thread.

If PyNaCl's cffi module cannot be imported the public ``nacl.bindings`` functions are used
(same results, more Python per call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nacl.bindings as _bindings

try:  # the cffi module nacl.bindings wraps; sodium_init() ran when nacl.bindings was imported
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib

    _RAW = bool(_lib.crypto_scalarmult_bytes() == 32 and _lib.crypto_sign_bytes() == 64)
except (ImportError, AttributeError):  # pragma: no cover - unusual PyNaCl builds
    _ffi = _lib = None
    _RAW = False

__all__ = ["ed25519_open_range", "x25519_pairs_range"]


def x25519_pairs_range(secrets: Sequence[bytes], peers: Sequence[bytes | None], lo: int, hi: int) -> list[bytes | None]:
    """``X25519(sk, 9) || X25519(sk, peer)`` (64 bytes) for items ``lo..hi-1`` (RFC 7748): the
    ephemeral public key and the shared secret of an HPKE Encap; None for an item whose peer
    key is not 32 bytes or whose shared secret is all zero (a low-order point, rejected by
    libsodium).  An item whose peer is None gets the public key ``X25519(sk, 9)`` alone (32
    bytes: DeriveKeyPair's public half, RFC 9180 section 7.1.3).  Every secret must be 32
    bytes.  (Results are bytes, not tuples: a batch of 50,000 keeps no extra objects for the
    garbage collector to scan.)"""
    if not _RAW:  # pragma: no cover - see module docstring
        return [_x25519_pair_public(secrets[i], peers[i]) for i in range(lo, hi)]
    lib: Any = _lib
    ffi: Any = _ffi
    n = hi - lo
    out = ffi.new("unsigned char[]", 64 * n)
    base, mult = lib.crypto_scalarmult_base, lib.crypto_scalarmult
    ok = [0] * n  # 0: failed, 1: public key only, 2: pair
    for j in range(n):
        sk = secrets[lo + j]
        peer = peers[lo + j]
        if peer is None:
            base(out + 64 * j, sk)
            ok[j] = 1
            continue
        if len(peer) != 32:
            continue
        base(out + 64 * j, sk)
        if mult(out + (64 * j + 32), sk, peer) == 0:
            ok[j] = 2
    raw = ffi.buffer(out)[:]
    return [raw[64 * j : 64 * j + 32 * ok[j]] if ok[j] else None for j in range(n)]


def _x25519_pair_public(sk: bytes, peer: bytes | None) -> bytes | None:  # pragma: no cover
    if peer is None:
        return bytes(_bindings.crypto_scalarmult_base(sk))
    if len(peer) != 32:
        return None
    try:
        return bytes(_bindings.crypto_scalarmult_base(sk) + _bindings.crypto_scalarmult(sk, peer))
    except Exception:
        return None


def ed25519_open_range(signed: Sequence[bytes | None], keys: Sequence[bytes], lo: int, hi: int) -> list[bool]:
    """Whether ``signed[i]`` (signature || message) verifies under the 32-byte Ed25519 public
    key ``keys[i]`` (RFC 8032), for ``lo..hi-1``; a None entry is False."""
    if not _RAW:  # pragma: no cover - see module docstring
        return [_ed25519_open_public(signed[i], keys[i]) for i in range(lo, hi)]
    lib: Any = _lib
    ffi: Any = _ffi
    sizes = [len(s) for s in signed[lo:hi] if s is not None]
    out_buf = ffi.new("unsigned char[]", max(sizes, default=0) + 1)
    out_len = ffi.new("unsigned long long *")
    sign_open = lib.crypto_sign_open
    result: list[bool] = []
    for i in range(lo, hi):
        sm = signed[i]
        result.append(sm is not None and sign_open(out_buf, out_len, sm, len(sm), keys[i]) == 0)
    return result


def _ed25519_open_public(sm: bytes | None, pk: bytes) -> bool:  # pragma: no cover
    if sm is None:
        return False
    try:
        _bindings.crypto_sign_open(sm, pk)
    except Exception:
        return False
    return True
