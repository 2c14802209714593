// test_parallel.c — wr_par_ranges (common/parallel.h): every element in
// exactly one range, bounds multiples of 64, the thread count clamped by
// WR_PAR_MAX_THREADS and min_per_thread; and Birder's encode and apply run
// over threads as the PS worker runs them give the bits and floats of one
// thread.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "birder.h"
#include "parallel.h"
#include "wr_common.h"

typedef struct {
    pthread_mutex_t mu;
    unsigned char *hits;  // per element: how many ranges held it
    size_t lo[16], hi[16];
    int n_ranges;
} cover;

static void mark(void *ctx, size_t lo, size_t hi) {
    cover *c = ctx;
    pthread_mutex_lock(&c->mu);
    for (size_t i = lo; i < hi; i++) c->hits[i]++;
    if (c->n_ranges < 16) c->lo[c->n_ranges] = lo, c->hi[c->n_ranges] = hi;
    c->n_ranges++;
    pthread_mutex_unlock(&c->mu);
}

static int run_cover(int threads, size_t n, size_t min_per) {
    cover c = {.hits = calloc(n + 1, 1)};
    pthread_mutex_init(&c.mu, NULL);
    wr_par_ranges(threads, n, min_per, mark, &c);
    for (size_t i = 0; i < n; i++) assert_int_equal(c.hits[i], 1);
    for (int r = 0; r < c.n_ranges && r < 16; r++) {
        assert_true(c.lo[r] < c.hi[r]);  // no empty range is run
        assert_int_equal(c.lo[r] % 64, 0);
        assert_true(c.hi[r] % 64 == 0 || c.hi[r] == n);
    }
    pthread_mutex_destroy(&c.mu);
    free(c.hits);
    return c.n_ranges;
}

static void test_ranges_cover(void **state) {
    (void)state;
    assert_int_equal(run_cover(1, 1000, 0), 1);
    assert_int_equal(run_cover(2, 1000, 0), 2);
    assert_int_equal(run_cover(3, 100003, 0), 3);
    assert_int_equal(run_cover(64, 100003, 0), WR_PAR_MAX_THREADS);  // clamped
    assert_int_equal(run_cover(0, 5000, 0), 1);                      // at least one
    assert_int_equal(run_cover(4, 5000, 2000), 2);                   // min_per_thread
    assert_int_equal(run_cover(4, 100, 1 << 16), 1);
    assert_true(run_cover(4, 65, 0) <= 2);  // two words: at most two non-empty ranges
    assert_int_equal(run_cover(3, 0, 0), 0);
}

typedef struct {
    const float *g;
    float *m, *b, *x;
    uint64_t *bits;
    wr_rng_key key;
    size_t base;
} codec_job;

static void codec_range(void *ctx, size_t lo, size_t hi) {
    codec_job *j = ctx;
    size_t at = j->base + lo;
    wr_birder_encode(j->g + at, j->m + at, j->b + at, hi - lo, 0.9f, j->key, at, j->bits + lo / 64);
    wr_birder_apply_bits(j->x + lo, j->bits + lo / 64, hi - lo, 0.01f, 0.001f);
}

// One slice [base, base + n) of a vector encoded and applied on `threads`.
static void codec_run(int threads, size_t base, size_t n, float *m, float *b, float *x, uint64_t *bits,
                      const float *g) {
    codec_job j = {g, m, b, x, bits, wr_rng_key_make(5, 1, 7), base};
    wr_par_ranges(threads, n, 0, codec_range, &j);
}

static void test_birder_threads_same_bits(void **state) {
    (void)state;
    const size_t d = 3 * 64 * 1000 + 37, base = 640, n = d - base;
    float *g = malloc(d * 4), *m[2], *b[2], *x[2];
    uint64_t *bits[2];
    for (size_t i = 0; i < d; i++) g[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    for (int k = 0; k < 2; k++) {
        m[k] = calloc(d, 4), b[k] = calloc(d, 4), x[k] = malloc(n * 4);
        bits[k] = calloc(wr_birder_words(n), 8);
        for (size_t i = 0; i < n; i++) x[k][i] = (float)i * 1e-4f;
    }
    for (int step = 0; step < 3; step++) {
        codec_run(1, base, n, m[0], b[0], x[0], bits[0], g);
        codec_run(3, base, n, m[1], b[1], x[1], bits[1], g);
        assert_memory_equal(bits[0], bits[1], wr_birder_words(n) * 8);
        assert_memory_equal(m[0], m[1], d * 4);
        assert_memory_equal(b[0], b[1], d * 4);
        assert_memory_equal(x[0], x[1], n * 4);
    }
    for (int k = 0; k < 2; k++) free(m[k]), free(b[k]), free(x[k]), free(bits[k]);
    free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges_cover),
        cmocka_unit_test(test_birder_threads_same_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
