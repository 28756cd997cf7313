"""crdt_mls.mls.sodium: the batched libsodium calls equal PyNaCl's public bindings."""

from __future__ import annotations

import hashlib

import nacl.bindings as nb
import pytest

from crdt_mls.mls import sodium


def _bytes(tag: str, i: int, n: int = 32) -> bytes:
    return hashlib.sha512(f"{tag}/{i}".encode()).digest()[:n]


def test_the_cffi_path_is_the_one_tested() -> None:
    assert sodium._RAW  # PyNaCl's cffi module is importable here; the fallback is the public API


@pytest.mark.parametrize(("lo", "hi"), [(0, 0), (0, 1), (0, 20), (7, 20), (19, 20)])
def test_x25519_pairs_equal_the_public_bindings(lo: int, hi: int) -> None:
    secrets = [_bytes("sk", i) for i in range(20)]
    peers = [nb.crypto_scalarmult_base(_bytes("peer", i)) for i in range(20)]
    peers[3] = bytes(32)  # all-zero point: the shared secret is zero, libsodium refuses
    peers[11] = peers[11][:31]  # malformed
    peers[12] = peers[12] + b"\x00"  # malformed
    got = sodium.x25519_pairs_range(secrets, peers, lo, hi)
    assert len(got) == hi - lo
    for j, item in enumerate(got):
        i = lo + j
        if i in (3, 11, 12):
            assert item is None
        else:
            assert item == nb.crypto_scalarmult_base(secrets[i]) + nb.crypto_scalarmult(secrets[i], peers[i])


@pytest.mark.parametrize(("lo", "hi"), [(0, 0), (0, 12), (5, 12), (11, 12)])
def test_ed25519_open_equals_the_public_bindings(lo: int, hi: int) -> None:
    pk, sk = nb.crypto_sign_seed_keypair(_bytes("seed", 0))
    other, _ = nb.crypto_sign_seed_keypair(_bytes("seed", 1))
    signed: list[bytes | None] = [nb.crypto_sign(_bytes("m", i, 10 * i + 1), sk) for i in range(12)]
    keys = [pk] * 12
    signed[2] = b"\x00" + signed[2][1:]  # type: ignore[index]
    keys[4] = other
    signed[6] = None
    signed[8] = signed[8][:40]  # type: ignore[index]  # shorter than a signature
    signed[9] = b""
    got = sodium.ed25519_open_range(signed, keys, lo, hi)
    assert got == [i not in (2, 4, 6, 8, 9) for i in range(lo, hi)]
    for i in range(lo, hi):
        sm = signed[i]
        try:
            ok = sm is not None and nb.crypto_sign_open(sm, keys[i]) is not None
        except Exception:
            ok = False
        assert got[i - lo] == ok
