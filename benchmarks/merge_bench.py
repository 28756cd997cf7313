"""merge_2 / merge_8: not measured yet (see docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.harness import Record, log


def run_merge(n: int, emit: Callable[[Record], None], *, force_progress: bool = False) -> None:
    log(f"  merge_2 / merge_8 at n={n}: not run (no large-group merge driver yet)")
