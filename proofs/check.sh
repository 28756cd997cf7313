#!/usr/bin/env bash
# Run every machine-checked proof of proofs/ and fail on any error (proofs/README.md).
#   proofs/check.sh          full bounds (3 concurrent operations; a few minutes)
#   proofs/check.sh --quick  2 operations (seconds)
# Needs: spin and a C compiler (apt-get install -y spin gcc), z3 (pip install z3-solver).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail=0

# run_spin NAME EXPECT FLAGS...: EXPECT is "ok" (errors: 0 required) or "cex" (a counterexample
# required: the mutant / known finding must be caught, proving the check is not vacuous)
run_spin() {
    local name="$1" expect="$2"; shift 2
    local dir="$work/$name"; mkdir -p "$dir"; cp "$here/merge.pml" "$dir/"
    local opt=-O2; [[ $quick == 1 ]] && opt=-O0
    ( cd "$dir" && spin "$@" -a merge.pml >/dev/null && cc -w $opt -DSAFETY -DMEMLIM=4000 -o pan pan.c ) || {
        echo "FAIL $name: spin/cc could not build the verifier"; fail=1; return; }
    local out; out="$(cd "$dir" && ./pan -m10000 2>&1 || true)"
    local errs; errs="$(grep -o 'errors: [0-9]*' <<<"$out" | head -1 | awk '{print $2}')"
    if [[ -z "$errs" ]]; then echo "FAIL $name: no verdict from pan"; echo "$out" | tail -5; fail=1; return; fi
    if grep -q "Search not completed" <<<"$out" && [[ "$expect" == ok ]]; then
        echo "FAIL $name: search not completed"; fail=1; return; fi
    local states; states="$(grep -o '[0-9]* states, stored' <<<"$out" | head -1)"
    if [[ "$expect" == ok && "$errs" == 0 ]]; then echo "ok   $name: errors: 0 ($states)"
    elif [[ "$expect" == cex && "$errs" != 0 ]]; then echo "ok   $name: counterexample found as expected ($(grep -m1 violated <<<"$out" | sed 's/^pan:1: //'))"
    else echo "FAIL $name: errors: $errs (expected $expect)"; grep -m1 violated <<<"$out" || true; fail=1; fi
}

if [[ $quick == 1 ]]; then n="-DNOPS=2"; else n="-DNOPS=3"; fi
run_spin merge-both ok $n
run_spin merge-seniority ok $n -DSENIORITY
# the merged-tree rule is safe whatever common ancestor is the base (docs/merge.md 5.1)
run_spin merge-anybase ok $n -DANYBASE
# mutants: each breaks one rule; the model must catch it
run_spin mutant-keep-one cex -DNOPS=3 -DMUTANT_KEEP_ONE
run_spin mutant-no-suspect cex -DNOPS=2 -DMUTANT_NO_SUSPECT
run_spin mutant-suspect-departed cex -DNOPS=3 -DMUTANT_SUSPECT_DEPARTED
run_spin mutant-evict-strong cex -DNOPS=2 -DMUTANT_EVICT_STRONG
run_spin mutant-no-unmerged cex -DNOPS=3 -DMUTANT_NO_UNMERGED
# the rule before the F1 fix (a concurrent add re-adds a removed person): order-dependent
run_spin mutant-readd cex -DNOPS=3 -DMUTANT_READD

if python3 "$here/rules_z3.py"; then :; else echo "FAIL rules_z3.py"; fail=1; fi

if [[ $fail != 0 ]]; then echo "proofs/check.sh: FAILED"; exit 1; fi
echo "proofs/check.sh: all checks passed"
