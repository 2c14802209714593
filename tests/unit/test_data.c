// test_data.c — Fashion-MNIST loading, validation errors, sharded iterator.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"
#include "wr_common.h"

static char g_dir[256];

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

// idx buffer: magic 00 00 08 ndim, dims, payload (pixel/label values from fill()).
static size_t make_idx(uint8_t *buf, int ndim, const uint32_t *dims, int label_val) {
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = 8;
    buf[3] = (uint8_t)ndim;
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        put_be32(buf + 4 + 4 * i, dims[i]);
        count *= dims[i];
    }
    uint8_t *p = buf + 4 + 4 * ndim;
    for (size_t i = 0; i < count; i++)
        p[i] = ndim == 1 ? (uint8_t)(label_val >= 0 ? label_val : (int)(i % 10)) : (uint8_t)(i * 7);
    return 4 + 4 * (size_t)ndim + count;
}

static void write_gz(const char *name, const uint8_t *buf, size_t len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(gzwrite(f, buf, (unsigned)len), (int)len);
    assert_int_equal(gzclose(f), Z_OK);
}

// Writes a test split (t10k) with n images and the given labels settings.
static void write_split(uint32_t n_img, uint32_t n_lab, int label_val, size_t img_cut, size_t img_extra) {
    uint32_t d3[3] = {n_img, 28, 28}, d1[1] = {n_lab};
    uint8_t *b = calloc(1, 16 + (size_t)n_img * 784 + 64);
    size_t len = make_idx(b, 3, d3, 0);
    len = len - img_cut + img_extra;  // extra bytes are zero from calloc
    write_gz("t10k-images-idx3-ubyte.gz", b, len);
    len = make_idx(b, 1, d1, label_val);
    write_gz("t10k-labels-idx1-ubyte.gz", b, len);
    free(b);
}

static int load_err(char *err) {
    wr_dataset d;
    int rc = wr_dataset_load(g_dir, 0, &d, err);
    if (rc == WR_OK) wr_dataset_free(&d);
    return rc;
}

static void test_real_files(void **st) {
    (void)st;
    char err[WR_ERR_LEN] = "";
    for (int train = 1; train >= 0; train--) {
        wr_dataset d;
        int rc = wr_dataset_load(NULL, train, &d, err);
        if (rc != WR_OK) fail_msg("load failed: %s", err);
        assert_int_equal(d.n, train ? 60000 : 10000);
        assert_int_equal(d.dim, 784);
        int hist[10] = {0};
        for (int i = 0; i < d.n; i++) {
            assert_true(d.labels[i] < 10);
            hist[d.labels[i]]++;
        }
        for (int c = 0; c < 10; c++) assert_int_equal(hist[c], d.n / 10);
        float lo = 1, hi = 0;
        double sum = 0;
        for (size_t i = 0; i < (size_t)d.n * d.dim; i++) {
            float v = d.images[i];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            sum += v;
        }
        assert_true(lo == 0.0f && hi == 1.0f);
        double mean = sum / ((double)d.n * d.dim);
        assert_true(mean > 0.27 && mean < 0.30);  // Fashion-MNIST mean ~0.286
        wr_dataset_free(&d);
        assert_null(d.images);
    }
}

static void test_good_crafted(void **st) {
    (void)st;
    char err[WR_ERR_LEN] = "";
    write_split(3, 3, -1, 0, 0);
    wr_dataset d;
    assert_int_equal(wr_dataset_load(g_dir, 0, &d, err), WR_OK);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.labels[2], 2);
    assert_true(d.images[1] == 7.0f * (1.0f / 255.0f));
    wr_dataset_free(&d);
}

static void test_bad_files(void **st) {
    (void)st;
    char err[WR_ERR_LEN];
    // truncated payload
    write_split(3, 3, -1, 5, 0);
    assert_int_equal(load_err(err), WR_ERR);
    assert_non_null(strstr(err, "t10k-images-idx3-ubyte.gz"));
    assert_non_null(strstr(err, "truncated"));
    // trailing bytes
    write_split(3, 3, -1, 0, 2);
    assert_int_equal(load_err(err), WR_ERR);
    assert_non_null(strstr(err, "trailing"));
    // count mismatch
    write_split(3, 2, -1, 0, 0);
    assert_int_equal(load_err(err), WR_ERR);
    assert_non_null(strstr(err, "mismatch"));
    assert_non_null(strstr(err, "t10k-labels-idx1-ubyte.gz"));
    // label 10
    write_split(2, 2, 10, 0, 0);
    assert_int_equal(load_err(err), WR_ERR);
    assert_non_null(strstr(err, "label 10"));
    assert_non_null(strstr(err, "t10k-labels-idx1-ubyte.gz"));
    // bad magic (labels file given an idx3 header)
    write_split(2, 2, -1, 0, 0);
    {
        uint32_t d3[3] = {2, 28, 28};
        uint8_t *b = calloc(1, 16 + 2 * 784);
        size_t len = make_idx(b, 3, d3, 0);
        write_gz("t10k-labels-idx1-ubyte.gz", b, len);
        free(b);
    }
    assert_int_equal(load_err(err), WR_ERR);
    assert_non_null(strstr(err, "bad magic"));
    assert_non_null(strstr(err, "t10k-labels-idx1-ubyte.gz"));
    // empty file
    write_split(2, 2, -1, 0, 0);
    write_gz("t10k-images-idx3-ubyte.gz", NULL, 0);
    assert_int_equal(load_err(err), WR_ERR);
    assert_non_null(strstr(err, "truncated"));
    // wrong image size (32x32)
    {
        uint32_t d3[3] = {2, 32, 32};
        uint8_t *b = calloc(1, 16 + 2 * 1024);
        size_t len = make_idx(b, 3, d3, 0);
        write_gz("t10k-images-idx3-ubyte.gz", b, len);
        free(b);
    }
    assert_int_equal(load_err(err), WR_ERR);
    assert_non_null(strstr(err, "28x28"));
    // corrupt gzip stream: a valid gzip file cut in the middle
    write_split(50, 50, -1, 0, 0);
    {
        char path[512];
        snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", g_dir);
        FILE *f = fopen(path, "r+b");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        fclose(f);
        assert_int_equal(truncate(path, sz / 2), 0);
    }
    assert_int_equal(load_err(err), WR_ERR);
    assert_non_null(strstr(err, "t10k-images-idx3-ubyte.gz"));
    // missing file: names the file and the package
    write_split(2, 2, -1, 0, 0);
    {
        char path[512];
        snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", g_dir);
        unlink(path);
    }
    assert_int_equal(load_err(err), WR_ERR);
    assert_non_null(strstr(err, "t10k-images-idx3-ubyte.gz"));
    assert_non_null(strstr(err, "apt-get install dataset-fashion-mnist"));
    // missing directory
    wr_dataset d;
    assert_int_equal(wr_dataset_load("/nonexistent/wren", 1, &d, err), WR_ERR);
    assert_non_null(strstr(err, "/nonexistent/wren/train-labels-idx1-ubyte.gz"));
    assert_null(d.images);
}

static void test_parse_buffer(void **st) {
    (void)st;
    char err[WR_ERR_LEN];
    wr_idx idx;
    uint8_t b[64];
    uint32_t d1[1] = {5};
    size_t len = make_idx(b, 1, d1, 4);
    assert_int_equal(wr_idx_parse(b, len, 1, "x", &idx, err), WR_OK);
    assert_int_equal(idx.count, 5);
    assert_ptr_equal(idx.data, b + 8);
    for (size_t cut = 0; cut < len; cut++) {
        assert_int_equal(wr_idx_parse(b, cut, 1, "x", &idx, err), WR_ERR);
        assert_true(strncmp(err, "x: ", 3) == 0);
    }
    assert_int_equal(wr_idx_parse(b, len, 3, "x", &idx, err), WR_ERR);  // ndim mismatch
    put_be32(b + 4, 0);
    assert_int_equal(wr_idx_parse(b, 8, 1, "x", &idx, err), WR_ERR);
    assert_non_null(strstr(err, "is 0"));
    // absurd dimensions do not overflow
    uint8_t h[16] = {0, 0, 8, 3};
    put_be32(h + 4, 0xFFFFFFFFu);
    put_be32(h + 8, 0xFFFFFFFFu);
    put_be32(h + 12, 0xFFFFFFFFu);
    assert_int_equal(wr_idx_parse(h, 16, 3, "x", &idx, err), WR_ERR);
    assert_non_null(strstr(err, "too large"));
}

static wr_dataset fake_ds(int n) {
    wr_dataset d = {n, 28, 28, 784, wr_alloc_vec((size_t)n * 784 * sizeof(float)), malloc(n)};
    for (int i = 0; i < n; i++) {
        d.images[(size_t)i * 784] = (float)i;  // sample id in pixel 0
        d.labels[i] = (uint8_t)(i % 10);
    }
    return d;
}

// The ids (pixel 0) of the next batch of it, and its size.
static int next_ids(wr_batch_iter *it, int *ids) {
    const float *x;
    const uint8_t *y;
    wr_batch_iter_next(it, &x, &y, NULL, NULL);
    for (int k = 0; k < it->local_batch; k++) ids[k] = (int)x[(size_t)k * 784];
    return it->local_batch;
}

// Position i of n takes positions i, i+n, ... < B of each global batch, B
// not divisible by n: every step's batches together are the global batch,
// each example once, with (B - i + n - 1) / n examples at position i; n
// dividing B gives B/n each, the split of a fixed worker count.
static void check_positions(const wr_dataset *d, int B, int steps) {
    char err[WR_ERR_LEN];
    for (int n = 1; n <= 5; n++) {
        wr_batch_iter one, part[5];
        assert_int_equal(wr_batch_iter_init(&one, d, B, 0, 1, 7, err), WR_OK);
        for (int i = 0; i < n; i++) assert_int_equal(wr_batch_iter_init(&part[i], d, B, i, n, 7, err), WR_OK);
        int *glob = malloc(sizeof(int) * B), *loc = malloc(sizeof(int) * B);
        for (int s = 0; s < steps; s++) {
            assert_int_equal(next_ids(&one, glob), B);
            int total = 0;
            for (int i = 0; i < n; i++) {
                int m = next_ids(&part[i], loc);
                assert_int_equal(m, (B - i + n - 1) / n);
                assert_int_equal(m, wr_batch_local_size(B, i, n));
                if (B % n == 0) assert_int_equal(m, B / n);
                for (int k = 0; k < m; k++) assert_int_equal(loc[k], glob[i + k * n]);
                total += m;
            }
            assert_int_equal(total, B);  // whole, and (by the index rule) each position once
        }
        for (int i = 0; i < n; i++) wr_batch_iter_free(&part[i]);
        wr_batch_iter_free(&one);
        free(glob);
        free(loc);
    }
}

static void test_iterator_positions(void **st) {
    (void)st;
    wr_dataset d = fake_ds(1000);
    check_positions(&d, 97, 25);  // 10 steps per epoch: crosses two epochs
    check_positions(&d, 60, 20);  // divisible by 1..5
    assert_int_equal(wr_batch_local_size(97, 5, 5), 0);
    assert_int_equal(wr_batch_local_size(97, 0, 5), 20);
    assert_int_equal(wr_batch_local_size(97, 4, 5), 19);
    wr_dataset_free(&d);
}

// A split changed from a step on keeps the permutation and the step: the
// batches afterwards are those of an iterator with the new split from the
// start; a refused split changes nothing.
static void test_iterator_split(void **st) {
    (void)st;
    char err[WR_ERR_LEN];
    const int B = 97;
    wr_dataset d = fake_ds(1000);
    wr_batch_iter it, ref, ref2;
    assert_int_equal(wr_batch_iter_init(&it, &d, B, 1, 2, 5, err), WR_OK);
    assert_int_equal(wr_batch_iter_init(&ref, &d, B, 1, 2, 5, err), WR_OK);
    assert_int_equal(wr_batch_iter_init(&ref2, &d, B, 2, 3, 5, err), WR_OK);
    int a[97], b[97];
    for (int s = 0; s < 7; s++) {
        int m = next_ids(&it, a);
        assert_int_equal(m, next_ids(&ref, b));
        assert_memory_equal(a, b, sizeof(int) * m);
    }
    assert_int_equal(wr_batch_iter_split(&it, 3, 3, err), WR_ERR);
    assert_int_equal(wr_batch_iter_split(&it, 0, 98, err), WR_ERR);
    assert_int_equal(it.nranks, 2);
    assert_int_equal(wr_batch_iter_split(&it, 2, 3, err), WR_OK);  // from step 7 (0-based) on
    wr_batch_iter_seek(&ref2, 7);
    for (int s = 7; s < 30; s++) {  // into the third epoch
        int m = next_ids(&it, a);
        assert_int_equal(m, 32);
        assert_int_equal(next_ids(&ref2, b), m);
        assert_memory_equal(a, b, sizeof(int) * m);
    }
    wr_batch_iter_free(&it);
    wr_batch_iter_free(&ref);
    wr_batch_iter_free(&ref2);
    wr_dataset_free(&d);
}

static void test_iterator_sharding(void **st) {
    (void)st;
    char err[WR_ERR_LEN];
    const int n = 1000, G = 96, R = 3;
    wr_dataset d = fake_ds(n);
    wr_batch_iter one, part[R];
    assert_int_equal(wr_batch_iter_init(&one, &d, G, 0, 1, 42, err), WR_OK);
    for (int r = 0; r < R; r++) assert_int_equal(wr_batch_iter_init(&part[r], &d, G, r, R, 42, err), WR_OK);
    assert_int_equal(one.steps_per_epoch, n / G);
    int spe = one.steps_per_epoch;
    char *seen = calloc(n, 1);
    int *first_epoch = malloc(sizeof(int) * spe * G);
    for (int s = 0; s < 2 * spe; s++) {
        const float *x;
        const uint8_t *y;
        int64_t ep;
        int sie;
        wr_batch_iter_next(&one, &x, &y, &ep, &sie);
        assert_int_equal(ep, s / spe);
        assert_int_equal(sie, s % spe);
        int ids[96];
        for (int k = 0; k < G; k++) {
            ids[k] = (int)x[(size_t)k * 784];
            assert_int_equal(y[k], ids[k] % 10);
        }
        if (s < spe) {
            for (int k = 0; k < G; k++) {
                assert_int_equal(seen[ids[k]], 0);  // disjoint within an epoch
                seen[ids[k]] = 1;
                first_epoch[s * G + k] = ids[k];
            }
        } else {  // the next epoch uses another permutation
            int same = 0;
            for (int k = 0; k < G; k++) same += ids[k] == first_epoch[(s - spe) * G + k];
            assert_true(same < G / 2);
        }
        // union of the R workers' batches == the single-worker global batch
        for (int r = 0; r < R; r++) {
            wr_batch_iter_next(&part[r], &x, &y, NULL, NULL);
            for (int k = 0; k < G / R; k++) assert_int_equal((int)x[(size_t)k * 784], ids[r + k * R]);
        }
    }
    // seek reproduces the sequence
    wr_batch_iter re;
    assert_int_equal(wr_batch_iter_init(&re, &d, G, 1, R, 42, err), WR_OK);
    wr_batch_iter_seek(&re, spe + 3);
    wr_batch_iter_seek(&part[1], spe + 3);
    const float *xa, *xb;
    wr_batch_iter_next(&re, &xa, NULL, NULL, NULL);
    wr_batch_iter_next(&part[1], &xb, NULL, NULL, NULL);
    assert_memory_equal(xa, xb, sizeof(float) * 784 * (G / R));
    // another seed gives another order
    wr_batch_iter other;
    assert_int_equal(wr_batch_iter_init(&other, &d, G, 0, 1, 43, err), WR_OK);
    wr_batch_iter_next(&other, &xa, NULL, NULL, NULL);
    int same = 0;
    for (int k = 0; k < G; k++) same += (int)xa[(size_t)k * 784] == first_epoch[k];
    assert_true(same < G / 2);
    // bad arguments
    wr_batch_iter bad;
    assert_int_equal(wr_batch_iter_init(&bad, &d, 2, 0, 3, 1, err), WR_ERR);
    assert_non_null(strstr(err, "smaller than the 3 workers"));
    assert_int_equal(wr_batch_iter_init(&bad, &d, 96, 3, 3, 1, err), WR_ERR);
    assert_int_equal(wr_batch_iter_init(&bad, &d, 2000, 0, 1, 1, err), WR_ERR);
    wr_batch_iter_free(&bad);
    wr_batch_iter_free(&other);
    wr_batch_iter_free(&re);
    wr_batch_iter_free(&one);
    for (int r = 0; r < R; r++) wr_batch_iter_free(&part[r]);
    free(seen);
    free(first_epoch);
    wr_dataset_free(&d);
}

static void test_slice(void **st) {
    (void)st;
    char err[WR_ERR_LEN];
    wr_dataset d = fake_ds(50), s;
    assert_int_equal(wr_dataset_slice(&d, 40, 20, &s, err), WR_OK);
    assert_int_equal(s.n, 10);
    assert_true(s.images[0] == 40.0f);
    assert_int_equal(s.labels[9], 9);
    wr_dataset_free(&s);
    assert_int_equal(wr_dataset_slice(&d, 50, 1, &s, err), WR_ERR);
    wr_dataset_free(&d);
}

static int setup(void **st) {
    (void)st;
    snprintf(g_dir, sizeof g_dir, "/tmp/wren_test_data_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}
static int teardown(void **st) {
    (void)st;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_files),        cmocka_unit_test(test_good_crafted),
        cmocka_unit_test(test_bad_files),         cmocka_unit_test(test_parse_buffer),
        cmocka_unit_test(test_iterator_sharding), cmocka_unit_test(test_iterator_positions),
        cmocka_unit_test(test_iterator_split),    cmocka_unit_test(test_slice),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
