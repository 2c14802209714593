// synth_avx512.c — the synthetic gradient kernel with AVX-512 (synth.h): two
// 16-lane accumulators are lanes 0-15 and 16-31 of the reference order, and
// full-line (64-byte) streaming stores for a large aligned g.
#include <immintrin.h>

#include "synth.h"

double wr_synth_grad_avx512(const float *x, const float *tab, uint32_t o, size_t d, float *g) {
    const size_t main_n = d - d % 32;
    const int stream = d * sizeof(float) > WR_SYNTH_STREAM_BYTES && ((uintptr_t)g % 64) == 0;
    const __m512 c = _mm512_set1_ps(0.01f);
    double total = 0.0;
    for (size_t s = 0; s < main_n; s += WR_SYNTH_BLOCK) {
        size_t e = main_n - s < WR_SYNTH_BLOCK ? main_n : s + WR_SYNTH_BLOCK;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (size_t j = s; j < e; j += 32) {
            const float *u = tab + ((j + o) & (WR_SYNTH_TABLE - 1));
            __m512 v0 = _mm512_add_ps(_mm512_mul_ps(c, _mm512_loadu_ps(x + j)),
                                      _mm512_mul_ps(c, _mm512_loadu_ps(u)));
            __m512 v1 = _mm512_add_ps(_mm512_mul_ps(c, _mm512_loadu_ps(x + j + 16)),
                                      _mm512_mul_ps(c, _mm512_loadu_ps(u + 16)));
            if (stream) {
                _mm512_stream_ps(g + j, v0);
                _mm512_stream_ps(g + j + 16, v1);
            } else {
                _mm512_storeu_ps(g + j, v0);
                _mm512_storeu_ps(g + j + 16, v1);
            }
            a0 = _mm512_add_ps(a0, _mm512_mul_ps(v0, v0));
            a1 = _mm512_add_ps(a1, _mm512_mul_ps(v1, v1));
        }
        float lane[32];
        _mm512_storeu_ps(lane, a0);
        _mm512_storeu_ps(lane + 16, a1);
        for (int l = 0; l < 32; l++) total += (double)lane[l];
    }
    if (stream) _mm_sfence();
    for (size_t j = main_n; j < d; j++) {  // the tail, as in synth.c
        float v = 0.01f * x[j] + 0.01f * tab[(j + o) & (WR_SYNTH_TABLE - 1)];
        g[j] = v;
        total += (double)(v * v);
    }
    return total;
}
