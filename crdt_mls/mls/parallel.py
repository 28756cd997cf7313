"""A small thread pool for the O(n) crypto batches (HPKE seals, signature checks).

Only work that releases the GIL benefits: libsodium through PyNaCl (X25519
``crypto_scalarmult``, Ed25519 ``crypto_sign_open``) does, so a batch of n such operations
spread over the cores finishes in about n/cores of the time, with no processes and no
pickling.  A range function must hold the GIL as little as possible between those calls
(`crdt_mls.mls.sodium`): measured here, threads that also ran the HPKE key schedule (small
HMACs, which release and retake the GIL, and AES-GCM) between their X25519 calls gained
nothing over one thread, because every GIL hand-off between threads costs a wake-up.  So the
callers split a batch in three: inputs prepared in the calling thread, libsodium alone on
the threads, results finished in the calling thread.

Determinism: a batch function gets an index range and returns the results for exactly that
range; `map_ranges` concatenates them in index order, so the result is the same list as the
serial loop, whatever the number of threads.  Randomness is never drawn in a worker: callers
draw it in their own thread, in a fixed order, before the batch (e.g. one ephemeral seed per
HPKE seal).  An exception raised by a range is re-raised in the caller; when several ranges
fail, the one with the lowest index wins, so the error is the one the serial loop would
raise first.

Configuration: `set_workers(n)` (``1`` = no threads) or the environment variable
``CRDT_MLS_THREADS`` read at import; the default is the number of CPUs this process may
use, capped at `MAX_DEFAULT_WORKERS`.  Batches smaller than their caller's threshold
(`min_items`) run serially in the calling thread.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from crdt_mls.errors import InvalidArgument

__all__ = ["MAX_DEFAULT_WORKERS", "default_workers", "guided_bounds", "map_ranges", "set_workers", "workers"]

R = TypeVar("R")

#: Upper bound of the default worker count (more threads only add GIL contention).
MAX_DEFAULT_WORKERS = 4
#: The smallest range a batch is cut into (guided scheduling, `guided_bounds`): small enough
#: that the threads end a batch together (a 50k-member commit's 263 seals: 8 seals ~ 0.5 ms),
#: large enough that a range's setup cost does not count.
_MIN_RANGE = 8

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_local = threading.local()


def default_workers() -> int:
    """CPUs available to this process (``sched_getaffinity`` where it exists), capped."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_DEFAULT_WORKERS))


def _from_env() -> int:
    raw = os.environ.get("CRDT_MLS_THREADS", "").strip()
    if not raw:
        return default_workers()
    try:
        n = int(raw)
    except ValueError:
        return default_workers()
    return n if n >= 1 else default_workers()


_workers = _from_env()


def workers() -> int:
    """The number of threads a large batch uses (the caller's thread included)."""
    return _workers


def set_workers(n: int | None) -> None:
    """Use ``n`` threads for large batches (``1``: everything in the calling thread;
    None: the default).  Takes effect for the next batch."""
    global _workers
    if n is None:
        n = default_workers()
    if not isinstance(n, int) or n < 1:
        raise InvalidArgument(f"the number of worker threads must be a positive integer, not {n!r}")
    _workers = n


def _get_pool(size: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != size:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="crdt-mls")
            _pool_size = size
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _reset_after_fork() -> None:  # pragma: no cover - exercised only in forked children
    global _pool, _pool_size, _lock
    _pool = None
    _pool_size = 0
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def guided_bounds(n: int, workers: int, min_chunk: int = _MIN_RANGE) -> list[int]:
    """Range boundaries ``0 = b0 < b1 < ... = n`` for ``workers`` threads taking ranges in
    order (guided self-scheduling): each range is the remaining work over ``2 x workers``,
    at least ``min_chunk`` items, so the first ranges are large (few hand-offs) and the last
    ones small (the threads finish within a small range of each other)."""
    bounds = [0]
    done = 0
    while done < n:
        size = max(min_chunk, (n - done) // (2 * workers))
        done = min(n, done + size)
        bounds.append(done)
    return bounds


def map_ranges(fn: Callable[[int, int], list[R]], n: int, *, min_items: int) -> list[R]:
    """``fn(0, n)`` computed as ``fn(lo, hi)`` over consecutive ranges on the worker threads.

    ``fn(lo, hi)`` must return exactly ``hi - lo`` results for the items ``lo..hi-1`` and must
    not depend on which thread runs it.  Runs serially when ``n < min_items`` or only one
    worker is configured.  The caller's thread takes ranges too (from a shared counter, like
    the pool threads), so no thread idles while ranges are left.
    """
    w = _workers
    if w <= 1 or n < max(min_items, 2) or getattr(_local, "in_batch", False):
        return fn(0, n)  # nested batches run serially (no waiting on our own pool)
    bounds = guided_bounds(n, w)
    parts = len(bounds) - 1
    results: list[list[R] | None] = [None] * parts
    errors: list[BaseException | None] = [None] * parts
    counter = itertools.count()
    # ranges above the lowest failed one need not run (their result is discarded)
    stop = [parts]

    def run() -> None:
        _local.in_batch = True
        try:
            _run()
        finally:
            _local.in_batch = False

    def _run() -> None:
        while True:
            k = next(counter)  # atomic under the GIL
            if k >= stop[0]:
                return
            try:
                results[k] = fn(bounds[k], bounds[k + 1])
            except BaseException as e:
                errors[k] = e
                stop[0] = min(stop[0], k)

    pool = _get_pool(w - 1)
    futures = [pool.submit(run) for _ in range(w - 1)]
    run()
    for fut in futures:
        fut.result()
    out: list[R] = []
    for k in range(parts):
        err = errors[k]
        if err is not None:
            raise err
        chunk = results[k]
        if chunk is None:  # pragma: no cover - only ranges above a failed one are skipped
            raise AssertionError(f"range {k} of a batch was not computed")
        out.extend(chunk)
    if len(out) != n:  # pragma: no cover - a broken fn
        raise AssertionError(f"batch produced {len(out)} results for {n} items")
    return out
