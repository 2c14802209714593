// test_summary.c — the worker's summary file (the launcher and
// bench-cluster parse it): every key present with the right values, atomic
// replacement, a clear error for a path that cannot be written.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "summary.h"

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

// Value of "key": in a flat JSON object (the summary has no nesting).
static double json_num(const char *s, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(s, pat);
    assert_non_null(p);
    p += strlen(pat);
    if (strncmp(p, "null", 4) == 0) return -12345;
    return strtod(p, NULL);
}

static void fill(wr_train_stats *s) {
    memset(s, 0, sizeof *s);
    s->seconds = 20.0;
    s->steps = 1000;
    s->global_batch = 128;
    s->test_accuracy = 0.875;
    s->best_accuracy = 0.88;
    s->tta88_seconds = 12.5;
    s->tta88_step = 936;
    s->final_loss = 0.33;
    s->bytes_sent = 1000.0 * 67000;
    s->bytes_recv = 1000.0 * 67100;
    s->t_compute = 10;
    s->t_encode = 2;
    s->t_comm = 4;
    s->t_eval = 1.5;
    s->step_ms_median = 15.5;
}

static void test_summary_keys_and_values(void **state) {
    (void)state;
    char path[] = "/tmp/wren-test-summary-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    wr_job_config cfg;
    wr_config_defaults(&cfg);
    wr_train_stats s;
    fill(&s);
    char err[WR_ERR_LEN];
    assert_int_equal(wr_write_summary(path, "ps", &cfg, 0, 4, 2, &s, err), WR_OK);
    char *j = slurp(path);
    assert_non_null(j);
    assert_non_null(strstr(j, "\"mode\": \"ps\""));
    assert_non_null(strstr(j, "\"model\": \"mlp\""));
    assert_non_null(strstr(j, "\"codec\": \"birder\""));
    assert_true(j[0] == '{' && strstr(j, "}\n") != NULL);
    assert_float_equal(json_num(j, "accuracy"), 0.875, 1e-12);
    assert_float_equal(json_num(j, "best_accuracy"), 0.88, 1e-12);
    assert_float_equal(json_num(j, "seconds"), 20.0, 1e-12);
    // evaluation time (1.5 s) is not training time
    assert_float_equal(json_num(j, "samples_per_s"), 128.0 * 1000 / 18.5, 1e-6);
    assert_float_equal(json_num(j, "step_ms_median"), 15.5, 1e-9);
    assert_float_equal(json_num(j, "bytes_sent_per_step"), 67000, 1e-9);
    assert_float_equal(json_num(j, "bytes_recv_per_step"), 67100, 1e-9);
    assert_float_equal(json_num(j, "tta88_seconds"), 12.5, 1e-12);
    assert_float_equal(json_num(j, "tta88_step"), 936, 0);
    assert_float_equal(json_num(j, "step_ms"), 16.0, 1e-9);
    assert_float_equal(json_num(j, "compute_ms_per_step"), 10.0, 1e-9);
    assert_float_equal(json_num(j, "encode_ms_per_step"), 2.0, 1e-9);
    assert_float_equal(json_num(j, "comm_ms_per_step"), 4.0, 1e-9);
    assert_float_equal(json_num(j, "comm_share"), 0.25, 1e-12);
    assert_float_equal(json_num(j, "workers"), 4, 0);
    assert_float_equal(json_num(j, "shards"), 2, 0);
    assert_float_equal(json_num(j, "steps"), 1000, 0);
    // No temp file left behind.
    char tmp[sizeof path + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);
    unlink(path);
}

static void test_summary_non_finite_is_null(void **state) {
    (void)state;
    char path[] = "/tmp/wren-test-summary-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    wr_job_config cfg;
    wr_config_defaults(&cfg);
    wr_train_stats s;
    fill(&s);
    s.final_loss = 0.0 / 0.0;
    s.step_ms_median = 0;  // unknown
    char err[WR_ERR_LEN];
    assert_int_equal(wr_write_summary(path, "standalone", &cfg, -1, 1, 0, &s, err), WR_OK);
    char *j = slurp(path);
    assert_non_null(strstr(j, "\"final_loss\": null"));
    assert_non_null(strstr(j, "\"step_ms_median\": null"));
    assert_null(strstr(j, "nan"));
    unlink(path);
}

static void test_summary_bad_path(void **state) {
    (void)state;
    wr_job_config cfg;
    wr_config_defaults(&cfg);
    wr_train_stats s;
    fill(&s);
    char err[WR_ERR_LEN] = "";
    assert_int_equal(wr_write_summary("/nonexistent-dir/x/summary.json", "ps", &cfg, 0, 1, 1, &s, err),
                     WR_ERR);
    assert_non_null(strstr(err, "/nonexistent-dir/x/summary.json"));
}

// "{rank}" in a summary path becomes the rank, every time it appears; a
// path without it is kept; a result that does not fit is refused.
static void test_summary_path_rank(void **state) {
    (void)state;
    char out[64], err[WR_ERR_LEN];
    assert_int_equal(wr_summary_path("run-{rank}.json", 12, out, sizeof out, err), WR_OK);
    assert_string_equal(out, "run-12.json");
    assert_int_equal(wr_summary_path("d{rank}/w{rank}", 3, out, sizeof out, err), WR_OK);
    assert_string_equal(out, "d3/w3");
    assert_int_equal(wr_summary_path("run.json", 5, out, sizeof out, err), WR_OK);
    assert_string_equal(out, "run.json");
    assert_int_equal(wr_summary_path("{ran}{rank", 5, out, sizeof out, err), WR_OK);
    assert_string_equal(out, "{ran}{rank");
    char small[8];
    assert_int_equal(wr_summary_path("abc-{rank}.json", 1, small, sizeof small, err), WR_ERR);
    assert_non_null(strstr(err, "abc-{rank}.json"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summary_keys_and_values),
        cmocka_unit_test(test_summary_non_finite_is_null),
        cmocka_unit_test(test_summary_bad_path),
        cmocka_unit_test(test_summary_path_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
