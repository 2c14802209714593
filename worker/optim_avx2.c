// optim_avx2.c — the Adam kernel over 8 lanes (optim.h): the SSE2 kernel's
// operations in the same order (multiply, add, sqrt, divide; no FMA), so the
// same bits, more elements per instruction.
#include <immintrin.h>

#include "optim.h"

size_t wr_adam_core_avx2(float *x, float *m, float *v, const float *g, size_t n, const wr_adam_consts *c) {
    const __m256 B1 = _mm256_set1_ps(c->b1), B2 = _mm256_set1_ps(c->b2), OB1 = _mm256_set1_ps(c->ob1),
                 OB2 = _mm256_set1_ps(c->ob2), IC1 = _mm256_set1_ps(c->ic1), IC2 = _mm256_set1_ps(c->ic2),
                 EPS = _mm256_set1_ps(c->eps), WD = _mm256_set1_ps(c->wd), LR = _mm256_set1_ps(c->lr);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i), xi = _mm256_loadu_ps(x + i);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(B1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(OB1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(B2, _mm256_loadu_ps(v + i)),
                                  _mm256_mul_ps(OB2, _mm256_mul_ps(gi, gi)));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, IC2)), EPS);
        __m256 upd = _mm256_add_ps(_mm256_div_ps(_mm256_mul_ps(mi, IC1), den), _mm256_mul_ps(WD, xi));
        _mm256_storeu_ps(x + i, _mm256_sub_ps(xi, _mm256_mul_ps(LR, upd)));
    }
    return i;
}
