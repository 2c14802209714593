// optim_avx512.c — the Adam kernel over 16 lanes (optim.h): the SSE2 kernel's
// operations in the same order (multiply, add, sqrt, divide; no FMA), so the
// same bits, more elements per instruction.
#include <immintrin.h>

#include "optim.h"

size_t wr_adam_core_avx512(float *x, float *m, float *v, const float *g, size_t n, const wr_adam_consts *c) {
    const __m512 B1 = _mm512_set1_ps(c->b1), B2 = _mm512_set1_ps(c->b2), OB1 = _mm512_set1_ps(c->ob1),
                 OB2 = _mm512_set1_ps(c->ob2), IC1 = _mm512_set1_ps(c->ic1), IC2 = _mm512_set1_ps(c->ic2),
                 EPS = _mm512_set1_ps(c->eps), WD = _mm512_set1_ps(c->wd), LR = _mm512_set1_ps(c->lr);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 gi = _mm512_loadu_ps(g + i), xi = _mm512_loadu_ps(x + i);
        __m512 mi = _mm512_add_ps(_mm512_mul_ps(B1, _mm512_loadu_ps(m + i)), _mm512_mul_ps(OB1, gi));
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(B2, _mm512_loadu_ps(v + i)),
                                  _mm512_mul_ps(OB2, _mm512_mul_ps(gi, gi)));
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        __m512 den = _mm512_add_ps(_mm512_sqrt_ps(_mm512_mul_ps(vi, IC2)), EPS);
        __m512 upd = _mm512_add_ps(_mm512_div_ps(_mm512_mul_ps(mi, IC1), den), _mm512_mul_ps(WD, xi));
        _mm512_storeu_ps(x + i, _mm512_sub_ps(xi, _mm512_mul_ps(LR, upd)));
    }
    return i;
}
