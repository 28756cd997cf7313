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


def test_base_rule_encoding_can_fail() -> None:
    # "keep the first changing parent's value" (no blank on conflict): z3 finds a conflict kept
    import z3

    base = z3.BitVec("base", 8)
    v1, v2 = z3.BitVecs("v1 v2", 8)
    c1, c2 = z3.Bools("c1 c2")

    def keep_first(vals: list[z3.BitVecRef], changed: list[z3.BoolRef]) -> z3.BitVecRef:
        out = base
        for v, c in reversed(list(zip(vals, changed, strict=True))):
            out = z3.If(c, v, out)
        return out

    r = keep_first([v1, v2], [c1, c2])
    ok, msg = rz._prove(z3.Implies(z3.And(c1, c2, v1 != v2), r == 0))
    assert not ok and msg.startswith("counterexample")
    # and the real rule is symmetric while keep-first is not
    ok, _ = rz._prove(keep_first([v1, v2], [c1, c2]) == keep_first([v2, v1], [c2, c1]))
    assert not ok
    ok, msg = rz._prove(rz.node_rule(base, [v1, v2], [c1, c2]) == rz.node_rule(base, [v2, v1], [c2, c1]))
    assert ok, msg
