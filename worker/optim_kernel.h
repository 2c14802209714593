// optim_kernel.h — the Adam kernel (optim.h), written once over a vector type
// and included by optim_avx2.c and optim_avx512.c, which define V, VW,
// V_BCAST, V_LOAD, V_STORE, V_ADD, V_SUB, V_MUL, V_DIV, V_SQRT and
// ADAM_CORE (the function's name). The SSE2 kernel's operations in the same
// order (multiply, add, sqrt, divide; no FMA), so the same bits at every
// width. Without V (included on its own, e.g. by scripts/check-layering) it
// is empty.
#ifdef V
#include <stddef.h>

size_t ADAM_CORE(float *x, float *m, float *v, const float *g, size_t n, const wr_adam_consts *c) {
    const V B1 = V_BCAST(c->b1), B2 = V_BCAST(c->b2), OB1 = V_BCAST(c->ob1), OB2 = V_BCAST(c->ob2),
            IC1 = V_BCAST(c->ic1), IC2 = V_BCAST(c->ic2), EPS = V_BCAST(c->eps), WD = V_BCAST(c->wd),
            LR = V_BCAST(c->lr);
    size_t i = 0;
    for (; i + VW <= n; i += VW) {
        V gi = V_LOAD(g + i), xi = V_LOAD(x + i);
        V mi = V_ADD(V_MUL(B1, V_LOAD(m + i)), V_MUL(OB1, gi));
        V vi = V_ADD(V_MUL(B2, V_LOAD(v + i)), V_MUL(OB2, V_MUL(gi, gi)));
        V_STORE(m + i, mi);
        V_STORE(v + i, vi);
        V den = V_ADD(V_SQRT(V_MUL(vi, IC2)), EPS);
        V upd = V_ADD(V_DIV(V_MUL(mi, IC1), den), V_MUL(WD, xi));
        V_STORE(x + i, V_SUB(xi, V_MUL(LR, upd)));
    }
    return i;
}

#endif
