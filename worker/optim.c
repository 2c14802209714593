// optim.c — Adam and SGD-momentum over flat fp32 vectors (optim.h). The main
// versions use SSE2 (part of every x86-64, so no dispatch is needed): Adam's
// sqrt and division do not vectorize in plain C (errno), and scalar they cost
// ~4 ns per element, as much as the mlp's whole step.
#include "optim.h"

#include <emmintrin.h>
#include <math.h>

#include "cpu.h"

static void adam_consts(int64_t t, float beta1, float beta2, float *ic1, float *ic2) {
    if (t < 1) t = 1;
    *ic1 = (float)(1.0 / (1.0 - pow((double)beta1, (double)t)));
    *ic2 = (float)(1.0 / (1.0 - pow((double)beta2, (double)t)));
}

static inline void adam_one(float *x, float *m, float *v, const float *g, size_t i, float lr, float b1,
                            float b2, float ob1, float ob2, float ic1, float ic2, float eps, float wd) {
    float gi = g[i];
    float mi = b1 * m[i] + ob1 * gi;
    float vi = b2 * v[i] + ob2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    float upd = (mi * ic1) / (sqrtf(vi * ic2) + eps) + wd * x[i];
    x[i] = x[i] - lr * upd;
}

void wr_adam_update_ref(float *x, float *m, float *v, const float *g, size_t n, int64_t t, float lr,
                        float beta1, float beta2, float eps, float wd) {
    float ic1, ic2;
    adam_consts(t, beta1, beta2, &ic1, &ic2);
    const float ob1 = 1.0f - beta1, ob2 = 1.0f - beta2;
    for (size_t i = 0; i < n; i++) adam_one(x, m, v, g, i, lr, beta1, beta2, ob1, ob2, ic1, ic2, eps, wd);
}

void wr_adam_update(float *x, float *m, float *v, const float *g, size_t n, int64_t t, float lr, float beta1,
                    float beta2, float eps, float wd) {
    float ic1, ic2;
    adam_consts(t, beta1, beta2, &ic1, &ic2);
    const float ob1 = 1.0f - beta1, ob2 = 1.0f - beta2;
    const wr_adam_consts c = {beta1, beta2, ob1, ob2, ic1, ic2, eps, wd, lr};
    const enum wr_isa isa = wr_cpu_level();
    size_t done = isa == WR_ISA_AVX512 ? wr_adam_core_avx512(x, m, v, g, n, &c)
                  : isa == WR_ISA_AVX2 ? wr_adam_core_avx2(x, m, v, g, n, &c)
                                       : 0;
    x += done, m += done, v += done, g += done, n -= done;
    const __m128 B1 = _mm_set1_ps(beta1), B2 = _mm_set1_ps(beta2), OB1 = _mm_set1_ps(ob1),
                 OB2 = _mm_set1_ps(ob2), IC1 = _mm_set1_ps(ic1), IC2 = _mm_set1_ps(ic2),
                 EPS = _mm_set1_ps(eps), WD = _mm_set1_ps(wd), LR = _mm_set1_ps(lr);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128 gi = _mm_loadu_ps(g + i), xi = _mm_loadu_ps(x + i);
        __m128 mi = _mm_add_ps(_mm_mul_ps(B1, _mm_loadu_ps(m + i)), _mm_mul_ps(OB1, gi));
        __m128 vi = _mm_add_ps(_mm_mul_ps(B2, _mm_loadu_ps(v + i)), _mm_mul_ps(OB2, _mm_mul_ps(gi, gi)));
        _mm_storeu_ps(m + i, mi);
        _mm_storeu_ps(v + i, vi);
        __m128 den = _mm_add_ps(_mm_sqrt_ps(_mm_mul_ps(vi, IC2)), EPS);
        __m128 upd = _mm_add_ps(_mm_div_ps(_mm_mul_ps(mi, IC1), den), _mm_mul_ps(WD, xi));
        _mm_storeu_ps(x + i, _mm_sub_ps(xi, _mm_mul_ps(LR, upd)));
    }
    for (; i < n; i++) adam_one(x, m, v, g, i, lr, beta1, beta2, ob1, ob2, ic1, ic2, eps, wd);
}

void wr_sgdm_update_ref(float *x, float *mom, const float *g, size_t n, float lr, float momentum, float wd) {
    for (size_t i = 0; i < n; i++) {
        float mi = momentum * mom[i] + g[i];
        mom[i] = mi;
        x[i] = x[i] - lr * (mi + wd * x[i]);
    }
}

void wr_sgdm_update(float *x, float *mom, const float *g, size_t n, float lr, float momentum, float wd) {
    const __m128 MU = _mm_set1_ps(momentum), WD = _mm_set1_ps(wd), LR = _mm_set1_ps(lr);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128 xi = _mm_loadu_ps(x + i);
        __m128 mi = _mm_add_ps(_mm_mul_ps(MU, _mm_loadu_ps(mom + i)), _mm_loadu_ps(g + i));
        _mm_storeu_ps(mom + i, mi);
        _mm_storeu_ps(x + i, _mm_sub_ps(xi, _mm_mul_ps(LR, _mm_add_ps(mi, _mm_mul_ps(WD, xi)))));
    }
    if (i < n) wr_sgdm_update_ref(x + i, mom + i, g + i, n - i, lr, momentum, wd);
}
