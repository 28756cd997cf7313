"""Crypto floor of each scenario on ONE core: the primitive operations it cannot avoid, times
their cost on this machine (suite 1, `python -m benchmarks.primitives`, medians measured
2026-12-02: HPKE seal 61.5 us, open 46.6 us, Ed25519 verify 42.3 us; the issue's figures of
an earlier day were 52 / 36 / 38 us).  A lower bound for one core running the same protocol
steps, not a goal; the O(n) steps of crdt-mls run on both cores, so their wall time can be
below it."""

from __future__ import annotations

from collections.abc import Callable

HPKE_SEAL_S = 61.5e-6
HPKE_OPEN_S = 46.6e-6
VERIFY_S = 42.3e-6


def _log2_ceil(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _steady_resolution(n: int) -> int:
    # blank copath subtrees below the 8 largest filled ones hold 2^(L-8) - 1 leaves, plus 8 filled nodes
    return max(0, (1 << max(0, _log2_ceil(n) - 8)) - 1) + min(8, _log2_ceil(n))


FLOORS: dict[str, Callable[[int], float]] = {
    # n-1 KeyPackages: 2 signature checks each; one HPKE seal of GroupSecrets per joiner
    "create_add_all": lambda n: (n - 1) * (2 * VERIFY_S + HPKE_SEAL_S),
    # every leaf signature of the tree, the GroupInfo signature, one HPKE open
    "join": lambda n: n * VERIFY_S + VERIFY_S + HPKE_OPEN_S,
    "sparse_commit_create": lambda n: (n - 1) * HPKE_SEAL_S,
    "sparse_commit_process": lambda n: VERIFY_S + HPKE_OPEN_S,
    "steady_commit_create": lambda n: _steady_resolution(n) * HPKE_SEAL_S,
    "steady_commit_process": lambda n: VERIFY_S + HPKE_OPEN_S,
    "full_commit_create": lambda n: _log2_ceil(n) * HPKE_SEAL_S,
    "full_commit_process": lambda n: VERIFY_S + HPKE_OPEN_S,
    "add_one": lambda n: 2 * VERIFY_S + HPKE_SEAL_S,
    "add_one_process": lambda n: 3 * VERIFY_S,
    "remove_one": lambda n: _steady_resolution(n) * HPKE_SEAL_S,
    "remove_one_process": lambda n: VERIFY_S + HPKE_OPEN_S,
    "app_message": lambda n: VERIFY_S,
    "sync_10k": lambda n: n * VERIFY_S,
}


def floor_s(scenario: str, n: int) -> float | None:
    f = FLOORS.get(scenario)
    return None if f is None else f(n)
