"""The thread pool of the O(n) crypto batches (crdt_mls.mls.parallel) and its users.

Results must not depend on the number of threads (same bytes for the same rng as the
serial loop), errors must surface as the same typed exceptions, for the item the serial
loop would report first.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_mls.errors import DecodeError, InvalidArgument, ProposalError, ProtocolError, SignatureError
from crdt_mls.mls import parallel
from crdt_mls.mls.group import Group
from crdt_mls.mls.messages import KeyPackage, LeafNode, MLSMessage, PublicMessage
from crdt_mls.mls.ratchet_tree import RatchetTree
from crdt_mls.mls.suites import get_cipher_suite
from crdt_mls.mls.welcome import make_key_package, verify_key_package, verify_key_package_signatures

WORKER_COUNTS = (1, 2, 3, 4)


def det_rng(seed: str) -> Callable[[int], bytes]:
    counter = [0]

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha256(f"{seed}/{counter[0]}".encode()).digest()
        return out[:n]

    return rng


@pytest.fixture
def workers() -> Iterator[Callable[[int], None]]:
    before = parallel.workers()
    yield parallel.set_workers
    parallel.set_workers(before)


# ------------------------------------------------------------------ map_ranges


@pytest.mark.parametrize("n", [0, 1, 2, 7, 31, 32, 33, 100, 1000])
def test_map_ranges_equals_serial(workers: Callable[[int], None], n: int) -> None:
    def fn(lo: int, hi: int) -> list[int]:
        return [i * i for i in range(lo, hi)]

    for w in WORKER_COUNTS:
        workers(w)
        assert parallel.map_ranges(fn, n, min_items=2) == [i * i for i in range(n)]


def test_map_ranges_uses_other_threads(workers: Callable[[int], None]) -> None:
    workers(3)
    seen: set[int] = set()
    gate = threading.Barrier(3, timeout=10)

    def fn(lo: int, hi: int) -> list[int]:
        seen.add(threading.get_ident())
        if lo == 0 or len(seen) < 3:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()  # three threads hold ranges at the same time
        return list(range(lo, hi))

    assert parallel.map_ranges(fn, 64, min_items=2) == list(range(64))
    assert len(seen) == 3


def test_small_batches_and_one_worker_stay_in_the_calling_thread(workers: Callable[[int], None]) -> None:
    me = threading.get_ident()

    def fn(lo: int, hi: int) -> list[int]:
        assert threading.get_ident() == me
        return list(range(lo, hi))

    workers(4)
    assert parallel.map_ranges(fn, 10, min_items=11) == list(range(10))
    workers(1)
    assert parallel.map_ranges(fn, 1000, min_items=2) == list(range(1000))


def test_first_failing_range_wins(workers: Callable[[int], None]) -> None:
    def fn(lo: int, hi: int) -> list[int]:
        for i in range(lo, hi):
            if i in (37, 80, 95):
                raise SignatureError(f"item {i}")
        return list(range(lo, hi))

    for w in WORKER_COUNTS:
        workers(w)
        for _ in range(5):
            with pytest.raises(SignatureError, match="item 37"):
                parallel.map_ranges(fn, 100, min_items=2)


def test_nested_batches_do_not_deadlock(workers: Callable[[int], None]) -> None:
    workers(2)

    def inner(lo: int, hi: int) -> list[int]:
        return list(range(lo, hi))

    def outer(lo: int, hi: int) -> list[int]:
        return [sum(parallel.map_ranges(inner, i, min_items=2)) for i in range(lo, hi)]

    assert parallel.map_ranges(outer, 50, min_items=2) == [i * (i - 1) // 2 for i in range(50)]


def test_set_workers_validates() -> None:
    before = parallel.workers()
    try:
        for bad in (0, -1):
            with pytest.raises(InvalidArgument):
                parallel.set_workers(bad)
        parallel.set_workers(None)
        assert parallel.workers() == parallel.default_workers()
        assert 1 <= parallel.default_workers() <= parallel.MAX_DEFAULT_WORKERS
    finally:
        parallel.set_workers(before)


# ------------------------------------------------------------------ HPKE batches


@pytest.mark.parametrize("suite_id", [1, 2, 3])
def test_encrypt_with_label_many_equals_serial(workers: Callable[[int], None], suite_id: int) -> None:
    suite = get_cipher_suite(suite_id)
    keys = [suite.generate_hpke_key_pair(det_rng(f"k{i}")) for i in range(70)]
    jobs = [(pub, bytes([i]) * (i % 40)) for i, (_priv, pub) in enumerate(keys)]
    rng = det_rng("serial")
    serial = [suite.encrypt_with_label(pk, "UpdatePathNode", b"ctx", pt, rng) for pk, pt in jobs]
    for w in WORKER_COUNTS:
        workers(w)
        assert suite.encrypt_with_label_many(jobs, "UpdatePathNode", b"ctx", det_rng("serial")) == serial
    for (priv, _pub), (_pk, pt), (enc, ct) in zip(keys, jobs, serial, strict=True):
        assert suite.decrypt_with_label(priv, "UpdatePathNode", b"ctx", enc, ct) == pt


def test_seal_batch_errors_are_typed_and_name_the_first_bad_key(workers: Callable[[int], None]) -> None:
    suite = get_cipher_suite(1)
    good = [suite.generate_hpke_key_pair(det_rng(f"g{i}"))[1] for i in range(80)]
    for w in WORKER_COUNTS:
        workers(w)
        short = [*good[:50], good[50][:31], *good[51:]]
        with pytest.raises(DecodeError, match="31 bytes"):
            suite.encrypt_with_label_many([(pk, b"x") for pk in short], "L", b"", det_rng("a"))
        low_order = [*good[:60], bytes(32), good[61][:30], *good[62:]]  # the all-zero point first
        with pytest.raises(DecodeError, match="low-order"):
            suite.encrypt_with_label_many([(pk, b"x") for pk in low_order], "L", b"", det_rng("a"))


# ------------------------------------------------------------------ signature batches


def test_verify_with_label_many_equals_serial(workers: Callable[[int], None]) -> None:
    for suite_id in (1, 2, 4):
        suite = get_cipher_suite(suite_id)
        sk, pk = suite.generate_signature_key_pair(det_rng(f"s{suite_id}"))
        jobs = []
        for i in range(40):
            content = bytes([i]) * i
            sig = suite.sign_with_label(sk, "LeafNodeTBS", content)
            if i in (3, 17, 39):
                sig = bytes([sig[0] ^ 1]) + sig[1:]
            if i == 20:
                jobs.append((pk[:-1], "LeafNodeTBS", content, sig))  # malformed key: False, not an exception
                continue
            jobs.append((pk, "LeafNodeTBS", content, sig))
        want = [i not in (3, 17, 20, 39) for i in range(40)]
        for w in WORKER_COUNTS:
            workers(w)
            assert suite.verify_with_label_many(jobs) == want


def _big_tree_group(n: int) -> tuple[Group, bytes, bytes, list[object]]:
    rng = det_rng(f"tree{n}")
    creator = Group.create(1, b"m0", group_id=b"g", rng=rng)
    kps = [make_key_package(1, b"m%d" % i, rng=rng) for i in range(1, n)]
    _, welcome, g = creator.commit(add=[kp.public_message() for kp in kps], ratchet_tree_in_welcome=False, rng=rng)
    assert welcome is not None
    return g, welcome, g.tree.encode(), kps


def test_failing_leaf_signature_in_a_batch_names_the_right_leaf(workers: Callable[[int], None]) -> None:
    g, _welcome, tree_bytes, _kps = _big_tree_group(48)
    tree = RatchetTree.decode(g.suite, tree_bytes)
    for bad_leaf in (5, 33, 47):
        nodes = list(tree.nodes())
        leaf = nodes[2 * bad_leaf]
        assert isinstance(leaf, LeafNode)
        nodes[2 * bad_leaf] = replace(leaf, signature=bytes([leaf.signature[0] ^ 1]) + leaf.signature[1:])
        broken = RatchetTree(g.suite, nodes)
        for w in WORKER_COUNTS:
            workers(w)
            tree.verify_leaf_signatures(b"g")
            with pytest.raises(SignatureError, match=f"leaf {bad_leaf} "):
                broken.verify_leaf_signatures(b"g")


def test_join_is_the_same_with_and_without_threads(workers: Callable[[int], None]) -> None:
    _g, welcome, tree_bytes, kps = _big_tree_group(40)
    states = []
    for w in WORKER_COUNTS:
        workers(w)
        states.append(Group.join_from_welcome(welcome, kps[20], ratchet_tree=tree_bytes).to_bytes())  # type: ignore[arg-type]
    assert len(set(states)) == 1


# ------------------------------------------------------------------ KeyPackage batches


def test_key_package_batch_marks_only_valid_key_packages() -> None:
    rng = det_rng("kp")
    kps = [make_key_package(1, b"x%d" % i, rng=rng).key_package for i in range(30)]
    decoded = [MLSMessage.from_bytes(MLSMessage(kp).to_bytes()).body for kp in kps]
    assert all(isinstance(k, KeyPackage) and not k._signatures_ok for k in decoded)
    bad_sig = replace(kps[7], signature=bytes([kps[7].signature[0] ^ 1]) + kps[7].signature[1:])
    leaf = kps[9].leaf_node
    bad_leaf = replace(kps[9], leaf_node=replace(leaf, signature=bytes([leaf.signature[0] ^ 1]) + leaf.signature[1:]))
    batch = [*decoded[:7], bad_sig, decoded[8], bad_leaf, *decoded[10:]]
    assert verify_key_package_signatures(batch) == 28  # type: ignore[arg-type]
    assert [k._signatures_ok for k in batch] == [i not in (7, 9) for i in range(30)]  # type: ignore[union-attr]
    with pytest.raises(SignatureError, match="KeyPackage signature"):
        verify_key_package(bad_sig)
    with pytest.raises(SignatureError, match="signature"):  # the leaf is inside the KeyPackageTBS too
        verify_key_package(bad_leaf)
    # marking skips only the signatures: the other checks still run
    same_keys = replace(decoded[3], init_key=decoded[3].leaf_node.encryption_key)  # type: ignore[union-attr]
    object.__setattr__(same_keys, "_signatures_ok", True)
    with pytest.raises(ProposalError, match="init_key"):
        verify_key_package(same_keys)


def test_commit_with_a_bad_key_package_in_a_large_batch_is_rejected(workers: Callable[[int], None]) -> None:
    rng = det_rng("big")
    kps = [make_key_package(1, b"y%d" % i, rng=rng).key_package for i in range(40)]
    bad = replace(kps[25], signature=bytes([kps[25].signature[0] ^ 1]) + kps[25].signature[1:])
    for w in WORKER_COUNTS:
        workers(w)
        g = Group.create(1, b"c", rng=rng)
        with pytest.raises(SignatureError, match="KeyPackage signature"):
            g.commit(add=[*kps[:25], bad, *kps[26:]], rng=rng)


def test_commits_are_byte_identical_for_any_number_of_threads(workers: Callable[[int], None]) -> None:
    outputs = []
    for w in WORKER_COUNTS:
        workers(w)
        rng = det_rng("same")
        creator = Group.create(1, b"m0", group_id=b"g", rng=rng)
        kps = [make_key_package(1, b"m%d" % i, rng=rng) for i in range(1, 70)]
        msg, welcome, g = creator.commit(add=[kp.public_message() for kp in kps], rng=rng)
        sparse, _, g2 = g.commit(rng=rng)  # encrypts to ~69 leaves
        body = MLSMessage.from_bytes(sparse).body
        assert isinstance(body, PublicMessage)
        outputs.append((msg, welcome, sparse, g2.to_bytes()))
        joined = Group.join_from_welcome(welcome, kps[-1], ratchet_tree=None)  # type: ignore[arg-type]
        after, _ = joined.process(sparse)
        assert after.epoch_authenticator == g2.epoch_authenticator
    assert all(o == outputs[0] for o in outputs)


def test_first_malformed_key_package_in_a_batch_is_the_one_reported(workers: Callable[[int], None]) -> None:
    rng = det_rng("parse")
    pubs = [make_key_package(1, b"z%d" % i, rng=rng).public_message() for i in range(40)]
    creator = Group.create(1, b"c", rng=rng)
    not_a_key_package = creator.group_info()
    truncated = pubs[13][:-3]
    for w in WORKER_COUNTS:
        workers(w)
        with pytest.raises(DecodeError):
            creator.commit(add=[*pubs[:13], truncated, *pubs[14:30], not_a_key_package, *pubs[31:]], rng=rng)
        with pytest.raises(ProtocolError, match="not a KeyPackage"):
            creator.commit(add=[*pubs[:5], not_a_key_package, *pubs[6:13], truncated, *pubs[14:]], rng=rng)
        with pytest.raises(InvalidArgument):
            creator.commit(add=[*pubs[:20], 42, *pubs[21:]], rng=rng)  # type: ignore[list-item]


def test_list_based_batches_equal_the_job_based_ones(workers: Callable[[int], None]) -> None:
    suite = get_cipher_suite(1)
    sk, pk = suite.generate_signature_key_pair(det_rng("lists"))
    contents = [bytes([i]) * (i * 7) for i in range(50)]
    sigs = [suite.sign_with_label(sk, "LeafNodeTBS", c) for c in contents]
    sigs[9] = sigs[10]
    keys = [pk] * 50
    keys[30] = pk[:31]
    for w in WORKER_COUNTS:
        workers(w)
        got = suite.verify_labeled_many(keys, "LeafNodeTBS", contents, sigs)
        assert got == [i not in (9, 30) for i in range(50)]
        assert got == suite.verify_with_label_many(
            [(k, "LeafNodeTBS", c, s) for k, c, s in zip(keys, contents, sigs, strict=True)]
        )
    with pytest.raises(InvalidArgument):
        suite.verify_labeled_many(keys, "LeafNodeTBS", contents[:-1], sigs)
    pubs = [suite.generate_hpke_key_pair(det_rng(f"p{i}"))[1] for i in range(40)]
    pts = [bytes([i]) for i in range(40)]
    want = suite.encrypt_with_label_many(list(zip(pubs, pts, strict=True)), "L", b"c", det_rng("s"))
    got2 = suite.encrypt_with_label_many_then(pubs, pts, "L", b"c", lambda i, e, c: (i, e, c), det_rng("s"))
    assert [(e, c) for _i, e, c in got2] == want and [i for i, _e, _c in got2] == list(range(40))
    with pytest.raises(InvalidArgument):
        suite.encrypt_with_label_many_then(pubs, pts[:-1], "L", b"c", lambda i, e, c: c, det_rng("s"))


def test_welcome_message_bytes_equal_the_encoded_welcome(workers: Callable[[int], None]) -> None:
    """Group._commit encodes each EncryptedGroupSecrets as it is sealed (no objects per member):
    the same bytes as building the Welcome and encoding it."""
    from crdt_mls.mls.welcome import build_welcome, build_welcome_message

    rng = det_rng("wm")
    g = Group.create(1, b"c", group_id=b"g", rng=rng)
    kps = [make_key_package(1, b"w%d" % i, rng=rng).key_package for i in range(45)]
    gi = g._signed_group_info(False, external_pub=True)
    recipients = [(kp, (bytes([i]) * 32 if i % 7 == 0 else None)) for i, kp in enumerate(kps)]
    for w in WORKER_COUNTS:
        workers(w)
        js, ps = b"j" * 32, b"p" * 32
        want = MLSMessage(build_welcome(g.suite, gi, js, ps, (), recipients, det_rng("seal"))).to_bytes()
        assert build_welcome_message(g.suite, gi, js, ps, (), recipients, det_rng("seal")) == want


def test_received_add_commit_checks_key_package_signatures_in_one_batch(
    workers: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member processing an Add commit checks the KeyPackage signatures in one parallel
    batch before validating the proposals, and still rejects a bad one (typed error, state
    unchanged)."""
    import crdt_mls.mls.proposals as proposals_mod
    from crdt_mls.mls.suites import CipherSuite

    workers(2)
    rng = det_rng("recv-adds")
    creator = Group.create(1, b"c", group_id=b"g", rng=rng)
    member = make_key_package(1, b"m", rng=rng)
    _, welcome, creator = creator.commit(add=[member.public_message()], rng=rng)
    assert welcome is not None
    receiver = Group.join_from_welcome(welcome, member, ratchet_tree=creator.tree.encode())
    kps = [make_key_package(1, b"a%d" % i, rng=rng).public_message() for i in range(40)]
    msg, _, after = creator.commit(add=kps, rng=rng)
    sizes: list[int] = []
    original = CipherSuite.verify_labeled_many

    def counting(
        self: CipherSuite, keys: list[bytes], label: str, contents: list[bytes], sigs: list[bytes]
    ) -> list[bool]:
        sizes.append(len(keys))
        return original(self, keys, label, contents, sigs)

    monkeypatch.setattr(CipherSuite, "verify_labeled_many", counting)
    got, _ = receiver.process(msg)
    assert got.epoch_authenticator == after.epoch_authenticator
    assert sizes[:2] == [40, 40]  # KeyPackageTBS and LeafNodeTBS of every Add, one batch each
    monkeypatch.setattr(CipherSuite, "verify_labeled_many", original)

    # a committer that skips the checks sends a KeyPackage with a broken signature
    bad_kp = MLSMessage.from_bytes(kps[17]).body
    assert isinstance(bad_kp, KeyPackage)
    bad_kp = replace(bad_kp, signature=bytes([bad_kp.signature[0] ^ 1]) + bad_kp.signature[1:])
    monkeypatch.setattr(proposals_mod, "verify_key_package", lambda *a, **k: None)
    bad_msg, _, _ = creator.commit(add=[*kps[:17], MLSMessage(bad_kp).to_bytes(), *kps[18:]], rng=rng)
    monkeypatch.undo()
    before = receiver.to_bytes()
    with pytest.raises(SignatureError, match="KeyPackage signature"):
        receiver.process(bad_msg)
    assert receiver.to_bytes() == before


@given(st.integers(0, 100_000), st.integers(1, 8), st.integers(1, 64))
def test_guided_bounds_cover_the_batch_with_shrinking_ranges(n: int, workers: int, min_chunk: int) -> None:
    b = parallel.guided_bounds(n, workers, min_chunk)
    assert b[0] == 0 and b[-1] == n
    sizes = [hi - lo for lo, hi in itertools.pairwise(b)]
    assert all(s > 0 for s in sizes)
    assert all(s >= min_chunk for s in sizes[:-1])  # only the last range may be short
    assert sizes[:-1] == sorted(sizes[:-1], reverse=True)  # large ranges first
