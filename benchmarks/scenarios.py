"""The group scenarios of issue 5, run the same way for crdt-mls and mls-rs.

One run builds one group of ``n`` members and walks through the stages below, timing
what the requested scenarios name; setup steps that are not measured are not timed.

* ``create_add_all`` -- member 0 creates the group and commits Adds of members 1..n-1
  (ratchet tree sent outside the Welcome).
* ``join`` -- a member joins from that Welcome with the tree given separately (every join
  done by the run is a sample: the receiver, leaf n-1, and the steady-state committers).
* ``sparse_commit_create/process`` -- member 0's empty commit (with UpdatePath) right after
  the add-all: every copath node is blank, so the path secrets are encrypted to ~n leaves;
  processed by leaf n-1.
* ``steady_commit_create/process`` -- after 8 earlier commits by the members at leaves
  2^(L-1), ..., 2^(L-8) (2^L = tree width, the roots of member 0's 8 largest copath
  subtrees), member 0's empty commit; the remaining blank copath nodes cover < 2^(L-8) leaves.
* ``add_one`` / ``remove_one`` -- member 0 commits one Add (no path) / one Remove (with
  path; leaves 1, 2, 3, whose paths overlap member 0's) in the steady state; the
  ``*_process`` records are leaf n-1 processing those commits.
* ``app_message`` -- member 0 protects 100 bytes, leaf n-1 unprotects them (one sample is both).
* ``full_commit_create/process`` (crdt-mls only) -- an empty commit in a tree with no blank
  node (see `OursImpl.full_tree_pair`); mls-rs offers no way to reach a full tree other
  than n commits, so it is not run for the peer.
* ``merge`` (crdt-mls only) -- merge_2 / merge_8, see `benchmarks.merge_bench`.
* ``replica_rss`` -- a fresh process that loads the receiver's saved state: peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from benchmarks.harness import OURS, Progress, Record, Timer, log, record

GROUP_SCENARIOS = (
    "create_add_all",
    "join",
    "sparse_commit",
    "steady_commit",
    "add_one",
    "remove_one",
    "app_message",
    "full_commit",
    "replica_rss",
    "merge",
)

APP_DATA = bytes(range(100))


class Impl(Protocol):
    name: str
    n: int
    state: dict[int, Any]

    def prepare(self, progress: Progress) -> None: ...
    def add_all(self) -> None: ...
    def join(self, leaf: int) -> None: ...
    def commit(self, leaf: int) -> Any: ...
    def process(self, leaf: int, msg: Any) -> None: ...
    def add_one(self, leaf: int) -> Any: ...
    def remove(self, leaf: int, target: int) -> Any: ...
    def app_message(self, sender: int, receiver: int, data: bytes) -> None: ...
    def check_agree(self, a: int, b: int) -> bool: ...


def reps_for(n: int) -> int:
    """Samples of each path operation at group size ``n``."""
    return 7 if n <= 1000 else 5 if n <= 10_000 else 3


def steady_committers(n: int) -> list[int]:
    """Leaves 2^(L-1) .. 2^(L-8) that exist and are neither 0..3 nor the receiver n-1."""
    width_log = max(1, (n - 1).bit_length())
    out = [1 << (width_log - k) for k in range(1, 9) if width_log - k >= 0]
    return [c for c in out if 4 <= c < n - 1]


def run_group(
    impl: Impl,
    wanted: Iterable[str],
    emit: Callable[[Record], None],
    *,
    app_reps: int = 200,
    full_reps: int = 20,
    force_progress: bool = False,
    reps: int | None = None,
) -> None:
    """Run the requested group scenarios (names from `GROUP_SCENARIOS`) on ``impl``."""
    want = set(wanted)
    unknown = want - set(GROUP_SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenarios: {sorted(unknown)}")
    n = impl.n
    if n < 8:
        raise ValueError("use at least 8 members")
    tag = f"{impl.name} n={n}"
    reps = reps or reps_for(n)
    receiver = n - 1
    if "merge" in want:
        want.add("steady_commit")
    committers = steady_committers(n) if "steady_commit" in want else []

    def bar(what: str, total: int) -> Progress:
        return Progress(f"{tag} {what}", total, force=force_progress)

    p = bar("setup", n + 16)
    impl.prepare(p)
    p.done()

    # create_add_all
    add_reps = min(3, reps) if n <= 1000 and "create_add_all" in want else 1
    t = Timer()
    p = bar("create_add_all", add_reps)
    for i in range(add_reps):
        with t:
            impl.add_all()
        p.update(i + 1)
    p.done()
    if "create_add_all" in want:
        emit(record("create_add_all", n, impl.name, t))
    if want <= {"create_add_all"}:
        return

    # joins
    joiners = [receiver, *committers]
    t = Timer()
    p = bar("join", len(joiners))
    for i, leaf in enumerate(joiners):
        with t:
            impl.join(leaf)
        p.update(i + 1)
    p.done()
    if "join" in want:
        emit(record("join", n, impl.name, t))
    if not impl.check_agree(0, receiver):
        raise AssertionError(f"{tag}: joiner disagrees with the creator")

    def broadcast(sender: int, msg: Any, timer: Timer | None) -> None:
        for leaf in list(impl.state):
            if leaf == sender:
                continue
            if leaf == receiver and timer is not None:
                with timer:
                    impl.process(leaf, msg)
            else:
                impl.process(leaf, msg)

    def commits(name: str, count: int, make: Callable[[int], Any]) -> None:
        tc, tp = Timer(), Timer()
        pb = bar(name, count)
        for i in range(count):
            with tc:
                msg = make(i)
            broadcast(0, msg, tp)
            pb.update(i + 1)
        pb.done()
        if not impl.check_agree(0, receiver):
            raise AssertionError(f"{tag} {name}: members disagree after the commits")
        create_name, process_name = (
            (name, f"{name}_process") if name in ("add_one", "remove_one") else (f"{name}_create", f"{name}_process")
        )
        emit(record(create_name, n, impl.name, tc))
        emit(record(process_name, n, impl.name, tp))

    if "sparse_commit" in want:
        commits("sparse_commit", reps, lambda i: impl.commit(0))

    if "steady_commit" in want:
        p = bar("steady setup (8 commits)", len(committers))
        for i, c in enumerate(committers):
            broadcast(c, impl.commit(c), None)
            p.update(i + 1)
        p.done()
        if "merge" in want and impl.name == OURS:
            from benchmarks.merge_bench import run_merge

            run_merge(impl.state, committers, receiver, n, reps, emit)
        for c in committers:
            del impl.state[c]
        commits("steady_commit", reps, lambda i: impl.commit(0))

    if "app_message" in want:
        t = Timer()
        for _ in range(app_reps):
            with t:
                impl.app_message(0, receiver, APP_DATA)
        emit(record("app_message", n, impl.name, t))

    if "add_one" in want:
        commits("add_one", reps, lambda i: impl.add_one(0))

    if "remove_one" in want:
        commits("remove_one", min(3, reps), lambda i: impl.remove(0, i + 1))

    if "full_commit" in want and impl.name == OURS:
        run_full_commit(impl, receiver, full_reps, emit)

    if "replica_rss" in want:
        run_replica_rss(impl, receiver, emit)


def run_full_commit(impl: Any, receiver: int, reps: int, emit: Callable[[Record], None]) -> None:
    """Empty commit + processing in a tree with no blank node (crdt-mls only)."""
    committer_state, receiver_state = impl.full_tree_pair(0, receiver)
    tc, tp = Timer(), Timer()
    for _ in range(reps):
        with tc:
            msg, _, after = committer_state.commit()
        with tp:
            got, _ = receiver_state.process(msg)
        if got.export_secret(b"bench", b"", 16) != after.export_secret(b"bench", b"", 16):
            raise AssertionError("full-tree commit: receiver disagrees")
    emit(record("full_commit_create", impl.n, impl.name, tc))
    emit(record("full_commit_process", impl.n, impl.name, tp))


def run_replica_rss(impl: Any, receiver: int, emit: Callable[[Record], None]) -> None:
    """Peak RSS of a fresh process that loads one member's saved group state."""
    if impl.name != OURS:
        return
    data = impl.state_bytes(receiver)
    with tempfile.NamedTemporaryFile(suffix=".state", delete=False) as f:
        f.write(data)
        path = f.name
    try:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.rss_child", path],
            check=True,
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
    finally:
        os.unlink(path)
    res = json.loads(out.stdout)
    emit(record("replica_rss", impl.n, impl.name, [res["load_s"]], rss=res["peak_rss_bytes"]))
    log(
        f"  replica_rss: state {len(data)} bytes, baseline {res['baseline_rss_bytes']} B, peak {res['peak_rss_bytes']} B"
    )
