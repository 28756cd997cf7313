"""Runs the z3 proofs of proofs/rules_z3.py, one test per property, plus checks that the
encodings can fail (a weaker bound or a wrong rule yields a counterexample)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("z3", reason="z3-solver is needed (pip install z3-solver)")

_PATH = Path(__file__).resolve().parents[2] / "proofs" / "rules_z3.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("proofs_rules_z3", _PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


rz = _load()


@pytest.mark.parametrize("name", sorted(rz.CHECKS))
def test_property_is_proved(name: str) -> None:
    ok, msg = rz.CHECKS[name]()
    assert ok, msg


def test_removal_fixpoint_bound_is_tight_enough_to_matter() -> None:
    # with fewer rounds than rules.replay allows, some antitone function does not settle
    ok, msg = rz.check_removal_fixpoint(3, rounds=2)
    assert not ok and "does not settle" in msg


def test_keep_later_is_not_order_independent() -> None:
    # "keep the later write" (what rule 3 forbids) is not commutative: z3 finds a witness
    import z3  # type: ignore[import-untyped]

    a, b = z3.BitVecs("a b", 8)

    def keep_later(x: z3.BitVecRef, y: z3.BitVecRef) -> z3.BitVecRef:
        return z3.If(y == 0, x, y)

    ok, msg = rz._prove(keep_later(a, b) == keep_later(b, a))
    assert not ok and msg.startswith("counterexample")
