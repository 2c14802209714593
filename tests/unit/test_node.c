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
    // a wildcard becomes "tcp://*:P": the coordinator puts in the address it
    // sees the node connect from (never this host name's 127.0.1.1)
    const char *wild[] = {"tcp://0.0.0.0:4321", "tcp://*:4321", "tcp://[::]:4321"};
    for (int i = 0; i < 3; i++) {
        wr_advertised_addr(wild[i], NULL, out, sizeof out);
        assert_string_equal(out, "tcp://*:4321");
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

// The reply budget: per_peer replies each, then withheld; other peers are not
// affected; a table smaller than the peers still gives each new peer its
// first replies (the least recently seen entry makes room).
static void test_reply_gate(void **state) {
    (void)state;
    wr_reply_gate g;
    wr_reply_gate_init(&g, 16, 3);
    assert_int_equal(g.cap, 16);
    const uint8_t a[5] = {0, 1, 2, 3, 4}, b[5] = {0, 1, 2, 3, 5};
    for (int i = 0; i < 3; i++) assert_int_equal(wr_reply_gate_allow(&g, a, sizeof a, "a"), 1);
    assert_int_equal(wr_reply_gate_allow(&g, a, sizeof a, "a"), 0);
    assert_int_equal(wr_reply_gate_allow(&g, a, sizeof a, "a"), 0);
    assert_int_equal(g.withheld, 2);
    assert_int_equal(wr_reply_gate_allow(&g, b, sizeof b, "b"), 1);
    assert_int_equal(wr_reply_gate_allow(&g, a, 4, "a prefix"), 1);  // another id
    for (uint32_t p = 0; p < 1000; p++) {
        uint8_t id[5] = {0};
        memcpy(id + 1, &p, sizeof p);
        assert_int_equal(wr_reply_gate_allow(&g, id, sizeof id, "many"), 1);
    }
    wr_reply_gate_free(&g);
    wr_reply_gate_free(&g);
}

// Connection counting: the open count follows the events, one warn line
// per flood, back under the limit clears it.
static void test_peer_watch(void **state) {
    (void)state;
    wr_peer_watch w;
    wr_peer_watch_init(&w, "test connections", 10);
    wr_peer_watch_tick(&w, 5, 0, 0, 1.0);
    assert_int_equal(w.open, 5);
    assert_int_equal(w.over, 0);
    wr_peer_watch_tick(&w, 100, 0, 7, 2.0);
    assert_int_equal(w.over, 1);
    assert_int_equal(w.floods, 1);
    wr_peer_watch_tick(&w, 0, 100, 7, 3.5);  // closed: trims
    assert_int_equal(w.open, 5);
    assert_int_equal(w.over, 0);
    assert_int_equal(w.peak, 105);
    assert_true(w.trims >= 1);
    wr_peer_watch_tick(&w, 0, 10, 7, 4.0);  // more closed than open: clamps at 0
    assert_int_equal(w.open, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_advertise),  cmocka_unit_test(test_bufpool),    cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_reply_gate), cmocka_unit_test(test_peer_watch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
