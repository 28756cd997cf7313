"""z3 proofs of the order-independence of the merge rules' building blocks (proofs/README.md).

Each check states a property of a rule of docs/merge.md / design doc section 5 over a bounded
domain and asks z3 for a counterexample; ``unsat`` means the property holds on the whole
domain.  ``python3 proofs/rules_z3.py`` runs all and exits 1 on any failure;
tests/proofs/test_z3_rules.py runs each as a test.

1. blank on conflict (design 5.5): the node merge ``join(a, b) = a if a == b else blank`` is
   commutative, associative and idempotent, so "keep iff every head has the same write" does
   not depend on the order or grouping of the heads (a semilattice with blank as top).
2. merge init secret (design 5.7): the Extract input, parents sorted by CID and concatenated,
   is the same for every permutation of three parents.
3. seniority (design 5.3): (rank, key) ordering is a strict total order on distinct members,
   so in a mutual removal exactly one removal survives.
4. joiner collisions (design 5.6): adding up to three joiners in the deterministic order, each
   at its requested leaf or, if taken, the leftmost free leaf, never puts two members on one
   leaf, never takes an occupied leaf, and the first requester of a free leaf keeps it.
5. removal fixpoint (rules.replay): for every antitone "still effective" function on three
   candidate removals, the iteration with cycle detection ends in a fixpoint or a detected
   cycle within its bound (``len(candidates) + 2`` rounds).
6. the merged-tree node rule relative to a base (docs/merge.md 5 rules 2-3): over three
   parents, with "changed" flags consistent with the values (a value other than the base's is
   a change; an unchanged-looking value is a change only when it is blank, written and blanked
   again), the rule does not depend on the order of the parents, returns the base value, a
   parent's value or blank, keeps the value of a single changing parent, keeps a value every
   parent holds, blanks when two changing parents differ, and never returns a value that a
   changing parent does not hold.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable

import z3  # type: ignore[import-untyped]

BLANK = 0


def _prove(claim: z3.BoolRef) -> tuple[bool, str]:
    s = z3.Solver()
    s.add(z3.Not(claim))
    r = s.check()
    if r == z3.unsat:
        return True, "proved"
    if r == z3.sat:
        return False, f"counterexample: {s.model()}"
    return False, f"z3 returned {r}"


def check_join_semilattice() -> tuple[bool, str]:
    """Property 1: join is commutative, associative, idempotent over 8-bit node values."""

    def join(x: z3.BitVecRef, y: z3.BitVecRef) -> z3.BitVecRef:
        return z3.If(x == y, x, z3.BitVecVal(BLANK, 8))

    a, b, c = z3.BitVecs("a b c", 8)
    laws = z3.And(
        join(a, b) == join(b, a),
        join(join(a, b), c) == join(a, join(b, c)),
        join(a, a) == a,
    )
    # and the n-ary rule "keep iff all equal and non-blank" equals every fold order of join
    vals = (a, b, c)
    nary = z3.If(z3.And(a == b, b == c), a, z3.BitVecVal(BLANK, 8))
    folds = [join(join(p[0], p[1]), p[2]) == nary for p in itertools.permutations(vals)]
    return _prove(z3.And(laws, *folds))


def node_rule(base: z3.BitVecRef, vals: list[z3.BitVecRef], changed: list[z3.BoolRef]) -> z3.BitVecRef:
    """docs/merge.md 5 rules 2-3 for one node: the common value of the changing parents, the
    base's if none changed, else blank (values 8-bit, blank = 0)."""
    blank = z3.BitVecVal(BLANK, 8)
    any_changed = z3.Or(*changed)
    # the first changing parent's value, then: do all changing parents agree with it?
    first = blank
    for v, c in reversed(list(zip(vals, changed, strict=True))):
        first = z3.If(c, v, first)
    agree = z3.And(*(z3.Implies(c, v == first) for v, c in zip(vals, changed, strict=True)))
    return z3.If(z3.Not(any_changed), base, z3.If(agree, first, blank))


def check_base_rule() -> tuple[bool, str]:
    """Property 6: the base-relative node rule (see the module docstring)."""
    base = z3.BitVec("base", 8)
    vals = list(z3.BitVecs("v1 v2 v3", 8))
    changed = list(z3.Bools("c1 c2 c3"))
    blank = z3.BitVecVal(BLANK, 8)
    # consistency of the changed flags with the values (upward closure only adds blank-again)
    consistent = z3.And(
        *(z3.Implies(v != base, c) for v, c in zip(vals, changed, strict=True)),
        *(z3.Implies(z3.And(c, v == base), v == blank) for v, c in zip(vals, changed, strict=True)),
    )
    r = node_rule(base, vals, changed)
    perms = [
        node_rule(base, [vals[i] for i in p], [changed[i] for i in p]) == r for p in itertools.permutations(range(3))
    ]
    origin = z3.Or(r == base, r == blank, *(r == v for v in vals))
    single = z3.Implies(z3.And(changed[0], z3.Not(changed[1]), z3.Not(changed[2])), r == vals[0])
    common = z3.Implies(z3.And(vals[0] == vals[1], vals[1] == vals[2]), r == vals[0])
    conflict = z3.Implies(z3.And(changed[0], changed[1], vals[0] != vals[1]), r == blank)
    held = z3.And(*(z3.Implies(z3.And(c, r != blank), r == v) for v, c in zip(vals, changed, strict=True)))
    return _prove(z3.Implies(consistent, z3.And(*perms, origin, single, common, conflict, held)))


def check_merge_init_order() -> tuple[bool, str]:
    """Property 2: sorting the parents by CID makes the Extract input permutation-invariant."""
    xs = z3.BitVecs("p0 p1 p2", 8)  # small stand-ins for CIDs: only their order matters

    def sort3(v: tuple[z3.BitVecRef, ...]) -> list[z3.BitVecRef]:
        a, b, c = v

        def lo(x: z3.BitVecRef, y: z3.BitVecRef) -> z3.BitVecRef:
            return z3.If(z3.ULE(x, y), x, y)

        def hi(x: z3.BitVecRef, y: z3.BitVecRef) -> z3.BitVecRef:
            return z3.If(z3.ULE(x, y), y, x)

        a1, b1 = lo(a, b), hi(a, b)
        b2, c2 = lo(b1, c), hi(b1, c)
        a3, b3 = lo(a1, b2), hi(a1, b2)
        return [a3, b3, c2]

    def concat(v: list[z3.BitVecRef]) -> z3.BitVecRef:
        return z3.Concat(*v)

    ref = concat(sort3(tuple(xs)))
    distinct = z3.Distinct(*xs)  # parent epochs are distinct commits
    claims = [concat(sort3(p)) == ref for p in itertools.permutations(xs)]
    sorted_ok = z3.And(
        z3.ULE(sort3(tuple(xs))[0], sort3(tuple(xs))[1]), z3.ULE(sort3(tuple(xs))[1], sort3(tuple(xs))[2])
    )
    return _prove(z3.Implies(distinct, z3.And(sorted_ok, *claims)))


def check_seniority_total() -> tuple[bool, str]:
    """Property 3: lexicographic (height, cid, key) is a strict total order on distinct members;
    in SENIORITY mode exactly one of two mutual removals survives (the junior's is dropped)."""
    h = z3.Ints("h0 h1 h2")
    c = z3.Ints("c0 c1 c2")
    k = z3.Ints("k0 k1 k2")

    def lt(i: int, j: int) -> z3.BoolRef:
        return z3.Or(
            h[i] < h[j],
            z3.And(h[i] == h[j], c[i] < c[j]),
            z3.And(h[i] == h[j], c[i] == c[j], k[i] < k[j]),
        )

    keys_distinct = z3.Distinct(*k)  # signature keys are unique among members (RFC 9420 7.3)
    irreflexive = z3.Not(lt(0, 0))
    transitive = z3.Implies(z3.And(lt(0, 1), lt(1, 2)), lt(0, 2))
    total = z3.Or(lt(0, 1), lt(1, 0))
    asym = z3.Not(z3.And(lt(0, 1), lt(1, 0)))
    # junior_mutual drops the removal whose author is junior: exactly one survives
    drop_a = lt(1, 0)  # a (index 0) is junior to b: a's removal of b is dropped
    drop_b = lt(0, 1)
    exactly_one = z3.Xor(drop_a, drop_b)
    return _prove(z3.Implies(keys_distinct, z3.And(irreflexive, transitive, total, asym, exactly_one)))


def check_joiner_collisions(joiners: int = 3) -> tuple[bool, str]:
    """Property 4: the leaf assignment of rules._apply_change for up to 3 joiners on 8 leaves."""
    nl = 8
    occupied = z3.BitVec("occupied", nl)  # leaves of members already in the state
    req = z3.BitVecs(" ".join(f"r{i}" for i in range(joiners)), 4)

    def bit(v: z3.BitVecRef, i: z3.BitVecRef | int) -> z3.BoolRef:
        idx = i if isinstance(i, int) else z3.ZeroExt(nl - 4, i)
        return z3.Extract(0, 0, z3.LShR(v, idx)) == 1

    def leftmost_free(v: z3.BitVecRef) -> z3.BitVecRef:
        out = z3.BitVecVal(nl, 4)
        for i in reversed(range(nl)):
            out = z3.If(z3.Not(bit(v, i)), z3.BitVecVal(i, 4), out)
        return out

    taken = occupied
    got: list[z3.BitVecRef] = []
    cons: list[z3.BoolRef] = [z3.ULT(r, nl) for r in req]
    # the joiners fit in the 8 leaves
    pop = z3.Sum(*[z3.If(bit(occupied, i), 1, 0) for i in range(nl)])
    cons.append(pop <= nl - len(req))
    for r in req:
        leaf = z3.If(bit(taken, r), leftmost_free(taken), r)
        got.append(leaf)
        taken = taken | (z3.BitVecVal(1, nl) << z3.ZeroExt(nl - 4, leaf))
    claims: list[z3.BoolRef] = [z3.Distinct(*got)]
    claims += [z3.And(z3.ULT(g, nl), z3.Not(bit(occupied, g))) for g in got]
    # the first requester (in the order) of a leaf that was free keeps it
    claims.append(z3.Implies(z3.Not(bit(occupied, req[0])), got[0] == req[0]))
    for i in range(1, len(req)):
        earlier = z3.Or(*[got[j] == req[i] for j in range(i)])
        claims.append(z3.Implies(z3.And(z3.Not(bit(occupied, req[i])), z3.Not(earlier)), got[i] == req[i]))
    return _prove(z3.Implies(z3.And(*cons), z3.And(*claims)))


def _replay_loop(f: Callable[[int], int], cand: int, n: int) -> tuple[int, int, bool]:
    """rules.replay's iteration on bitmask sets: returns (final set, rounds, settled)."""
    effective = cand
    seen: list[int] = []
    for rounds in range(n + 2):
        nxt = f(effective)
        if nxt == effective:
            return effective, rounds, True
        if nxt in seen:
            union = effective
            for s in seen[seen.index(nxt) :]:
                union |= s
            return union, rounds, True
        seen.append(effective)
        effective = nxt
    return effective, n + 2, False


def check_removal_fixpoint(n: int = 4, rounds: int | None = None) -> tuple[bool, str]:
    """Property 5: for every antitone f on subsets of n candidates (more effective removals
    void more commits, so fewer removals stay effective) the loop of rules.replay, started
    from all candidates, meets a fixpoint or a repeated set within ``n + 2`` rounds.

    One query: z3 looks for a table of f (antitone) and a run that never settles."""
    size = 1 << n
    full = size - 1
    tab = [z3.BitVec(f"f{i}", n) for i in range(size)]
    cons: list[z3.BoolRef] = []
    for x in range(size):
        for y in range(size):
            if x & y == x:  # x subset of y  =>  f(y) subset of f(x)
                cons.append(tab[y] & tab[x] == tab[y])

    def f(e: z3.BitVecRef) -> z3.BitVecRef:
        out = tab[0]
        for i in range(1, size):
            out = z3.If(e == i, tab[i], out)
        return out

    eff: z3.BitVecRef = z3.BitVecVal(full, n)
    seen: list[z3.BitVecRef] = []
    for _ in range(n + 2 if rounds is None else rounds):
        nxt = f(eff)
        cons.append(nxt != eff)
        cons += [nxt != s_ for s_ in seen]
        seen.append(eff)
        eff = nxt
    s = z3.Solver()
    s.add(*cons)
    r = s.check()
    if r == z3.unsat:
        return True, f"proved for every antitone function on {n} candidates"
    if r == z3.sat:
        m = s.model()
        table = [m.eval(t, model_completion=True).as_long() for t in tab]
        final, rounds, settled = _replay_loop(lambda e: table[e], full, n)
        return False, f"antitone table {table} does not settle in {rounds} rounds (settled={settled}, ends {final})"
    return False, f"z3 returned {r}"


CHECKS: dict[str, Callable[[], tuple[bool, str]]] = {
    "join_semilattice": check_join_semilattice,
    "merge_init_order": check_merge_init_order,
    "seniority_total": check_seniority_total,
    "joiner_collisions": check_joiner_collisions,
    "removal_fixpoint": check_removal_fixpoint,
    "base_rule": check_base_rule,
}


def main() -> int:
    failed = 0
    for name, fn in CHECKS.items():
        ok, msg = fn()
        print(f"{'ok  ' if ok else 'FAIL'} z3 {name}: {msg}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
