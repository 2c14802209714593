// synth.c — synthetic gradient kernel: scalar reference, SSE2 version and
// dispatch (synth.h). The AVX-512 version is in synth_avx512.c.
#include "synth.h"

#include <emmintrin.h>

#include "cpu.h"

static inline float synth_one(const float *x, const float *tab, uint32_t o, size_t j) {
    return 0.01f * x[j] + 0.01f * tab[(j + o) & (WR_SYNTH_TABLE - 1)];
}

// The last d % 32 elements, after the blocks (shared by every version).
static double synth_tail(const float *x, const float *tab, uint32_t o, size_t from, size_t d, float *g,
                         double total) {
    for (size_t j = from; j < d; j++) {
        float v = synth_one(x, tab, o, j);
        g[j] = v;
        total += (double)(v * v);
    }
    return total;
}

double wr_synth_grad_ref(const float *x, const float *tab, uint32_t o, size_t d, float *g) {
    const size_t main_n = d - d % 32;
    double total = 0.0;
    for (size_t s = 0; s < main_n; s += WR_SYNTH_BLOCK) {
        size_t e = main_n - s < WR_SYNTH_BLOCK ? main_n : s + WR_SYNTH_BLOCK;
        float acc[32] = {0};
        for (size_t j = s; j < e; j++) {
            float v = synth_one(x, tab, o, j);
            g[j] = v;
            acc[j % 32] += v * v;
        }
        for (int l = 0; l < 32; l++) total += (double)acc[l];
    }
    return synth_tail(x, tab, o, main_n, d, g, total);
}

double wr_synth_grad_sse2(const float *x, const float *tab, uint32_t o, size_t d, float *g) {
    const size_t main_n = d - d % 32;
    const int stream = d * sizeof(float) > WR_SYNTH_STREAM_BYTES && ((uintptr_t)g % 64) == 0;
    const __m128 c = _mm_set1_ps(0.01f);
    double total = 0.0;
    for (size_t s = 0; s < main_n; s += WR_SYNTH_BLOCK) {
        size_t e = main_n - s < WR_SYNTH_BLOCK ? main_n : s + WR_SYNTH_BLOCK;
        __m128 acc[8];
        for (int k = 0; k < 8; k++) acc[k] = _mm_setzero_ps();
        for (size_t j = s; j < e; j += 32) {
            const float *u = tab + ((j + o) & (WR_SYNTH_TABLE - 1));
            for (int k = 0; k < 8; k++) {
                __m128 v = _mm_add_ps(_mm_mul_ps(c, _mm_loadu_ps(x + j + 4 * k)),
                                      _mm_mul_ps(c, _mm_loadu_ps(u + 4 * k)));
                if (stream)
                    _mm_stream_ps(g + j + 4 * k, v);
                else
                    _mm_storeu_ps(g + j + 4 * k, v);
                acc[k] = _mm_add_ps(acc[k], _mm_mul_ps(v, v));
            }
        }
        float lane[32];
        for (int k = 0; k < 8; k++) _mm_storeu_ps(lane + 4 * k, acc[k]);
        for (int l = 0; l < 32; l++) total += (double)lane[l];
    }
    if (stream) _mm_sfence();
    return synth_tail(x, tab, o, main_n, d, g, total);
}

double wr_synth_grad(const float *x, const float *tab, uint32_t o, size_t d, float *g) {
    if (wr_cpu_level() == WR_ISA_AVX512) return wr_synth_grad_avx512(x, tab, o, d, g);
    return wr_synth_grad_sse2(x, tab, o, d, g);
}
