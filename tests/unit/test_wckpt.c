// test_wckpt.c — a worker's checkpoint (worker/wckpt.h): round trip of the
// Birder state and the loss scaler; a missing step, another rank's file and
// another numeric config are refused with the file named.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "wckpt.h"
#include "wr_common.h"

static void cfg_in(wr_job_config *c, char *dir) {
    wr_config_defaults(c);
    snprintf(c->checkpoint_dir, sizeof c->checkpoint_dir, "%s", dir);
    c->checkpoint_keep = 2;
}

static void test_round_trip(void **state) {
    (void)state;
    char dir[] = "/tmp/wren-wckpt-XXXXXX";
    assert_non_null(mkdtemp(dir));
    wr_job_config cfg;
    cfg_in(&cfg, dir);
    enum { D = 1000 };
    float m[D], b[D], m2[D], b2[D];
    for (int i = 0; i < D; i++) m[i] = (float)i * 0.5f, b[i] = -(float)i;
    wr_wckpt_state st = {m, b, D, 4096.0f, 17};
    char err[WR_ERR_LEN];
    for (uint64_t step = 10; step <= 30; step += 10) {
        m[0] = (float)step;
        assert_int_equal(wr_wckpt_write(&cfg, 3, 2, step, &st, err), WR_OK);
    }
    float scale = 0;
    int clean = 0;
    assert_int_equal(wr_wckpt_load(&cfg, 3, 30, m2, b2, D, &scale, &clean, err), WR_OK);
    assert_memory_equal(m2, m, sizeof m);
    assert_memory_equal(b2, b, sizeof b);
    assert_true(scale == 4096.0f);
    assert_int_equal(clean, 17);
    // keep = 2: step 10 is gone; named in the refusal
    assert_int_equal(wr_wckpt_load(&cfg, 3, 10, m2, b2, D, &scale, &clean, err), WR_ERR);
    assert_non_null(strstr(err, "worker3-000000000010.ckpt"));
    // another rank's file is not this rank's
    char a[600], bpath[600];
    snprintf(a, sizeof a, "%s/worker3-000000000030.ckpt", dir);
    snprintf(bpath, sizeof bpath, "%s/worker4-000000000030.ckpt", dir);
    assert_int_equal(link(a, bpath), 0);
    assert_int_equal(wr_wckpt_load(&cfg, 4, 30, m2, b2, D, &scale, &clean, err), WR_ERR);
    // another numeric config (lr) is refused
    cfg.lr *= 2;
    assert_int_equal(wr_wckpt_load(&cfg, 3, 30, m2, b2, D, &scale, &clean, err), WR_ERR);
    cfg.lr /= 2;
    // another model size
    assert_int_equal(wr_wckpt_load(&cfg, 3, 30, m2, b2, D - 1, &scale, &clean, err), WR_ERR);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
