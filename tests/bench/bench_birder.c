// bench_birder.c — throughput of the Birder codec kernels, one thread, against the
// copy bandwidth measured in the same run.
//
//   encode (worker fused kernel): reads g, m, b, writes m, b and 1/8 byte of bits:
//       20.125 bytes per element; bw fraction = Gelem/s * 20.125 / copy GB/s
//   aggregate (shard): count_planes of n vectors + requantize, G elements/s
//   apply_bits / apply_planes (every replica): read+write x plus the encoding
//   (aggregate and apply at d = 64M, well past the 32 MiB L3)
//
// Figures (FIGURE lines; "vector" = the best ISA level this CPU has, capped by WREN_SIMD):
//   birder_mem_bw_copy_gbs (best of a measurement at the start and one at the end)
//   birder_encode_gelems_{1M,16M,110M}, birder_encode_bw_fraction_{1M,16M,110M}   (vector)
//   birder_encode_scalar_gelems_{1M,16M,110M}, birder_encode_avx2_gelems_16M
//   birder_stream_only_gelems_{...}: the same memory traffic without the codec's
//       arithmetic; birder_encode_vs_stream_{...} = encode / stream-only (vector)
//   birder_aggregate_n4_gelems, birder_aggregate_n16_gelems (+ _avx2 where the vector
//       level is above AVX2, + _scalar; the requantize kernel each level runs is printed),
//   birder_count_planes_n{4,16}_gelems, birder_requantize_n{4,16}_gelems: the halves (vector)
//   birder_apply_bits_gelems, birder_apply_bits_bw_fraction,
//   birder_apply_planes_n16_gelems, birder_apply_planes_n16_bw_fraction (+ _scalar)
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "birder.h"
#include "cpu.h"

typedef struct {
    float *g, *m, *b, *x;
    uint64_t *bits, *planes, *out;
    const uint64_t **vecs;
    int n_workers;
    size_t n;
    uint64_t step;
} bench_arg;

static void run_encode(void *p) {
    bench_arg *a = p;
    wr_birder_encode(a->g, a->m, a->b, a->n, 0.9f, wr_rng_key_make(1, 0, a->step++), 0, a->bits);
}

// The encode's memory traffic with none of its arithmetic (m and b updates only): the
// practical bound for a read-3/write-2 in-place stream on this machine, measured
// beside the copy bound (in-place updates pay no write-allocate, unlike a copy).
__attribute__((target("avx2"))) static void run_stream_only(void *p) {
    bench_arg *a = p;
    const __m256 vb = _mm256_set1_ps(0.9f), vo = _mm256_set1_ps(0.1f);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (size_t j = 0; j + 8 <= a->n; j += 8) {
        __m256 g = _mm256_loadu_ps(a->g + j);
        __m256 m = _mm256_add_ps(_mm256_mul_ps(vb, _mm256_loadu_ps(a->m + j)), _mm256_mul_ps(vo, g));
        __m256 b = _mm256_add_ps(_mm256_mul_ps(vb, _mm256_loadu_ps(a->b + j)),
                                 _mm256_mul_ps(vo, _mm256_and_ps(g, absm)));
        _mm256_storeu_ps(a->m + j, m);
        _mm256_storeu_ps(a->b + j, b);
    }
}

// The shard's `1bit` aggregation: count, then re-quantize.
static void run_aggregate(void *p) {
    bench_arg *a = p;
    wr_birder_aggregate(a->vecs, a->n_workers, a->n, wr_rng_key_make(1, 0xB0000000u, a->step++), 0, a->planes,
                        a->out);
}

static void run_count(void *p) {
    bench_arg *a = p;
    wr_birder_count_planes(a->vecs, a->n_workers, a->n, a->planes);
}

// Requantizes the planes the last run_count left (run_aggregate may leave none: they are its scratch).
static void run_requantize(void *p) {
    bench_arg *a = p;
    wr_birder_requantize(a->planes, a->n_workers, a->n, wr_rng_key_make(1, 0xB0000000u, a->step++), 0,
                         a->out);
}

static void run_apply_bits(void *p) {
    bench_arg *a = p;
    wr_birder_apply_bits(a->x, a->bits, a->n, 1e-6f, 0.01f);
}

static void run_apply_planes(void *p) {
    bench_arg *a = p;
    wr_birder_apply_planes(a->x, a->planes, a->n_workers, a->n, 1e-6f, 0.01f);
}

static uint64_t xs = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    xs ^= xs << 13;
    xs ^= xs >> 7;
    xs ^= xs << 17;
    return xs;
}
static float rnd_float(void) { return (float)(rnd() >> 40) / 8388608.0f - 1.0f; }  // [-1,1)

// bw-fraction figures are printed at the end, against the best copy bandwidth seen at
// the start and the end of the run (the machine is shared: the bound is the best).
static struct {
    char name[96];
    double gbs;  // achieved bytes/s of the kernel, in GB/s
} fracs[32];
static int n_fracs;

static void defer_fraction(const char *name, double gbs) {
    if (n_fracs < 32) {
        snprintf(fracs[n_fracs].name, sizeof fracs[n_fracs].name, "%s", name);
        fracs[n_fracs++].gbs = gbs;
    }
}

static const char *size_name(size_t n) { return n >= 100000000 ? "110M" : n >= 10000000 ? "16M" : "1M"; }

// Best-of-reps Gelem/s of fn at ISA level lvl.
static double gelems(void (*fn)(void *), bench_arg *a, int lvl, int reps) {
    wr_cpu_force_level(lvl);
    double t = wr_bench_best(fn, a, reps);
    wr_cpu_force_level(-1);
    return (double)a->n / t / 1e9;
}

int main(void) {
    int vec = (int)wr_cpu_level();
    printf("birder codec benchmark, one thread; vector level = %s\n", wr_isa_name(vec));
    double bw = wr_bench_mem_bw_copy((size_t)256 << 20);
    printf("copy bandwidth (256 MiB, read+write): %.2f GB/s\n", bw);

    // ---- worker fused encode ----
    static const size_t sizes[] = {1u << 20, 16u << 20, 110000000u};
    for (size_t s = 0; s < 3; s++) {
        size_t n = sizes[s];
        int reps = n <= (1u << 20) ? 50 : n <= (16u << 20) ? 8 : 3;
        bench_arg a = {0};
        a.n = n;
        a.g = wr_alloc_vec(n * 4);
        a.m = wr_alloc_vec(n * 4);
        a.b = wr_alloc_vec(n * 4);
        a.bits = wr_alloc_vec(wr_birder_words(n) * 8);
        for (size_t j = 0; j < n; j++) {
            a.g[j] = rnd_float();
            a.m[j] = 0.1f * a.g[j];
            a.b[j] = fabsf(a.m[j]) + 0.01f;
        }
        const char *sn = size_name(n);
        char name[96];
        double stream_ge = 0;
        if (wr_cpu_max_level() >= WR_ISA_AVX2) {
            stream_ge = gelems(run_stream_only, &a, WR_ISA_AVX512, reps);
            printf("stream m,b only d=%-5s %6.3f Gelem/s  %6.2f GB/s (20 B/elem)\n", sn, stream_ge,
                   stream_ge * 20.0);
            snprintf(name, sizeof name, "birder_stream_only_gelems_%s", sn);
            wr_figure(name, stream_ge, "Gelem/s");
        }
        for (int lvl = vec; lvl >= 0; lvl--) {
            // Scalar and AVX2 only where they are cheap to time (the 110M scalar run is long).
            if (lvl != vec && lvl != WR_ISA_SCALAR && s != 1) continue;
            double ge = gelems(run_encode, &a, lvl, lvl == WR_ISA_SCALAR ? (reps + 1) / 2 : reps);
            double frac = ge * 20.125 / bw;
            printf("encode d=%-5s %-7s %6.3f Gelem/s  %6.2f GB/s  %.2f of copy bw\n", sn, wr_isa_name(lvl),
                   ge, ge * 20.125, frac);
            if (lvl == vec) {
                snprintf(name, sizeof name, "birder_encode_gelems_%s", sn);
                wr_figure(name, ge, "Gelem/s");
                snprintf(name, sizeof name, "birder_encode_bw_fraction_%s", sn);
                defer_fraction(name, ge * 20.125);
                if (stream_ge > 0) {
                    snprintf(name, sizeof name, "birder_encode_vs_stream_%s", sn);
                    wr_figure(name, ge / stream_ge, "fraction");
                }
            } else {
                snprintf(name, sizeof name, "birder_encode_%s_gelems_%s", wr_isa_name(lvl), sn);
                wr_figure(name, ge, "Gelem/s");
            }
        }
        free(a.g);
        free(a.m);
        free(a.b);
        free(a.bits);
    }

    // ---- shard aggregation and the replicas' update, d = 64M (x is 256 MB, 8x the L3) ----
    size_t n = 64u << 20, nw = wr_birder_words(n);
    static const int workers[] = {4, 16};
    uint64_t *vecs[16];
    for (int i = 0; i < 16; i++) {
        vecs[i] = wr_alloc_vec(nw * 8);
        for (size_t w = 0; w < nw; w++) vecs[i][w] = rnd();
    }
    bench_arg a = {0};
    a.n = n;
    a.vecs = (const uint64_t **)vecs;
    a.planes = wr_alloc_vec(5 * nw * 8);
    a.out = wr_alloc_vec(nw * 8);
    a.x = wr_alloc_vec(n * 4);
    for (size_t j = 0; j < n; j++) a.x[j] = rnd_float();
    printf("requantize kernel here: %s\n", wr_birder_requantize_variant());
    for (int k = 0; k < 2; k++) {
        a.n_workers = workers[k];
        int P = wr_birder_planes(a.n_workers);
        // bytes: read n vectors, write + read P planes, write the 1-bit output
        double bytes = (a.n_workers + 2.0 * P + 1.0) / 8.0;
        // The vector level, AVX2 when the vector level is above it, scalar.
        int lvls[3] = {vec, WR_ISA_AVX2, WR_ISA_SCALAR};
        for (int li = 0; li < 3; li++) {
            int lvl = lvls[li];
            if (li > 0 && lvl >= vec) continue;
            double ge = gelems(run_aggregate, &a, lvl, lvl == vec ? 10 : lvl == WR_ISA_AVX2 ? 5 : 1);
            wr_cpu_force_level(lvl);
            printf("aggregate n=%-2d %-7s %6.3f Gelem/s  (%.2f of copy bw at %.3f B/elem; requantize %s)\n",
                   a.n_workers, wr_isa_name(lvl), ge, ge * bytes / bw, bytes, wr_birder_requantize_variant());
            wr_cpu_force_level(-1);
            char name[96];
            snprintf(name, sizeof name, "birder_aggregate_n%d%s%s_gelems", a.n_workers, lvl == vec ? "" : "_",
                     lvl == vec ? "" : wr_isa_name(lvl));
            wr_figure(name, ge, "Gelem/s");
            if (lvl != vec) continue;
            // The two halves apart, at the vector level.
            double gc = gelems(run_count, &a, lvl, 10), gr = gelems(run_requantize, &a, lvl, 10);
            printf("  count_planes %6.3f Gelem/s, requantize %6.3f Gelem/s\n", gc, gr);
            snprintf(name, sizeof name, "birder_count_planes_n%d_gelems", a.n_workers);
            wr_figure(name, gc, "Gelem/s");
            snprintf(name, sizeof name, "birder_requantize_n%d_gelems", a.n_workers);
            wr_figure(name, gr, "Gelem/s");
        }
    }
    // apply: planes of n = 16 (from the last aggregate), bits = its requantized output
    a.bits = a.out;
    a.n_workers = 16;
    for (int lvl = vec; lvl >= 0; lvl -= (vec > 0 ? vec : 1)) {
        const char *suf = lvl == vec ? "" : "_scalar";
        char name[96];
        double ge = gelems(run_apply_bits, &a, lvl, lvl >= WR_ISA_AVX2 ? 10 : 2);
        double fr = ge * 8.125 / bw;
        printf("apply_bits      %-7s %6.3f Gelem/s  %.2f of copy bw (8.125 B/elem)\n", wr_isa_name(lvl), ge,
               fr);
        snprintf(name, sizeof name, "birder_apply_bits%s_gelems", suf);
        wr_figure(name, ge, "Gelem/s");
        snprintf(name, sizeof name, "birder_apply_bits%s_bw_fraction", suf);
        defer_fraction(name, ge * 8.125);
        ge = gelems(run_apply_planes, &a, lvl, lvl >= WR_ISA_AVX2 ? 10 : 2);
        double bpe = 8.0 + wr_birder_planes(16) / 8.0;
        fr = ge * bpe / bw;
        printf("apply_planes n=16 %-7s %6.3f Gelem/s  %.2f of copy bw (%.3f B/elem)\n", wr_isa_name(lvl), ge,
               fr, bpe);
        snprintf(name, sizeof name, "birder_apply_planes_n16%s_gelems", suf);
        wr_figure(name, ge, "Gelem/s");
        snprintf(name, sizeof name, "birder_apply_planes_n16%s_bw_fraction", suf);
        defer_fraction(name, ge * bpe);
        if (lvl == 0) break;
    }
    for (int i = 0; i < 16; i++) free(vecs[i]);
    free(a.planes);
    free(a.out);
    free(a.x);

    double bw2 = wr_bench_mem_bw_copy((size_t)256 << 20);
    printf("copy bandwidth again at the end: %.2f GB/s; bound used: the better of the two\n", bw2);
    if (bw2 > bw) bw = bw2;
    wr_figure("birder_mem_bw_copy_gbs", bw, "GB/s");
    for (int i = 0; i < n_fracs; i++) wr_figure(fracs[i].name, fracs[i].gbs / bw, "fraction");
    return 0;
}
