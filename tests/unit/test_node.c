// test_node.c — node plumbing: the advertised address derived from a bound
// one, the zero-copy buffer pool's reference counting and reuse, and the
// refusal counter.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "node.h"
#include "bufpool.h"

static void test_advertise(void **state) {
    (void)state;
    char out[256];
    wr_advertised_addr("tcp://0.0.0.0:7000", "tcp://10.1.2.3:7000", out, sizeof out);
    assert_string_equal(out, "tcp://10.1.2.3:7000");
    wr_advertised_addr("tcp://127.0.0.1:5555", NULL, out, sizeof out);
    assert_string_equal(out, "tcp://127.0.0.1:5555");
    wr_advertised_addr("ipc:///tmp/x/shard0", NULL, out, sizeof out);
    assert_string_equal(out, "ipc:///tmp/x/shard0");
    wr_advertised_addr("inproc://c", "", out, sizeof out);
    assert_string_equal(out, "inproc://c");
    // wildcards become a concrete IPv4 address with the same port
    const char *wild[] = {"tcp://0.0.0.0:4321", "tcp://*:4321"};
    for (int i = 0; i < 2; i++) {
        wr_advertised_addr(wild[i], NULL, out, sizeof out);
        assert_int_equal(strncmp(out, "tcp://", 6), 0);
        assert_non_null(strstr(out, ":4321"));
        assert_null(strchr(out, '*'));
        assert_null(strstr(out, "0.0.0.0"));
        int dots = 0;
        for (const char *p = out; *p; p++) dots += *p == '.';
        assert_int_equal(dots, 3);
    }
}

static void test_bufpool(void **state) {
    (void)state;
    wr_bufpool *p = wr_bufpool_new(1000, 2);
    wr_pbuf *a = wr_bufpool_get(p, 3);  // owner + 2 sends
    assert_non_null(a);
    assert_true(((uintptr_t)a->data % 64) == 0);
    memset(a->data, 1, 1000);
    wr_pbuf *b = wr_bufpool_get(p, 1);
    assert_non_null(b);
    assert_ptr_not_equal(a->data, b->data);
    assert_null(wr_bufpool_get(p, 1));  // both busy, max reached
    assert_int_equal(wr_bufpool_busy(p), 2);
    wr_bufpool_free_cb(a->data, a);
    wr_bufpool_put(a);
    assert_null(wr_bufpool_get(p, 1));  // one send still holds a
    wr_bufpool_free_cb(a->data, a);
    wr_pbuf *c = wr_bufpool_get(p, 1);  // a is free again: reused, not reallocated
    assert_ptr_equal(c, a);
    wr_bufpool_put(c);
    wr_bufpool_put(b);
    assert_int_equal(wr_bufpool_busy(p), 0);
    wr_bufpool_free(p);
    wr_bufpool_free(NULL);
}

static void test_refusals(void **state) {
    (void)state;
    wr_refusals r;
    memset(&r, 0, sizeof r);
    wr_refused(&r, WR_PERR_STEP, "peer", "step 9 not in [1, 1]");
    wr_refused(&r, WR_PERR_STEP, "peer", "step 9 not in [1, 1]");
    wr_refused(&r, WR_PERR_ROLE, "peer", "not from the worker of that rank");
    wr_refused(&r, 999, "peer", "other");  // out-of-range kinds count as role refusals
    assert_int_equal(r.count[WR_PERR_STEP], 2);
    assert_int_equal(r.count[WR_PERR_ROLE], 2);
    assert_int_equal(r.total, 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_advertise),
        cmocka_unit_test(test_bufpool),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
