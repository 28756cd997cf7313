/*
 * crdt-mls: model of the merge rules (docs/merge.md section 3 and 5; design doc section 5)
 * for SPIN.  See proofs/README.md and proofs/spin-model.md for what is modelled and why.
 *
 * World: 4 founders (members 0..3 on leaves 0..3 of an 8-leaf tree) and 2 possible joiners
 * (members 4, 5).  `init` chooses NOPS operations nondeterministically: each has a causal
 * dependency (genesis or an earlier operation), an author, and a kind:
 *   UPD (commit with a path), REM t (strong remove), EVI t (idle eviction),
 *   ADD j (add a joiner at the leftmost free leaf), ACT (application message, not a commit).
 * Every commit carries an UpdatePath for its author.  Invalid operations (author not a member
 * of its epoch, a second operation of one author that does not follow its first, ...) end
 * the branch.  Then one replica receives the operations in every causal order SPIN can
 * choose; after every delivery the delivered (causally closed) set M is checked:
 *
 *  - the conflict-rule replay of rules.py (fixpoint over effective removals, strong remove,
 *    mutual removal BOTH or SENIORITY (-DSENIORITY), weak eviction, joiner collisions)
 *    in the deterministic order (height, id) and in the arrival order give the same member
 *    set and the same void commits (the rules do not depend on how ties are broken, except
 *    for removal cycles, resolved greedily in the deterministic order);
 *  - nobody disappears without an effective removal; no joiner appears without a non-void add;
 *    a removed member's concurrent commits are void; an eviction of an active member is void;
 *  - the merged base tree of the heads (merged_base_tree in mlsmerge.py, docs/merge.md 5):
 *    relative to the merge's base (the latest common commit of the heads; with -DANYBASE every
 *    common ancestor, to check that safety does not depend on the base): a node no head
 *    changed (at it or below it) keeps the base write, one changed by heads that agree takes
 *    their write, else blank (conflict); re-blank a kept write known in a head holding it to a
 *    leaf that is not the same member with the same leaf version in the merged tree (rule 4);
 *    unmerged = members below who know it in no head holding it with the same leaf (rule 5):
 *      KK1 everyone who EVER learned a kept node is a member below it (ground truth K);
 *      KK2 every member below a kept node and not in its unmerged leaves learned it;
 *  - for every possible merge committer: REMOVAL no removed member, keeping every node secret
 *    it ever learned, can derive the merge epoch; PCS an attacker holding everything the
 *    author of a non-void commit u knew before u cannot derive the merge epoch;
 *    LIVENESS the merged group is non-empty and has a member able to issue the merge commit.
 */

#ifndef NOPS
#define NOPS 3
#endif
#define NF   4          /* founders */
#define NMEM 6          /* members 0..5 */
#define NL   8          /* leaves */
#define NN   15         /* tree nodes */
#define NONE 255
#define GEN  255

#define UPD 0
#define REM 1
#define EVI 2
#define ADD 3
#define ACT 4

#define MW   (NOPS + 2)  /* writer id of the merge commit; 0 blank, 1 genesis, 2+i op i */
#define NWR  (NOPS + 3)

/* ---------------------------------------------------------------- the scenario (state) */
byte au[NOPS];   /* author */
byte kd[NOPS];   /* kind */
byte tg[NOPS];   /* target member */
byte dp[NOPS];   /* causal dependency: GEN or an earlier op */
byte past[NOPS]; /* bitmask of ops strictly in the causal past */
byte ht[NOPS];   /* height in the DAG (genesis 0) */
byte ep[NOPS];   /* epoch: the latest commit in the past (GEN or op) */
bool valid = true;

/* ---------------------------------------------------------------- the replica (state) */
byte delivered;  /* bitmask */
byte arr[NOPS];  /* arrival order */
byte narr;
byte cv;     /* nondeterministic choices (kept in the state vector) */

/* ------------------------------------------- derived from the scenario (hidden scratch) */
/* trees: slot 0 genesis, slot 1+i after commit i */
hidden byte tw[(NOPS + 1) * NN];  /* writer of each parent node, 0 = blank */
hidden byte tu[(NOPS + 1) * NN];  /* unmerged leaves (bitmask over leaves) */
hidden byte tl[(NOPS + 1) * NL];  /* member + 1 at each leaf, 0 = blank */
hidden byte tv[(NOPS + 1) * NL];  /* leaf version: writer of the LeafNode (its commit or add) */
hidden byte kn[NWR * NN];         /* ground truth: members who ever learned (writer, node) */
hidden byte addleaf[NOPS];
hidden byte lv[NN];               /* level of each node */

/* replay scratch */
hidden byte ord[NOPS];
hidden byte nord;
hidden byte mem[NMEM];            /* leaf + 1, 0 = not a member */
hidden byte lver[NMEM];           /* leaf version the replay gives each member (last UPDATE/ADD) */
hidden byte lverR[NMEM];
hidden byte remby[NMEM];
hidden byte addedin[NMEM];
hidden byte voidm, still, cand, effm, nxt, uni, moved;
hidden byte seen[NOPS + 3];
hidden byte nseen, found;
hidden byte memR[NMEM];
hidden byte rembyR[NMEM];
hidden byte voidR, grd, grdR;
hidden byte li, lk, j, k, l, n, o, r, s, x, a, tgt, h, it, vd, ok, nc, tmp, m2;
hidden byte heads, nheads;
hidden byte mwr[NN], mun[NN], mlf[NL], mlv[NL], chg[NN];
hidden byte common, bs, bb, nb;
hidden byte kh, below, smask, g, incl, att, u, cu;
hidden byte kept_known, all_inc;

#define BIT(v, b)  (((v) >> (b)) & 1)
#define INP(p, q)  BIT(past[q], p)                   /* op p strictly in the past of op q */
#define CONC(p, q) ((p) != (q) && !INP(p, q) && !INP(q, p))
#define ISC(p)     (kd[p] != ACT)
#define ISRM(p)    (kd[p] == REM || kd[p] == EVI)
#define SPAN(xx)   ((1 << lv[xx]) - 1)
#define BELOW(xx, ll) ((xx) - SPAN(xx) <= 2 * (ll) && 2 * (ll) <= (xx) + SPAN(xx))
#define TW(e, xx)  tw[(e) * NN + (xx)]
#define TU(e, xx)  tu[(e) * NN + (xx)]
#define TL(e, ll)  tl[(e) * NL + (ll)]
#define TV(e, ll)  tv[(e) * NL + (ll)]
#define SUBLEAVES(xx) (((1 << (1 << lv[xx])) - 1) << (((xx) - SPAN(xx)) / 2))  /* leaf mask below xx */
#define SUB(xx, yy) ((xx) != (yy) && (xx) - SPAN(xx) <= (yy) && (yy) <= (xx) + SPAN(xx))  /* yy below xx */
#define KN(w, xx)  kn[(w) * NN + (xx)]
#define SLOT(e)    ((e) == GEN -> 0 : (e) + 1)

#ifdef ANYBASE
#define ANY 1
#else
#define ANY 0
#endif
#ifdef SENIORITY
#define BOTH 0
#else
#define BOTH 1
#endif
/* rules.py _simulate.mutual: rec (by the target of r) removes r's author concurrently */
#define MUTUAL(rec, rr) (BOTH && ISRM(rec) && tg[rec] == au[rr] && CONC(rec, rr))

/* seniority value: founders by id, joiners after, by the rank of their (last) add */
#define SEN(mm) ((mm) < NF -> (mm) : 8 + (ht[addedin[mm]] * 4 + addedin[mm]) * 8 + (mm))

/* is member mm in the tree of slot e?  sets ok */
inline in_tree(e, mm) {
    ok = 0; li = 0;
    do :: li < NL -> if :: TL(e, li) == mm + 1 -> ok = 1 :: else fi; li++
       :: else -> break
    od
}

/* leaf of member mm in slot e (NONE if absent) into tmp */
inline leaf_of(e, mm) {
    tmp = NONE; li = 0;
    do :: li < NL -> if :: TL(e, li) == mm + 1 -> tmp = li :: else fi; li++
       :: else -> break
    od
}

/* knowers of node xx in slot e (members below, not unmerged) into kh */
inline knowers(e, xx) {
    kh = 0; lk = 0;
    do :: lk < NL ->
          if :: TL(e, lk) != 0 && BELOW(xx, lk) && !BIT(TU(e, xx), lk) -> kh = kh | (1 << (TL(e, lk) - 1))
             :: else fi; lk++
       :: else -> break
    od
}

/* ------------------------------------------------------------ rules.py: _simulate */
inline simulate(E) {
    k = 0;
    do :: k < NMEM -> mem[k] = (k < NF -> k + 1 : 0); lver[k] = (k < NF -> 1 : 0); remby[k] = NONE; k++
       :: else -> break
    od;
    voidm = 0; moved = 0; n = 0;
    do :: n < nord ->
          o = ord[n];
          if
          :: ISC(o) ->
             a = au[o]; vd = 0; r = 0;
             do :: r < NOPS ->
                   if :: BIT(E, r) && tg[r] == a && r != o && CONC(o, r) && !MUTUAL(o, r) -> vd = 1
                      :: else fi; r++
                :: else -> break
             od;
             if :: !vd && mem[a] == 0 -> vd = (remby[a] == NONE || !MUTUAL(o, remby[a]))
                :: else fi;
             if
             :: vd -> voidm = voidm | (1 << o)
             :: else ->
                tgt = tg[o];
                /* strong remove covers a concurrent (re-)add of the same person (F1 fix) */
                vd = 0; r = 0;
#ifndef MUTANT_READD
                do :: r < NOPS -> if :: kd[o] == ADD && BIT(E, r) && tg[r] == tgt && CONC(o, r) -> vd = 1 :: else fi; r++
                   :: else -> break
                od;
#endif
                if
                :: vd -> skip
                :: !vd && kd[o] == ADD && mem[tgt] == 0 ->
                   l = addleaf[o]; ok = 0; k = 0;
                   do :: k < NMEM -> if :: mem[k] == l + 1 -> ok = 1 :: else fi; k++
                      :: else -> break
                   od;
                   if
                   :: ok ->  /* leaf taken concurrently: leftmost free leaf */
                      l = 0;
                      do :: l < NL ->
                            ok = 0; k = 0;
                            do :: k < NMEM -> if :: mem[k] == l + 1 -> ok = 1 :: else fi; k++
                               :: else -> break
                            od;
                            if :: ok -> l++ :: else -> break fi
                         :: else -> break
                      od;
                      moved = moved | (1 << tgt)
                   :: else fi;
                   mem[tgt] = l + 1; lver[tgt] = o + 2
                :: !vd && ISRM(o) && BIT(E, o) && mem[tgt] != 0 -> remby[tgt] = o; mem[tgt] = 0
                :: else
                fi;
                /* the committer's UpdatePath is an UPDATE of its leaf: the last in the order wins */
                if :: mem[a] != 0 -> lver[a] = o + 2 :: else fi
             fi
          :: else
          fi;
          n++
       :: else -> break
    od;
    still = cand & ~voidm
}

/* ------------------------------------------------------------ rules.py: replay */
/* input: delivered set M, ord[0..nord) a topological order of M */
inline replay(M) {
    /* added_in: the ADD that creates the instance (rules.py replay; finding F4 fixed) */
    k = 0;
    do :: k < NMEM -> addedin[k] = 0; mem[k] = (k < NF -> 1 : 0); k++ :: else -> break od;
    n = 0;
    do :: n < nord -> o = ord[n];
          if :: kd[o] == ADD && mem[tg[o]] == 0 -> addedin[tg[o]] = o; mem[tg[o]] = 1
             :: ISRM(o) -> mem[tg[o]] = 0
             :: else fi; n++
       :: else -> break
    od;
    cand = 0; o = 0;
    do :: o < NOPS ->
          if
          :: BIT(M, o) && kd[o] == REM -> cand = cand | (1 << o)
          :: BIT(M, o) && kd[o] == EVI ->
             vd = 0; r = 0;  /* weak eviction: void if the evicted member acted concurrently */
             do :: r < NOPS -> if :: BIT(M, r) && au[r] == tg[o] && CONC(r, o) -> vd = 1 :: else fi; r++
                :: else -> break
             od;
#ifdef MUTANT_EVICT_STRONG
             vd = 0;  /* mutant: evictions are strong */
#endif
             if :: !vd -> cand = cand | (1 << o) :: else fi
          :: else
          fi; o++
       :: else -> break
    od;
#ifdef SENIORITY
    /* a junior's removal of a senior who concurrently removes it never counts */
    tmp = cand; o = 0;
    do :: o < NOPS ->
          if
          :: BIT(cand, o) && SEN(au[o]) > SEN(tg[o]) ->
             r = 0;
             do :: r < NOPS ->
                   if :: BIT(cand, r) && au[r] == tg[o] && tg[r] == au[o] && CONC(r, o) -> tmp = tmp & ~(1 << o)
                      :: else fi; r++
                :: else -> break
             od
          :: else fi; o++
       :: else -> break
    od;
    cand = tmp;
#endif
    effm = cand; nseen = 0; grd = 0;
    simulate(effm);
    it = 0;
    do :: it < NOPS + 2 ->
          nxt = still;
          if
          :: nxt == effm -> break
          :: else ->
             found = NONE; s = 0;
             do :: s < nseen -> if :: seen[s] == nxt && found == NONE -> found = s :: else fi; s++
                :: else -> break
             od;
             if
             :: found != NONE ->  /* the iteration cycles: take removals greedily in the order */
                grd = 1; uni = 0; n = 0;
                do :: n < nord ->
                      o = ord[n];
                      if
                      :: BIT(cand, o) ->
                         vd = 0; r = 0;
                         do :: r < NOPS ->
                               if :: BIT(uni, r) && tg[r] == au[o] && CONC(r, o) && !(BOTH && tg[o] == au[r]) -> vd = 1
                                  :: else fi; r++
                            :: else -> break
                         od;
                         if :: !vd -> uni = uni | (1 << o) :: else fi
                      :: else fi; n++
                   :: else -> break
                od;
                simulate(uni);
                break
             :: else ->
                seen[nseen] = effm; nseen++; effm = nxt;
                simulate(effm)
             fi
          fi; it++
       :: else -> break
    od
}

/* rank order (height, id) of M into ord */
inline rank_order(M) {
    nord = 0; h = 0;
    do :: h <= NOPS ->
          o = 0;
          do :: o < NOPS -> if :: BIT(M, o) && ht[o] == h -> ord[nord] = o; nord++ :: else fi; o++
             :: else -> break
          od; h++
       :: else -> break
    od
}

/* ------------------------------------------------------ the tree of commit i (linear) */
inline build_tree(i) {
    s = SLOT(ep[i]);
    x = 0;
    do :: x < NN -> TW(i + 1, x) = TW(s, x); TU(i + 1, x) = TU(s, x); x++ :: else -> break od;
    l = 0;
    do :: l < NL -> TL(i + 1, l) = TL(s, l); TV(i + 1, l) = TV(s, l); l++ :: else -> break od;
    tgt = tg[i];
    if
    :: ISRM(i) ->  /* RFC 9420 12.1.3: blank the leaf and its direct path */
       leaf_of(i + 1, tgt); l = tmp; TL(i + 1, l) = 0; TV(i + 1, l) = 0;
       x = 1;
       do :: x < NN -> if :: BELOW(x, l) -> TW(i + 1, x) = 0; TU(i + 1, x) = 0 :: else fi; x = x + 2
          :: else -> break
       od
    :: kd[i] == ADD ->  /* RFC 9420 12.1.1: leftmost blank leaf, unmerged above it */
       l = 0;
       do :: l < NL && TL(i + 1, l) != 0 -> l++ :: else -> break od;
       assert(l < NL);
       addleaf[i] = l; TL(i + 1, l) = tgt + 1; TV(i + 1, l) = i + 2;
       x = 1;
       do :: x < NN -> if :: BELOW(x, l) && TW(i + 1, x) != 0 -> TU(i + 1, x) = TU(i + 1, x) | (1 << l) :: else fi; x = x + 2
          :: else -> break
       od
    :: else
    fi;
    /* the committer's UpdatePath: every node on its direct path, known to all below */
    leaf_of(i + 1, au[i]); j = tmp; TV(i + 1, j) = i + 2;
    x = 1;
    do :: x < NN ->
          if
          :: BELOW(x, j) ->
             TW(i + 1, x) = i + 2; TU(i + 1, x) = 0;
             knowers(i + 1, x); KN(i + 2, x) = kh
          :: else -> KN(i + 2, x) = 0
          fi; x = x + 2
       :: else -> break
    od
}

/* ------------------------------------------------------------ checks of one delivered set */
inline check_set(M) {
    /* 1. the replay in the deterministic order */
    rank_order(M);
    replay(M);
    voidR = voidm; grdR = grd;
    k = 0;
    do :: k < NMEM -> memR[k] = mem[k]; rembyR[k] = remby[k]; lverR[k] = lver[k]; k++ :: else -> break od;
    /* 2. the same rules in the arrival order (another topological order) must give the same
       void commits and member set -- except when the removals form a cycle without fixpoint,
       which is resolved greedily in the deterministic order (docs/merge.md 3.4; F5): that
       outcome depends on the tie-break by design (still the same at every replica) */
    nord = narr; n = 0;
    do :: n < narr -> ord[n] = arr[n]; n++ :: else -> break od;
    replay(M);
    if
    :: !grd && !grdR ->
       assert(voidm == voidR);
       k = 0;
       do :: k < NMEM -> assert((mem[k] == 0) == (memR[k] == 0)); k++ :: else -> break od
    :: else
    fi;
    /* 3. membership invariants (on the deterministic replay) */
    smask = 0; nc = 0;
    k = 0;
    do :: k < NMEM ->
          if :: memR[k] != 0 -> smask = smask | (1 << k); nc++ :: else fi;
          if :: k < NF && memR[k] == 0 -> assert(rembyR[k] != NONE) :: else fi;  /* no lost member */
          if
          :: k >= NF && memR[k] != 0 ->  /* no joiner without a non-void add */
             ok = 0; o = 0;
             do :: o < NOPS -> if :: BIT(M, o) && kd[o] == ADD && tg[o] == k && !BIT(voidR, o) -> ok = 1 :: else fi; o++
                :: else -> break
             od;
             assert(ok)
          :: else fi;
          m2 = k + 1;
          do :: m2 < NMEM -> assert(memR[k] == 0 || memR[k] != memR[m2]); m2++ :: else -> break od;
          k++
       :: else -> break
    od;
    assert(nc > 0);  /* LIVENESS: never an empty group */
    o = 0;
    do :: o < NOPS ->
          if
          :: BIT(M, o) && ISC(o) ->
             /* strong remove voids the removed member's concurrent commits */
             r = rembyR[au[o]];
             if :: r != NONE && CONC(o, r) && !MUTUAL(o, r) -> assert(BIT(voidR, o)) :: else fi
          :: else fi;
          if
          :: BIT(M, o) && kd[o] == EVI ->  /* weak eviction */
             r = 0;
             do :: r < NOPS -> if :: BIT(M, r) && au[r] == tg[o] && CONC(r, o) -> assert(rembyR[tg[o]] != o) :: else fi; r++
                :: else -> break
             od
          :: else fi;
          o++
       :: else -> break
    od;
    /* 4. the heads: maximal commits of M */
    heads = 0; nheads = 0; o = 0;
    do :: o < NOPS ->
          if
          :: BIT(M, o) && ISC(o) ->
             ok = 1; r = 0;
             do :: r < NOPS -> if :: BIT(M, r) && ISC(r) && INP(o, r) -> ok = 0 :: else fi; r++
                :: else -> break
             od;
             if :: ok -> heads = heads | (1 << o); nheads++ :: else fi
          :: else fi; o++
       :: else -> break
    od;
    if
    :: nheads >= 2 -> check_merge(M)
    :: else
    fi
}

/* the merged base tree of the heads and the merge commit by every possible committer */
inline check_merge(M) {
    l = 0;
    do :: l < NL -> mlf[l] = 0; mlv[l] = 0; l++ :: else -> break od;
    k = 0;
    do :: k < NMEM -> if :: memR[k] != 0 -> mlf[memR[k] - 1] = k + 1; mlv[memR[k] - 1] = lverR[k] :: else fi; k++
       :: else -> break
    od;
    /* the base: the common commits of the heads form a chain (one epoch parent per commit);
       the implementation takes the latest; -DANYBASE checks every one and the genesis */
    common = 255; h = 0;
    do :: h < NOPS -> if :: BIT(heads, h) -> common = common & past[h] :: else fi; h++
       :: else -> break
    od;
    o = 0;
    do :: o < NOPS -> if :: BIT(common, o) && !ISC(o) -> common = common & ~(1 << o) :: else fi; o++
       :: else -> break
    od;
    bb = GEN; o = 0;
    do :: o < NOPS -> if :: BIT(common, o) && (bb == GEN || ht[o] > ht[bb]) -> bb = o :: else fi; o++
       :: else -> break
    od;
#ifndef ANYBASE
    common = (bb == GEN -> 0 : 1 << bb);
#endif
    nb = 0;
    do :: nb <= NOPS ->
          bs = NONE;
          if
          :: nb == NOPS && (common == 0 || ANY) -> bs = 0
          :: nb < NOPS && BIT(common, nb) -> bs = nb + 1
          :: else
          fi;
          if :: bs != NONE -> merge_tree(M) :: else fi;
          nb++
       :: else -> break
    od
}

/* the merged tree over base slot bs, its checks, and every possible committer */
inline merge_tree(M) {
    /* rules 2 and 3: chg[x] = heads that changed x or a node below it */
    x = 1;
    do :: x < NN ->
          chg[x] = 0; h = 0;
          do :: h < NOPS ->
                if
                :: BIT(heads, h) ->
                   r = 1;
                   do :: r < NN ->
                         if :: (r == x || SUB(x, r)) && TW(h + 1, r) != TW(bs, r) -> chg[x] = chg[x] | (1 << h) :: else fi;
                         r = r + 2
                      :: else -> break
                   od
                :: else fi; h++
             :: else -> break
          od;
          if
          :: chg[x] == 0 -> mwr[x] = TW(bs, x)
          :: else ->
             tmp = NONE; ok = 1; h = 0;
             do :: h < NOPS ->
                   if
                   :: BIT(chg[x], h) ->
                      if :: tmp == NONE -> tmp = TW(h + 1, x)
                         :: else -> if :: TW(h + 1, x) != tmp -> ok = 0 :: else fi
                      fi
                   :: else fi; h++
                :: else -> break
             od;
#ifdef MUTANT_KEEP_ONE
             ok = 1;  /* mutant: keep the first changing head's write instead of blanking a conflict */
#endif
             mwr[x] = (ok -> tmp : 0)
          fi;
          x = x + 2
       :: else -> break
    od;
    /* rule 4: a kept write known in a head holding it to a leaf that is not the same member with
       the same leaf version in the merged tree (removed, voided, moved, updated elsewhere) */
#ifndef MUTANT_NO_SUSPECT
    h = 0;
    do :: h < NOPS ->
          if
          :: BIT(heads, h) ->
             l = 0;
             do :: l < NL ->
#ifdef MUTANT_SUSPECT_DEPARTED
                   /* mutant: the rule before version 2 -- only members who left S count */
                   if :: TL(h + 1, l) != 0 && memR[TL(h + 1, l) - 1] == 0 ->
#else
                   if :: TL(h + 1, l) != 0 && (mlf[l] != TL(h + 1, l) || mlv[l] != TV(h + 1, l)) ->
#endif
                         x = 1;
                         do :: x < NN ->
                               if :: BELOW(x, l) && TW(h + 1, x) != 0 && !BIT(TU(h + 1, x), l) && mwr[x] == TW(h + 1, x) -> mwr[x] = 0
                                  :: else fi; x = x + 2
                            :: else -> break
                         od
                      :: else fi; l++
                :: else -> break
             od
          :: else fi; h++
       :: else -> break
    od;
#endif
    x = 1;
    do :: x < NN ->
          mun[x] = 0;
          if
          :: mwr[x] != 0 ->
             tmp = mwr[x];
             /* rule 5: unmerged = members below who know it in no head holding it (same leaf) */
             l = 0;
             do :: l < NL ->
                   if
                   :: mlf[l] != 0 && BELOW(x, l) ->
                      vd = 1; h = 0;
                      do :: h < NOPS ->
                            if :: BIT(heads, h) && TW(h + 1, x) == tmp && TL(h + 1, l) == mlf[l] && TV(h + 1, l) == mlv[l] && !BIT(TU(h + 1, x), l) -> vd = 0
                               :: else fi; h++
                         :: else -> break
                      od;
#ifndef MUTANT_NO_UNMERGED
                      if :: vd -> mun[x] = mun[x] | (1 << l) :: else fi
#endif
                   :: else fi; l++
                :: else -> break
             od
          :: else
          fi;
          x = x + 2
       :: else -> break
    od;
    /* rule 5, RFC 9420 12.4.3.1: a leaf unmerged at a node is unmerged at every non-blank node
       between (the implementation blanks the lower node; never needed: asserted here) */
    x = 1;
    do :: x < NN ->
          if
          :: mwr[x] != 0 ->
             r = 1;
             do :: r < NN ->
#ifdef ORDER_REPAIR
                   /* as the implementation: blank the lower node */
                   if :: SUB(x, r) && mwr[r] != 0 && (mun[x] & ~mun[r] & SUBLEAVES(r)) != 0 -> mwr[r] = 0; mun[r] = 0 :: else fi;
#else
                   if :: SUB(x, r) && mwr[r] != 0 -> assert((mun[x] & ~mun[r] & SUBLEAVES(r)) == 0) :: else fi;
#endif
                   r = r + 2
                :: else -> break
             od
          :: else fi; x = x + 2
       :: else -> break
    od;
    x = 1;
    do :: x < NN ->
          if
          :: mwr[x] != 0 ->
             tmp = mwr[x];
             /* KK1: everyone who ever learned the kept node is a member below it */
             below = 0; l = 0;
             do :: l < NL -> if :: mlf[l] != 0 && BELOW(x, l) -> below = below | (1 << (mlf[l] - 1)) :: else fi; l++
                :: else -> break
             od;
             assert((KN(tmp, x) & ~below) == 0);
             /* KK2: every member below it and not unmerged learned it */
             l = 0;
             do :: l < NL ->
                   if :: mlf[l] != 0 && BELOW(x, l) && !BIT(mun[x], l) -> assert(BIT(KN(tmp, x), mlf[l] - 1))
                      :: else fi; l++
                :: else -> break
             od
          :: else
          fi;
          x = x + 2
       :: else -> break
    od;
    /* every possible merge committer g: a member of S in at least one head */
    nc = 0; g = 0;
    do :: g < NMEM ->
          if
          :: memR[g] != 0 ->
             incl = 0; h = 0;
             do :: h < NOPS -> if :: BIT(heads, h) -> in_tree(h + 1, g); if :: ok -> incl = incl | (1 << h) :: else fi :: else fi; h++
                :: else -> break
             od;
             if :: incl != 0 -> nc++; check_committer(M) :: else fi
          :: else fi; g++
       :: else -> break
    od;
    assert(nc > 0)  /* LIVENESS: someone can issue the merge commit */
}

/* adversaries against the merge epoch committed by g with included heads incl */
inline check_committer(M) {
    /* REMOVAL: every member ever (founder or added in M) that is not in S */
    a = 0;
    do :: a < NMEM ->
          ok = (a < NF);
          o = 0;
          do :: o < NOPS -> if :: BIT(M, o) && kd[o] == ADD && tg[o] == a -> ok = 1 :: else fi; o++
             :: else -> break
          od;
          if
          :: ok && memR[a] == 0 ->
             /* a kept node of the base tree it ever learned (its only way to the commit secret) */
             kept_known = 0; x = 1;
             do :: x < NN -> if :: mwr[x] != 0 && BIT(KN(mwr[x], x), a) -> kept_known = 1 :: else fi; x = x + 2
                :: else -> break
             od;
             /* every included parent epoch it was a member of (for the merge init_secret) */
             all_inc = 1; h = 0;
             do :: h < NOPS -> if :: BIT(incl, h) -> in_tree(h + 1, a); if :: !ok -> all_inc = 0 :: else fi :: else fi; h++
                :: else -> break
             od;
             assert(!(kept_known && all_inc));
             assert(!kept_known)
          :: else fi; a++
       :: else -> break
    od;
    /* PCS: u a non-void commit by cu, cu still a member; the attacker has every node secret
       cu learned in an epoch that does not have u in its past */
    u = 0;
    do :: u < NOPS ->
          if
          :: BIT(M, u) && ISC(u) && !BIT(voidR, u) && memR[au[u]] != 0 ->
             cu = au[u];
             kept_known = 0; x = 1;
             do :: x < NN ->
                   att = mwr[x];
                   if
                   :: att != 0 && BIT(KN(att, x), cu) && (att == 1 || (att - 2 != u && !INP(u, att - 2))) -> kept_known = 1
                   :: else fi; x = x + 2
                :: else -> break
             od;
             assert(!kept_known)
          :: else fi; u++
       :: else -> break
    od
}

/* ------------------------------------------------------------ the scenario */
inline choose_op(i) {
    select(cv : 0 .. i);
    if :: cv == i -> dp[i] = GEN :: else -> dp[i] = cv fi;
    select(cv : 0 .. NMEM - 1);
    au[i] = cv;
    select(cv : 0 .. 4);
    kd[i] = cv;
    if
    :: kd[i] == REM || kd[i] == EVI -> select(cv : 0 .. NMEM - 1)
    :: kd[i] == ADD -> select(cv : NF .. NMEM - 1)
    :: else -> cv = 0
    fi;
    tg[i] = cv;
    d_step {
        cv = 0;
        if
        :: dp[i] == GEN -> past[i] = 0; ht[i] = 1; ep[i] = GEN
        :: else -> past[i] = past[dp[i]] | (1 << dp[i]); ht[i] = ht[dp[i]] + 1;
                   ep[i] = (ISC(dp[i]) -> dp[i] : ep[dp[i]])
        fi;
        /* the author's log is linear: its earlier operations are in the past */
        o = 0;
        do :: o < i -> if :: au[o] == au[i] && !INP(o, i) -> valid = false :: else fi; o++
           :: else -> break
        od;
        s = SLOT(ep[i]);
        in_tree(s, au[i]); if :: !ok -> valid = false :: else fi;
        if
        :: ISRM(i) -> in_tree(s, tg[i]); if :: !ok || tg[i] == au[i] -> valid = false :: else fi
        :: kd[i] == ADD -> in_tree(s, tg[i]); if :: ok -> valid = false :: else fi
        :: else
        fi;
        if :: valid && ISC(i) -> build_tree(i) :: else fi
    }
}

init {
    d_step {
        x = 0;
        do :: x < NN -> lv[x] = 0; tmp = x; do :: tmp & 1 -> lv[x]++; tmp = tmp >> 1 :: else -> break od; x++
           :: else -> break
        od;
        /* genesis: founders 0..3, the creator's path 1, 3, 7 */
        x = 0;
        do :: x < NN -> TW(0, x) = 0; TU(0, x) = 0; x++ :: else -> break od;
        l = 0;
        do :: l < NL -> TL(0, l) = (l < NF -> l + 1 : 0); TV(0, l) = (l < NF -> 1 : 0); l++ :: else -> break od;
        x = 0;
        do :: x < NWR * NN -> kn[x] = 0; x++ :: else -> break od;
        TW(0, 1) = 1; TW(0, 3) = 1; TW(0, 7) = 1;
        knowers(0, 1); KN(1, 1) = kh;
        knowers(0, 3); KN(1, 3) = kh;
        knowers(0, 7); KN(1, 7) = kh
    };
    choose_op(0);
    if :: !valid -> goto done :: else fi;
    choose_op(1);
    if :: !valid -> goto done :: else fi;
#if NOPS > 2
    choose_op(2);
    if :: !valid -> goto done :: else fi;
#endif
    /* deliver in every causal order, checking every delivered prefix */
    do
    :: narr == NOPS -> break
    :: else ->
       select(cv : 0 .. NOPS - 1);
       if
       :: !BIT(delivered, cv) && (past[cv] & ~delivered) == 0 ->
          d_step {
              delivered = delivered | (1 << cv); arr[narr] = cv; narr++; cv = 0;
              check_set(delivered)
          }
       :: else -> cv = 0
       fi
    od;
done:
    skip
}
