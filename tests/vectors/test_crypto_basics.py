"""crypto-basics.json: every entry and every check (RFC 9420 sections 5.1, 5.2, 9.1)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from crdt_mls.errors import DecryptionError, SignatureError
from crdt_mls.mls.suites import get_cipher_suite
from tests.vectors.loader import h, ids, load

ENTRIES = load("crypto-basics")
PARAMS = pytest.mark.parametrize("e", ENTRIES, ids=ids(ENTRIES))


def _seeded(seed: bytes) -> Callable[[int], bytes]:
    """Deterministic rng for reproducible round-trips (not cryptographically meaningful)."""
    counter = [0]

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha512(seed + counter[0].to_bytes(4, "big")).digest()
        return out[:n]

    return rng


def test_all_suites_present() -> None:
    assert sorted(e["cipher_suite"] for e in ENTRIES) == [1, 2, 3, 4, 5, 6, 7]


@PARAMS
def test_ref_hash(e: dict[str, Any]) -> None:
    cs = get_cipher_suite(e["cipher_suite"])
    v = e["ref_hash"]
    # The vector's label is used verbatim (RefHash takes the full label, RFC 9420 section 5.2).
    assert cs.ref_hash_raw(v["label"].encode(), h(v["value"])) == h(v["out"])
    assert cs.ref_hash("MLS 1.0 " + v["label"], h(v["value"])) == cs.ref_hash(v["label"], h(v["value"]))


@PARAMS
def test_expand_with_label(e: dict[str, Any]) -> None:
    cs = get_cipher_suite(e["cipher_suite"])
    v = e["expand_with_label"]
    assert cs.expand_with_label(h(v["secret"]), v["label"], h(v["context"]), v["length"]) == h(v["out"])


@PARAMS
def test_derive_secret(e: dict[str, Any]) -> None:
    cs = get_cipher_suite(e["cipher_suite"])
    v = e["derive_secret"]
    out = cs.derive_secret(h(v["secret"]), v["label"])
    assert out == h(v["out"])
    assert len(out) == cs.hash_length


@PARAMS
def test_derive_tree_secret(e: dict[str, Any]) -> None:
    cs = get_cipher_suite(e["cipher_suite"])
    v = e["derive_tree_secret"]
    assert cs.derive_tree_secret(h(v["secret"]), v["label"], v["generation"], v["length"]) == h(v["out"])


@PARAMS
def test_sign_with_label(e: dict[str, Any]) -> None:
    cs = get_cipher_suite(e["cipher_suite"])
    v = e["sign_with_label"]
    priv, pub, content, sig = h(v["priv"]), h(v["pub"]), h(v["content"]), h(v["signature"])
    assert cs.signature_public_key(priv) == pub
    # The given signature verifies ...
    cs.verify_with_label(pub, v["label"], content, sig)
    # ... and not under another label or content.
    with pytest.raises(SignatureError):
        cs.verify_with_label(pub, v["label"] + "x", content, sig)
    with pytest.raises(SignatureError):
        cs.verify_with_label(pub, v["label"], content + b"\x00", sig)
    # Our own signature round-trips.
    ours = cs.sign_with_label(priv, v["label"], content)
    cs.verify_with_label(pub, v["label"], content, ours)


@PARAMS
def test_encrypt_with_label(e: dict[str, Any]) -> None:
    cs = get_cipher_suite(e["cipher_suite"])
    v = e["encrypt_with_label"]
    priv, pub, ctx, pt = h(v["priv"]), h(v["pub"]), h(v["context"]), h(v["plaintext"])
    kem_output, ct = h(v["kem_output"]), h(v["ciphertext"])
    assert cs.hpke_public_key(priv) == pub
    assert len(kem_output) == cs.kem_output_length
    # The given ciphertext decrypts ...
    assert cs.decrypt_with_label(priv, v["label"], ctx, kem_output, ct) == pt
    with pytest.raises(DecryptionError):
        cs.decrypt_with_label(priv, v["label"], ctx + b"\x00", kem_output, ct)
    # ... and our own seal/open round-trips (deterministic rng).
    ko2, ct2 = cs.encrypt_with_label(pub, v["label"], ctx, pt, rng=_seeded(b"round-trip"))
    assert len(ko2) == cs.kem_output_length
    assert cs.decrypt_with_label(priv, v["label"], ctx, ko2, ct2) == pt
