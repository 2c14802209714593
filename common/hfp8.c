// hfp8.c — scalar HFP8 conversions (the reference every vector kernel must
// match bit for bit) and the run-time dispatch of the array kernels.
//
// The scalar encoder works on the integer significand of the fp32 input: it
// finds how many low bits the target format cannot hold at this exponent
// (more below the target's min normal, where the spacing is fixed), keeps the
// rest, and rounds on the dropped part expressed as a 32-bit binary fraction.
// The vector kernels use different (faster) tricks; the tests compare them.
#include "hfp8.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#include "cpu.h"
#include "rng.h"

typedef struct {
    int mbits;         // mantissa bits of the target
    int emin;          // exponent of the min normal (1 - bias)
    int emax;          // exponent of the largest finite binade
    uint32_t maxcode;  // magnitude code of the largest finite value
} fp8_params;

static const fp8_params k_params[2] = {
    [WR_FP8_E4M3B11] = {3, -10, 4, 0x7F},
    [WR_FP8_E5M2] = {2, -14, 15, 0x7B},
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

float wr_fp8_max(enum wr_fp8_format f) {
    return f == WR_FP8_E5M2 ? WR_FP8_E5M2_MAX : WR_FP8_E4M3B11_MAX;
}

const char *wr_fp8_format_name(enum wr_fp8_format f) {
    return f == WR_FP8_E5M2 ? "e5m2" : "e4m3b11";
}

// sr = 0: round to nearest even; sr = 1: stochastic with random bits r.
static inline uint8_t encode_one(float x, enum wr_fp8_format f, int sr, uint32_t r) {
    const fp8_params *p = &k_params[f == WR_FP8_E5M2];
    uint32_t bits = f2u(x);
    uint32_t sign = bits >> 31;
    uint32_t a = bits & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return f == WR_FP8_E5M2 ? (uint8_t)((sign << 7) | WR_FP8_E5M2_NAN)
                                                 : (uint8_t)WR_FP8_E4M3B11_NAN;
    int e;
    uint32_t sig;
    if (a >= 0x00800000u) {
        e = (int)(a >> 23) - 127;
        sig = (a & 0x007FFFFFu) | 0x00800000u;
    } else {  // fp32 subnormal or zero: no implicit bit
        e = -126;
        sig = a;
    }
    uint32_t mag;
    if (e > p->emax) {
        mag = p->maxcode;  // >= 2^(emax+1): past the overflow threshold, inf too
    } else {
        int sub = e < p->emin ? p->emin - e : 0;  // extra dropped bits below min normal
        int d = 23 - p->mbits + sub;              // dropped low bits of sig, >= 20
        uint32_t kept = d >= 32 ? 0 : sig >> d;
        uint32_t frac;  // the dropped bits as a 32-bit binary fraction
        if (d <= 32)
            frac = (uint32_t)((uint64_t)sig << (32 - d));
        else
            frac = d - 32 >= 32 ? 0 : sig >> (d - 32);  // only far below min subnormal
        uint32_t up;
        if (sr)
            up = (uint32_t)(frac + r) < frac;  // carry out of 32 bits
        else
            up = frac > 0x80000000u || (frac == 0x80000000u && (kept & 1));
        int ebin = e < p->emin ? p->emin : e;
        mag = ((uint32_t)(ebin - p->emin) << p->mbits) + kept + up;
        if (mag > p->maxcode) mag = p->maxcode;
    }
    if (f == WR_FP8_E5M2) return (uint8_t)((sign << 7) | mag);
    return mag == 0 ? 0 : (uint8_t)((sign << 7) | mag);  // no -0 in E4M3-b11
}

uint8_t wr_fp8_encode(float x, enum wr_fp8_format f) { return encode_one(x, f, 0, 0); }

uint8_t wr_fp8_encode_sr(float x, enum wr_fp8_format f, uint32_t r) {
    return encode_one(x, f, 1, r);
}

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
        for (int c = 0; c < 256; c++)
            g_table[f][c] = decode_formula((uint8_t)c, (enum wr_fp8_format)f);
}

const float *wr_fp8_decode_table(enum wr_fp8_format f) {
    pthread_once(&g_table_once, table_init);
    return g_table[f == WR_FP8_E5M2];
}

float wr_fp8_decode(uint8_t code, enum wr_fp8_format f) { return decode_formula(code, f); }

// ---- scalar array references -------------------------------------------------

void wr_fp8_encode_array_ref(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f) {
    for (size_t i = 0; i < n; i++) out[i] = encode_one(x[i], f, 0, 0);
}

void wr_fp8_decode_array_ref(const uint8_t *in, float *out, size_t n, enum wr_fp8_format f) {
    const float *t = wr_fp8_decode_table(f);
    for (size_t i = 0; i < n; i++) out[i] = t[in[i]];
}

void wr_fp8_quantize_inplace_ref(float *x, size_t n, enum wr_fp8_format f) {
    const float *t = wr_fp8_decode_table(f);
    for (size_t i = 0; i < n; i++) x[i] = t[encode_one(x[i], f, 0, 0)];
}

void wr_fp8_encode_sr_array_ref(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f,
                                uint64_t seed, uint64_t offset) {
    wr_rng_key key = wr_rng_key_make(seed, 0, 0);
    for (size_t i = 0; i < n; i++)
        out[i] = encode_one(x[i], f, 1, wr_rng_u32(key, (uint32_t)(offset + i)));
}

void wr_fp8_quantize_sr_inplace_ref(float *x, size_t n, enum wr_fp8_format f, uint64_t seed,
                                    uint64_t offset) {
    const float *t = wr_fp8_decode_table(f);
    wr_rng_key key = wr_rng_key_make(seed, 0, 0);
    for (size_t i = 0; i < n; i++)
        x[i] = t[encode_one(x[i], f, 1, wr_rng_u32(key, (uint32_t)(offset + i)))];
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

void wr_fp8_encode_sr_array(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f,
                            uint64_t seed, uint64_t offset) {
    switch (wr_cpu_level()) {
    case WR_ISA_AVX512: wr_fp8_encode_sr_array_avx512(x, out, n, f, seed, offset); break;
    case WR_ISA_AVX2: wr_fp8_encode_sr_array_avx2(x, out, n, f, seed, offset); break;
    default: wr_fp8_encode_sr_array_ref(x, out, n, f, seed, offset);
    }
}

void wr_fp8_quantize_sr_inplace(float *x, size_t n, enum wr_fp8_format f, uint64_t seed,
                                uint64_t offset) {
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
