"""Micro-benchmark of the cipher-suite primitives (crdt_mls.mls.suites).

Prints the median time per operation in microseconds, per suite:

    python -m benchmarks.primitives            # suite 1 (from the repository root)
    python -m benchmarks.primitives 1 2 7      # several suites
    python -m benchmarks.primitives all

Each figure is the median (and the minimum) over ``ROUNDS`` batches of ``batch`` calls
(batch chosen so a batch takes roughly 20 ms).  On a loaded machine trust the minimum.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

from crdt_mls.mls.suites import SUPPORTED_SUITES, get_cipher_suite

ROUNDS = 15


def timings_us(fn: Callable[[], object]) -> tuple[float, float]:
    """(median, minimum) microseconds per call of ``fn`` over ``ROUNDS`` batches."""
    fn()
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < 0.02:
        fn()
        n += 1
    batch = max(1, n)
    samples = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter_ns() - t0) / batch / 1000)
    return statistics.median(samples), min(samples)


def bench_suite(suite_id: int) -> list[tuple[str, tuple[float, float]]]:
    cs = get_cipher_suite(suite_id)
    msg = os.urandom(100)
    secret = os.urandom(cs.hash_length)
    key, nonce = os.urandom(cs.aead_key_length), os.urandom(cs.aead_nonce_length)
    ct = cs.aead_seal(key, nonce, b"", msg)
    ssk, spk = cs.generate_signature_key_pair()
    sig = cs.sign(ssk, msg)
    lsig = cs.sign_with_label(ssk, "LeafNodeTBS", msg)
    hsk, hpk = cs.generate_hpke_key_pair()
    enc, hct = cs.hpke_seal(hpk, b"info", b"", secret)
    lenc, lct = cs.encrypt_with_label(hpk, "UpdatePathNode", b"ctx", secret)
    ikm = os.urandom(cs.hash_length)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("hash(100B)", lambda: cs.hash(msg)),
        ("mac(100B)", lambda: cs.mac(key, msg)),
        ("kdf_extract", lambda: cs.kdf_extract(secret, secret)),
        ("expand_with_label(Nh)", lambda: cs.expand_with_label(secret, "key", b"", cs.hash_length)),
        ("derive_secret", lambda: cs.derive_secret(secret, "path")),
        ("derive_tree_secret", lambda: cs.derive_tree_secret(secret, "key", 7, cs.aead_key_length)),
        ("ref_hash", lambda: cs.ref_hash("Proposal Reference", msg)),
        ("aead_seal(100B)", lambda: cs.aead_seal(key, nonce, b"", msg)),
        ("aead_open(100B)", lambda: cs.aead_open(key, nonce, b"", ct)),
        ("sign", lambda: cs.sign(ssk, msg)),
        ("verify", lambda: cs.verify(spk, msg, sig)),
        ("sign_with_label", lambda: cs.sign_with_label(ssk, "LeafNodeTBS", msg)),
        ("verify_with_label", lambda: cs.verify_with_label(spk, "LeafNodeTBS", msg, lsig)),
        ("hpke_seal", lambda: cs.hpke_seal(hpk, b"info", b"", secret)),
        ("hpke_open", lambda: cs.hpke_open(hsk, enc, b"info", b"", hct)),
        ("encrypt_with_label", lambda: cs.encrypt_with_label(hpk, "UpdatePathNode", b"ctx", secret)),
        ("decrypt_with_label", lambda: cs.decrypt_with_label(hsk, "UpdatePathNode", b"ctx", lenc, lct)),
        ("derive_key_pair", lambda: cs.derive_key_pair(ikm)),
        ("hpke_public_key(cached)", lambda: cs.hpke_public_key(hsk)),
        ("generate_signature_key_pair", lambda: cs.generate_signature_key_pair()),
    ]
    return [(name, timings_us(fn)) for name, fn in cases]


def main(argv: list[str]) -> None:
    if not argv:
        suites = [1]
    elif argv == ["all"]:
        suites = list(SUPPORTED_SUITES)
    else:
        suites = [int(a) for a in argv]
    for sid in suites:
        cs = get_cipher_suite(sid)
        print(f"suite {sid} {cs.name}")
        print(f"  {'operation':30s} {'median us':>10} {'min us':>10}")
        for name, (med, low) in bench_suite(sid):
            print(f"  {name:30s} {med:10.2f} {low:10.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
