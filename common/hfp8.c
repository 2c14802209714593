// hfp8.c — scalar HFP8 conversions (the reference every vector kernel must
// match bit for bit) and the run-time dispatch of the array kernels.
//
// Round to nearest even, on the fp32 bits of |x| (no branches on the data, so
// the scalar loop is not bound by mispredictions on mixed-exponent data):
//   - at or above the target's min normal, add the rounding bias
//     (half - 1 + lowest kept bit) to the bits and cut the dropped low bits:
//     a carry walks into the exponent exactly as a rounding should, and the
//     cut bits minus the rebias are the code;
//   - below it, add the float C = 2^(emin - mbits + 23), whose ulp is the
//     target's subnormal spacing: the FPU's RNE (the default mode) rounds |x|
//     once, at the right place, and the bits of the sum minus the bits of C
//     count the steps;
//   - then clamp to the largest finite code (saturation, inf included).
// Stochastic rounding, the definition in hfp8.h: at or above the min normal
// the random bits, shifted to the dropped width, are added in place of the
// bias (the carry out of the dropped bits is exactly "f + r >= 2^32"); below
// it the dropped width grows with the distance to the min normal, so explicit
// shifts extract the kept steps and the dropped part as a 32-bit fraction.
// The vector kernels implement the same definitions with the same tricks; the
// unit test checks all of them against an independent exact reference.
#include "hfp8.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#include "cpu.h"
#include "rng.h"

typedef struct {
    int mbits;         // mantissa bits of the target
    int emin;          // exponent of the min normal (1 - bias)
    uint32_t maxcode;  // magnitude code of the largest finite value
    uint32_t minnorm;  // fp32 bits of the min normal 2^emin
    uint32_t rebias;   // (fp32 exponent field << mbits) - rebias = code
    float magic;       // C above
} fp8_params;

static const fp8_params k_params[2] = {
    [WR_FP8_E4M3B11] = {3, -10, 0x7F, (127 - 10) << 23, (127 - 10 - 1) << 3, 0x1p10f},
    [WR_FP8_E5M2] = {2, -14, 0x7B, (127 - 14) << 23, (127 - 14 - 1) << 2, 0x1p7f},
};

static inline uint32_t f2u(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float u2f(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

float wr_fp8_max(enum wr_fp8_format f) { return f == WR_FP8_E5M2 ? WR_FP8_E5M2_MAX : WR_FP8_E4M3B11_MAX; }

const char *wr_fp8_format_name(enum wr_fp8_format f) { return f == WR_FP8_E5M2 ? "e5m2" : "e4m3b11"; }

// Magnitude code of |x| (bits a, not NaN), nearest even, saturated.
static inline __attribute__((always_inline)) uint32_t mag_rne(uint32_t a, const fp8_params *p) {
    int d0 = 23 - p->mbits;
    uint32_t t = a + ((1u << (d0 - 1)) - 1) + ((a >> d0) & 1);
    uint32_t cn = (t >> d0) - p->rebias;
    uint32_t cs = f2u(u2f(a) + p->magic) - f2u(p->magic);
    uint32_t sel = 0u - (uint32_t)(a >= p->minnorm);  // select without a branch
    uint32_t c = (cn & sel) | (cs & ~sel);
    return c > p->maxcode ? p->maxcode : c;
}

// Magnitude code of |x| (bits a, not NaN), stochastic with random bits r, saturated.
static inline __attribute__((always_inline)) uint32_t mag_sr(uint32_t a, uint32_t r, const fp8_params *p) {
    int d0 = 23 - p->mbits;
    uint32_t c;
    if (a >= p->minnorm) {
        c = ((a + (r >> (32 - d0))) >> d0) - p->rebias;
    } else {
        uint32_t E = a >> 23;  // 0 for fp32 subnormals (no implicit bit)
        uint32_t sig = (a & 0x007FFFFFu) | (E ? 0x00800000u : 0);
        int d = d0 + 127 + p->emin - (int)(E ? E : 1);  // dropped bits, > d0
        uint32_t kept = d < 32 ? sig >> d : 0;
        uint32_t frac = d <= 32 ? (uint32_t)((uint64_t)sig << (32 - d))
                                : (d < 64 ? sig >> (d - 32) : 0);  // truncated, far below
        c = kept + ((uint32_t)(frac + r) < frac);                  // carry out of 32 bits
    }
    return c > p->maxcode ? p->maxcode : c;
}

// Sign, NaN and zero rules around a magnitude code.
static inline __attribute__((always_inline)) uint8_t finish(uint32_t bits, uint32_t mag,
                                                            enum wr_fp8_format f) {
    uint32_t sign = bits >> 31;
    int nan_in = (bits & 0x7FFFFFFFu) > 0x7F800000u;
    if (f == WR_FP8_E5M2) return (uint8_t)((sign << 7) | (nan_in ? WR_FP8_E5M2_NAN : mag));
    if (nan_in) return (uint8_t)WR_FP8_E4M3B11_NAN;
    return (uint8_t)(((mag != 0) & sign) << 7 | mag);  // no -0 in E4M3-b11
}

static inline __attribute__((always_inline)) uint8_t enc_rne(float x, enum wr_fp8_format f) {
    uint32_t b = f2u(x);
    return finish(b, mag_rne(b & 0x7FFFFFFFu, &k_params[f == WR_FP8_E5M2]), f);
}

static inline __attribute__((always_inline)) uint8_t enc_sr(float x, enum wr_fp8_format f, uint32_t r) {
    uint32_t b = f2u(x);
    return finish(b, mag_sr(b & 0x7FFFFFFFu, r, &k_params[f == WR_FP8_E5M2]), f);
}

uint8_t wr_fp8_encode(float x, enum wr_fp8_format f) { return enc_rne(x, f); }

uint8_t wr_fp8_encode_sr(float x, enum wr_fp8_format f, uint32_t r) { return enc_sr(x, f, r); }

static float decode_formula(uint8_t c, enum wr_fp8_format f) {
    int neg = c >> 7;
    float v;
    if (f == WR_FP8_E5M2) {
        int e = (c >> 2) & 31, m = c & 3;
        if (e == 31) {
            if (m) return u2f(0x7FC00000u);
            v = INFINITY;
        } else {
            v = e ? ldexpf((float)(4 + m), e - 17) : ldexpf((float)m, -16);
        }
    } else {
        if (c == 0x80) return u2f(0x7FC00000u);
        int e = (c >> 3) & 15, m = c & 7;
        v = e ? ldexpf((float)(8 + m), e - 14) : ldexpf((float)m, -13);
    }
    return neg ? -v : v;
}

static float g_table[2][256];
static pthread_once_t g_table_once = PTHREAD_ONCE_INIT;

static void table_init(void) {
    for (int f = 0; f < 2; f++)
        for (int c = 0; c < 256; c++) g_table[f][c] = decode_formula((uint8_t)c, (enum wr_fp8_format)f);
}

const float *wr_fp8_decode_table(enum wr_fp8_format f) {
    pthread_once(&g_table_once, table_init);
    return g_table[f == WR_FP8_E5M2];
}

float wr_fp8_decode(uint8_t code, enum wr_fp8_format f) { return decode_formula(code, f); }

// ---- scalar array references -------------------------------------------------

// The loops below are instantiated per format (FMT_SWITCH), so the format's
// constants fold into the code.
#define FMT_SWITCH(f, body)                               \
    do {                                                  \
        if ((f) == WR_FP8_E5M2) {                         \
            const enum wr_fp8_format ff = WR_FP8_E5M2;    \
            body;                                         \
        } else {                                          \
            const enum wr_fp8_format ff = WR_FP8_E4M3B11; \
            body;                                         \
        }                                                 \
    } while (0)

void wr_fp8_encode_array_ref(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f) {
    FMT_SWITCH(f, for (size_t i = 0; i < n; i++) out[i] = enc_rne(x[i], ff));
}

void wr_fp8_encode_scaled_array_ref(const float *x, uint8_t *out, size_t n, float scale,
                                    enum wr_fp8_format f) {
    FMT_SWITCH(f, for (size_t i = 0; i < n; i++) out[i] = enc_rne(x[i] * scale, ff));
}

void wr_fp8_decode_array_ref(const uint8_t *in, float *out, size_t n, enum wr_fp8_format f) {
    const float *t = wr_fp8_decode_table(f);
    for (size_t i = 0; i < n; i++) out[i] = t[in[i]];
}

void wr_fp8_quantize_inplace_ref(float *x, size_t n, enum wr_fp8_format f) {
    const float *t = wr_fp8_decode_table(f);
    FMT_SWITCH(f, for (size_t i = 0; i < n; i++) x[i] = t[enc_rne(x[i], ff)]);
}

void wr_fp8_encode_sr_array_ref(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f, uint64_t seed,
                                uint64_t offset) {
    wr_rng_key key = wr_rng_key_make(seed, 0, 0);
    FMT_SWITCH(f, for (size_t i = 0; i < n; i++)
                      out[i] = enc_sr(x[i], ff, wr_rng_u32(key, (uint32_t)(offset + i))));
}

void wr_fp8_quantize_sr_inplace_ref(float *x, size_t n, enum wr_fp8_format f, uint64_t seed,
                                    uint64_t offset) {
    const float *t = wr_fp8_decode_table(f);
    wr_rng_key key = wr_rng_key_make(seed, 0, 0);
    FMT_SWITCH(f, for (size_t i = 0; i < n; i++)
                      x[i] = t[enc_sr(x[i], ff, wr_rng_u32(key, (uint32_t)(offset + i)))]);
}

float wr_fp8_amax_ref(const float *x, size_t n) {
    // Max over the magnitude bits: for non-negative floats the unsigned order of
    // the bits is the numeric order, and every NaN sorts above inf.
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = f2u(x[i]) & 0x7FFFFFFFu;
        if (a > m) m = a;
    }
    return u2f(m);
}

// ---- dispatch ----------------------------------------------------------------

void wr_fp8_encode_array(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f) {
    switch (wr_cpu_level()) {
    case WR_ISA_AVX512: wr_fp8_encode_array_avx512(x, out, n, f); break;
    case WR_ISA_AVX2: wr_fp8_encode_array_avx2(x, out, n, f); break;
    default: wr_fp8_encode_array_ref(x, out, n, f);
    }
}

void wr_fp8_encode_scaled_array(const float *x, uint8_t *out, size_t n, float scale, enum wr_fp8_format f) {
    switch (wr_cpu_level()) {
    case WR_ISA_AVX512: wr_fp8_encode_scaled_array_avx512(x, out, n, scale, f); break;
    case WR_ISA_AVX2: wr_fp8_encode_scaled_array_avx2(x, out, n, scale, f); break;
    default: wr_fp8_encode_scaled_array_ref(x, out, n, scale, f);
    }
}

void wr_fp8_decode_array(const uint8_t *in, float *out, size_t n, enum wr_fp8_format f) {
    switch (wr_cpu_level()) {
    case WR_ISA_AVX512: wr_fp8_decode_array_avx512(in, out, n, f); break;
    case WR_ISA_AVX2: wr_fp8_decode_array_avx2(in, out, n, f); break;
    default: wr_fp8_decode_array_ref(in, out, n, f);
    }
}

void wr_fp8_quantize_inplace(float *x, size_t n, enum wr_fp8_format f) {
    switch (wr_cpu_level()) {
    case WR_ISA_AVX512: wr_fp8_quantize_inplace_avx512(x, n, f); break;
    case WR_ISA_AVX2: wr_fp8_quantize_inplace_avx2(x, n, f); break;
    default: wr_fp8_quantize_inplace_ref(x, n, f);
    }
}

void wr_fp8_encode_sr_array(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f, uint64_t seed,
                            uint64_t offset) {
    switch (wr_cpu_level()) {
    case WR_ISA_AVX512: wr_fp8_encode_sr_array_avx512(x, out, n, f, seed, offset); break;
    case WR_ISA_AVX2: wr_fp8_encode_sr_array_avx2(x, out, n, f, seed, offset); break;
    default: wr_fp8_encode_sr_array_ref(x, out, n, f, seed, offset);
    }
}

void wr_fp8_quantize_sr_inplace(float *x, size_t n, enum wr_fp8_format f, uint64_t seed, uint64_t offset) {
    switch (wr_cpu_level()) {
    case WR_ISA_AVX512: wr_fp8_quantize_sr_inplace_avx512(x, n, f, seed, offset); break;
    case WR_ISA_AVX2: wr_fp8_quantize_sr_inplace_avx2(x, n, f, seed, offset); break;
    default: wr_fp8_quantize_sr_inplace_ref(x, n, f, seed, offset);
    }
}

float wr_fp8_amax(const float *x, size_t n) {
    switch (wr_cpu_level()) {
    case WR_ISA_AVX512: return wr_fp8_amax_avx512(x, n);
    case WR_ISA_AVX2: return wr_fp8_amax_avx2(x, n);
    default: return wr_fp8_amax_ref(x, n);
    }
}
