"""Benchmarks of crdt-mls against mls-rs (issue 5; docs/benchmarks.md).

``python -m benchmarks --help`` lists the scenarios; ``python -m benchmarks.primitives``
measures the cipher-suite primitives.

Results (``--json``): ``{"results": [records]}``, one record per scenario, group size and
implementation: ``{"scenario", "members", "impl", "median_s", "min_s", "max_s",
"peak_rss_bytes", "samples", "median_cpu_s", "min_cpu_s", "max_cpu_s"}`` (replica scenarios
add ``bytes_written``).  ``median_s``/``min_s``/``max_s`` are **wall-clock** seconds of the
timed calls (``time.perf_counter``: what the caller waits for; the goals of issue 5 are
judged on them), ``*_cpu_s`` the process CPU seconds of the same calls (``time.process_time``,
all threads, so above the wall time where the work runs on both cores, and robust against
other processes competing for the cores).  Both implementations are measured the same way.
Result files written before 2026-11-30 have ``median_s`` etc. in CPU
seconds and the wall median as ``median_wall_s``; `benchmarks.plot.wall_cpu` reads both.
"""
