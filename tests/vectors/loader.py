"""The one helper that loads the official MLS test vectors (copied, gzip-compressed, from
the mlswg/mls-implementations repository; provenance in data/SOURCE.md)."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


@cache
def _load(name: str) -> Any:
    path = DATA / f"{name}.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def load(name: str) -> list[dict[str, Any]]:
    """Entries of one vector file, e.g. ``load("tree-math")`` or ``load("interop-passive/commit")``."""
    data = _load(name)
    assert isinstance(data, list)
    return data


def all_names() -> list[str]:
    """Every vector file in the project, e.g. ``["crypto-basics", ..., "interop-passive/commit"]``."""
    top = sorted(p.name.removesuffix(".json.gz") for p in DATA.glob("*.json.gz"))
    sub = sorted(
        "interop-passive/" + p.name.removesuffix(".json.gz") for p in (DATA / "interop-passive").glob("*.json.gz")
    )
    return top + sub


def h(x: str | None) -> bytes:
    """Hex string of a vector field to bytes (``None`` stays an error)."""
    assert x is not None
    return bytes.fromhex(x)


def ids(entries: list[dict[str, Any]], prefix: str = "") -> list[str]:
    """pytest ids: index and cipher suite of each entry."""
    return [f"{prefix}{i}-cs{e.get('cipher_suite', 0)}" for i, e in enumerate(entries)]
