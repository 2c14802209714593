// test_checkpoint.c — checkpoint files (common/checkpoint.h): round trip,
// keep-K pruning, every flipped byte and every truncation refused, identity
// mismatches named, hostile lengths behind valid digests, fallback to the
// previous file, a killed writer's temp files, unwritable dirs.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "checkpoint.h"
#include "checkpoint_fmt.h"
#include "digest.h"
#include "wr_common.h"

static char g_dir[256];

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/wren-test-ckpt-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

// A fresh sub-directory of g_dir (not created).
static void sub(char *out, size_t len, const char *name) { snprintf(out, len, "%s/%s", g_dir, name); }

static void file_in(char *out, size_t len, const char *dir, const char *prefix, uint64_t step) {
    snprintf(out, len, "%s/%s-%012llu.ckpt", dir, prefix, (unsigned long long)step);
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static float g_x[1000];
static uint64_t g_u[3] = {7, 0xFFFFFFFFFFFFFFFFull, 42};
static const char g_b[] = "loss!";

static wr_ckpt_meta meta_at(uint64_t step) {
    return (wr_ckpt_meta){WR_CKPT_SHARD, 1, 77, 3, step, 0xC0FFEE1234ull};
}

static const wr_ckpt_expect g_ex = {WR_CKPT_SHARD, 1, 77, 0xC0FFEE1234ull};

static int write_std(const char *dir, const char *prefix, uint64_t step, int keep, char *err) {
    for (int i = 0; i < 1000; i++) g_x[i] = (float)i * 0.5f - (float)step;
    const wr_ckpt_section secs[] = {
        {"x", WR_CKPT_FP32, g_x, sizeof g_x},
        {"counters", WR_CKPT_U64, g_u, sizeof g_u},
        {"note", WR_CKPT_BYTES, g_b, 5},
        {"empty", WR_CKPT_BYTES, NULL, 0},
    };
    wr_ckpt_meta m = meta_at(step);
    return wr_ckpt_write(dir, prefix, &m, secs, 4, keep, err);
}

// A small file's bytes (two short sections), for the flip and truncation tests.
static uint8_t *small_file(size_t *len) {
    static const float v[5] = {1, 2, 3, 4, 5};
    const wr_ckpt_section secs[] = {{"m", WR_CKPT_FP32, v, sizeof v}, {"s", WR_CKPT_BYTES, "abc", 3}};
    wr_ckpt_meta m = meta_at(9);
    char dir[300], err[WR_ERR_LEN], path[400];
    sub(dir, sizeof dir, "small");
    assert_int_equal(wr_ckpt_write(dir, "w", &m, secs, 2, 1, err), WR_OK);
    file_in(path, sizeof path, dir, "w", 9);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *buf = malloc(4096);
    *len = fread(buf, 1, 4096, f);
    fclose(f);
    assert_int_equal(*len, 128 + 64 + 64 + 64 + 64 + 16);
    return buf;
}

static void put_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void assert_err_has(const char *err, const char *what) {
    if (strstr(err, what)) return;
    print_error("error '%s' does not say '%s'\n", err, what);
    fail();
}

static void test_round_trip(void **state) {
    (void)state;
    char dir[300], err[WR_ERR_LEN], path[400];
    sub(dir, sizeof dir, "rt/nested");
    assert_int_equal(write_std(dir, "shard1", 120, 3, err), WR_OK);
    file_in(path, sizeof path, dir, "shard1", 120);
    assert_true(exists(path));
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    wr_ckpt ck;
    assert_int_equal(wr_ckpt_load_latest(dir, "shard1", &g_ex, &ck, err), WR_OK);
    assert_string_equal(ck.path, path);
    assert_int_equal(ck.meta.role, WR_CKPT_SHARD);
    assert_int_equal(ck.meta.index, 1);
    assert_int_equal(ck.meta.job_id, 77);
    assert_int_equal(ck.meta.epoch, 3);
    assert_int_equal(ck.meta.step, 120);
    assert_int_equal(ck.meta.config_digest, 0xC0FFEE1234ull);
    assert_int_equal(ck.nsec, 4);
    const void *p;
    assert_int_equal(wr_ckpt_section_get(&ck, "x", WR_CKPT_FP32, sizeof g_x, &p, err), WR_OK);
    assert_memory_equal(p, g_x, sizeof g_x);
    assert_int_equal((uintptr_t)p % 64, 0);
    assert_int_equal(wr_ckpt_section_get(&ck, "counters", WR_CKPT_U64, 24, &p, err), WR_OK);
    assert_memory_equal(p, g_u, sizeof g_u);
    assert_int_equal(wr_ckpt_section_get(&ck, "note", WR_CKPT_BYTES, WR_CKPT_ANY_SIZE, &p, err), WR_OK);
    assert_memory_equal(p, "loss!", 5);
    assert_int_equal(wr_ckpt_find(&ck, "empty")->bytes, 0);
    assert_int_equal(wr_ckpt_section_get(&ck, "m", WR_CKPT_FP32, 4, &p, err), WR_ERR);
    assert_null(p);
    assert_err_has(err, "no section 'm'");
    assert_int_equal(wr_ckpt_section_get(&ck, "x", WR_CKPT_U64, sizeof g_x, &p, err), WR_ERR);
    assert_err_has(err, "section 'x' holds fp32, expected u64");
    assert_int_equal(wr_ckpt_section_get(&ck, "x", WR_CKPT_FP32, 400, &p, err), WR_ERR);
    assert_err_has(err, "section 'x' holds 4000 bytes, expected 400");
    wr_ckpt_free(&ck);
    assert_null(ck.buf);
    wr_ckpt_free(&ck);  // twice is harmless
}

// Sections of several MB go out in place and come back bit for bit.
static void test_large_section(void **state) {
    (void)state;
    size_t n = (size_t)3 << 20;  // 12 MiB of fp32
    float *x = wr_alloc_vec(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 1000) - 0.25f;
    const wr_ckpt_section s = {"master", WR_CKPT_FP32, x, n * sizeof(float)};
    wr_ckpt_meta m = meta_at(5);
    char dir[300], err[WR_ERR_LEN];
    sub(dir, sizeof dir, "large");
    assert_int_equal(wr_ckpt_write(dir, "shard1", &m, &s, 1, 1, err), WR_OK);
    wr_ckpt ck;
    const void *p;
    assert_int_equal(wr_ckpt_load_latest(dir, "shard1", &g_ex, &ck, err), WR_OK);
    assert_int_equal(wr_ckpt_section_get(&ck, "master", WR_CKPT_FP32, n * sizeof(float), &p, err), WR_OK);
    assert_memory_equal(p, x, n * sizeof(float));
    wr_ckpt_free(&ck);
    free(x);
}

static void test_keep_pruning(void **state) {
    (void)state;
    char dir[300], err[WR_ERR_LEN], path[400];
    sub(dir, sizeof dir, "keep");
    assert_int_equal(write_std(dir, "shard10", 15, 1, err), WR_OK);  // a neighbour prefix: untouched
    for (uint64_t s = 10; s <= 60; s += 10) assert_int_equal(write_std(dir, "shard1", s, 3, err), WR_OK);
    for (uint64_t s = 10; s <= 60; s += 10) {
        file_in(path, sizeof path, dir, "shard1", s);
        assert_int_equal(exists(path), s >= 40);
    }
    file_in(path, sizeof path, dir, "shard10", 15);
    assert_true(exists(path));
    // A run resumed from an older point: the files past it go, or a later
    // resume would pick them over this run's.
    assert_int_equal(write_std(dir, "shard1", 45, 2, err), WR_OK);
    for (uint64_t s = 40; s <= 60; s += 5) {
        file_in(path, sizeof path, dir, "shard1", s);
        assert_int_equal(exists(path), s == 40 || s == 45);
    }
    assert_int_equal(write_std(dir, "shard1", 46, 0, err), WR_ERR);
    assert_err_has(err, "keep = 0");
}

// Any one byte changed anywhere in the file is refused.
static void test_flip_every_byte(void **state) {
    (void)state;
    size_t len;
    uint8_t *buf = small_file(&len);
    wr_ckpt ck;
    char err[WR_ERR_LEN];
    assert_int_equal(wr_ckpt_parse(buf, len, &g_ex, &ck, err), WR_OK);
    static const uint8_t masks[] = {0x01, 0x80, 0xFF, 0x10};
    for (size_t i = 0; i < len; i++)
        for (size_t m = 0; m < sizeof masks; m++) {
            buf[i] ^= masks[m];
            if (wr_ckpt_parse(buf, len, NULL, &ck, err) == WR_OK) {
                print_error("byte %zu ^ 0x%02x was accepted\n", i, masks[m]);
                fail();
            }
            assert_int_equal(ck.nsec, 0);
            buf[i] ^= masks[m];
        }
    assert_int_equal(wr_ckpt_parse(buf, len, &g_ex, &ck, err), WR_OK);
    // Which check caught it, for a few places.
    buf[200] ^= 1;  // section 'm' data
    assert_int_equal(wr_ckpt_parse(buf, len, NULL, &ck, err), WR_ERR);
    assert_err_has(err, "section 'm': data checksum mismatch (file corrupt)");
    buf[200] ^= 1;
    buf[40] ^= 1;  // the header's step
    assert_int_equal(wr_ckpt_parse(buf, len, NULL, &ck, err), WR_ERR);
    assert_err_has(err, "header checksum mismatch");
    buf[40] ^= 1;
    buf[len - 1] ^= 1;  // the trailer's checksum
    assert_int_equal(wr_ckpt_parse(buf, len, NULL, &ck, err), WR_ERR);
    assert_string_equal(err, "checksum mismatch (file corrupt)");
    buf[len - 1] ^= 1;
    buf[0] = 'X';
    assert_int_equal(wr_ckpt_parse(buf, len, NULL, &ck, err), WR_ERR);
    assert_err_has(err, "bad magic");
    free(buf);
}

// Every prefix of a file is refused (in memory and as a file), and so is a
// byte appended.
static void test_truncate_every_length(void **state) {
    (void)state;
    size_t len;
    uint8_t *buf = small_file(&len);
    wr_ckpt ck;
    char err[WR_ERR_LEN], dir[300], path[400];
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1);  // exact size: ASan catches a read past it
        memcpy(copy, buf, n);
        assert_int_equal(wr_ckpt_parse(copy, n, NULL, &ck, err), WR_ERR);
        assert_err_has(err, "truncated");
        free(copy);
    }
    assert_int_equal(wr_ckpt_parse(NULL, 0, NULL, &ck, err), WR_ERR);
    sub(dir, sizeof dir, "trunc");
    assert_int_equal(mkdir(dir, 0700), 0);
    file_in(path, sizeof path, dir, "w", 9);
    put_file(path, buf, 300);
    assert_int_equal(wr_ckpt_load_file(path, NULL, &ck, err), WR_ERR);
    char want[600];
    snprintf(want, sizeof want, "checkpoint %s: truncated: 300 of %zu bytes", path, len);
    assert_err_has(err, want);
    uint8_t *longer = calloc(1, len + 1);
    memcpy(longer, buf, len);
    assert_int_equal(wr_ckpt_parse(longer, len + 1, NULL, &ck, err), WR_ERR);
    assert_err_has(err, "data after the end");
    free(longer);
    free(buf);
}

static void test_identity_mismatch(void **state) {
    (void)state;
    size_t len;
    uint8_t *buf = small_file(&len);
    wr_ckpt ck;
    char err[WR_ERR_LEN];
    wr_ckpt_expect ex = g_ex;
    ex.config_digest ^= 1;
    assert_int_equal(wr_ckpt_parse(buf, len, &ex, &ck, err), WR_ERR);
    assert_err_has(err, "config digest 000000c0ffee1234 differs from this job's 000000c0ffee1235");
    ex = g_ex;
    ex.role = WR_CKPT_WORKER;
    assert_int_equal(wr_ckpt_parse(buf, len, &ex, &ck, err), WR_ERR);
    assert_err_has(err, "written by a shard, this is a worker");
    ex = g_ex;
    ex.index = 0;
    assert_int_equal(wr_ckpt_parse(buf, len, &ex, &ck, err), WR_ERR);
    assert_err_has(err, "written by shard 1, this is shard 0");
    ex = g_ex;
    ex.job_id = 78;
    assert_int_equal(wr_ckpt_parse(buf, len, &ex, &ck, err), WR_ERR);
    assert_err_has(err, "job_id 77, this job is 78");
    assert_int_equal(wr_ckpt_parse(buf, len, NULL, &ck, err), WR_OK);  // NULL: anyone's
    free(buf);
}

// Re-signs a section header and the file header after an edit, so the
// structural checks (not the digests) must catch it.
static void resign(uint8_t *buf, size_t sec_off) {
    wr_ckpt_disk_header h;
    wr_ckpt_disk_section s;
    memcpy(&s, buf + sec_off, sizeof s);
    s.digest = wr_digest64(&s, offsetof(wr_ckpt_disk_section, digest));
    memcpy(buf + sec_off, &s, sizeof s);
    memcpy(&h, buf, sizeof h);
    h.digest = wr_digest64(&h, offsetof(wr_ckpt_disk_header, digest));
    memcpy(buf, &h, sizeof h);
}

static void test_hostile_lengths(void **state) {
    (void)state;
    size_t len;
    uint8_t *buf = small_file(&len);
    wr_ckpt ck;
    char err[WR_ERR_LEN];
    // Section 'm' has 192 bytes (data and padding) before the trailer.
    static const struct {
        uint64_t bytes;
        const char *says;
    } lies[] = {{UINT64_MAX, "does not add up"},
                {UINT64_MAX - 63, "does not add up"},
                {(uint64_t)1 << 62, "does not add up"},
                {1 << 20, "does not add up"},
                {193, "does not add up"},
                {190, "not a whole number of fp32"},
                {64, "data checksum mismatch"}};
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        uint8_t *b = malloc(len);
        memcpy(b, buf, len);
        memcpy(b + 128 + 40, &lies[i].bytes, 8);  // section 'm' bytes
        resign(b, 128);
        assert_int_equal(wr_ckpt_parse(b, len, NULL, &ck, err), WR_ERR);
        assert_err_has(err, lies[i].says);
        free(b);
    }
    uint8_t *b = malloc(len);
    memcpy(b, buf, len);
    uint32_t many = 1000;
    memcpy(b + 20, &many, 4);  // nsections
    resign(b, 128);
    assert_int_equal(wr_ckpt_parse(b, len, NULL, &ck, err), WR_ERR);
    assert_err_has(err, "1000 sections");
    many = 3;  // one more section than there is room for
    memcpy(b + 20, &many, 4);
    resign(b, 128);
    assert_int_equal(wr_ckpt_parse(b, len, NULL, &ck, err), WR_ERR);
    assert_err_has(err, "section table does not add up: section 2 header");
    free(b);
    free(buf);
}

static void corrupt_byte(const char *path, long at) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, at, SEEK_SET), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, at, SEEK_SET), 0);
    fputc(c ^ 0x20, f);
    assert_int_equal(fclose(f), 0);
}

static void test_fallback(void **state) {
    (void)state;
    char dir[300], err[WR_ERR_LEN], path[400];
    wr_ckpt ck;
    sub(dir, sizeof dir, "fallback");
    assert_int_equal(wr_ckpt_load_latest(dir, "shard1", &g_ex, &ck, err), WR_CKPT_ENOENT);
    for (uint64_t s = 100; s <= 120; s += 10) assert_int_equal(write_std(dir, "shard1", s, 5, err), WR_OK);
    file_in(path, sizeof path, dir, "shard1", 120);
    corrupt_byte(path, 1000);
    assert_int_equal(wr_ckpt_load_latest(dir, "shard1", &g_ex, &ck, err), WR_OK);
    assert_int_equal(ck.meta.step, 110);
    wr_ckpt_free(&ck);
    file_in(path, sizeof path, dir, "shard1", 110);
    assert_int_equal(truncate(path, 500), 0);
    assert_int_equal(wr_ckpt_load_latest(dir, "shard1", &g_ex, &ck, err), WR_OK);
    assert_int_equal(ck.meta.step, 100);
    const void *p;
    assert_int_equal(wr_ckpt_section_get(&ck, "x", WR_CKPT_FP32, 4000, &p, err), WR_OK);
    assert_true(((const float *)p)[0] == -100.0f);
    wr_ckpt_free(&ck);
    // A valid file under a name with another step is refused too.
    char moved[400];
    file_in(path, sizeof path, dir, "shard1", 100);
    file_in(moved, sizeof moved, dir, "shard1", 130);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(wr_ckpt_load_latest(dir, "shard1", &g_ex, &ck, err), WR_ERR);
    char want[700];
    snprintf(want, sizeof want,
             "no valid checkpoint in %s for shard1 (3 files refused: shard1-000000000130.ckpt: "
             "the header says step 100, the file name step 130",
             dir);
    assert_err_has(err, want);
    assert_err_has(err, "shard1-000000000120.ckpt: section 'x': data checksum mismatch");
    // Another config's files are refused the same way.
    assert_int_equal(write_std(dir, "shard1", 140, 5, err), WR_OK);
    wr_ckpt_expect other = g_ex;
    other.config_digest = 5;
    assert_int_equal(wr_ckpt_load_latest(dir, "shard1", &other, &ck, err), WR_ERR);
    assert_err_has(err, "config digest");
}

static void test_temp_files_ignored_and_cleaned(void **state) {
    (void)state;
    char dir[300], err[WR_ERR_LEN], tmp[400], tmp2[400];
    wr_ckpt ck;
    sub(dir, sizeof dir, "temps");
    assert_int_equal(write_std(dir, "worker2", 7, 2, err), WR_OK);
    // What a writer killed before its rename leaves: a partial temp file at a later step.
    snprintf(tmp, sizeof tmp, "%s/worker2-000000000008.ckpt.tmp.4242", dir);
    put_file(tmp, "WRCKPT01partial", 15);
    assert_int_equal(wr_ckpt_load_latest(dir, "worker2", NULL, &ck, err), WR_OK);
    assert_int_equal(ck.meta.step, 7);
    wr_ckpt_free(&ck);
    assert_false(exists(tmp));
    snprintf(tmp2, sizeof tmp2, "%s/worker2-000000000009.ckpt.tmp.4243", dir);
    put_file(tmp2, "x", 1);
    put_file(tmp, "y", 1);
    assert_int_equal(write_std(dir, "worker2", 8, 2, err), WR_OK);
    assert_false(exists(tmp));
    assert_false(exists(tmp2));
    // Only the prefix's own temps: another prefix's are not touched.
    snprintf(tmp, sizeof tmp, "%s/worker3-000000000008.ckpt.tmp.1", dir);
    put_file(tmp, "z", 1);
    assert_int_equal(write_std(dir, "worker2", 9, 2, err), WR_OK);
    assert_true(exists(tmp));
}

static void test_unwritable_dir(void **state) {
    (void)state;
    char dir[400], err[WR_ERR_LEN], file[300];
    sub(file, sizeof file, "plainfile");
    put_file(file, "x", 1);
    snprintf(dir, sizeof dir, "%s/ckpt", file);
    assert_int_equal(write_std(dir, "shard1", 1, 1, err), WR_ERR);
    char want[600];
    snprintf(want, sizeof want, "cannot create checkpoint dir %s: Not a directory", dir);
    assert_err_has(err, want);
    wr_ckpt ck;
    assert_int_equal(wr_ckpt_load_latest(dir, "shard1", &g_ex, &ck, err), WR_ERR);
    assert_err_has(err, "cannot read checkpoint dir");
    if (geteuid() != 0) {  // root writes through mode bits
        sub(dir, sizeof dir, "readonly");
        assert_int_equal(mkdir(dir, 0500), 0);
        assert_int_equal(write_std(dir, "shard1", 1, 1, err), WR_ERR);
        assert_err_has(err, "cannot create checkpoint file");
        assert_err_has(err, "Permission denied");
    }
}

static void test_bad_arguments(void **state) {
    (void)state;
    char dir[300], err[WR_ERR_LEN];
    sub(dir, sizeof dir, "args");
    wr_ckpt_meta m = meta_at(1);
    float v[2] = {0};
    const wr_ckpt_section dup[] = {{"a", WR_CKPT_FP32, v, 8}, {"a", WR_CKPT_FP32, v, 8}};
    assert_int_equal(wr_ckpt_write(dir, "p", &m, dup, 2, 1, err), WR_ERR);
    assert_err_has(err, "section 'a' appears twice");
    const wr_ckpt_section odd = {"a", WR_CKPT_FP32, v, 6};
    assert_int_equal(wr_ckpt_write(dir, "p", &m, &odd, 1, 1, err), WR_ERR);
    assert_err_has(err, "6 bytes is not a whole number of fp32");
    const wr_ckpt_section longname = {"abcdefghijklmnopqrstuvwxyz0123456", WR_CKPT_BYTES, v, 1};
    assert_int_equal(wr_ckpt_write(dir, "p", &m, &longname, 1, 1, err), WR_ERR);
    assert_err_has(err, "name must be 1..31 bytes");
    assert_int_equal(wr_ckpt_write(dir, "../p", &m, &odd, 0, 1, err), WR_ERR);
    assert_err_has(err, "checkpoint prefix '../p'");
    m.step = 1000000000000ull;
    assert_int_equal(wr_ckpt_write(dir, "p", &m, NULL, 0, 1, err), WR_ERR);
    assert_err_has(err, "does not fit 12 digits");
    m = meta_at(1);
    m.role = 4;  // 1 shard, 2 worker, 3 coordinator
    assert_int_equal(wr_ckpt_write(dir, "p", &m, NULL, 0, 1, err), WR_ERR);
    assert_err_has(err, "unknown role 4");
    assert_false(exists(dir));  // nothing written, not even the dir
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_large_section),
        cmocka_unit_test(test_keep_pruning),
        cmocka_unit_test(test_flip_every_byte),
        cmocka_unit_test(test_truncate_every_length),
        cmocka_unit_test(test_identity_mismatch),
        cmocka_unit_test(test_hostile_lengths),
        cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_temp_files_ignored_and_cleaned),
        cmocka_unit_test(test_unwritable_dir),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
