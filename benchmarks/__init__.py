"""Benchmarks of crdt-mls against mls-rs (issue 5; docs/benchmarks.md).

``python -m benchmarks --help`` lists the scenarios; ``python -m benchmarks.primitives``
measures the cipher-suite primitives.
"""
