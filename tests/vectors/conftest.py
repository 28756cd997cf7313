"""Conformance bookkeeping: which vector entries each test exercised, and the outcome.

Each vector test takes its entry either as a dict parameter (an element of a list returned by
`loader.load`) or as ``(name, index)`` parameters.  With ``--conformance-json PATH`` the run
writes, per vector file, how many entries had every one of their tests pass, so the README
table is computed, never typed by hand (``python -m tests.vectors.conformance``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.vectors import loader

_outcomes: dict[tuple[str, int], list[bool]] = defaultdict(list)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--conformance-json", default=None, help="write per-vector-file entry results to this path")


def _entry_keys(item: pytest.Item) -> list[tuple[str, int]]:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return []
    params: dict[str, Any] = callspec.params
    keys: list[tuple[str, int]] = []
    if isinstance(params.get("name"), str) and isinstance(params.get("index"), int):
        keys.append((params["name"], params["index"]))
    by_id = _index()
    for value in params.values():
        if isinstance(value, dict) and id(value) in by_id:
            keys.append(by_id[id(value)])
    return keys


_by_id: dict[int, tuple[str, int]] = {}


def _index() -> dict[int, tuple[str, int]]:
    if not _by_id:
        for name in loader.all_names():
            for i, entry in enumerate(loader.load(name)):
                _by_id[id(entry)] = (name, i)
    return _by_id


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and not report.passed):
        passed = report.passed and not hasattr(report, "wasxfail")
        for key in _entry_keys(item):
            _outcomes[key].append(passed)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--conformance-json")
    if not path:
        return
    table: dict[str, dict[str, Any]] = {}
    for name in loader.all_names():
        entries = loader.load(name)
        suites = sorted({e["cipher_suite"] for e in entries if "cipher_suite" in e})
        run = [i for i in range(len(entries)) if (name, i) in _outcomes]
        passed = [i for i in run if all(_outcomes[(name, i)])]
        table[name] = {"suites": suites, "total": len(entries), "run": len(run), "passed": len(passed)}
    Path(path).write_text(json.dumps(table, indent=1))
